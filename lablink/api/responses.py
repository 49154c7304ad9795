"""What each success answer holds: the guide's envelopes as msgspec Structs.

Handlers return these, so the OpenAPI document describes every success body (Litestar builds
the schema from the return annotation) and schemathesis checks each body against it. Field
order is the order of today's JSON: clients that print or diff the answers see no change.

Instants are text, as the projections render them (ISO 8601 with the offset of the job's zone
or UTC): decoding them into datetimes and encoding them again would turn ``+00:00`` into
``Z``. Fields a row may leave empty are ``| None``, never omitted: every key is always there.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, TypeVar, cast

import msgspec

from lablink.api.calibration_views import CalibrationSummary
from lablink.events import DataRemovalReason, DataStatus, ExecutionStatus, JobSpec
from lablink.events.alarms import Severity
from lablink.events.executions import TriggerInfo
from lablink.events.jobs import ParametersCheck

T = TypeVar("T")

Instant = Annotated[
    str,
    msgspec.Meta(
        extra_json_schema={
            "description": "ISO 8601 with a UTC offset",
            "extra": {"format": "date-time"},
        }
    ),
]


def embedded(rendered: msgspec.Raw, as_type: type[T]) -> T:
    """JSON rendered earlier (a job's view when its projection folded it, cached statistics),
    sent as it is; ``as_type`` says what it holds, and tests/api/test_openapi_responses.py
    decodes such JSON strictly as that type, so the document stays true."""
    return cast(T, rendered)


class Envelope(msgspec.Struct, kw_only=True):
    success: bool


class Message(Envelope, kw_only=True):
    """Delete, pause, resume: ``{"success": true, "message": ...}``."""

    message: str


# -- jobs ----------------------------------------------------------------------------------------


class JobView(JobSpec, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A job as GET shows it: every field of its spec (in the job's time zone), plus its
    state. Rendered by the jobs projection (lablink/projections/views.py, ``job_view``)."""

    job_id: str
    enabled: bool
    status: str
    version: int
    created_by: str
    created_at: datetime
    updated_at: datetime | None
    next_run_time: datetime | None
    execution_count: int
    parameters_check: ParametersCheck | None
    # Pending or running now.
    running_executions: int


class JobCreatedAnswer(Envelope, kw_only=True):
    job_id: str
    message: str


class JobList(Envelope, kw_only=True):
    count: int
    # How many jobs match the filters, beyond this page.
    total: int
    jobs: list[JobView]


class JobAnswer(Envelope, kw_only=True):
    job: JobView


class JobUpdatedAnswer(Envelope, kw_only=True):
    message: str
    job: JobView | None


class RunAnswer(Envelope, kw_only=True):
    execution_id: str
    message: str


class JobHistory(msgspec.Struct, kw_only=True):
    """Each execution counts once in ``total_executions`` and once under its status."""

    job_id: str
    job_name: str | None
    total_executions: int
    successful: int
    failed: int
    timed_out: int
    interrupted: int
    cancelled: int
    skipped: int
    missed: int
    coalesced: int
    # Runs not dispatched: the instrument's calibration expired or is missing, or it is
    # quarantined (docs/calibration.md).
    blocked: int
    in_progress: int
    average_duration: float | None
    last_execution: Instant | None
    last_execution_id: str | None
    last_status: str | None
    next_run: Instant | None
    last_instrument_started_at: Instant | None = None
    last_instrument_ended_at: Instant | None = None


class HistoryAnswer(Envelope, kw_only=True):
    history: JobHistory


class NextRuns(Envelope, kw_only=True):
    job_id: str
    enabled: bool
    status: str
    timezone: str
    next_runs: list[Instant]


class Preview(Envelope, kw_only=True):
    valid: bool
    parameters_check: ParametersCheck
    # The job as it would be stored: instants in UTC.
    job: JobSpec
    next_runs: list[Instant]


class JobStreamEvent(msgspec.Struct, kw_only=True):
    position: int
    version: int
    event_id: str
    type: str
    occurred_at: Instant
    actor: str
    correlation_id: str | None
    data: dict[str, Any]


class JobEvents(Envelope, kw_only=True):
    job_id: str
    count: int
    events: list[JobStreamEvent]


# -- executions ----------------------------------------------------------------------------------


class DataColumn(msgspec.Struct, kw_only=True):
    name: str
    unit: str | None = None


class ExecutionData(msgspec.Struct, kw_only=True):
    """An execution's captured data (acquisitions): ``none`` when it has none;
    ``pending_upload`` while its agent still holds the file; ``stored`` in the bucket, with
    ``url`` to download it; ``removed`` by retention or the byte bound (when and why)."""

    status: DataStatus
    file_name: str | None = None
    size: int | None = None
    sha256: str | None = None
    rows: int | None = None
    columns: list[DataColumn] | None = None
    sample_rate: float | None = None
    object: str | None = None
    stored_at: Instant | None = None
    removed_at: Instant | None = None
    removal_reason: DataRemovalReason | None = None
    url: str | None = None


class Lateness(msgspec.Struct, kw_only=True):
    """Seconds from ``scheduled_time`` to each step (null where the step has no recorded
    instant): decided (``actual_time``), dispatched (``dispatched_at``), and begun on the
    instrument (``instrument_started_at``)."""

    decided_seconds: float | None = None
    dispatched_seconds: float | None = None
    instrument_started_seconds: float | None = None


class ExecutionView(msgspec.Struct, kw_only=True):
    """Times in UTC. ``result``, ``error`` and ``late_result`` are as the agent reported them;
    ``instrument_started_at`` and ``instrument_ended_at`` are its instrument's own times, on
    its clock."""

    execution_id: str
    job_id: str
    job_name: str | None
    schedule_type: str | None
    equipment_id: str | None
    status: ExecutionStatus
    trigger_info: TriggerInfo
    scheduled_time: Instant | None
    actual_time: Instant | None
    started_at: Instant | None
    completed_at: Instant | None
    duration_seconds: float | None
    result: Any
    error: dict[str, Any] | None
    progress: float | None
    message: str | None
    missed_count: int | None
    window_start: Instant | None
    window_end: Instant | None
    coalesced_count: int | None
    coalesced_into: str | None
    late_result: dict[str, Any] | None
    data: ExecutionData = msgspec.field(default_factory=lambda: ExecutionData(status="none"))
    dispatched_at: Instant | None = None
    instrument_started_at: Instant | None = None
    instrument_ended_at: Instant | None = None
    lateness: Lateness = msgspec.field(default_factory=Lateness)
    # A blocked execution's cause: calibration_expired, calibration_missing, quarantined.
    cause: str | None = None


class ExecutionList(Envelope, kw_only=True):
    count: int
    executions: list[ExecutionView]
    next_cursor: int | None


class ExecutionAnswer(Envelope, kw_only=True):
    execution: ExecutionView


# -- monitoring ----------------------------------------------------------------------------------


class UpcomingJob(msgspec.Struct, kw_only=True):
    job_id: str
    job_name: str
    next_run: Instant | None


class Statistics(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Today is the server's day, in its time zone (``timezone``)."""

    total_jobs: int
    active_jobs: int
    disabled_jobs: int
    completed_jobs: int
    running_executions: int
    total_executions_today: int
    successful_today: int
    failed_today: int
    failed_today_includes: list[str]
    skipped_today: int
    missed_today: int
    today_by_status: dict[str, int]
    by_type: dict[str, int]
    upcoming_jobs: list[UpcomingJob]
    timezone: str
    active_alarms: int
    unacknowledged_alarms: int


class StatisticsAnswer(Envelope, kw_only=True):
    statistics: Statistics


class RunningJobs(Envelope, kw_only=True):
    count: int
    running_jobs: list[str]


# -- equipment -----------------------------------------------------------------------------------


class InstrumentIdentity(msgspec.Struct, kw_only=True):
    """The instrument's ``*IDN?`` answer, split (``raw`` as it came)."""

    manufacturer: str | None
    model: str | None
    serial: str | None
    firmware: str | None
    raw: str | None


class RunningExecution(msgspec.Struct, kw_only=True):
    execution_id: str
    job_id: str
    job_name: str | None
    started_at: Instant | None


class InstrumentQueue(msgspec.Struct, kw_only=True):
    """The executions in line for an instrument now, as its agent last said: ``queued``
    wait for it, ``running`` began on it and are not finished; ``depth`` is both."""

    queued: int
    running: int
    depth: int


class EquipmentView(msgspec.Struct, kw_only=True):
    equipment_id: str
    kind: str | None
    status: str | None
    online: bool
    identity: InstrumentIdentity
    agent_id: str | None
    resource: str | None
    since: Instant | None
    last_seen: Instant | None
    reason: str | None
    running: list[RunningExecution]
    # None while no agent that this process hears says it (offline, or not heard yet).
    queue: InstrumentQueue | None
    # Its calibration now (docs/calibration.md); status "missing" when it has no record.
    calibration: CalibrationSummary | None = None


class EquipmentList(Envelope, kw_only=True):
    count: int
    equipment: list[EquipmentView]


class EquipmentAnswer(Envelope, kw_only=True):
    equipment: EquipmentView


# -- alarms --------------------------------------------------------------------------------------


class AlarmStep(msgspec.Struct, kw_only=True):
    """Who acknowledged or cleared an alarm, when, and why."""

    by: str
    at: Instant | None
    note: str | None


class AlarmView(msgspec.Struct, kw_only=True):
    alarm_id: str
    kind: str
    severity: Severity
    state: str
    message: str
    equipment_id: str | None
    job_id: str | None
    job_name: str | None
    execution_id: str | None
    execution_time: Instant | None
    error: dict[str, Any]
    equipment: dict[str, Any]
    raised_at: Instant | None
    raised_by: str | None
    acknowledged: AlarmStep | None
    cleared: AlarmStep | None


class AlarmList(Envelope, kw_only=True):
    count: int
    alarms: list[AlarmView]
    next_cursor: int | None


class AlarmAnswer(Envelope, kw_only=True):
    alarm: AlarmView | None


# -- audit ---------------------------------------------------------------------------------------


class AuditChange(msgspec.Struct, kw_only=True):
    """One field a change altered: its value before and after (JSON values; null: none)."""

    field: str
    old: Any
    new: Any


class AuditEvent(msgspec.Struct, kw_only=True):
    """One entry of the log; ``data`` is the event's payload as stored (key hashes removed).

    ``reason``: why, as recorded (the reason a person gave for a change; the engine's cause
    for its own facts). ``changes``: the fields an update altered, old and new. ``amended``:
    the job, profile or key this entry recorded was changed or deleted later, first at
    ``amended_at_position`` (always false for other entries)."""

    position: int
    event_id: str
    type: str
    stream_id: str
    version: int
    occurred_at: Instant
    actor: str
    correlation_id: str | None
    reason: str | None
    changes: list[AuditChange]
    amended: bool
    amended_at_position: int | None
    data: dict[str, Any]


class AuditPage(Envelope, kw_only=True):
    count: int
    events: list[AuditEvent]
    next_cursor: int | None


# -- profiles ------------------------------------------------------------------------------------


class ProfileView(msgspec.Struct, kw_only=True):
    """Settings in the order they are applied; ``version`` guards updates."""

    profile_id: str
    name: str
    description: str
    equipment_type: str
    model: str
    settings: dict[str, Any]
    tags: list[str]
    version: int
    created_at: Instant | None
    created_by: str | None
    updated_at: Instant | None
    updated_by: str | None


class ProfileList(Envelope, kw_only=True):
    count: int
    profiles: list[ProfileView]


class ProfileAnswer(Envelope, kw_only=True):
    profile: ProfileView


class ProfileCreatedAnswer(Envelope, kw_only=True):
    profile_id: str
    message: str
    profile: ProfileView


class ProfileUpdatedAnswer(Envelope, kw_only=True):
    message: str
    profile: ProfileView


def views(rows: list[dict[str, Any]], as_type: type[T]) -> list[T]:
    """Rows the query functions return, as the Structs that describe them."""
    return msgspec.convert(rows, list[as_type])  # type: ignore[valid-type]


def view(row: dict[str, Any], as_type: type[T]) -> T:
    return msgspec.convert(row, as_type)
