"""The guide's manual cleanup, as it shows it::

    from lablink.scheduler.storage import SchedulerStorage
    storage = SchedulerStorage()
    deleted = storage.cleanup_old_executions(days=30)

Cleaning up is a fact in the log, not a DELETE: it appends one ``ExecutionsPruned`` (stream
``retention``) whose cut-off the executions projection folds by dropping the rows that ended
before it, in the append's transaction. A replay folds the same event and drops the same rows.
The log itself is never edited, and per-job totals, statistics and ``max_executions`` counts
(kept by other folds and by the job aggregate) do not change.

Captured data (issue 15) goes as the daily retention pass takes it (``record_pruning``, shared
with ``lablink.scheduler.retention``): the objects of the executions pruned leave the
``LABLINK_DATA`` bucket first, then each removal (``ExecutionDataRemoved``, reason
``retention``) is recorded in the pruning's transaction. Without NATS (``nats=None``) the
cleanup refuses (``CapturesNeedBucket``) while captures fall before the cut-off, rather than
leave their objects in the bucket unrecorded and outside the byte bound.
"""

from __future__ import annotations

import asyncio
import math
from datetime import datetime, timedelta
from pathlib import Path

from lablink.bus.data_bucket import DataBucket
from lablink.bus.options import NatsOptions
from lablink.clock import Clock, SystemClock
from lablink.errors import CapturesNeedBucket, InvalidRequest
from lablink.events import AnyEvent, ExecutionDataRemoved, ExecutionsPruned
from lablink.events.data import DataRemovalReason
from lablink.eventstore.sqlite import SQLiteEventStore
from lablink.handler import CommandHandler
from lablink.logstore import SETTLE_SECONDS, open_store
from lablink.projections.executions import Capture, count_prunable, prunable_captures
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
        nats: NatsOptions | None = None,
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
        # The bus holding the captures' bucket; None: refuse to prune executions with captures.
        self.nats = nats

    def cleanup_old_executions(
        self, days: float = DEFAULT_DAYS, *, actor: str = "cleanup_old_executions"
    ) -> int:
        """Drop execution rows that ended more than ``days`` ago from the executions view;
        return how many left it. Appends one ``ExecutionsPruned`` with the cut-off, and an
        ``ExecutionDataRemoved`` per capture of those rows, whose objects it deletes first
        (through ``nats``; none given: ``CapturesNeedBucket`` while there are such captures).
        Runs its own event loop for the deletes: call it from synchronous code."""
        days = check_days(days)
        if self._store is not None:
            return self._cleanup(self._store, days, actor)
        if not self.db_path.exists():
            # Not a new, empty database in the working directory: the wrong one was named.
            raise FileNotFoundError(f"no LabLink database at {self.db_path}")
        store = open_store(self.db_path)
        try:
            return self._cleanup(store, days, actor)
        finally:
            store.close()

    def _cleanup(self, store: SQLiteEventStore, days: float, actor: str) -> int:
        now = self.clock.now()
        captures = captures_before(store, now - timedelta(days=days))
        if captures:
            if self.nats is None:
                raise CapturesNeedBucket(captures[0].execution_id, len(captures))
            asyncio.run(_delete_objects(self.nats, captures))
        return record_pruning(store, now, days, captures, actor=actor)


async def _delete_objects(nats: NatsOptions, captures: list[Capture]) -> None:
    bucket = DataBucket(nats, name="lablink-cleanup")
    try:
        await delete_captures(bucket, captures)
    finally:
        await bucket.aclose()


async def delete_captures(bucket: DataBucket, captures: list[Capture]) -> None:
    """Delete the captures' objects (one already gone is fine); ``DataBusUnavailable`` stops
    before anything is recorded, so the next try deletes and records them."""
    for capture in captures:
        await bucket.delete(capture.object)


def settle_views(store: SQLiteEventStore) -> None:
    """Wait until the store's views show what was recorded; the views' ``ViewsBehind`` if
    they do not within ``SETTLE_SECONDS`` (a count or a list read from a lagging fold would
    miss facts: a capture already removed would be removed, and recorded, twice). Not under
    the store's lock, which the views' writer may need to get there."""
    views = getattr(store, "views", None)
    if views is not None and not views.settled(SETTLE_SECONDS):
        raise views.behind(views.head)


def captures_before(store: SQLiteEventStore, cutoff: datetime) -> list[Capture]:
    """The captures (stored or pending upload) of the rows a pruning at ``cutoff`` drops."""
    settle_views(store)
    with reading_views(store) as conn:
        return prunable_captures(conn, cutoff)


def removals(
    captures: list[Capture], now: datetime, reason: DataRemovalReason
) -> list[tuple[str, list[AnyEvent]]]:
    """One ExecutionDataRemoved per capture, in its job's stream (as every execution fact)."""
    by_job: dict[str, list[AnyEvent]] = {}
    for capture in captures:
        by_job.setdefault(capture.job_id, []).append(
            ExecutionDataRemoved(
                job_id=capture.job_id,
                execution_id=capture.execution_id,
                object=capture.object,
                size=capture.size,
                removed_at=now,
                reason=reason,
            )
        )
    return list(by_job.items())


def record_pruning(
    store: SQLiteEventStore,
    now: datetime,
    days: float,
    captures: list[Capture],
    *,
    actor: str,
) -> int:
    """Record the captures' removals (reason ``retention``; their objects already deleted)
    and the pruning for ``now - days`` in one append; the number of rows it removed.

    Counted under the store's lock, right before the append that drops them, so no append
    of this process comes in between. (Another process would have to record an execution
    that ended before the cut-off, i.e. ``days`` ago, in that instant to make it differ.)
    """
    cutoff = now - timedelta(days=days)
    facts = removals(captures, now, "retention")
    facts.append((RETENTION_STREAM, [ExecutionsPruned(cutoff=cutoff, days=days)]))
    settle_views(store)
    with store.lock:
        with reading_views(store) as conn:
            count = count_prunable(conn, cutoff)
        CommandHandler(store).record_together(facts, actor, at=now)
    return int(count)


def last_pruned_at(store: SQLiteEventStore) -> datetime | None:
    """When the newest pruning fact was recorded, if ever."""
    version = store.stream_version(RETENTION_STREAM)
    if version == 0:
        return None
    (last,) = store.read_stream(RETENTION_STREAM, after_version=version - 1)
    return last.occurred_at
