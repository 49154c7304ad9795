"""Cluster mode's operations (issue 18): moving a single-node log into the cluster's record
(``importer``), the replicas' presence in a KV bucket (``presence``), and what the cluster
looks like (``status``). Below the command line and the runtime, which alone import it; on
top of the record's store (``eventstore``) and the bus."""
