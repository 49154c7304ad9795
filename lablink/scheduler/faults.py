"""When the scheduler cannot record: what it knows of the fault, and the alarm it raises.

The engine tells ``RecordingFault`` how each of its appends went. While appends fail, fires
are kept (planned again) and results wait; ``/health`` shows the scheduler failing. If the
fault lasts longer than a grace period, ``SchedulerFaultAlarm`` raises a critical
``scheduler_fault`` alarm, and clears it once the engine records again.

The alarm is a fact in the log like any other, so it can only be written when the log can
be. When the log itself is what fails (a full disk), the raise is written as soon as the
fault clears, marked with when the fault started and ended, and cleared in the same breath:
the record shows the outage even though nobody could be told during it (the health
endpoint and the error log could).
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass
from datetime import datetime

import structlog

from lablink.alarm_service import AlarmService
from lablink.clock import Clock
from lablink.errors import AlarmNotFound, AlarmStateConflict
from lablink.events import AlarmRaised
from lablink.eventstore.base import EventStore
from lablink.handler import CommandHandler
from lablink.supervision import describe

log = structlog.get_logger(tag="scheduler")

# The stream of the scheduler's own facts: its clock steps and its fault alarms.
SCHEDULER_STREAM = "scheduler"
ACTOR = "scheduler"
DEFAULT_GRACE_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class Outage:
    """One fault, from its first failed append to the append that worked again."""

    since: datetime
    until: datetime | None
    seconds: float
    last_error: str
    failures: int


class RecordingFault:
    """How the engine's appends have been going. Durations use the monotonic clock, so a
    wall-clock step during a fault neither hides nor inflates it."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.since: datetime | None = None
        self._since_monotonic = 0.0
        self.last_error = ""
        self.failures = 0
        self._ended: Outage | None = None

    @property
    def failing(self) -> bool:
        return self.since is not None

    def seconds(self) -> float:
        return self.clock.monotonic() - self._since_monotonic if self.failing else 0.0

    def failed(self, exc: BaseException) -> None:
        if self.since is None:
            self.since = self.clock.now()
            self._since_monotonic = self.clock.monotonic()
            self.failures = 0
        self.failures += 1
        self.last_error = describe(exc)

    def recorded(self) -> None:
        """An append worked: the fault, if there was one, is over."""
        if self.since is None:
            return
        outage = self.current(until=self.clock.now())
        log.warning(
            "the scheduler records again",
            fault_started_at=outage.since.isoformat(),
            seconds=round(outage.seconds, 3),
            failures=outage.failures,
            last_error=outage.last_error,
        )
        self._ended = outage
        self.since = None

    def current(self, until: datetime | None = None) -> Outage:
        assert self.since is not None
        return Outage(
            since=self.since,
            until=until,
            seconds=self.seconds(),
            last_error=self.last_error,
            failures=self.failures,
        )

    def take_ended(self) -> Outage | None:
        """The fault that ended since the last call, if any."""
        ended, self._ended = self._ended, None
        return ended


def _alarm_id() -> str:
    return f"alarm_scheduler_fault_{secrets.token_hex(6)}"


class SchedulerFaultAlarm:
    """Raises and clears the ``scheduler_fault`` alarm; ``check`` is called by the engine's
    loop on every turn, failing or not."""

    def __init__(
        self,
        store: EventStore,
        clock: Clock,
        alarms: AlarmService,
        fault: RecordingFault,
        *,
        grace_seconds: float = DEFAULT_GRACE_SECONDS,
    ) -> None:
        if grace_seconds < 0:
            raise ValueError(f"scheduler fault grace: expected >= 0 s, got {grace_seconds}")
        self.store = store
        self.clock = clock
        self.alarms = alarms
        self.fault = fault
        self.grace_seconds = grace_seconds
        self.raised: str | None = None  # the alarm raised and not yet cleared
        self._unreported: Outage | None = None  # a long outage whose alarm is not written
        self._told_unwritable = False

    async def check(self) -> None:
        fault = self.fault
        if fault.failing:
            if self.raised is None and fault.seconds() >= self.grace_seconds:
                await self._raise_live(fault.current())
            return
        ended = fault.take_ended() or self._unreported
        self._unreported = None
        self._told_unwritable = False
        if self.raised is not None:
            await self._clear(self.raised, ended)
        elif ended is not None and ended.seconds >= self.grace_seconds:
            await self._record_after(ended)

    async def _raise_live(self, outage: Outage) -> None:
        alarm_id = _alarm_id()
        try:
            await asyncio.to_thread(self._append_raise, alarm_id, outage)
        except Exception as exc:
            if not self._told_unwritable:
                log.error(
                    "scheduler_fault alarm cannot be recorded while the log cannot be "
                    "written; it will be once the fault clears",
                    fault_started_at=outage.since.isoformat(),
                    error=describe(exc),
                )
                self._told_unwritable = True
            return
        self.raised = alarm_id
        log.error(
            "scheduler_fault alarm raised",
            alarm_id=alarm_id,
            fault_started_at=outage.since.isoformat(),
            error=outage.last_error,
        )

    async def _record_after(self, outage: Outage) -> None:
        """The log could not be written during the outage: record its alarm now, then
        clear it."""
        alarm_id = _alarm_id()
        try:
            await asyncio.to_thread(self._append_raise, alarm_id, outage)
        except Exception as exc:
            log.error("scheduler_fault alarm not recorded yet", error=describe(exc))
            self._unreported = outage
            return
        log.error(
            "scheduler_fault alarm recorded after the fault",
            alarm_id=alarm_id,
            fault_started_at=outage.since.isoformat(),
            fault_ended_at=outage.until.isoformat() if outage.until else None,
        )
        await self._clear(alarm_id, outage)

    async def _clear(self, alarm_id: str, outage: Outage | None) -> None:
        when = outage.until if outage is not None and outage.until else self.clock.now()
        note = f"the scheduler records again since {when.isoformat()}"
        try:
            await asyncio.to_thread(self.alarms.clear, alarm_id, by=ACTOR, note=note, actor=ACTOR)
        except (AlarmStateConflict, AlarmNotFound):
            pass  # someone cleared it already
        except Exception as exc:
            log.error(
                "scheduler_fault alarm not cleared yet", alarm_id=alarm_id, error=describe(exc)
            )
            self.raised = alarm_id
            self._unreported = outage
            return
        self.raised = None
        log.info("scheduler_fault alarm cleared", alarm_id=alarm_id)

    def _append_raise(self, alarm_id: str, outage: Outage) -> None:
        late = outage.until is not None
        attempts = f"{outage.failures} failed attempt(s); last: {outage.last_error}"
        if outage.until is None:
            message = (
                f"the scheduler cannot record to the event log since {outage.since.isoformat()}"
                f" ({attempts}); due fires are kept and follow their misfire rules once it can"
            )
        else:
            message = (
                f"the scheduler could not record to the event log from "
                f"{outage.since.isoformat()} to {outage.until.isoformat()} ({attempts}); "
                "recorded after the fault, since the log could not be written during it"
            )
        event = AlarmRaised(
            alarm_id=alarm_id,
            kind="scheduler_fault",
            severity="critical",
            message=message,
            error={
                "type": "scheduler_fault",
                "fault_started_at": outage.since.isoformat(),
                "fault_ended_at": outage.until.isoformat() if outage.until else None,
                "recorded_after_fault": late,
                "last_error": outage.last_error,
                "failures": outage.failures,
            },
        )
        CommandHandler(self.store, self.clock).record(SCHEDULER_STREAM, [event], ACTOR)
