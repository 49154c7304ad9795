"""Audit-grade records (docs/audit.md): signed checkpoints of the log's hash chain, published
where the log's owner cannot quietly edit them, and the verification an auditor runs."""
