"""The time-only part of a job: what the trigger functions need, with parsed types."""

from __future__ import annotations

from datetime import datetime, time

import msgspec

from lablink.events.jobs import JobSpec, TriggerType


class Schedule(msgspec.Struct, frozen=True, kw_only=True):
    """A trigger in a job's IANA time zone, bounded by start/end.

    All instants are timezone-aware UTC. ``time_of_day`` is wall-clock time in ``timezone``.
    ``anchor`` fixes interval fire times: anchor + n * interval (n >= 1 unless the anchor is an
    explicit start_date, which is itself a fire time).
    """

    trigger_type: TriggerType
    timezone: str
    anchor: datetime
    cron_expression: str | None = None
    interval: float | None = None  # total seconds, >= 1
    anchor_fires: bool = False  # True when anchor is the job's start_date
    run_date: datetime | None = None
    time_of_day: time | None = None
    day_of_week: int | None = None  # 0 = Monday ... 6 = Sunday
    day_of_month: int | None = None  # 1..31, or -1 for the last day of the month
    start_date: datetime | None = None
    end_date: datetime | None = None

    @classmethod
    def from_spec(cls, spec: JobSpec, anchor: datetime) -> Schedule:
        return cls(
            trigger_type=spec.trigger_type,
            timezone=spec.timezone,
            anchor=anchor,
            anchor_fires=spec.start_date is not None and anchor == spec.start_date,
            cron_expression=spec.cron_expression,
            interval=spec.interval_total_seconds if spec.trigger_type == "interval" else None,
            run_date=spec.run_date,
            time_of_day=time.fromisoformat(spec.time_of_day) if spec.time_of_day else None,
            day_of_week=spec.day_of_week,
            day_of_month=spec.day_of_month,
            start_date=spec.start_date,
            end_date=spec.end_date,
        )
