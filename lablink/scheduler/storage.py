"""The guide's manual cleanup, as it shows it::

    from lablink.scheduler.storage import SchedulerStorage
    storage = SchedulerStorage()
    deleted = storage.cleanup_old_executions(days=30)

Cleaning up is a fact in the log, not a DELETE: it appends one ``ExecutionsPruned`` (stream
``retention``) whose cut-off the executions projection folds by dropping the rows that ended
before it, in the append's transaction. A replay folds the same event and drops the same rows.
The log itself is never edited, and per-job totals, statistics and ``max_executions`` counts
(kept by other folds and by the job aggregate) do not change.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from pathlib import Path

from lablink.clock import Clock, SystemClock
from lablink.errors import InvalidRequest
from lablink.events import ExecutionsPruned
from lablink.eventstore.sqlite import SQLiteEventStore
from lablink.handler import CommandHandler
from lablink.logstore import SETTLE_SECONDS, open_store
from lablink.projections.executions import count_prunable
from lablink.projections.reading import reading_views
from lablink.settings import Settings

RETENTION_STREAM = "retention"
DEFAULT_DAYS = 30.0


def check_days(days: float) -> float:
    if isinstance(days, bool) or not isinstance(days, int | float) or not math.isfinite(days):
        raise InvalidRequest.one("days", days, "must be a finite number of days")
    if days < 0:
        raise InvalidRequest.one("days", days, "must be 0 or more")
    return float(days)


class SchedulerStorage:
    """Retention over LabLink's database.

    ``SchedulerStorage()`` uses the database of ``Settings.from_env()`` (``data/scheduler.db``
    unless ``LABLINK_DATA_DIR`` says otherwise) and opens it for each cleanup; a running
    process passes its own ``store`` instead. Safe beside a running ``lablink serve``: the
    append takes SQLite's write lock like any other.
    """

    def __init__(
        self,
        db_path: str | Path | None = None,
        *,
        store: SQLiteEventStore | None = None,
        clock: Clock | None = None,
    ) -> None:
        if db_path is not None and store is not None:
            raise ValueError("give a db_path or a store, not both")
        if store is not None:
            self.db_path = store.path
        elif db_path is not None:
            self.db_path = Path(db_path)
        else:
            self.db_path = Settings.from_env().db_path
        self._store = store
        self.clock: Clock = clock or SystemClock()

    def cleanup_old_executions(
        self, days: float = DEFAULT_DAYS, *, actor: str = "cleanup_old_executions"
    ) -> int:
        """Drop execution rows that ended more than ``days`` ago from the executions view;
        return how many left it. Appends one ``ExecutionsPruned`` with the cut-off."""
        days = check_days(days)
        if self._store is not None:
            return prune(self._store, self.clock.now(), days, actor=actor)
        if not self.db_path.exists():
            # Not a new, empty database in the working directory: the wrong one was named.
            raise FileNotFoundError(f"no LabLink database at {self.db_path}")
        store = open_store(self.db_path)
        try:
            return prune(store, self.clock.now(), days, actor=actor)
        finally:
            store.close()


def prune(store: SQLiteEventStore, now: datetime, days: float, *, actor: str) -> int:
    """Append the pruning fact for ``now - days``; the number of rows it removed.

    Counted under the store's lock, right before the append that drops them, so no append
    of this process comes in between. (Another process would have to record an execution
    that ended before the cut-off, i.e. ``days`` ago, in that instant to make it differ.)
    """
    cutoff = now - timedelta(days=days)
    event = ExecutionsPruned(cutoff=cutoff, days=days)
    # The executions view folds behind the log: count once it shows what was recorded (not
    # under the store's lock, which the views' writer may need to get there).
    views = getattr(store, "views", None)
    if views is not None:
        views.settled(SETTLE_SECONDS)
    with store.lock:
        with reading_views(store) as conn:
            count = count_prunable(conn, cutoff)
        CommandHandler(store).record(RETENTION_STREAM, [event], actor, at=now)
    return int(count)


def last_pruned_at(store: SQLiteEventStore) -> datetime | None:
    """When the newest pruning fact was recorded, if ever."""
    version = store.stream_version(RETENTION_STREAM)
    if version == 0:
        return None
    (last,) = store.read_stream(RETENTION_STREAM, after_version=version - 1)
    return last.occurred_at
