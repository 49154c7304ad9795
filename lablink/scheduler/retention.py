"""The daily retention pass: once a day, executions that ended more than ``days`` ago leave
the executions view (``SchedulerStorage.cleanup_old_executions``, recorded as an event).

The next pass is due a day after the last one the log records, so a restart neither skips a
day nor prunes twice; a database that was never pruned is pruned on start. ``days = 0``
switches the pass off (``LABLINK_RETENTION_DAYS=0``).

The loop reads the clock once per turn and hands that reading to every question it asks
(is a pass due? when is the next?): with two readings, a log never pruned was "due at the
second reading", always a little after the first, so the pass never ran and the loop spun
(issue 11, finding 1). Every turn ends in a sleep of at least ``MIN_SLEEP``, whatever the
clock and the store say, so the loop cannot spin. It runs under the runtime's supervisor
(``task.retention``): a failed pass is logged, shown in `/health`, and retried after a
backoff.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import structlog

from lablink.clock import Clock
from lablink.eventstore.sqlite import SQLiteEventStore
from lablink.health import Health
from lablink.scheduler.storage import check_days, last_pruned_at, prune
from lablink.supervision import Supervisor, Watch

log = structlog.get_logger(tag="scheduler")

PERIOD = timedelta(days=1)
# The longest the loop sleeps before it looks at the clock again: a suspended machine or a
# clock that was set forward is noticed within this.
RECHECK = timedelta(hours=1)
# The shortest: a turn that found nothing to do (or a clock that disagrees with itself)
# still waits this long.
MIN_SLEEP = timedelta(seconds=1)
ACTOR = "retention"
TASK_NAME = "task.retention"


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
        self._read_log = False
        self.iterations = 0  # turns of the loop, for tests and metrics
        self._stop = asyncio.Event()
        self._done = asyncio.Event()
        self._supervisor: Supervisor | None = None
        self._own_supervisor = False

    @property
    def enabled(self) -> bool:
        return self.days > 0

    def next_run(self, now: datetime | None = None) -> datetime | None:
        """When the next pass is due (None when switched off): a period after the last
        pass the log records, or ``now`` if there was none (the clock's reading if not
        given: pass the reading you compare with)."""
        if not self.enabled:
            return None
        if not self._read_log:
            with self.store.lock:
                self.last_run = last_pruned_at(self.store)
            self._read_log = True
        if self.last_run is None:
            return now if now is not None else self.clock.now()
        return self.last_run + self.period

    def due(self, now: datetime) -> bool:
        when = self.next_run(now)
        return when is not None and when <= now

    def run_once(self, now: datetime) -> int:
        """One pass at ``now``: the number of execution rows it removed."""
        removed = prune(self.store, now, self.days, actor=ACTOR)
        self.last_run = now
        self._read_log = True
        log.info("retention pass", days=self.days, removed=removed, at=now.isoformat())
        return removed

    def run_if_due(self, now: datetime | None = None) -> int | None:
        now = now if now is not None else self.clock.now()
        return self.run_once(now) if self.due(now) else None

    async def start(self, supervisor: Supervisor | None = None) -> None:
        """Run a pass now if one is due, then keep running them under ``supervisor`` (or a
        supervisor of its own)."""
        if not self.enabled:
            log.info("retention off", days=self.days)
            return
        try:
            await asyncio.to_thread(self.run_if_due)
        except Exception:
            # A full disk at start must not stop the scheduler: the loop tries again.
            log.exception("retention pass failed at start; the loop will retry")
        if supervisor is None:
            supervisor = Supervisor(Health(self.clock))
            self._own_supervisor = True
        self._supervisor = supervisor
        supervisor.spawn(TASK_NAME, self.run)

    async def run(self, watch: Watch) -> None:
        """The supervised body (``task.retention``)."""
        try:
            while not (self._stop.is_set() or watch.stopping):
                self.iterations += 1
                now = self.clock.now()  # the one reading of this turn
                try:
                    ran = await asyncio.to_thread(self.run_if_due, now)
                except Exception as exc:
                    # Disk full, database locked for too long: shown in /health, retried
                    # after a backoff; the scheduler goes on.
                    await self._sleep(max(watch.failed(exc), MIN_SLEEP.total_seconds()), watch)
                    continue
                if ran is not None or watch.failing_since is not None:
                    watch.ok(last_run=now.isoformat())
                await self._sleep(self._wait(now), watch)
        finally:
            self._done.set()
        while not watch.stopping:  # closed: idle until the supervisor stops
            await watch.sleep(3600)

    def _wait(self, now: datetime) -> float:
        """Seconds until the next pass from the same reading, within [MIN_SLEEP, recheck]."""
        when = self.next_run(now)
        wait = self.recheck if when is None else min(when - now, self.recheck)
        return max(wait, MIN_SLEEP).total_seconds()

    async def _sleep(self, seconds: float, watch: Watch) -> None:
        """Sleep until the time is up, ``aclose`` or the supervisor stops."""
        closing = asyncio.ensure_future(self._stop.wait())
        napping = asyncio.ensure_future(watch.sleep(seconds))
        try:
            await asyncio.wait({closing, napping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in (closing, napping):
                waiter.cancel()
            await asyncio.gather(closing, napping, return_exceptions=True)

    async def aclose(self) -> None:
        self._stop.set()
        if self._supervisor is not None:
            await self._done.wait()
            if self._own_supervisor:
                await self._supervisor.aclose()
            self._supervisor = None
