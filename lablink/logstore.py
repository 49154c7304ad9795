"""Opening LabLink's database: the event log, and the projections that follow it.

The log is appended to and nothing else happens in the append's transaction; the views are
folded behind it by a ``Follower`` (``lablink/projections/follower.py``), in transactions of
their own. ``open_store`` catches the views up with the log before handing the store out, so
that a crash between an append and its fold loses nothing.
"""

from __future__ import annotations

from pathlib import Path

import structlog

from lablink.eventstore.sqlite import SQLiteEventStore, connect
from lablink.projections.follower import Follower
from lablink.projections.runner import CHECKPOINTS, Projector

DEFAULT_DB = Path("data") / "scheduler.db"
# How long a reader that must see a write waits for the views by default (seconds).
SETTLE_SECONDS = 10.0
log = structlog.get_logger(tag="scheduler")


class LogStore(SQLiteEventStore):
    """The SQLite event store with the follower that folds its views."""

    views: Follower

    def settled(self, timeout: float = SETTLE_SECONDS) -> bool:
        """Wait until the views have folded every event committed so far (read-your-writes
        for a reader in this process); False if ``timeout`` passed first."""
        return self.views.settled(timeout)

    def close(self) -> None:
        self.views.close()
        super().close()


def open_store(
    path: str | Path = DEFAULT_DB,
    projector: Projector | None = None,
    *,
    background: bool = False,
) -> LogStore:
    """The store, its views caught up with the log, and a follower that keeps them so.

    ``background=True`` (``lablink serve``): the follower folds in a thread of its own, behind
    the log. Otherwise each commit's events are folded right after it by the committing thread
    (the command-line tools, the tests), in a transaction of their own.
    """
    projector = projector or Projector()
    conn = connect(path)
    store = LogStore(path, connection=conn)
    with store.lock:
        stored = projector.stored_fingerprint(conn)
        had_views = (
            conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (CHECKPOINTS,)
            ).fetchone()
            is not None
        )
        if (stored is None and had_views) or (
            stored is not None and stored != projector.fingerprint()
        ):
            # The views were made by another version: the log is the truth, fold it again.
            log.warning("projection tables changed: rebuilding them from the log", db=str(path))
            projector.rebuild(store, conn)
        else:
            projector.create(conn)
            if stored is None:
                projector.remember_fingerprint(conn)
            projector.catch_up(store, conn)
    store.views = Follower(store, projector, background=background)
    if background:
        store.views.start()
    return store
