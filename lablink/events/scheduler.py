"""Facts about the scheduler itself (stream: ``scheduler``)."""

from __future__ import annotations

from datetime import datetime

from lablink.events.base import Event


class ClockStepped(Event, frozen=True, kw_only=True, tag="scheduler.clock_stepped"):
    """The wall clock was set (by hand, NTP stepping it, a resumed virtual machine): every
    timer was planned again. ``step_seconds`` is signed: negative when it was set back."""

    step_seconds: float
    # What the clock would have read without the step, and what it read after it.
    wall_before: datetime
    wall_after: datetime
    # Enabled jobs planned again, and interval jobs among them whose fire times moved with
    # the step (each by a ``job.reanchored`` in its own stream).
    planned_jobs: int = 0
    reanchored_jobs: int = 0
