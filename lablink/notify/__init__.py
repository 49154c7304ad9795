"""Alarm notifications: an outbox driven by the event log (docs/notifications.md)."""
