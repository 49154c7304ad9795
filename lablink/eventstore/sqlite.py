"""The append-only SQLite event log: the only source of truth.

One table, one row per event: global position (rowid), event id, stream id and version
(unique together: the optimistic lock), type, time, actor, correlation id, the payload as
JSON a person can read with the sqlite3 shell, and the event's link in the hash chain
(lablink/eventstore/chain.py), computed in the append's transaction. WAL with
synchronous=FULL: an append that returned is on disk. Triggers refuse UPDATE and DELETE on
the table: the log only grows (retention prunes view rows, never events). They stop a
mistake, not a forger (who can drop them); the chain and the signed checkpoints
(lablink/audit) are what make a forgery detectable.

SQLite's own errors stop here: a full disk, a read-only file or an I/O failure leaves the store
as a named ``StorageError`` (``translated``), with the transaction rolled back, so callers and
the API can tell "the disk is full" from a bug. The store remembers how its last append went
(``write_status``): the event log's health probe reads it.

This module is the only one with SQL on the ``events`` table (``tests/test_table_owners.py``).
Others read the log through ``LogReader`` on a connection of their own (the API's read-only
one, the relay's, a rebuild's), or through the store's read methods, which are the same reads
on the store's connection under its lock.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog

from lablink.clock import Clock, SystemClock
from lablink.errors import (
    DuplicateId,
    LocalCopyGap,
    StorageError,
    StorageFull,
    StorageReadOnly,
    StorageUnavailable,
    StreamVersionConflict,
)
from lablink.events import (
    AMENDING_TYPES,
    NewEvent,
    RecordedEvent,
    decode_event,
    encode_event,
    event_type,
)
from lablink.eventstore.base import (
    ANY,
    AppendOutcome,
    AppendRequest,
    EventQuery,
    StoredRow,
    append_alone,
    format_instant,
    new_event_id,
    parse_instant,
)
from lablink.eventstore.chain import GENESIS, ChainRow, PassedOver, event_hash, row_hash

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    position INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    stream_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    type TEXT NOT NULL,
    occurred_at TEXT NOT NULL,
    actor TEXT NOT NULL,
    correlation_id TEXT,
    payload TEXT NOT NULL,
    hash BLOB,
    UNIQUE (stream_id, version)
);
CREATE INDEX IF NOT EXISTS events_correlation ON events (correlation_id)
    WHERE correlation_id IS NOT NULL;
"""
# The facts that change or delete a record a person made (AMENDING_TYPES), few among many: a
# partial index of them lets the audit trail tell whether a record was amended later without
# walking its stream (a job's stream holds its every execution). The list is part of the
# index's definition, and a query uses the index only when it names the same list, so a new
# list needs a new index name. Made on the first open of an older log (one read of it).
assert all(t.replace(".", "").replace("_", "").isalnum() for t in AMENDING_TYPES)
_AMENDING = ", ".join(f"'{t}'" for t in AMENDING_TYPES)
AMENDMENTS_INDEX = "events_amendments_v2"
SCHEMA += (
    f"CREATE INDEX IF NOT EXISTS {AMENDMENTS_INDEX} ON events (stream_id, position)"
    f" WHERE type IN ({_AMENDING});\n"
)
_AMENDMENTS = (
    "SELECT stream_id, position, json_extract(payload, '$.certificate') FROM events"
    f" WHERE type IN ({_AMENDING}) AND stream_id IN (SELECT value FROM json_each(?))"
    " AND position > ? ORDER BY position"
)

APPEND_ONLY = (
    "CREATE TRIGGER IF NOT EXISTS events_no_update BEFORE UPDATE ON events"
    " BEGIN SELECT RAISE(ABORT, 'the event log is append-only: an event is never updated'); END",
    "CREATE TRIGGER IF NOT EXISTS events_no_delete BEFORE DELETE ON events"
    " BEGIN SELECT RAISE(ABORT, 'the event log is append-only: an event is never deleted'); END",
)
TRIGGERS = ("events_no_update", "events_no_delete")

