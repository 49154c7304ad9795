"""The append-only SQLite event log: the only source of truth.

One table, one row per event: global position (rowid), event id, stream id and version
(unique together: the optimistic lock), type, time, actor, correlation id and the payload as
JSON a person can read with the sqlite3 shell. WAL with synchronous=FULL: an append that
returned is on disk.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path

from lablink.errors import DuplicateId, StreamVersionConflict
from lablink.events import NewEvent, RecordedEvent, decode_event, encode_event, event_type
from lablink.eventstore.base import (
    ANY,
    AppendOutcome,
    AppendRequest,
    format_instant,
    new_event_id,
    parse_instant,
)

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
    UNIQUE (stream_id, version)
);
CREATE INDEX IF NOT EXISTS events_correlation ON events (correlation_id)
    WHERE correlation_id IS NOT NULL;
"""

_INSERT = (
    "INSERT INTO events (event_id, stream_id, version, type, occurred_at, actor,"
    " correlation_id, payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_COLUMNS = "position, event_id, stream_id, version, occurred_at, actor, correlation_id, payload"

# Called inside the append's transaction with the connection and the new events, so that
# projections commit (or roll back) together with the events they fold.
InTransactionHook = Callable[[sqlite3.Connection, list[RecordedEvent]], None]


def connect(path: str | Path) -> sqlite3.Connection:
    """A connection with LabLink's durability settings; transactions are explicit."""
    if str(path) != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA busy_timeout=10000")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


def _row_to_event(row: tuple[int, str, str, int, str, str, str | None, str]) -> RecordedEvent:
    position, event_id, stream_id, version, occurred_at, actor, correlation_id, payload = row
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


def read_events(conn: sqlite3.Connection, after_position: int, limit: int) -> list[RecordedEvent]:
    """Up to ``limit`` events past ``after_position``, in position order, from any
    connection to the log (readers in WAL mode never wait for the writer)."""
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM events WHERE position > ? ORDER BY position LIMIT ?",
        (after_position, limit),
    ).fetchall()
    return [_row_to_event(row) for row in rows]


class SQLiteEventStore:
    def __init__(
        self,
        path: str | Path,
        *,
        in_transaction: InTransactionHook | None = None,
        connection: sqlite3.Connection | None = None,
    ) -> None:
        self.path = Path(path)
        self.conn = connection if connection is not None else connect(path)
        self.conn.executescript(SCHEMA)
        self._lock = threading.RLock()
        self._in_transaction = in_transaction
        self._after_commit: list[Callable[[list[RecordedEvent]], None]] = []

    def set_in_transaction_hook(self, hook: InTransactionHook | None) -> None:
        self._in_transaction = hook

    def subscribe(self, listener: Callable[[list[RecordedEvent]], None]) -> Callable[[], None]:
        """Call ``listener`` with the events of every commit, after it (in the committing
        thread). For waking readers such as the NATS relay; never for writing."""
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
        outcome = self.append_batch(
            [AppendRequest(stream_id=stream_id, expected_version=expected_version, events=events)]
        )[0]
        if isinstance(outcome, StreamVersionConflict):
            raise outcome
        return outcome

    def append_batch(self, requests: Sequence[AppendRequest]) -> list[AppendOutcome]:
        outcomes: list[AppendOutcome] = []
        with self._lock:
            conn = self.conn
            conn.execute("BEGIN IMMEDIATE")
            committed: list[RecordedEvent] = []
            try:
                for request in requests:
                    outcome = self._append_one(conn, request)
                    outcomes.append(outcome)
                    if not isinstance(outcome, StreamVersionConflict):
                        committed.extend(outcome)
                if committed and self._in_transaction is not None:
                    self._in_transaction(conn, committed)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        if committed:
            for listener in list(self._after_commit):
                listener(committed)
        return outcomes

    def _append_one(self, conn: sqlite3.Connection, request: AppendRequest) -> AppendOutcome:
        (current,) = conn.execute(
            "SELECT COALESCE(MAX(version), 0) FROM events WHERE stream_id = ?",
            (request.stream_id,),
        ).fetchone()
        if request.expected_version != ANY and request.expected_version != current:
            return StreamVersionConflict(request.stream_id, request.expected_version, current)
        recorded: list[RecordedEvent] = []
        version = current
        for new in request.events:
            version += 1
            event_id = new.event_id or new_event_id()
            occurred_text = format_instant(new.occurred_at)
            try:
                cursor = conn.execute(
                    _INSERT,
                    (
                        event_id,
                        request.stream_id,
                        version,
                        event_type(new.event),
                        occurred_text,
                        new.actor,
                        new.correlation_id,
                        encode_event(new.event).decode(),
                    ),
                )
            except sqlite3.IntegrityError as exc:
                # (stream_id, version) cannot clash under the lock; the event id can.
                raise DuplicateId(event_id) from exc
            position = cursor.lastrowid
            assert position is not None
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
        return recorded

    # -- reading ---------------------------------------------------------------------------

    def read_stream(self, stream_id: str, after_version: int = 0) -> list[RecordedEvent]:
        with self._lock:
            rows = self.conn.execute(
                f"SELECT {_COLUMNS} FROM events WHERE stream_id = ? AND version > ?"
                " ORDER BY version",
                (stream_id, after_version),
            ).fetchall()
        return [_row_to_event(row) for row in rows]

    def read_all(
        self, after_position: int = 0, until: datetime | None = None, batch_size: int = 1000
    ) -> Iterator[RecordedEvent]:
        position = after_position
        bound = format_instant(until) if until is not None else None
        while True:
            with self._lock:
                rows = self.conn.execute(
                    f"SELECT {_COLUMNS} FROM events WHERE position > ? ORDER BY position LIMIT ?",
                    (position, batch_size),
                ).fetchall()
            if not rows:
                return
            for row in rows:
                if bound is None or row[4] <= bound:
                    yield _row_to_event(row)
            position = rows[-1][0]

    def stream_version(self, stream_id: str) -> int:
        with self._lock:
            (version,) = self.conn.execute(
                "SELECT COALESCE(MAX(version), 0) FROM events WHERE stream_id = ?", (stream_id,)
            ).fetchone()
        return int(version)

    def last_position(self) -> int:
        with self._lock:
            (position,) = self.conn.execute(
                "SELECT COALESCE(MAX(position), 0) FROM events"
            ).fetchone()
        return int(position)

    def close(self) -> None:
        with self._lock:
            self.conn.close()
