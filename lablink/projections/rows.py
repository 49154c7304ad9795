"""A batch-local cache of projection rows, so a fold touches each row once per batch.

Replaying a million events row by row would cost one SELECT and one write per event; folding
a batch in memory and writing each touched row once is what makes replay fast.
"""

from __future__ import annotations

import functools
import sqlite3
from typing import Any

Row = dict[str, Any]
_MISSING = object()


@functools.cache
def _statements(table: str, key: str, columns: tuple[str, ...]) -> tuple[str, str]:
    """(select one row, upsert one row), built once per table shape: projections make
    several caches per append."""
    select = f"SELECT {', '.join(columns)} FROM {table} WHERE {key} = ?"
    # An upsert, not INSERT OR REPLACE: REPLACE deletes and reinserts the row, touching
    # every index; an update touches only the indexes whose columns changed.
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c != key)
    upsert = (
        f"INSERT INTO {table} ({', '.join(columns)})"
        f" VALUES ({', '.join('?' for _ in columns)})"
        f" ON CONFLICT({key}) DO UPDATE SET {updates}"
    )
    return select, upsert


class RowCache:
    def __init__(self, conn: sqlite3.Connection, table: str, key: str, columns: tuple[str, ...]):
        self.conn = conn
        self.table = table
        self.key = key
        self.columns = columns
        self._rows: dict[Any, Row | None] = {}
        self._dirty: set[Any] = set()
        self._select, self._upsert = _statements(table, key, columns)

    def get(self, key: Any) -> Row | None:
        row = self._rows.get(key, _MISSING)
        if row is _MISSING:
            fetched = self.conn.execute(self._select, (key,)).fetchone()
            row = dict(zip(self.columns, fetched, strict=True)) if fetched else None
            self._rows[key] = row
        return row  # type: ignore[return-value]

    def put(self, row: Row) -> None:
        key = row[self.key]
        self._rows[key] = row
        self._dirty.add(key)

    def delete(self, key: Any) -> None:
        self._rows[key] = None
        self._dirty.add(key)

    def flush(self) -> None:
        upserts = [self._rows[k] for k in self._dirty if self._rows[k] is not None]
        deletes = [(k,) for k in self._dirty if self._rows[k] is None]
        if deletes:
            self.conn.executemany(f"DELETE FROM {self.table} WHERE {self.key} = ?", deletes)
        if upserts:
            self.conn.executemany(
                self._upsert, [tuple(row[c] for c in self.columns) for row in upserts if row]
            )
        self._dirty.clear()
        self._rows.clear()