# A local copy of a record kept elsewhere (cluster mode) holds the record's positions, and the
# record has positions that are no events (the scheduler lease's messages): the copy writes
# each run of them, with the event after it, so that `lablink audit verify` can tell a
# position the record never gave an event from an event removed from the copy. A log that
# has this table is a copy; a single-node log has none, and every gap in it is a break.
COPY_SCHEMA = """
CREATE TABLE IF NOT EXISTS passed_over (
    first INTEGER PRIMARY KEY,
    last INTEGER NOT NULL CHECK (last >= first)
);
CREATE TRIGGER IF NOT EXISTS passed_over_no_update BEFORE UPDATE ON passed_over
    BEGIN SELECT RAISE(ABORT, 'the copy is append-only: a passed-over run is never updated'); END;
CREATE TRIGGER IF NOT EXISTS passed_over_no_delete BEFORE DELETE ON passed_over
    BEGIN SELECT RAISE(ABORT, 'the copy is append-only: a passed-over run is never deleted'); END;
"""
_PASSED_OVER = "INSERT INTO passed_over (first, last) VALUES (?, ?)"

_INSERT = (
    "INSERT INTO events (position, event_id, stream_id, version, type, occurred_at, actor,"
    " correlation_id, payload, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_HEAD = "SELECT position, hash FROM events ORDER BY position DESC LIMIT 1"
BACKFILL_BATCH = 10_000
_STREAM_VERSION = "SELECT COALESCE(MAX(version), 0) FROM events WHERE stream_id = ?"
_STREAM_HEAD = (
    "SELECT version, position FROM events WHERE stream_id = ? ORDER BY version DESC LIMIT 1"
)
_COLUMNS = (
    "position, event_id, stream_id, version, type, occurred_at, actor, correlation_id, payload"
)

# An event as a record kept elsewhere hands it to its local copy (``SQLiteEventStore.copy_in``):
# position, event id, stream id, type, occurred_at (``format_instant`` text), actor,
# correlation id, payload (JSON text). The version is the copy's to number, as an append's.
CopiedRow = tuple[int, str, str, str, str, str, str | None, str]

log = structlog.get_logger(tag="scheduler")

# SQLite's primary result codes (the low byte of an extended code) that say the storage,
# not the statement, failed. Anything else (a constraint, a syntax error) is a bug or a
# conflict and stays what it is.
_STORAGE_ERRORS: dict[int, type[StorageError]] = {
    sqlite3.SQLITE_FULL: StorageFull,
    sqlite3.SQLITE_READONLY: StorageReadOnly,
    sqlite3.SQLITE_PERM: StorageReadOnly,
    sqlite3.SQLITE_IOERR: StorageUnavailable,
    sqlite3.SQLITE_CANTOPEN: StorageUnavailable,
    sqlite3.SQLITE_BUSY: StorageUnavailable,
    sqlite3.SQLITE_LOCKED: StorageUnavailable,
    sqlite3.SQLITE_CORRUPT: StorageUnavailable,
    sqlite3.SQLITE_NOTADB: StorageUnavailable,
}


def storage_error(exc: BaseException, path: str | Path) -> StorageError | None:
    """The named error for a storage failure SQLite reported, or None for any other error."""
    if isinstance(exc, StorageError):
        return exc
    code = getattr(exc, "sqlite_errorcode", None)
    if not isinstance(exc, sqlite3.Error) or code is None:
        return None
    kind = _STORAGE_ERRORS.get(code & 0xFF)
    return kind(str(path), str(exc)) if kind is not None else None


@contextlib.contextmanager
def translated(path: str | Path) -> Iterator[None]:
    """Raise storage failures inside as ``StorageError`` (the sqlite3 error as its cause)."""
    try:
        yield
    except sqlite3.Error as exc:
        error = storage_error(exc, path)
        if error is None:
            raise
        raise error from exc


def connect(path: str | Path) -> sqlite3.Connection:
    """A connection with LabLink's durability settings; transactions are explicit.

    A new database file is created 0600 (and its directory 0700): SQLite gives the -wal and
    -shm files the mode of the database, and the log holds every key hash and result.
    SQLite's errors are raised as they are (callers of a bare connection handle them); a
    directory or file that cannot be created is a ``StorageError``.
    """
    if str(path) != ":memory:":
        file = Path(path)
        try:
            file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            if not file.exists():
                with contextlib.suppress(FileExistsError):
                    os.close(os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except OSError as exc:
            kind: type[StorageError] = StorageUnavailable
            if exc.errno == errno.ENOSPC:
                kind = StorageFull
            elif exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
                kind = StorageReadOnly
            raise kind(str(path), exc.strerror or str(exc)) from exc
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=10000")
        conn.execute("PRAGMA foreign_keys=ON")
    except BaseException:
        conn.close()
        raise
    return conn


def chain_log(conn: sqlite3.Connection) -> None:
    """Make a log made before the hash chain a chained, append-only one: add the column,
    hash the events that have no hash, in position order (one transaction), then add the
    triggers. A log that has its triggers is done; a new one only gets its triggers. A hash
    already stored is kept as it is (a check, not a repair: `lablink audit verify` judges)."""
    names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='trigger'")}
    if all(name in names for name in TRIGGERS):
        return
    columns = {row[1] for row in conn.execute("PRAGMA table_info(events)")}
    conn.execute("BEGIN IMMEDIATE")
    try:
        if "hash" not in columns:
            conn.execute("ALTER TABLE events ADD COLUMN hash BLOB")
        reader = LogReader(conn)
        previous, position, filled = GENESIS, 0, 0
        while rows := reader.read_chain(position, BACKFILL_BATCH):
            for row in rows:
                if row[9] is None:
                    previous = row_hash(previous, row)
                    conn.execute(
                        "UPDATE events SET hash = ? WHERE position = ?", (previous, row[0])
                    )
                    filled += 1
                else:
                    previous = row[9]
            position = rows[-1][0]
        if filled:
            log.info("event log chained", events=filled)
        for statement in APPEND_ONLY:
            conn.execute(statement)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


@dataclass
class WriteStatus:
    """How the store's appends have gone, for the event log's health probe."""

    # The last append's storage failure; None once an append succeeds again.
    error: StorageError | None = None
    failed_since: datetime | None = None
    consecutive_failures: int = 0
    last_ok_at: datetime | None = None


def event_of(row: StoredRow) -> RecordedEvent:
    """The recorded event a stored row holds (its payload decoded)."""
    position, event_id, stream_id, version, _, occurred_at, actor, correlation_id, payload = row
    return RecordedEvent(
        position=position,
        event_id=event_id,
        stream_id=stream_id,
        version=version,
        occurred_at=parse_instant(occurred_at),
        actor=actor,
        correlation_id=correlation_id,
        event=decode_event(payload),
    )


def _type_clause(types: Sequence[str]) -> tuple[str, list[str]]:
    """``EventQuery.types``: a full type (``job.paused``) or a family prefix (``job.``)."""
    parts: list[str] = []
    args: list[str] = []
    for value in types:
        if value.endswith("."):
            # GLOB is case-sensitive like '='; the API lets through only prefixes of known
            # types, which hold no GLOB wildcard.
            parts.append("type GLOB ?")
            args.append(value + "*")
        else:
            parts.append("type = ?")
            args.append(value)
    return "(" + " OR ".join(parts) + ")", args


class LogReader:
    """The log's reads over any connection to it: the store's own, or a reader's (the API's
    read-only connection, the relay's, a rebuild's). In WAL mode a reader never waits for
    the writer. SQLite's errors are raised as they are; the store translates its own."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def read_stream(self, stream_id: str, after_version: int = 0) -> list[RecordedEvent]:
        rows = self.conn.execute(
            f"SELECT {_COLUMNS} FROM events WHERE stream_id = ? AND version > ? ORDER BY version",
            (stream_id, after_version),
        ).fetchall()
        return [event_of(row) for row in rows]

    def read_all(
        self, after_position: int = 0, until: datetime | None = None, batch_size: int = 1000
    ) -> Iterator[RecordedEvent]:
        return read_in_pages(self.read_rows, after_position, until, batch_size)

    def extent(self) -> tuple[int, int]:
        """How many events the log holds and its highest position."""
        count, highest = self.conn.execute(
            "SELECT COUNT(*), COALESCE(MAX(position), 0) FROM events"
        ).fetchone()
        return int(count), int(highest)

    def first_gap(self, highest: int) -> tuple[int, int] | None:
        """The first position missing below ``highest`` and the next position present, or
        None when the positions are 1..highest."""
        (missing,) = self.conn.execute(
            "SELECT MIN(p) FROM (SELECT 1 AS p WHERE NOT EXISTS"
            " (SELECT 1 FROM events WHERE position = 1)"
            " UNION ALL SELECT e.position + 1 FROM events AS e WHERE e.position < ?"
            " AND NOT EXISTS (SELECT 1 FROM events WHERE position = e.position + 1))",
            (highest,),
        ).fetchone()
        if missing is None:
            return None
        (after,) = self.conn.execute(
            "SELECT MIN(position) FROM events WHERE position > ?", (missing,)
        ).fetchone()
        return int(missing), int(after)

    def types_between(self, after_position: int, up_to: int) -> set[str]:
        """The event types recorded in (after_position, up_to]: what changed, not how (the
        dashboard's live stream). One range read of the primary key."""
        rows = self.conn.execute(
            "SELECT DISTINCT type FROM events WHERE position > ? AND position <= ?",
            (after_position, up_to),
        )
        return {row[0] for row in rows}

    def read_events(self, after_position: int, limit: int) -> list[RecordedEvent]:
        """Up to ``limit`` events past ``after_position``, in position order."""
        return [event_of(row) for row in self.read_rows(after_position, limit)]

    def read_rows(
        self,
        after_position: int,
        limit: int,
        *,
        up_to: int | None = None,
        until: datetime | None = None,
    ) -> list[StoredRow]:
        sql = f"SELECT {_COLUMNS} FROM events WHERE position > ?"
        args: list[Any] = [after_position]
        if up_to is not None:
            sql += " AND position <= ?"
            args.append(up_to)
        if until is not None:
            sql += " AND occurred_at <= ?"
            args.append(format_instant(until))
        rows: list[StoredRow] = self.conn.execute(
            sql + " ORDER BY position LIMIT ?", (*args, limit)
        ).fetchall()
        return rows

    def find(self, query: EventQuery) -> list[StoredRow]:
        """Index use: a ``stream_id`` filter walks the stream's index (``UNIQUE (stream_id,
        version)``) in version order; without one, the log is walked by its primary key from
        ``after_position`` on, stopping as soon as ``limit`` rows are found (there is no index
        on actor, type or time: a rare one costs a scan of the log, without decoding)."""
        where: list[str] = []
        args: list[Any] = []
        if query.stream_id is not None:
            where.append("stream_id = ?")
            args.append(query.stream_id)
        if query.actor is not None:
            where.append("actor = ?")
            args.append(query.actor)
        if query.types:
            clause, type_args = _type_clause(query.types)
            where.append(clause)
            args += type_args
        if query.since is not None:
            where.append("occurred_at >= ?")
            args.append(format_instant(query.since))
        if query.until is not None:
            where.append("occurred_at <= ?")
            args.append(format_instant(query.until))
        if query.after_position is not None:
            where.append("position > ?")
            args.append(query.after_position)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        # Within one stream, version order is position order: ordering by it walks the
        # stream's index as it is, where ordering by position would sort the whole stream.
        order = "version" if query.stream_id is not None else "position"
        rows: list[StoredRow] = self.conn.execute(
            f"SELECT {_COLUMNS} FROM events{clause} ORDER BY {order} LIMIT ?",
            [*args, query.limit],
        ).fetchall()
        return rows

    def amendments(
        self, stream_ids: Sequence[str], after_position: int
    ) -> list[tuple[str, int, str | None]]:
        """(stream id, position) of each fact that changed or deleted a record (an update, a
        pause, a deletion, a revocation: ``AMENDING_TYPES``) in these streams past
        ``after_position``, in log order, with the certificate it concerns (None but for a
        calibration record's): a few seeks of their partial index."""
        if not stream_ids:
            return []
        rows = self.conn.execute(
            _AMENDMENTS, (json.dumps(list(stream_ids)), after_position)
        ).fetchall()
        return [
            (str(stream_id), int(position), None if key is None else str(key))
            for stream_id, position, key in rows
        ]

    def stream_version(self, stream_id: str) -> int:
        (version,) = self.conn.execute(_STREAM_VERSION, (stream_id,)).fetchone()
        return int(version)

    def last_position(self) -> int:
        (position,) = self.conn.execute("SELECT COALESCE(MAX(position), 0) FROM events").fetchone()
        return int(position)

    def stream_head(self, stream_id: str) -> tuple[int, int]:
        """A stream's version and the position of its last event ((0, 0) for a new one)."""
        row = self.conn.execute(_STREAM_HEAD, (stream_id,)).fetchone()
        return (0, 0) if row is None else (int(row[0]), int(row[1]))

    def event_ids_present(self, event_ids: Sequence[str]) -> list[str]:
        """Which of ``event_ids`` the log holds already (a seek of the unique index each)."""
        if not event_ids:
            return []
        rows = self.conn.execute(
            "SELECT event_id FROM events WHERE event_id IN (SELECT value FROM json_each(?))",
            (json.dumps(list(event_ids)),),
        ).fetchall()
        return [str(row[0]) for row in rows]

    def head(self) -> tuple[int, bytes]:
        """The last position and its hash (0 and the chain's genesis for an empty log)."""
        row = self.conn.execute(_HEAD).fetchone()
        if row is None:
            return 0, GENESIS
        return int(row[0]), bytes(row[1]) if row[1] is not None else GENESIS

    def payloads_of_type(self, event_type: str) -> list[tuple[int, str]]:
        """Every event of one type as (position, stored payload), undecoded: an auditor's
        reads must not trust the decoder with what may be a forgery."""
        rows = self.conn.execute(
            "SELECT position, payload FROM events WHERE type = ? ORDER BY position",
            (event_type,),
        ).fetchall()
        return [(int(position), str(payload)) for position, payload in rows]

    def read_chain(self, after_position: int, limit: int) -> list[ChainRow]:
        """Rows with their hashes, in position order: what the chain's check walks."""
        rows: list[ChainRow] = self.conn.execute(
            f"SELECT {_COLUMNS}, hash FROM events WHERE position > ? ORDER BY position LIMIT ?",
            (after_position, limit),
        ).fetchall()
        return rows

    def is_copy(self) -> bool:
        """Whether this log is a local copy of a record kept elsewhere (``COPY_SCHEMA``)."""
        found = self.conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'passed_over'"
        ).fetchone()
        return found is not None

    def passed_over(self, after_position: int, limit: int) -> list[PassedOver]:
        """A copy's runs of positions that were no events of the record (first, last), those
        starting past ``after_position``, in order; none for a log that is not a copy."""
        if not self.is_copy():
            return []
        rows = self.conn.execute(
            "SELECT first, last FROM passed_over WHERE first > ? ORDER BY first LIMIT ?",
            (after_position, limit),
        ).fetchall()
        return [(int(first), int(last)) for first, last in rows]


def read_in_pages(
    read_rows: Callable[..., list[StoredRow]],
    after_position: int,
    until: datetime | None,
    batch_size: int,
) -> Iterator[RecordedEvent]:
    """``read_all`` over a ``read_rows``: a page at a time, decoded as it is consumed."""
    position = after_position
    while rows := read_rows(position, batch_size, until=until):
        for row in rows:
            yield event_of(row)
        position = rows[-1][0]


def _insert(
    conn: sqlite3.Connection, previous: bytes, row: StoredRow, payload: str | bytes
) -> bytes:
    """Store ``row`` with its link in the chain after ``previous``; that link. ``payload`` is
    the row's payload, as UTF-8 bytes where the caller has them already (an append)."""
    link = event_hash(previous, *row[:8], payload)
    try:
        conn.execute(_INSERT, (*row, link))
    except sqlite3.IntegrityError as exc:
        # (stream_id, version) and the position cannot clash under the write lock (an append
        # numbers them from the head, a copy skips what it holds); the event id can.
        raise DuplicateId(row[1]) from exc
    return link


class SQLiteEventStore:
    def __init__(
        self,
        path: str | Path,
        *,
        connection: sqlite3.Connection | None = None,
        clock: Clock | None = None,
        as_copy: bool = False,
    ) -> None:
        """``as_copy``: this log is the local copy of a record kept elsewhere (``copy_in``
        with gaps), and keeps the record's positions that were no events (``COPY_SCHEMA``)."""
        self.path = Path(path)
        with translated(self.path):
            self.conn = connection if connection is not None else connect(path)
            self.conn.executescript(SCHEMA + (COPY_SCHEMA if as_copy else ""))
            chain_log(self.conn)
        self._reader = LogReader(self.conn)
        self._lock = threading.RLock()
        self._after_commit: list[Callable[[list[RecordedEvent]], None]] = []
        self.clock: Clock = clock or SystemClock()
        self.write_status = WriteStatus()

    def subscribe(self, listener: Callable[[list[RecordedEvent]], None]) -> Callable[[], None]:
        """Call ``listener`` with the events of every commit, after it (in the committing
        thread, outside the store's lock). Nothing but the events is written in an append's
        transaction: the views and the relay follow the log through listeners."""
        self._after_commit.append(listener)
        return lambda: self._after_commit.remove(listener)

    @property
    def lock(self) -> threading.RLock:
        """Serialises use of the shared connection (the API reads through it too)."""
        return self._lock

    # -- writing ---------------------------------------------------------------------------

    def append(
        self, stream_id: str, expected_version: int, events: Sequence[NewEvent]
    ) -> list[RecordedEvent]:
        request = AppendRequest(
            stream_id=stream_id, expected_version=expected_version, events=events
        )
        return append_alone(self, request)

    def append_batch(self, requests: Sequence[AppendRequest]) -> list[AppendOutcome]:
        outcomes: list[AppendOutcome] = []

        def write(conn: sqlite3.Connection) -> list[RecordedEvent]:
            committed: list[RecordedEvent] = []
            head = self._reader.head()
            for request in requests:
                outcome, head = self._append_one(conn, request, head)
                outcomes.append(outcome)
                if not isinstance(outcome, StreamVersionConflict):
                    committed.extend(outcome)
            return committed

        self._transaction(write)
        return outcomes

    def _transaction(
        self, write: Callable[[sqlite3.Connection], list[RecordedEvent]]
    ) -> list[RecordedEvent]:
        """``write`` in one immediate transaction, rolled back whole if it raises; the store's
        health told how it went, and the listeners told what was committed after the commit."""
        with self._lock:
            conn = self.conn
            try:
                with translated(self.path):
                    conn.execute("BEGIN IMMEDIATE")
                    try:
                        committed = write(conn)
                        conn.execute("COMMIT")
                    except BaseException:
                        self._roll_back(conn)
                        raise
            except StorageError as exc:
                self._write_failed(exc)
                raise
            self._write_succeeded()
        if committed:
            for listener in list(self._after_commit):
                listener(committed)
        return committed

    def _roll_back(self, conn: sqlite3.Connection) -> None:
        # SQLite may already have rolled the transaction back by itself (a full disk does),
        # and a ROLLBACK then fails with "no transaction is active", hiding the real error.
        if not conn.in_transaction:
            return
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error as exc:  # the error being raised matters more
            log.error("rollback failed", db=str(self.path), error=str(exc))

    def _write_failed(self, exc: StorageError) -> None:
        status = self.write_status
        if status.error is None:
            status.failed_since = self.clock.now()
            log.error("event log write failed", db=str(self.path), error=str(exc))
        status.error = exc
        status.consecutive_failures += 1

    def _write_succeeded(self) -> None:
        status = self.write_status
        now = self.clock.now()
        if status.error is not None:
            log.info(
                "event log writable again",
                db=str(self.path),
                failures=status.consecutive_failures,
                since=status.failed_since.isoformat() if status.failed_since else None,
            )
        status.error = None
        status.failed_since = None
        status.consecutive_failures = 0
        status.last_ok_at = now

    def _append_one(
        self, conn: sqlite3.Connection, request: AppendRequest, head: tuple[int, bytes]
    ) -> tuple[AppendOutcome, tuple[int, bytes]]:
        """Append one request's events after ``head`` (the last position and its hash);
        returns the outcome and the new head."""
        (current,) = conn.execute(_STREAM_VERSION, (request.stream_id,)).fetchone()
        if request.expected_version != ANY and request.expected_version != current:
            conflict = StreamVersionConflict(request.stream_id, request.expected_version, current)
            return conflict, head
        recorded: list[RecordedEvent] = []
        version = current
        position, previous = head
        for new in request.events:
            version += 1
            position += 1
            event_id = new.event_id or new_event_id()
            occurred_text = format_instant(new.occurred_at)
            encoded = encode_event(new.event)
            row = (
                position,
                event_id,
                request.stream_id,
                version,
                event_type(new.event),
                occurred_text,
                new.actor,
                new.correlation_id,
                encoded.decode(),
            )
            previous = _insert(conn, previous, row, encoded)
            recorded.append(
                RecordedEvent(
                    position=position,
                    event_id=event_id,
                    stream_id=request.stream_id,
                    version=version,
                    occurred_at=parse_instant(occurred_text),
                    actor=new.actor,
                    correlation_id=new.correlation_id,
                    event=new.event,
                )
            )
        return recorded, (position, previous)

    # -- reading: the log's reads (LogReader) on the store's connection, under its lock ------

    def read_stream(self, stream_id: str, after_version: int = 0) -> list[RecordedEvent]:
        with self._lock, translated(self.path):
            return self._reader.read_stream(stream_id, after_version)

    def read_all(
        self, after_position: int = 0, until: datetime | None = None, batch_size: int = 1000
    ) -> Iterator[RecordedEvent]:
        return read_in_pages(self.read_rows, after_position, until, batch_size)

    def read_rows(
        self,
        after_position: int,
        limit: int,
        *,
        up_to: int | None = None,
        until: datetime | None = None,
    ) -> list[StoredRow]:
        with self._lock, translated(self.path):
            return self._reader.read_rows(after_position, limit, up_to=up_to, until=until)

    def find(self, query: EventQuery) -> list[StoredRow]:
        with self._lock, translated(self.path):
            return self._reader.find(query)

    def stream_version(self, stream_id: str) -> int:
        with self._lock, translated(self.path):
            return self._reader.stream_version(stream_id)

    def last_position(self) -> int:
        with self._lock, translated(self.path):
            return self._reader.last_position()

    def head(self) -> tuple[int, bytes]:
        with self._lock, translated(self.path):
            return self._reader.head()

    def stream_head(self, stream_id: str) -> tuple[int, int]:
        with self._lock, translated(self.path):
            return self._reader.stream_head(stream_id)

    def event_ids_present(self, event_ids: Sequence[str]) -> list[str]:
        with self._lock, translated(self.path):
            return self._reader.event_ids_present(event_ids)

    # -- copying: the log as a local copy of a record kept elsewhere (JetStream) ------------

    def copy_in(self, rows: Sequence[CopiedRow], *, gaps: bool = False) -> list[RecordedEvent]:
        """Append events whose positions the record assigned (``lablink.eventstore.jetstream``
        keeps its local copy so), in one transaction: the same columns, versions and chain as
        an append's, so every reader of the log reads the copy unchanged. A row at or below
        the head is here already and is skipped (a redelivery); one past the head's next
        position is a gap (``LocalCopyGap``), and nothing of the call is written, unless
        ``gaps`` (the JetStream record, whose lease messages hold positions but are no
        events): a store opened ``as_copy`` then writes each skipped run of positions in
        ``passed_over``, with the event after it. The listeners are called after the
        commit, as after an append."""
        return self._transaction(lambda conn: self._copy_rows(conn, rows, gaps))

    def _copy_rows(
        self, conn: sqlite3.Connection, rows: Sequence[CopiedRow], gaps: bool
    ) -> list[RecordedEvent]:
        position, previous = self._reader.head()
        versions: dict[str, int] = {}
        recorded: list[RecordedEvent] = []
        for at, event_id, stream_id, type_, occurred_text, actor, correlation_id, payload in rows:
            if at <= position:
                continue
            if at != position + 1:
                if not gaps:
                    raise LocalCopyGap(str(self.path), position + 1, at)
                # Written with the event after the run, in its transaction: a run with no
                # event after it is never written, so one at a copy's end means that event
                # was removed (lablink/audit/verify.py).
                conn.execute(_PASSED_OVER, (position + 1, at - 1))
            version = versions.get(stream_id)
            if version is None:
                (version,) = conn.execute(_STREAM_VERSION, (stream_id,)).fetchone()
            version += 1
            versions[stream_id] = version
            row = (at, event_id, stream_id, version, type_, occurred_text, actor, correlation_id)
            stored = (*row, payload)
            previous = _insert(conn, previous, stored, payload)
            position = at
            recorded.append(event_of(stored))
        return recorded

    def close(self) -> None:
        with self._lock:
            self.conn.close()
