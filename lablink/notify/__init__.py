"""Alarm notifications: an outbox driven by the event log (docs/operations.md)."""
