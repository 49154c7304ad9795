"""When a job fires next, from the facts its events record. Pure."""

from __future__ import annotations

from datetime import datetime, timedelta

from lablink.domain import triggers
from lablink.domain.schedule import Schedule
from lablink.events.jobs import JobSpec


def planned_next_fire(
    spec: JobSpec,
    anchor: datetime,
    status: str,
    rescheduled_at: datetime,
    last_fire_time: datetime | None,
) -> datetime | None:
    """The next fire of an active job, or None.

    Fires are counted from the later of the last handled fire and the instant the schedule
    was (re)started (creation, update, resume), so a pause is never caught up. A date job
    whose run_date lies within the grace time before its creation still fires once.
    """
    if status != "active":
        return None
    schedule = Schedule.from_spec(spec, anchor)
    if spec.trigger_type == "date":
        if last_fire_time is not None or spec.run_date is None:
            return None
        grace = timedelta(seconds=spec.misfire_grace_time)
        earliest = rescheduled_at - grace
        if spec.run_date > earliest:
            return triggers.next_fire(schedule, earliest)
        return None
    after = rescheduled_at if last_fire_time is None else max(rescheduled_at, last_fire_time)
    return triggers.next_fire(schedule, after)
