"""Rebuilding from position 0 in bulk: fold the whole log in memory, write each row once.

The live path folds a handful of events into rows it reads back from SQLite; a rebuild starts
from empty tables, so a projection that offers ``bulk()`` keeps every row in memory instead,
in plain lists, and hands them over at the end to be inserted once, with the tables' indexes
built after the rows rather than kept up to date row by row. A projection without ``bulk()``
is folded the generic way, batch by batch, through its ``apply``. The replay property tests
hold both to the same rows as the live fold.

The folds are pure (no connection), so one of them may run in another process reading the
same log: the rebuild then uses both cores.
"""

from __future__ import annotations

import gc
import pickle
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import IO, Any, Protocol, runtime_checkable

import msgspec

from lablink.events import AnyEvent, RecordedEvent, decode_event
from lablink.eventstore.base import StoredRow, format_instant, parse_instant
from lablink.eventstore.sqlite import LogReader

# (position, version, occurred_at as stored, actor, event): what the bulk folds read of each
# logged event. A tuple, not a RecordedEvent: building a million of those, and parsing their
# occurred_at, costs as much as a fold, and only job definitions and keys need the time.
Logged = tuple[int, int, str, str, AnyEvent]
# Table -> (its columns, its rows in that column order).
Rows = dict[str, tuple[tuple[str, ...], list[Sequence[Any]]]]

READ_CHUNK = 20_000
_encode = msgspec.json.Encoder().encode
_Z = ord("Z")


class BulkFold(Protocol):
    def fold(self, events: Sequence[Logged]) -> None:
        """Fold the next events, in position order, into the rows held in memory."""
        ...

    def rows(self) -> Rows:
        """Every row of every table, as the live fold would have left them."""
        ...


@runtime_checkable
class BulkProjection(Protocol):
    """A projection with a fast path for rebuilds (the generic fold is the fallback)."""

    name: str
    tables: tuple[str, ...]

    def bulk(self) -> BulkFold: ...


def fast_instant(value: datetime) -> str:
    """``format_instant``, six times faster for the instants the log decodes to.

    msgspec writes an instant at UTC offset zero with a fraction as exactly the fixed-width
    text ``format_instant`` makes (``"2026-03-02T08:05:40.423000Z"``, 29 bytes quoted);
    anything else (no fraction, another offset) takes the slow road.
    """
    text = _encode(value)
    if len(text) == 29 and text[27] == _Z:
        return text[1:28].decode()
    return format_instant(value)


def occurred_instant(text: str) -> str:
    """What ``instant(recorded.occurred_at)`` gives for the stored text."""
    return format_instant(parse_instant(text))


@contextmanager
def collector_paused() -> Iterator[None]:
    """A bulk fold allocates millions of objects that live until the end; the cyclic
    collector would walk all of them again and again (about a third of the decode time)
    while finding nothing to free, since the folds make no cycles."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def read_chunk(log: LogReader, after: int, bound: int, until: datetime | None) -> list[StoredRow]:
    """The next rows of the log past position ``after``, up to position ``bound`` and, if
    ``until`` is given, with occurred_at <= ``until`` (as ``read_all`` filters them)."""
    return log.read_rows(after, READ_CHUNK, up_to=bound, until=until)


def read_chunks(log: LogReader, bound: int, until: datetime | None) -> Iterator[list[StoredRow]]:
    after = 0
    while rows := read_chunk(log, after, bound, until):
        yield rows
        after = rows[-1][0]


def logged(rows: Sequence[StoredRow]) -> list[Logged]:
    return [(r[0], r[3], r[5], r[6], decode_event(r[8])) for r in rows]


def recorded(rows: Sequence[StoredRow], events: Sequence[Logged]) -> list[RecordedEvent]:
    """The same events as ``read_all`` gives them, for projections without a fast path."""
    return [
        RecordedEvent(
            position=r[0],
            event_id=r[1],
            stream_id=r[2],
            version=r[3],
            occurred_at=parse_instant(r[5]),
            actor=r[6],
            correlation_id=r[7],
            event=e[4],
        )
        for r, e in zip(rows, events, strict=True)
    ]


def write_rows(conn: sqlite3.Connection, rows: Rows) -> None:
    """Insert every row into the (empty) tables, inside the caller's transaction.

    The tables' own indexes are dropped first and made again from their stored SQL: building
    an index over sorted keys once is much cheaper than updating it row by row.
    """
    for table, (columns, values) in rows.items():
        indexes = conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ?"
            " AND sql IS NOT NULL",
            (table,),
        ).fetchall()
        for name, _ in indexes:
            conn.execute(f'DROP INDEX "{name}"')
        conn.executemany(
            f"INSERT INTO {table} ({', '.join(columns)})"
            f" VALUES ({', '.join('?' for _ in columns)})",
            values,
        )
        for _, sql in indexes:
            conn.execute(sql)


def fold_log(
    path: str, bound: int, until: datetime | None, projections: Sequence[BulkProjection]
) -> Rows:
    """Fold the log at ``path`` into the given projections' rows, on a connection of its own."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA query_only = 1")
        folds = [p.bulk() for p in projections]
        with collector_paused():
            for rows in read_chunks(LogReader(conn), bound, until):
                events = logged(rows)
                for fold in folds:
                    fold.fold(events)
            result: Rows = {}
            for fold in folds:
                result.update(fold.rows())
            return result
    finally:
        conn.close()


class Elsewhere:
    """Bulk folds running in another Python process over the same log file.

    A plain child interpreter (``python -m lablink.projections.bulk``), not multiprocessing:
    fork would copy this process's SQLite connections and threads (the CLI's progress bar, a
    server), and spawn re-imports the caller's ``__main__``. Arguments and rows travel
    pickled over its stdin and stdout.
    """

    def __init__(
        self,
        path: str,
        bound: int,
        until: datetime | None,
        projections: Sequence[BulkProjection],
    ) -> None:
        # Errors go to a file: a pipe would need reading alongside stdout.
        self._errors = tempfile.TemporaryFile()  # noqa: SIM115 (closed in rows or cancel)
        self._process = subprocess.Popen(
            [sys.executable, "-m", __name__],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._errors,
        )
        stdin, stdout = self._process.stdin, self._process.stdout
        assert stdin is not None
        assert stdout is not None
        self._stdout: IO[bytes] = stdout
        # A few hundred bytes: the pipe takes them without waiting for the child to read.
        stdin.write(pickle.dumps((path, bound, until, list(projections))))
        stdin.close()

    def rows(self) -> Rows:
        with self._stdout, self._errors:
            out = self._stdout.read()
            code = self._process.wait()
            if code != 0:
                self._errors.seek(0)
                raise RuntimeError(
                    f"the rebuild process failed (exit code {code}):\n"
                    + self._errors.read().decode(errors="replace")
                )
        rows: Rows = pickle.loads(out)
        return rows

    def cancel(self) -> None:
        self._process.kill()
        self._process.wait()
        self._stdout.close()
        self._errors.close()


def main() -> None:
    """The other process's side of ``Elsewhere``."""
    path, bound, until, projections = pickle.load(sys.stdin.buffer)
    rows = fold_log(path, bound, until, projections)
    sys.stdout.buffer.write(pickle.dumps(rows, protocol=pickle.HIGHEST_PROTOCOL))
    sys.stdout.buffer.flush()


if __name__ == "__main__":
    main()
