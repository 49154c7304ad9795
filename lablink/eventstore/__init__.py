"""Event stores: the append-only log (SQLite) and its in-memory twin."""

from lablink.eventstore.base import ANY, AppendOutcome, AppendRequest, EventStore
from lablink.eventstore.memory import MemoryEventStore
from lablink.eventstore.sqlite import SQLiteEventStore, connect

__all__ = [
    "ANY",
    "AppendOutcome",
    "AppendRequest",
    "EventStore",
    "MemoryEventStore",
    "SQLiteEventStore",
    "connect",
]
