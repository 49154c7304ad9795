"""What every projection is: tables it owns and a fold of events into them."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

import msgspec
import sqlite_utils

from lablink.events import RecordedEvent
from lablink.eventstore.base import format_instant

_json = msgspec.json.Encoder()


class Projection(Protocol):
    name: str
    tables: tuple[str, ...]

    def create(self, db: sqlite_utils.Database) -> None:
        """Create its tables and indexes if missing."""
        ...

    def apply(self, conn: sqlite3.Connection, events: Sequence[RecordedEvent]) -> None:
        """Fold ``events`` (in position order) into its tables, inside the caller's transaction."""
        ...


def instant(value: datetime | None) -> str | None:
    return format_instant(value) if value is not None else None


def to_json(value: Any) -> str:
    return _json.encode(value).decode()
