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

Captured data (issue 15) goes with its executions: the pass deletes the objects of the
executions it prunes from the captures' bucket first, then records, in one transaction, an
``ExecutionDataRemoved`` (reason ``retention``) per capture, each in its job's stream, and
the ``ExecutionsPruned``. NATS down: nothing is recorded, the pass fails and is tried again
after a backoff. A crash between the deletes and the record: the next pass finds the objects
gone (not an error) and records them, so no removal goes unrecorded.

The byte bound (``LABLINK_DATA_MAX_BYTES``) is checked on every turn of the loop (at least
hourly, and at start): while the stored captures exceed it, the oldest go first, each
recorded (reason ``bound``) the same way. When the bound removes captures that retention
would have kept more than a day longer, a ``data_bound`` alarm is raised with the removals.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import structlog

from lablink.bus.data_bucket import DataBucket
from lablink.clock import Clock
from lablink.events import AlarmRaised
from lablink.eventstore.base import parse_instant
from lablink.eventstore.sqlite import SQLiteEventStore
from lablink.handler import CommandHandler
from lablink.health import Health
from lablink.ids import random_hex
from lablink.projections.executions import Capture, stored_captures
from lablink.projections.reading import reading_views
from lablink.scheduler.storage import (
    RETENTION_STREAM,
    captures_before,
    check_days,
    delete_captures,
    last_pruned_at,
    record_pruning,
    removals,
    settle_views,
)
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
# Captures the bound removes with more retention than this left raise a data_bound alarm.
EARLY_ALARM = timedelta(days=1)


