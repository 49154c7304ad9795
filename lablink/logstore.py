"""Opening LabLink's database: the event log, and the projections that follow it.

The log (``scheduler.db``) is appended to and nothing else happens in the append's
transaction; the views are folded behind it by a ``Follower``
(``lablink/projections/follower.py``), in transactions of their own, into a file of their
own (``views.db`` beside the log), so that folding never takes the log's write lock.
``open_store`` catches the views up with the log before handing the store out, so that a crash
between an append and its fold loses nothing.

The views file is disposable: missing, unreadable, made by another version of LabLink, or
ahead of the log (the log restored from a backup, or another log), it is rebuilt from the log
at the start. A log whose view tables still live in its own file (the layout of LabLink before
views.db) has them dropped once views.db holds everything.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path

import structlog

from lablink.events import NewEvent, RecordedEvent
from lablink.eventstore.base import AppendOutcome, AppendRequest
from lablink.eventstore.jetstream import JetStreamEventStore
from lablink.eventstore.sqlite import SQLiteEventStore, connect
from lablink.projections.follower import Follower
from lablink.projections.keys import USAGE_TABLE, carry_usage
from lablink.projections.reading import views_file
from lablink.projections.runner import CHECKPOINTS, META, Projector

log = structlog.get_logger(tag="store")

DEFAULT_DB = Path("data") / "scheduler.db"
# How long a reader that must see a write waits for the views by default (seconds).
SETTLE_SECONDS = 10.0
# SQLite's result codes for a file that is not a database, or a damaged one: what makes a
# views file worth deleting and rebuilding (a busy or read-only file is not).
_UNREADABLE = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})
# Operational side tables that moved from the log's file to views.db with the views: their
# rows are carried over once (they are not in the log, a rebuild cannot make them again).
_CARRIED: dict[str, Callable[[sqlite3.Connection], None]] = {USAGE_TABLE: carry_usage}


class LogStore(SQLiteEventStore):
    """The SQLite event store with the follower that folds its views."""

    views: Follower
    # Cluster mode: the JetStream record this file is the local copy of. Appends go there;
    # the record's feed writes them into the file (on a connection of its own, so that a
    # caller holding this store's lock across an append does not stop the copy it waits
    # for) and ``announce`` tells this store's listeners (the views, the relay).
    record: JetStreamEventStore | None = None

    def announce(self, events: list[RecordedEvent]) -> None:
        for listener in list(self._after_commit):
            listener(events)

    def append(
        self, stream_id: str, expected_version: int, events: Sequence[NewEvent]
    ) -> list[RecordedEvent]:
        if self.record is not None:
            return self.record.append(stream_id, expected_version, events)
        return super().append(stream_id, expected_version, events)

    def append_batch(self, requests: Sequence[AppendRequest]) -> list[AppendOutcome]:
        if self.record is not None:
            return self.record.append_batch(requests)
        return super().append_batch(requests)

    def settled(self, timeout: float = SETTLE_SECONDS) -> bool:
        """Wait until the views have folded every event committed so far (read-your-writes
        for a reader in this process); False if ``timeout`` passed first."""
        return self.views.settled(timeout)

    def close(self) -> None:
        record, self.record = self.record, None
        if record is not None:
            record.close()  # its feed first: nothing is announced to closed views
        self.views.close()
        super().close()


def open_store(
    path: str | Path = DEFAULT_DB,
    projector: Projector | None = None,
    *,
    background: bool = False,
    fold_process: bool = False,
    views_path: str | Path | None = None,
    views_in_log: bool = False,
) -> LogStore:
    """The store, its views caught up with the log, and a follower that keeps them so.

    ``background=True`` (``lablink serve``): the follower folds in a thread of its own, behind
    the log (``fold_process=True``: in a child process on another core, when the views have a
    file of their own). Otherwise each commit's events are folded right after it by the
    committing thread (the command-line tools, the tests), in a transaction of their own.

    ``views_path``: the views' file (default ``views.db`` beside the log). ``views_in_log``:
    the layout before views.db, the views in the log's own file, kept for the benchmark's
    side-by-side and for the upgrade test to make a data directory the old way.
    """
    store = LogStore(path, connection=connect(path))
    projector = projector or Projector()
    separate = None if views_in_log else (views_path or views_file(path))
    try:
        try:
            follower = _follow(store, projector, separate)
        except sqlite3.DatabaseError as exc:
            if separate is None or getattr(exc, "sqlite_errorcode", None) not in _UNREADABLE:
                raise
            log.warning(
                "views file unreadable: rebuilding it from the log",
                path=str(separate),
                error=str(exc),
            )
            _remove(Path(separate))
            follower = _follow(store, projector, separate)
        store.views = follower
        if separate is not None:
            _drop_stale_views(store, follower)
    except BaseException:
        SQLiteEventStore.close(store)
        raise
    if background:
        follower.start(process=fold_process)
    return store


def _follow(store: LogStore, projector: Projector, views_path: str | Path | None) -> Follower:
    follower: Follower | None = None
    try:
        follower = Follower(store, projector, background=False, views_path=views_path)
        follower.open()
    except BaseException:
        if follower is not None:
            follower.close()
        raise
    return follower


def _remove(views: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            views.with_name(views.name + suffix).unlink()


def _drop_stale_views(store: LogStore, follower: Follower) -> None:
    """The log's file of an older LabLink also holds the views: once views.db holds all of
    them (the follower has opened), drop them from the log in one transaction, so that no
    reader finds them by mistake. Side tables that are not in the log move with their rows."""
    in_log = {
        row[0] for row in store.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
    }
    conn = follower.conn
    in_views = {
        row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
    }
    stale = sorted((in_views | {CHECKPOINTS, META} | set(_CARRIED)) & in_log)
    if not stale:
        return
    with follower.write_lock:
        conn.execute("BEGIN IMMEDIATE")
        try:
            for table, carry in _CARRIED.items():
                if table in in_log:
                    carry(conn)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    with store.lock:
        store.conn.execute("BEGIN IMMEDIATE")
        try:
            for table in stale:
                store.conn.execute(f'DROP TABLE IF EXISTS "{table}"')
            store.conn.execute("COMMIT")
        except BaseException:
            store.conn.execute("ROLLBACK")
            raise
    log.warning(
        "view tables moved out of the event log's file",
        log=str(store.path),
        views=str(follower.views_path),
        dropped=len(stale),
    )
