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
_encode = _json.encode
_Z = ord("Z")


class Projection(Protocol):
    name: str
    tables: tuple[str, ...]

    def create(self, db: sqlite_utils.Database) -> None:
        """Create its tables and indexes if missing."""
        ...

    def apply(self, conn: sqlite3.Connection, events: Sequence[RecordedEvent]) -> None:
        """Fold ``events`` (in position order) into its tables, inside the caller's transaction.

        The one fold of the projection: the live projector calls it with each batch that
        arrived, a rebuild with large batches from position 0.
        """
        ...

    def forget(self) -> None:
        """Drop whatever it keeps in memory between batches: the batch it last folded was
        rolled back, or its tables were dropped. The next ``apply`` reads from its tables."""
        ...


def fast_instant(value: datetime) -> str:
    """``format_instant``, several times faster for the instants the log decodes to.

    msgspec writes an instant at UTC offset zero with a fraction as exactly the fixed-width
    text ``format_instant`` makes (``"2026-03-02T08:05:40.423000Z"``, 29 bytes quoted);
    anything else (no fraction, another offset) takes the slow road. Folds format a few
    instants per event, a rebuild millions of them.
    """
    text = _encode(value)
    if len(text) == 29 and text[27] == _Z:
        return text[1:28].decode()
    return format_instant(value)


def instant(value: datetime | None) -> str | None:
    return fast_instant(value) if value is not None else None


def to_json(value: Any) -> str:
    return _json.encode(value).decode()


# -- for the projections' query functions ---------------------------------------------------


def as_dicts(cursor: sqlite3.Cursor) -> list[dict[str, Any]]:
    """The cursor's rows as dicts, by column name."""
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


class Where:
    """A WHERE clause built from the filters a caller gave (None or empty: no filter)."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.args: list[Any] = []

    def add(self, sql: str, *args: Any) -> Where:
        self.parts.append(sql)
        self.args += args
        return self

    def equals(self, column: str, value: Any) -> Where:
        return self.add(f"{column} = ?", value) if value is not None else self

    def one_of(self, column: str, values: Sequence[Any]) -> Where:
        if values:
            self.add(f"{column} IN ({', '.join('?' for _ in values)})", *values)
        return self

    def __str__(self) -> str:
        return f" WHERE {' AND '.join(self.parts)}" if self.parts else ""
