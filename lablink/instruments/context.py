"""What a blocking operation gets besides its instrument: the job, a stop flag, progress, a clock.

Operations run on the instrument's worker thread, never on an event loop, so stopping is a
``threading.Event`` they check between steps and progress is a plain callback the caller
bridges to wherever it reports (an asyncio loop in-process, NATS in an agent).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from lablink.instruments.errors import OperationStopped

# Each report becomes an event in the log, so a long operation reports at most this many.
PROGRESS_STEPS = 20

# progress in [0, 1], a message, optional data
ProgressSink = Callable[[float, str, dict[str, Any]], None]


def _discard(fraction: float, message: str, data: dict[str, Any]) -> None:
    return None


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, kw_only=True)
class Job:
    """One execution as the equipment side sees it, independent of how it was dispatched."""

    execution_id: str
    job_id: str
    job_name: str
    equipment_id: str
    schedule_type: str
    parameters: Mapping[str, Any] = field(default_factory=dict)
    profile_id: str | None = None
    # The profile's settings, when whoever dispatched the job could resolve them.
    profile_settings: Mapping[str, Any] | None = None
    scheduled_time: datetime | None = None


@dataclass
class RunContext:
    """``realtime=False`` is the simulated bench: instrument time passes without waiting, so a
    60 s load test or a 600 s capture completes at once; stop requests are still honoured."""

    equipment_id: str
    cancel: threading.Event = field(default_factory=threading.Event)
    report: ProgressSink = _discard
    realtime: bool = False
    # The wall clock of whoever drives the instrument (an agent's), and the instants the
    # operation began and ended on it by that clock: None until it touched the instrument.
    now: Callable[[], datetime] = _utc_now
    started_at: datetime | None = None
    ended_at: datetime | None = None
    # A command sent ahead: the operation does not begin before this instant on ``now()``
    # (its instrument's worker waits for it, ``wait_to_begin``).
    not_before: datetime | None = None

    def wait_to_begin(self) -> None:
        """Wait until ``not_before`` on ``now()``, unless stopped meanwhile (a timer that woke
        a hair early waits out the rest, a few times at most)."""
        for _ in range(3):
            if self.not_before is None:
                return
            left = (self.not_before - self.now()).total_seconds()
            if left <= 0:
                return
            if self.cancel.wait(left):
                raise OperationStopped(self.equipment_id)

    def step(self, done: int, total: int, message: str, data: dict[str, Any] | None = None) -> None:
        """Report step ``done`` of ``total``, thinned to about ``PROGRESS_STEPS`` reports; the
        first step is always reported, so a slow operation shows it has begun."""
        every = max(1, -(-total // PROGRESS_STEPS))
        if done == 1 or done % every == 0 or done == total:
            self.report(done / total, message, {"done": done, "total": total, **(data or {})})

    def check(self) -> None:
        if self.cancel.is_set():
            raise OperationStopped(self.equipment_id)

    def clock(self) -> float:
        return time.monotonic()

    def wait_until(self, deadline: float) -> None:
        """Let instrument time pass until ``deadline`` (on ``clock()``), unless stopped.

        Deadlines rather than intervals, so the time each step takes does not add up."""
        remaining = deadline - self.clock()
        if self.realtime and remaining > 0:
            if self.cancel.wait(remaining):
                raise OperationStopped(self.equipment_id)
        else:
            self.check()
