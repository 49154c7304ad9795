"""Two copies of the views compared table by table, row by row, in key order: what
`lablink verify` holds the live views to (a replay of the same log must give the same rows).

Both sides are read in primary-key order and walked together, a row at a time: a view of
a million rows is compared without holding either side in memory. The first row that differs
is reported by its table and key.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from lablink.projections.runner import Projector

Row = tuple[Any, ...]


@dataclass(frozen=True)
class Difference:
    table: str
    key: dict[str, Any] | None  # None: the table as a whole (its columns)
    detail: str

    @property
    def where(self) -> str:
        if self.key is None:
            return f"view {self.table}"
        key = ", ".join(f"{name}={value!r}" for name, value in self.key.items())
        return f"view {self.table} ({key})"

    def __str__(self) -> str:
        return f"{self.where}: {self.detail}"


def view_tables(projector: Projector) -> list[str]:
    """Every table the projector's folds write (not its checkpoints)."""
    return [table for projection in projector.projections for table in projection.tables]


def first_difference(
    expected: sqlite3.Connection, actual: sqlite3.Connection, tables: Sequence[str]
) -> Difference | None:
    """The first row of ``tables`` where ``actual`` differs from ``expected`` (None: none)."""
    for table in tables:
        difference = _table_difference(expected, actual, table)
        if difference is not None:
            return difference
    return None


def count_rows(conn: sqlite3.Connection, tables: Sequence[str]) -> int:
    return sum(conn.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone()[0] for table in tables)


def _columns(conn: sqlite3.Connection, table: str) -> list[tuple[str, int]]:
    return [(str(name), int(pk)) for name, pk in conn.execute(_TABLE_INFO, (table,))]


_TABLE_INFO = "SELECT name, pk FROM pragma_table_info(?) ORDER BY cid"


def _table_difference(
    expected: sqlite3.Connection, actual: sqlite3.Connection, table: str
) -> Difference | None:
    columns = _columns(expected, table)
    found = _columns(actual, table)
    if not found:
        return Difference(table, None, "missing from the live views")
    if found != columns:
        names = [name for name, _ in found]
        wanted = [name for name, _ in columns]
        return Difference(table, None, f"columns {names}, a replay has {wanted}")
    names = [name for name, _ in columns]
    keyed = sorted((pk, name) for name, pk in columns if pk)
    # A table without a primary key is ordered (and its rows told apart) by every column.
    key_names = [name for _, name in keyed] or names
    at = [names.index(name) for name in key_names]
    order = ", ".join(f'"{name}"' for name in key_names)
    select = f'SELECT * FROM "{table}" ORDER BY {order}'
    left, right = _rows(expected, select), _rows(actual, select)
    want, have = next(left, None), next(right, None)
    while want is not None or have is not None:
        if have is None or (want is not None and _sort_key(want, at) < _sort_key(have, at)):
            assert want is not None
            return Difference(table, _key(want, at, key_names), "in a replay, not in the views")
        if want is None or _sort_key(have, at) < _sort_key(want, at):
            return Difference(table, _key(have, at, key_names), "in the views, not in a replay")
        if want != have:
            for index, name in enumerate(names):
                if want[index] != have[index]:
                    detail = f"{name} is {have[index]!r}, a replay gives {want[index]!r}"
                    return Difference(table, _key(want, at, key_names), detail)
        want, have = next(left, None), next(right, None)
    return None


def _rows(conn: sqlite3.Connection, select: str) -> Iterator[Row]:
    cursor = conn.execute(select)
    while batch := cursor.fetchmany(1000):
        yield from batch


def _key(row: Row, at: list[int], names: list[str]) -> dict[str, Any]:
    return {name: row[index] for name, index in zip(names, at, strict=True)}


def _sort_key(row: Row, at: list[int]) -> tuple[tuple[int, Any], ...]:
    """A row's key as SQLite orders it: NULL, then numbers, then text, then blobs (text by
    code point, which is UTF-8's byte order: SQLite's BINARY collation)."""
    return tuple(_rank(row[index]) for index in at)


def _rank(value: Any) -> tuple[int, Any]:
    if value is None:
        return (0, 0)
    if isinstance(value, int | float):
        return (1, value)
    if isinstance(value, str):
        return (2, value)
    return (3, bytes(value))
