"""Runs the projections: live inside each append's transaction, or rebuilt from the log.

Each projection keeps a checkpoint (the last position it folded) in the same transaction as
its rows, so a crash never leaves rows and checkpoint disagreeing, and catching up after a
restart (or after adding a projection) folds exactly the missing events.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime

import sqlite_utils

from lablink.events import RecordedEvent
from lablink.eventstore.base import EventStore
from lablink.eventstore.sqlite import LogReader, SQLiteEventStore
from lablink.projections.alarms import AlarmsProjection
from lablink.projections.base import Projection
from lablink.projections.bulk import (
    BulkProjection,
    Elsewhere,
    Rows,
    collector_paused,
    logged,
    read_chunk,
    recorded,
    write_rows,
)
from lablink.projections.equipment import EquipmentProjection
from lablink.projections.executions import ExecutionsProjection
from lablink.projections.history import HistoryProjection
from lablink.projections.jobs import JobsProjection
from lablink.projections.keys import KeysProjection
from lablink.projections.profiles import ProfilesProjection
from lablink.projections.statistics import StatisticsProjection

CHECKPOINTS = "projection_checkpoints"
META = "projection_meta"
REBUILD_BATCH = 20_000
# Events per transaction while rebuilding: large, since each commit waits for the disk.
REBUILD_COMMIT_EVERY = 100_000
# From this many events on, a rebuild hands some bulk folds to a second process: below it,
# starting the process costs more than it saves.
PARALLEL_MIN_EVENTS = 200_000

Progress = Callable[[int], None]


def default_projections() -> list[Projection]:
    return [
        JobsProjection(),
        ExecutionsProjection(),
        HistoryProjection(),
        StatisticsProjection(),
        KeysProjection(),
        EquipmentProjection(),
        ProfilesProjection(),
        AlarmsProjection(),
    ]


class Projector:
    def __init__(self, projections: Sequence[Projection] | None = None) -> None:
        self.projections: list[Projection] = list(
            projections if projections is not None else default_projections()
        )

    def create(self, conn: sqlite3.Connection) -> None:
        db = sqlite_utils.Database(conn)
        with db.atomic():
            db.table(CHECKPOINTS).create(
                {"name": str, "position": int}, pk="name", if_not_exists=True
            )
            for projection in self.projections:
                projection.create(db)
                conn.execute(
                    f"INSERT OR IGNORE INTO {CHECKPOINTS} (name, position) VALUES (?, 0)",
                    (projection.name,),
                )

    def fingerprint(self) -> str:
        """A digest of the projections' table definitions, to spot a database whose views
        were made by another version of LabLink."""
        scratch = sqlite3.connect(":memory:")
        try:
            self.create(scratch)
            sql = sorted(
                row[0]
                for row in scratch.execute("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL")
            )
        finally:
            scratch.close()
        return hashlib.sha256("\n".join(sql).encode()).hexdigest()[:16]

    def stored_fingerprint(self, conn: sqlite3.Connection) -> str | None:
        conn.execute(f"CREATE TABLE IF NOT EXISTS {META} (key TEXT PRIMARY KEY, value TEXT)")
        row = conn.execute(f"SELECT value FROM {META} WHERE key = 'fingerprint'").fetchone()
        return str(row[0]) if row else None

    def remember_fingerprint(self, conn: sqlite3.Connection) -> None:
        conn.execute(
            f"INSERT INTO {META} (key, value) VALUES ('fingerprint', ?)"
            " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (self.fingerprint(),),
        )

    def checkpoints(self, conn: sqlite3.Connection) -> dict[str, int]:
        return dict(conn.execute(f"SELECT name, position FROM {CHECKPOINTS}").fetchall())

    def apply(self, conn: sqlite3.Connection, events: list[RecordedEvent]) -> None:
        """The store's in-transaction hook: fold new events into every projection."""
        if not events:
            return
        checkpoints = self.checkpoints(conn)
        last = events[-1].position
        for projection in self.projections:
            done = checkpoints.get(projection.name, 0)
            fresh = (
                events if events[0].position > done else [e for e in events if e.position > done]
            )
            if fresh:
                projection.apply(conn, fresh)
        conn.executemany(
            f"UPDATE {CHECKPOINTS} SET position = ? WHERE name = ? AND position < ?",
            [(last, p.name, last) for p in self.projections],
        )

    def catch_up(self, store: EventStore, conn: sqlite3.Connection) -> int:
        """Fold whatever the log holds past the oldest checkpoint; returns events folded."""
        start = min(self.checkpoints(conn).values(), default=0)
        return self._fold(conn, store.read_all(after_position=start, batch_size=REBUILD_BATCH))

    def rebuild(
        self,
        store: EventStore,
        conn: sqlite3.Connection,
        *,
        until: datetime | None = None,
        progress: Progress | None = None,
        processes: int | None = None,
    ) -> int:
        """Drop every projection table and fold the log again from position 0.

        ``processes`` (default: 2 for a large log on a machine with 2 cores or more) is how
        many processes fold the projections that have a bulk path.
        """
        conn.execute("BEGIN IMMEDIATE")
        try:
            for projection in self.projections:
                for table in projection.tables:
                    conn.execute(f"DROP TABLE IF EXISTS {table}")
            conn.execute(f"DROP TABLE IF EXISTS {CHECKPOINTS}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self.create(conn)
        self.stored_fingerprint(conn)
        self.remember_fingerprint(conn)
        if isinstance(store, SQLiteEventStore):
            return self._rebuild_bulk(store, conn, until, progress, processes)
        events = store.read_all(after_position=0, until=until, batch_size=REBUILD_BATCH)
        return self._fold(conn, events, progress=progress)

    def _rebuild_bulk(
        self,
        store: SQLiteEventStore,
        conn: sqlite3.Connection,
        until: datetime | None,
        progress: Progress | None,
        processes: int | None,
    ) -> int:
        """Bulk folds in memory, their rows written once at the end; the other projections
        folded batch by batch alongside, from the same reads."""
        fast = [p for p in self.projections if isinstance(p, BulkProjection)]
        generic = Projector([p for p in self.projections if not isinstance(p, BulkProjection)])
        with store.lock:
            bound = store.last_position()
        if processes is None:
            many = bound >= PARALLEL_MIN_EVENTS and (os.cpu_count() or 1) >= 2
            processes = 2 if many else 1
        remote = split(fast) if processes > 1 and str(store.path) != ":memory:" else []
        local = [p for p in fast if p not in remote]
        batches = _Batches(generic, conn) if generic.projections else None
        log = LogReader(store.conn)  # read under the store's lock: the connection is shared
        elsewhere = Elsewhere(str(store.path), bound, until, remote) if remote else None
        try:
            folds = [p.bulk() for p in local]
            total = last = 0
            with collector_paused():
                while True:
                    with store.lock:
                        rows = read_chunk(log, last, bound, until)
                    if not rows:
                        break
                    events = logged(rows)
                    for fold in folds:
                        fold.fold(events)
                    if batches is not None:
                        batches.add(recorded(rows, events))
                    total += len(rows)
                    last = rows[-1][0]
                    if progress is not None:
                        progress(len(rows))
                if batches is not None:
                    batches.close()
                table_rows: Rows = {}
                for fold in folds:
                    table_rows.update(fold.rows())
                if elsewhere is not None:
                    table_rows.update(elsewhere.rows())
                    elsewhere = None
                _write(conn, table_rows, [p.name for p in fast], last)
        except BaseException:
            if batches is not None:
                batches.abort()
            if elsewhere is not None:
                elsewhere.cancel()
            raise
        return total

    def _fold(
        self,
        conn: sqlite3.Connection,
        events: Iterable[RecordedEvent],
        progress: Progress | None = None,
    ) -> int:
        batches = _Batches(self, conn, progress)
        batch: list[RecordedEvent] = []
        try:
            for event in events:
                batch.append(event)
                if len(batch) >= REBUILD_BATCH:
                    batches.add(batch)
                    batch = []
            batches.add(batch)
            batches.close()
        except BaseException:
            batches.abort()
            raise
        return batches.total


class _Batches:
    """Folds batches through ``Projector.apply`` in large transactions: each commit waits for
    the disk, and rows and checkpoints commit together whatever the batch size."""

    def __init__(
        self, projector: Projector, conn: sqlite3.Connection, progress: Progress | None = None
    ) -> None:
        self.projector = projector
        self.conn = conn
        self.progress = progress
        self.total = 0
        self._in_transaction = 0

    def add(self, batch: list[RecordedEvent]) -> None:
        if not batch:
            return
        conn = self.conn
        if not conn.in_transaction:
            conn.execute("BEGIN IMMEDIATE")
        try:
            self.projector.apply(conn, batch)
        except BaseException:
            self.abort()
            raise
        self.total += len(batch)
        self._in_transaction += len(batch)
        if self.progress is not None:
            self.progress(len(batch))
        if self._in_transaction >= REBUILD_COMMIT_EVERY:
            conn.execute("COMMIT")
            self._in_transaction = 0

    def close(self) -> None:
        if self.conn.in_transaction:
            self.conn.execute("COMMIT")

    def abort(self) -> None:
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")


def split(projections: Sequence[BulkProjection]) -> list[BulkProjection]:
    """The bulk folds for a second process: about half the work, by their cost hints.

    The heaviest stays here: the process that asks also writes every row, and the hints of
    the folds with many rows count that writing.
    """
    here = there = 0.0
    remote: list[BulkProjection] = []
    for projection in sorted(projections, key=_cost, reverse=True):
        if there < here:
            remote.append(projection)
            there += _cost(projection)
        else:
            here += _cost(projection)
    return remote


def _cost(projection: BulkProjection) -> float:
    return float(getattr(projection, "bulk_cost", 1.0))


def _write(conn: sqlite3.Connection, rows: Rows, names: list[str], last: int) -> None:
    """Every bulk row and the bulk projections' checkpoints, in one transaction: a crash
    before the commit leaves them empty at position 0, which a catch-up folds again."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        write_rows(conn, rows)
        if last:
            conn.executemany(
                f"UPDATE {CHECKPOINTS} SET position = ? WHERE name = ?",
                [(last, name) for name in names],
            )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
