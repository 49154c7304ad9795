"""Opening LabLink's database: the event log, and the projections that follow it.

The log is appended to and nothing else happens in the append's transaction; the views are
folded behind it by a ``Follower`` (``lablink/projections/follower.py``), in transactions of
their own. ``open_store`` catches the views up with the log before handing the store out, so
that a crash between an append and its fold loses nothing.
"""

from __future__ import annotations

from pathlib import Path

from lablink.eventstore.sqlite import SQLiteEventStore, connect
from lablink.projections.follower import Follower
from lablink.projections.runner import Projector

DEFAULT_DB = Path("data") / "scheduler.db"
# How long a reader that must see a write waits for the views by default (seconds).
SETTLE_SECONDS = 10.0


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
    views_path: str | Path | None = None,
) -> LogStore:
    """The store, its views caught up with the log, and a follower that keeps them so.

    ``background=True`` (``lablink serve``): the follower folds in a thread of its own, behind
    the log. Otherwise each commit's events are folded right after it by the committing thread
    (the command-line tools, the tests), in a transaction of their own.

    ``views_path``: the views in a file of their own (measured in BENCHMARKS.md; LabLink's
    readers use the log's file, the default).
    """
    store = LogStore(path, connection=connect(path))
    try:
        follower = Follower(
            store, projector or Projector(), background=False, views_path=views_path
        )
        store.views = follower
        follower.open()
    except BaseException:
        SQLiteEventStore.close(store)
        raise
    if background:
        follower.start()
    return store
