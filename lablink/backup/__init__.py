"""Backup, restore and verify of the event log (docs/operations.md)."""