class RetentionPass:
    def __init__(
        self,
        store: SQLiteEventStore,
        clock: Clock,
        days: float,
        *,
        period: timedelta = PERIOD,
        recheck: timedelta = RECHECK,
        data: DataBucket | None = None,
        max_bytes: int = 0,
    ) -> None:
        self.store = store
        # The captures' bucket (None: no bus, the pass records removals without deleting).
        self.data = data
        self.max_bytes = max_bytes
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
        """Anything to do: daily pruning, or a byte bound on the captures."""
        return self.days > 0 or (self.max_bytes > 0 and self.data is not None)

    def next_run(self, now: datetime | None = None) -> datetime | None:
        """When the next pass is due (None when switched off): a period after the last
        pass the log records, or ``now`` if there was none (the clock's reading if not
        given: pass the reading you compare with)."""
        if self.days <= 0:
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
        """One pass at ``now`` without the bucket (its captures' removals are recorded, no
        object is deleted): the number of execution rows it removed."""
        removed = self._record_pass(now, self._prunable(now))
        log.info("retention pass", days=self.days, removed=removed, at=now.isoformat())
        return removed

    def run_if_due(self, now: datetime | None = None) -> int | None:
        now = now if now is not None else self.clock.now()
        return self.run_once(now) if self.due(now) else None

    async def run_pass(self, now: datetime) -> int:
        """One pass at ``now``: the captures of the executions it prunes leave the bucket,
        then removals and pruning are recorded together. Returns the rows removed."""
        captures = await asyncio.to_thread(self._prunable, now)
        await self._delete(captures)
        removed = await asyncio.to_thread(self._record_pass, now, captures)
        log.info(
            "retention pass",
            days=self.days,
            removed=removed,
            captures=len(captures),
            at=now.isoformat(),
        )
        return removed

    async def turn(self, now: datetime) -> int | None:
        """What one turn of the loop does at ``now``: the daily pass if due (its rows
        removed, else None), then the byte bound."""
        ran = await self.run_pass(now) if self.due(now) else None
        await self.enforce_bound(now)
        return ran

    async def enforce_bound(self, now: datetime) -> list[Capture]:
        """While the stored captures exceed ``max_bytes``, remove the oldest (recorded,
        reason ``bound``); returns those removed."""
        if self.max_bytes <= 0:
            return []
        stored = await asyncio.to_thread(self._stored)
        total = sum(c.size for c in stored)
        going: list[Capture] = []
        for capture in stored:
            if total <= self.max_bytes:
                break
            going.append(capture)
            total -= capture.size
        if not going:
            return []
        await self._delete(going)
        await asyncio.to_thread(self._record_bound, now, going, total)
        return going

    # -- the steps (the reads and appends run in a worker thread) ----------------------------

    def _prunable(self, now: datetime) -> list[Capture]:
        return captures_before(self.store, now - timedelta(days=self.days))

    def _stored(self) -> list[Capture]:
        # A lagging fold would list captures already removed: ViewsBehind, the turn fails
        # and the supervisor retries it, rather than record a second removal.
        settle_views(self.store)
        with reading_views(self.store) as conn:
            return stored_captures(conn)

    async def _delete(self, captures: list[Capture]) -> None:
        """Delete the objects (one already gone is fine); DataBusUnavailable stops the pass
        before anything is recorded."""
        if self.data is None:
            return
        await delete_captures(self.data, captures)

    def _record_pass(self, now: datetime, captures: list[Capture]) -> int:
        """Record the captures' removals and the pruning in one append; the rows removed
        (as ``SchedulerStorage.cleanup_old_executions`` does, through the same helper)."""
        count = record_pruning(self.store, now, self.days, captures, actor=ACTOR)
        self.last_run = now
        self._read_log = True
        return count

    def _record_bound(self, now: datetime, going: list[Capture], left: int) -> None:
        facts = removals(going, now, "bound")
        alarm = self._early_alarm(now, going, left)
        if alarm is not None:
            facts.append((RETENTION_STREAM, [alarm]))
        CommandHandler(self.store).record_together(facts, ACTOR, at=now)
        log.warning(
            "data bound: oldest captures removed",
            max_bytes=self.max_bytes,
            removed=len(going),
            bytes=sum(c.size for c in going),
            left=left,
            alarm=alarm.alarm_id if alarm is not None else None,
        )

    def _early_alarm(self, now: datetime, going: list[Capture], left: int) -> AlarmRaised | None:
        """The data_bound alarm, when retention would have kept a removed capture more than
        a day longer (retention off: never early)."""
        if self.days <= 0:
            return None
        keep = timedelta(days=self.days)
        early = [(parse_instant(c.ended) + keep - now, c) for c in going if c.ended is not None]
        early = [(by, c) for by, c in early if by > EARLY_ALARM]
        if not early:
            return None
        most, newest = max(early, key=lambda pair: pair[0])
        size = sum(c.size for _, c in early)
        return AlarmRaised(
            alarm_id=f"alarm_data_bound_{random_hex(48)}",
            kind="data_bound",
            severity="warning",
            message=(
                f"the data bound (LABLINK_DATA_MAX_BYTES={self.max_bytes}) removed"
                f" {len(early)} capture(s), {size} bytes, that retention"
                f" ({self.days:g} days) would have kept up to {most.total_seconds() / 86400:.1f}"
                " days longer: raise the bound, or shorten retention"
            ),
            job_id=newest.job_id,
            execution_id=newest.execution_id,
            error={
                "type": "data_bound",
                "max_bytes": self.max_bytes,
                "removed": len(going),
                "removed_early": len(early),
                "bytes_removed_early": size,
                "bytes_left": left,
                "most_early_seconds": most.total_seconds(),
                "executions": [c.execution_id for _, c in early][:100],
            },
        )

    async def start(self, supervisor: Supervisor | None = None) -> None:
        """Run a pass now if one is due, then keep running them under ``supervisor`` (or a
        supervisor of its own)."""
        if not self.enabled:
            log.info("retention off", days=self.days)
            return
        try:
            await self.turn(self.clock.now())
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
                    ran = await self.turn(now)
                except Exception as exc:
                    # Disk full, database locked for too long: shown in /health, retried
                    # after a backoff; the scheduler goes on.
                    await watch.sleep(
                        max(watch.failed(exc), MIN_SLEEP.total_seconds()), until=self._stop
                    )
                    continue
                if ran is not None or watch.failing_since is not None:
                    watch.ok(last_run=now.isoformat())
                await watch.sleep(self._wait(now), until=self._stop)
        finally:
            self._done.set()
        while not watch.stopping:  # closed: idle until the supervisor stops
            await watch.sleep(3600)

    def _wait(self, now: datetime) -> float:
        """Seconds until the next pass from the same reading, within [MIN_SLEEP, recheck]."""
        when = self.next_run(now)
        wait = self.recheck if when is None else min(when - now, self.recheck)
        return max(wait, MIN_SLEEP).total_seconds()

    async def aclose(self) -> None:
        self._stop.set()
        if self._supervisor is not None:
            await self._done.wait()
            if self._own_supervisor:
                await self._supervisor.aclose()
            else:
                # Its name free again: in cluster mode a new leader's pass is spawned on
                # the same supervisor (scheduler.leadership.ServiceDuty).
                await self._supervisor.retire(TASK_NAME)
            self._supervisor = None
