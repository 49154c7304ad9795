"""A batch-local cache of projection rows, so a fold touches each row once per batch.

Replaying a million events row by row would cost one SELECT and one write per event; folding
a batch in memory and writing each touched row once is what makes replay fast.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Iterable
from typing import Any

Row = dict[str, Any]
_MISSING = object()
# Keys per ``IN (...)`` query: below SQLite's limit on bound parameters.
_IN_CHUNK = 500


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
        # Rows made in this batch that the table cannot hold yet (``insert``): deleting one
        # before the flush writes nothing at all.
        self._new: set[Any] = set()
        self._select, self._upsert = _statements(table, key, columns)
        self._select_in = self._select.removesuffix("= ?") + "IN "
        self._key_at = columns.index(key)

    def load(self, keys: Iterable[Any]) -> dict[Any, Row | None]:
        """Read the rows of ``keys`` not yet in the cache, a few hundred per query, and return
        the cache itself (a key the table lacks maps to None). A fold that reads and changes
        many rows per event uses this dict directly, marking each change with ``changed``:
        a dict lookup where ``get``/``put`` would be two method calls per row touched."""
        wanted = [k for k in keys if k not in self._rows]
        rows = self._rows
        for start in range(0, len(wanted), _IN_CHUNK):
            chunk = wanted[start : start + _IN_CHUNK]
            rows.update(dict.fromkeys(chunk))
            marks = ", ".join("?" * len(chunk))
            for fetched in self.conn.execute(f"{self._select_in}({marks})", chunk):
                rows[fetched[self._key_at]] = dict(zip(self.columns, fetched, strict=True))
        return rows

    def changed(self, key: Any) -> None:
        """The row of ``key`` in the dict ``load`` returned was changed, made or set to None
        (deleted): the flush writes it."""
        self._dirty.add(key)

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

    def insert(self, row: Row) -> None:
        """``put`` for a row the caller knows is not in the table (a new execution's): one
        that is deleted again within the batch (it ended) costs no write."""
        key = row[self.key]
        self._rows[key] = row
        self._dirty.add(key)
        self._new.add(key)

    def delete(self, key: Any) -> None:
        self._rows[key] = None
        if key in self._new:
            self._new.discard(key)
            self._dirty.discard(key)
        else:
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
        self._new.clear()
        self._rows.clear()
