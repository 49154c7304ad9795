"""The daily retention pass: once a day, executions that ended more than ``days`` ago leave
the executions view (``SchedulerStorage.cleanup_old_executions``, recorded as an event).

The next pass is due a day after the last one the log records, so a restart neither skips a
day nor prunes twice; a database that was never pruned is pruned on start. ``days = 0``
switches the pass off (``LABLINK_RETENTION_DAYS=0``).
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timedelta

import structlog

from lablink.clock import Clock
from lablink.eventstore.sqlite import SQLiteEventStore
from lablink.scheduler.storage import check_days, last_pruned_at, prune

log = structlog.get_logger(tag="scheduler")

PERIOD = timedelta(days=1)
# The longest the loop sleeps before it looks at the clock again: a suspended machine or a
# clock that was set forward is noticed within this.
RECHECK = timedelta(hours=1)
ACTOR = "retention"


class RetentionPass:
    def __init__(
        self,
        store: SQLiteEventStore,
        clock: Clock,
        days: float,
        *,
        period: timedelta = PERIOD,
        recheck: timedelta = RECHECK,
    ) -> None:
        self.store = store
        self.clock = clock
        self.days = check_days(days)
        self.period = period
        self.recheck = recheck
        self.last_run: datetime | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    @property
    def enabled(self) -> bool:
        return self.days > 0

    def next_run(self) -> datetime | None:
        """When the next pass is due (None when switched off): a period after the last
        pass the log records, or now if there was none."""
        if not self.enabled:
            return None
        if self.last_run is None:
            with self.store.lock:
                self.last_run = last_pruned_at(self.store)
        if self.last_run is None:
            return self.clock.now()
        return self.last_run + self.period

    def due(self, now: datetime) -> bool:
        when = self.next_run()
        return when is not None and when <= now

    def run_once(self, now: datetime) -> int:
        """One pass at ``now``: the number of execution rows it removed."""
        removed = prune(self.store, now, self.days, actor=ACTOR)
        self.last_run = now
        log.info("retention pass", days=self.days, removed=removed, at=now.isoformat())
        return removed

    def run_if_due(self) -> int | None:
        now = self.clock.now()
        return self.run_once(now) if self.due(now) else None

    async def start(self) -> None:
        """Run a pass now if one is due, then keep running them in the background."""
        if not self.enabled:
            log.info("retention off", days=self.days)
            return
        await asyncio.to_thread(self.run_if_due)
        self._task = asyncio.create_task(self._loop(), name="retention")

    async def _loop(self) -> None:
        while not self._stop.is_set():
            when = self.next_run()
            assert when is not None
            wait = min(when - self.clock.now(), self.recheck).total_seconds()
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):  # not wait_for: see bus/relay.py
                        await self._stop.wait()
                continue
            try:
                await asyncio.to_thread(self.run_if_due)
            except Exception:
                # A failed pass (disk full, database locked for too long) is retried at the
                # next recheck; it must not take the scheduler down.
                log.exception("retention pass failed")
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.recheck.total_seconds()):
                        await self._stop.wait()

    async def aclose(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task
            self._task = None
