"""What `GET /metrics` exposes, in the Prometheus text format (docs/operations.md)."""
