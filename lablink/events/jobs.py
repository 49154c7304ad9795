"""Facts about a job's definition and lifecycle (stream: the job id)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import msgspec

from lablink.events.base import Event
from lablink.events.changes import FieldChange

ScheduleType = Literal["acquisition", "state_capture", "measurement", "command", "equipment_test"]
TriggerType = Literal["cron", "interval", "daily", "weekly", "monthly", "date"]
ConflictPolicy = Literal["skip", "queue", "replace"]
ParametersCheck = Literal["passed", "pending"]

SCHEDULE_TYPES: tuple[str, ...] = (
    "acquisition",
    "state_capture",
    "measurement",
    "command",
    "equipment_test",
)
TRIGGER_TYPES: tuple[str, ...] = ("cron", "interval", "daily", "weekly", "monthly", "date")
CONFLICT_POLICIES: tuple[str, ...] = ("skip", "queue", "replace")


class JobSpec(msgspec.Struct, frozen=True, kw_only=True):
    """A validated, normalised job definition as stored in events: the one definition of a
    job's fields (the request, the update bodies and the jobs view's columns follow it; see
    lablink/domain/requests.py).

    Instants (run_date, start_date, end_date) are UTC; ``time_of_day`` is wall-clock time in
    ``timezone``. Interval fields are kept as the client gave them so the API echoes them back.
    """

    name: str
    schedule_type: ScheduleType
    equipment_id: str
    trigger_type: TriggerType
    timezone: str
    timeout_seconds: float
    description: str = ""
    cron_expression: str | None = None
    interval_seconds: float | None = None
    interval_minutes: float | None = None
    interval_hours: float | None = None
    interval_days: float | None = None
    run_date: datetime | None = None
    time_of_day: str | None = None
    day_of_week: int | None = None
    day_of_month: int | None = None
    parameters: dict[str, Any] = msgspec.field(default_factory=dict)
    max_instances: int = 1
    misfire_grace_time: float = 300.0
    coalesce: bool = True
    start_date: datetime | None = None
    end_date: datetime | None = None
    max_executions: int | None = None
    tags: tuple[str, ...] = ()
    profile_id: str | None = None
    on_failure_alarm: bool = False
    conflict_policy: ConflictPolicy = "skip"
    alarm_after_missed: int | None = None

    @property
    def interval_total_seconds(self) -> float:
        return (
            (self.interval_seconds or 0.0)
            + (self.interval_minutes or 0.0) * 60.0
            + (self.interval_hours or 0.0) * 3600.0
            + (self.interval_days or 0.0) * 86400.0
        )


class JobCreated(Event, frozen=True, kw_only=True, tag="job.created"):
    job_id: str
    spec: JobSpec
    enabled: bool
    created_by: str
    created_at: datetime
    # Interval fire times are anchor + n * interval; the anchor is fixed at creation.
    anchor: datetime
    # Whether the parameters were checked against the instrument's driver table when saved
    # ("passed"), or are left for the agent to check when the job runs ("pending": no agent
    # had described the instrument). Jobs recorded before the check existed read "pending".
    parameters_check: ParametersCheck = "pending"


class JobUpdated(Event, frozen=True, kw_only=True, tag="job.updated"):
    job_id: str
    spec: JobSpec
    anchor: datetime
    # The schedule restarts from here: fires between the last one and the update are not due.
    updated_at: datetime
    changed_fields: tuple[str, ...] = ()
    # As on JobCreated, when this update changed what the check covers (parameters, the
    # job type or the instrument); None: the previous outcome stands.
    parameters_check: ParametersCheck | None = None
    # Why the person changed it (None: no reason given), and each changed field's value
    # before and after, in the spec's field order. Absent from updates recorded before.
    reason: str | None = None
    changes: tuple[FieldChange, ...] = ()


class JobPaused(Event, frozen=True, kw_only=True, tag="job.paused"):
    job_id: str
    # The reason the person gave ("" when none; an update with enabled=false that gave none
    # says "updated with enabled=false"). What changed is the type's to say: enabled, from
    # true to false.
    reason: str = ""


class JobResumed(Event, frozen=True, kw_only=True, tag="job.resumed"):
    job_id: str
    # Resume computes the next fire from this instant, without catching up the pause.
    resumed_at: datetime
    # The reason the person gave (None: none).
    reason: str | None = None


class JobDeleted(Event, frozen=True, kw_only=True, tag="job.deleted"):
    job_id: str
    # Why the person deleted it (None: no reason given). What was deleted is the record as
    # the stream's earlier events leave it.
    reason: str | None = None


class JobCompleted(Event, frozen=True, kw_only=True, tag="job.completed"):
    """No further fires: the window ended, the date ran, or max_executions was reached."""

    job_id: str
    reason: Literal["end_date", "date_ran", "max_executions", "no_more_fires", "manual"]


class JobReanchored(Event, frozen=True, kw_only=True, tag="job.reanchored"):
    """An interval job's fire times moved with a wall-clock step.

    Interval triggers count elapsed time: when the wall clock is set by ``shift_seconds``,
    the anchor, the last handled fire and the schedule's restart instant move by as much, so
    the job keeps firing every interval with no gap and no burst (see docs/scheduling.md).
    The new values are stored, not recomputed, so a replay folds to the same state.
    """

    job_id: str
    shift_seconds: float
    anchor: datetime
    rescheduled_at: datetime
    last_fire_time: datetime | None = None
    reason: str = "clock_stepped"
