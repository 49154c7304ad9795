"""Event stores: the append-only log (SQLite) and its in-memory twin."""

from lablink.eventstore.base import (
    ANY,
    AppendOutcome,
    AppendRequest,
    EventQuery,
    EventReader,
    EventStore,
    StoredRow,
)
from lablink.eventstore.memory import MemoryEventStore
from lablink.eventstore.sqlite import LogReader, SQLiteEventStore, connect

__all__ = [
    "ANY",
    "AppendOutcome",
    "AppendRequest",
    "EventQuery",
    "EventReader",
    "EventStore",
    "LogReader",
    "MemoryEventStore",
    "SQLiteEventStore",
    "StoredRow",
    "connect",
]
