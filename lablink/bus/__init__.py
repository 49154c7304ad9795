"""NATS: transport for the log's events, never the record. Subjects, the relay, the server."""
