"""Runs the projections: each batch of the log folded by every projection, live or rebuilt.

Each projection keeps a checkpoint (the last position it folded) in the same transaction as
its rows, so a crash never leaves rows and checkpoint disagreeing, and catching up after a
restart (or after adding a projection) folds exactly the missing events.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from pathlib import Path

import sqlite_utils

from lablink.events import RecordedEvent
from lablink.eventstore.base import EventReader, EventStore
from lablink.eventstore.sqlite import event_of
from lablink.projections.alarms import AlarmsProjection
from lablink.projections.base import Projection
from lablink.projections.calibration import CalibrationProjection
from lablink.projections.equipment import EquipmentProjection
from lablink.projections.executions import ExecutionsProjection
from lablink.projections.history import HistoryProjection
from lablink.projections.jobs import JobsProjection
from lablink.projections.keys import KeysProjection
from lablink.projections.parallel import Elsewhere
from lablink.projections.profiles import ProfilesProjection
from lablink.projections.results import ResultsProjection
from lablink.projections.statistics import StatisticsProjection

CHECKPOINTS = "projection_checkpoints"
META = "projection_meta"
REBUILD_BATCH = 20_000
# Events per transaction while rebuilding: large, since each commit waits for the disk.
REBUILD_COMMIT_EVERY = 100_000
# From this many events on, a rebuild folds in two processes (``processes=None``): below it,
# starting a second interpreter (about 0.3 s) costs more than the second core saves.
TWO_PROCESSES_FROM = 200_000
# Folded by the rebuilding process itself when a second one helps: the projections whose
# rows grow with the log (one per execution), which copying back would cost about as much as
# folding. The others hold a few rows per job, cheap to copy from the second process.
FOLDED_HERE = frozenset({"executions", "results"})

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
        ResultsProjection(),
        CalibrationProjection(),
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
            conn.execute(f"CREATE TABLE IF NOT EXISTS {META} (key TEXT PRIMARY KEY, value TEXT)")
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

    def origin(self, conn: sqlite3.Connection) -> str | None:
        """The id of the first event of the log the views were folded from (None: not
        noted yet), to spot views folded from another log."""
        row = conn.execute(f"SELECT value FROM {META} WHERE key = 'log_origin'").fetchone()
        return str(row[0]) if row else None

    def remember_origin(self, conn: sqlite3.Connection, event_id: str) -> None:
        conn.execute(
            f"INSERT INTO {META} (key, value) VALUES ('log_origin', ?)"
            " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (event_id,),
        )

    def checkpoints(self, conn: sqlite3.Connection) -> dict[str, int]:
        return dict(conn.execute(f"SELECT name, position FROM {CHECKPOINTS}").fetchall())

    def apply(self, conn: sqlite3.Connection, events: list[RecordedEvent]) -> None:
        """The store's in-transaction hook: fold new events into every projection."""
        if not events:
            return
        checkpoints = self.checkpoints(conn)
        last = events[-1].position
        if events[0].position == 1:  # noted with the first fold, live or rebuilt alike
            self.remember_origin(conn, events[0].event_id)
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
        return self.fold(conn, store.read_all(after_position=start, batch_size=REBUILD_BATCH))

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

        The same folds as the live projector (``apply``), in large batches and large
        transactions: one fold per projection, live and rebuilt alike. ``processes=2`` folds
        all but the execution rows in a second process (``projections/parallel.py``) on the
        other core; ``None`` does so from TWO_PROCESSES_FROM events on, for a log in a file.
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
        self.forget()
        self.create(conn)
        self.stored_fingerprint(conn)
        self.remember_fingerprint(conn)
        # Both processes fold up to the same position, whatever is appended meanwhile.
        bound = store.last_position()
        here = [p for p in self.projections if p.name in FOLDED_HERE]
        there = [p for p in self.projections if p.name not in FOLDED_HERE]
        log_path = _file_of(store)
        if processes is None:
            processes = 2 if bound >= TWO_PROCESSES_FROM else 1
        if processes < 2 or log_path is None or not here or not there:
            return self.fold_log(store, conn, bound, until, progress)
        helper = Elsewhere(log_path, bound, until, Projector(there))
        try:
            folded = Projector(here).fold_log(store, conn, bound, until, progress)
            helper.wait()
        except BaseException:
            helper.cancel()
            raise
        helper.copy_into(conn, CHECKPOINTS)
        return folded

    def forget(self) -> None:
        """Drop what the projections keep in memory between batches (a batch rolled back,
        or their tables were dropped)."""
        for projection in self.projections:
            projection.forget()

    def fold_log(
        self,
        reader: EventReader,
        conn: sqlite3.Connection,
        bound: int,
        until: datetime | None = None,
        progress: Progress | None = None,
    ) -> int:
        """Fold the log from position 0 up to ``bound`` (and ``until``) into tables just made
        (a rebuild's, here or in its second process)."""
        with collector_paused():
            return self.fold(conn, read_log(reader, bound, until), progress)

    def fold(
        self,
        conn: sqlite3.Connection,
        events: Iterable[RecordedEvent],
        progress: Progress | None = None,
    ) -> int:
        """Fold ``events`` in REBUILD_BATCH batches, REBUILD_COMMIT_EVERY events per
        transaction (rows and checkpoints together); returns events folded."""
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


def read_log(reader: EventReader, bound: int, until: datetime | None) -> Iterator[RecordedEvent]:
    """The log's events up to position ``bound`` (and occurred_at ``until``), in order."""
    after = 0
    while rows := reader.read_rows(after, REBUILD_BATCH, up_to=bound, until=until):
        yield from map(event_of, rows)
        after = rows[-1][0]


def _file_of(store: EventStore) -> Path | None:
    """The file a store's log is in, for a second process to read (None: in memory)."""
    path = getattr(store, "path", None)
    return path if isinstance(path, Path) and str(path) != ":memory:" else None


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """The cyclic collector off while a rebuild folds: it would walk every state the folds
    keep, again and again, for nothing (a third of the decode time on a large log)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


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
        self.projector.forget()
