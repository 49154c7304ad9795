"""Where time comes from. The domain never calls datetime.now(); it is handed a clock.

A clock gives two readings: ``now()``, the wall clock (what schedules are written in, and what
an administrator or NTP can set), and ``monotonic()``, seconds that only ever move forward at
the rate time passes (what durations are measured in). Comparing the two tells a step of the
wall clock from time passing (``StepDetector``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current instant, timezone-aware, in UTC."""
        ...

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin; never goes back, unmoved by wall-clock steps."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()


def _seconds(delta: timedelta | float) -> timedelta:
    return delta if isinstance(delta, timedelta) else timedelta(seconds=delta)


class ManualClock:
    """A clock a test moves by hand, so DST days and week-long outages take milliseconds.

    ``advance`` is time passing: wall and monotonic time move together. ``step`` is someone
    setting the wall clock: only the wall time moves. ``set`` moves to an instant; forward it
    is time passing, backward it is a step (monotonic time cannot go back).
    """

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("ManualClock needs a timezone-aware start")
        self._now = start.astimezone(UTC)
        self._monotonic = 1000.0

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._monotonic

    def set(self, instant: datetime) -> None:
        if instant.tzinfo is None:
            raise ValueError("ManualClock.set needs a timezone-aware instant")
        instant = instant.astimezone(UTC)
        self._monotonic += max((instant - self._now).total_seconds(), 0.0)
        self._now = instant

    def advance(self, delta: timedelta | float) -> datetime:
        delta = _seconds(delta)
        if delta < timedelta(0):
            raise ValueError(f"ManualClock.advance: time does not pass backwards ({delta})")
        self._now += delta
        self._monotonic += delta.total_seconds()
        return self._now

    def step(self, delta: timedelta | float) -> datetime:
        """Set the wall clock ``delta`` away (either sign); monotonic time does not move."""
        self._now += _seconds(delta)
        return self._now


# Below this, a difference between wall and monotonic time is the wall clock being slewed
# (NTP adjusts its rate by at most 0.05 %) or the two readings being taken a moment apart.
STEP_THRESHOLD = 1.0


@dataclass(frozen=True, slots=True)
class ClockStep:
    """The wall clock was set: ``seconds`` signed (negative = set back)."""

    seconds: float
    wall_before: datetime  # what the wall clock would read now without the step
    wall_after: datetime  # what it reads

    @property
    def delta(self) -> timedelta:
        return timedelta(seconds=self.seconds)


class StepDetector:
    """Notices wall-clock steps by comparing wall and monotonic time at each ``check``.

    The offset between the two is remembered after every check, so a slow slew never adds up
    to a step; a jump of ``threshold`` seconds or more between two checks is one. A suspended
    machine reads as a forward step (Linux's monotonic clock stops during suspend), which is
    what it is for a schedule: time the scheduler did not see.
    """

    def __init__(self, clock: Clock, threshold: float = STEP_THRESHOLD) -> None:
        self.clock = clock
        self.threshold = threshold
        self._offset: float | None = None

    def check(self) -> ClockStep | None:
        wall = self.clock.now()
        offset = wall.timestamp() - self.clock.monotonic()
        previous, self._offset = self._offset, offset
        if previous is None:
            return None
        jump = offset - previous
        if abs(jump) < self.threshold:
            return None
        return ClockStep(seconds=jump, wall_before=wall - timedelta(seconds=jump), wall_after=wall)
