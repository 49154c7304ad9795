"""Facts about one execution of a job.

Execution events live in their job's stream (so the job aggregate sees running and counted
executions under the same optimistic lock) and carry the execution id as correlation id.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal, get_args

import msgspec

from lablink.events.base import Event
from lablink.events.calibration import BlockCause

TriggerInfo = Literal["scheduled", "manual", "catch_up"]
ExecutionStatus = Literal[
    "pending",
    "queued",
    "running",
    "completed",
    "failed",
    "timed_out",
    "cancelled",
    "interrupted",
    "skipped",
    "missed",
    "coalesced",
    "blocked",
]
EXECUTION_STATUSES: tuple[str, ...] = get_args(ExecutionStatus)


class ExecutionError(msgspec.Struct, frozen=True, kw_only=True):
    type: str
    message: str
    code: int | None = None
    details: dict[str, Any] = msgspec.field(default_factory=dict)


class ExecutionRequested(Event, frozen=True, kw_only=True, tag="execution.pending"):
    """A fire (or run-now) created an execution that may start now."""

    job_id: str
    execution_id: str
    scheduled_time: datetime
    actual_time: datetime
    trigger_info: TriggerInfo


class ExecutionQueued(Event, frozen=True, kw_only=True, tag="execution.queued"):
    """Conflict policy ``queue``: waits for the running execution(s) to end (FIFO)."""

    job_id: str
    execution_id: str
    scheduled_time: datetime
    actual_time: datetime
    trigger_info: TriggerInfo
    behind: tuple[str, ...] = ()


class ExecutionStarted(Event, frozen=True, kw_only=True, tag="execution.started"):
    job_id: str
    execution_id: str
    started_at: datetime


class ExecutionProgressed(Event, frozen=True, kw_only=True, tag="execution.progressed"):
    job_id: str
    execution_id: str
    progress: float
    message: str = ""
    data: dict[str, Any] = msgspec.field(default_factory=dict)


class ExecutionSucceeded(Event, frozen=True, kw_only=True, tag="execution.completed"):
    job_id: str
    execution_id: str
    completed_at: datetime
    # Carried on the final fact so that views can compute durations from it alone.
    started_at: datetime | None = None
    result: dict[str, Any] = msgspec.field(default_factory=dict)
    # When the command left the scheduler (docs/api.md, "Executions"); None in logs written
    # before it was recorded.
    dispatched_at: datetime | None = None
    # When the operation began and ended on the instrument, on the clock of whoever drove it
    # (the agent's); None when the instrument was never touched, or in older logs.
    instrument_started_at: datetime | None = None
    instrument_ended_at: datetime | None = None


class ExecutionFailed(Event, frozen=True, kw_only=True, tag="execution.failed"):
    job_id: str
    execution_id: str
    completed_at: datetime
    started_at: datetime | None = None
    error: ExecutionError
    dispatched_at: datetime | None = None
    instrument_started_at: datetime | None = None
    instrument_ended_at: datetime | None = None


class ExecutionTimedOut(Event, frozen=True, kw_only=True, tag="execution.timed_out"):
    job_id: str
    execution_id: str
    completed_at: datetime
    started_at: datetime | None = None
    timeout_seconds: float
    dispatched_at: datetime | None = None
    # What the executor knew of the instrument when the timeout was recorded: when the
    # operation began on it (its agent said so in a progress report or its presence), and
    # when it ended (known only if it ended before its result came). None when it never
    # reached the instrument, or in logs written before they were recorded.
    instrument_started_at: datetime | None = None
    instrument_ended_at: datetime | None = None


class ExecutionCancelled(Event, frozen=True, kw_only=True, tag="execution.cancelled"):
    job_id: str
    execution_id: str
    completed_at: datetime
    started_at: datetime | None = None
    reason: str = ""
    # None when it was cancelled before it was dispatched (pending or queued).
    dispatched_at: datetime | None = None


class ExecutionInterrupted(Event, frozen=True, kw_only=True, tag="execution.interrupted"):
    """The scheduler died while the execution ran, and no agent report says how it ended."""

    job_id: str
    execution_id: str
    completed_at: datetime
    started_at: datetime | None = None
    reason: str = "scheduler restarted while the execution was running"


class ExecutionSkipped(Event, frozen=True, kw_only=True, tag="execution.skipped"):
    """Conflict policy refused the fire; the reason names the running execution(s)."""

    job_id: str
    execution_id: str
    scheduled_time: datetime
    actual_time: datetime
    trigger_info: TriggerInfo
    reason: str
    running: tuple[str, ...] = ()


class ExecutionMissed(Event, frozen=True, kw_only=True, tag="execution.missed"):
    """One record for one or many fires that could not start within the grace time
    (``reason`` states how late they were)."""

    job_id: str
    execution_id: str
    scheduled_time: datetime
    actual_time: datetime
    missed_count: int
    window_start: datetime
    window_end: datetime
    reason: str


class ExecutionCoalesced(Event, frozen=True, kw_only=True, tag="execution.coalesced"):
    """One record for one or many fires that were due within misfire_grace_time and that
    ``coalesce`` merged into one run (``into_execution_id``, the latest due fire): they were
    not missed, they ran as that run."""

    job_id: str
    execution_id: str
    scheduled_time: datetime
    actual_time: datetime
    coalesced_count: int
    window_start: datetime
    window_end: datetime
    into_execution_id: str
    reason: str


class ExecutionBlocked(Event, frozen=True, kw_only=True, tag="execution.blocked"):
    """A run fell due on an instrument that may not be used (its calibration expired or is
    missing, or it is quarantined): it was not dispatched. ``reason`` says why in words,
    with the certificate and its due date where there is one."""

    job_id: str
    execution_id: str
    scheduled_time: datetime
    actual_time: datetime
    trigger_info: TriggerInfo
    equipment_id: str
    cause: BlockCause
    reason: str
    certificate: str | None = None
    due: date | None = None
    # True: the run had been waiting (conflict policy queue, recorded execution.queued) and
    # its instrument was blocked when its turn came; the views counted it when it queued.
    queued: bool = False


# The facts that end a running (or waiting) execution, and the status each gives it.
ExecutionEnded = (
    ExecutionSucceeded
    | ExecutionFailed
    | ExecutionTimedOut
    | ExecutionCancelled
    | ExecutionInterrupted
)
ENDED_STATUS: dict[type[ExecutionEnded], ExecutionStatus] = {
    ExecutionSucceeded: "completed",
    ExecutionFailed: "failed",
    ExecutionTimedOut: "timed_out",
    ExecutionCancelled: "cancelled",
    ExecutionInterrupted: "interrupted",
}
# The facts that record an execution already ended (it never runs), and its status.
ExecutionRecordedEnded = ExecutionSkipped | ExecutionMissed | ExecutionCoalesced | ExecutionBlocked
RECORDED_ENDED_STATUS: dict[type[ExecutionRecordedEnded], ExecutionStatus] = {
    ExecutionSkipped: "skipped",
    ExecutionMissed: "missed",
    ExecutionCoalesced: "coalesced",
    ExecutionBlocked: "blocked",
}
# The statuses an execution keeps for good: the only rows retention may prune.
FINAL_STATUSES: frozenset[str] = frozenset(
    {*ENDED_STATUS.values(), *RECORDED_ENDED_STATUS.values()}
)


# Every ``ExecutionError.type`` a failed execution can record, with its meaning: the one list
# docs/agents.md shows. An exception that escapes an executor is recorded as
# ``executor_error`` (its class name goes into the message), never under its own name.
ERROR_TYPES: dict[str, str] = {
    "equipment_offline": "no agent serves the instrument, its agent did not answer the run "
    "request, NATS was unavailable, or the agent said the instrument is offline",
    "agent_lost": "the instrument's agent fell silent (no heartbeat for the heartbeat timeout) "
    "while the execution ran",
    "agent_restarted": "the agent stopped while the execution ran; it put the instrument in "
    "its safe state when it started again",
    "refused": "the agent refused the run command (undecodable, or for another instrument)",
    "stale_command": "the agent received the run command later than the job's "
    "misfire_grace_time after it was due, and did not run it",
    "unknown_command": "the job names a command the instrument's driver does not have",
    "invalid_parameter": "a parameter the driver refused before sending anything",
    "instrument_error": "the instrument reported an error (SYST:ERR?), with its code",
    "communication_error": "the instrument did not answer (VISA timeout) or answered "
    "something the driver cannot read",
    "equipment_test_failed": "a diagnostic ran to the end and the instrument did not pass it",
    "profile_error": "the job's profile is unknown or could not be applied",
    "capture_refused": "an acquisition was refused before it started: the bytes it would "
    "write are not free in the agent's data folder, or exceed the maximum size of one capture",
    "stopped": "the agent stopped the operation (timeout, cancel, agent shutdown)",
    "equipment_error": "any other instrument fault",
    "internal_error": "the operation raised an unexpected exception on the agent (logged there "
    "with its traceback)",
    "executor_error": "the scheduler's executor raised an unexpected exception (logged with "
    "its traceback)",
}

# Failures the scheduler records without a result from the agent: the agent may still report
# one, which is then kept as a late result.
ENDED_WITHOUT_RESULT: frozenset[str] = frozenset(
    {"agent_lost", "equipment_offline", "executor_error"}
)


class ExecutionLateResult(Event, frozen=True, kw_only=True, tag="execution.late_result"):
    """An agent's result for an execution that had already ended without it (agent lost,
    timed out, interrupted, cancelled): kept, but the execution's status does not change."""

    job_id: str
    execution_id: str
    received_at: datetime
    status: Literal["completed", "failed"]
    result: dict[str, Any] = msgspec.field(default_factory=dict)
    error: ExecutionError | None = None
    agent_id: str = ""
    equipment_id: str = ""
    # When the agent says it produced the result (its clock).
    reported_at: datetime | None = None
    # When the operation began and ended on the instrument (the agent's clock).
    instrument_started_at: datetime | None = None
    instrument_ended_at: datetime | None = None


def documented_error(error: ExecutionError | None) -> ExecutionError:
    """``error`` when its type is one of ERROR_TYPES; else the same failure as
    ``executor_error``, keeping the type it came with in ``details["reported_type"]``."""
    if error is None:
        return ExecutionError(
            type="executor_error", message="the executor reported a failure without an error"
        )
    if error.type in ERROR_TYPES:
        return error
    return ExecutionError(
        type="executor_error",
        message=error.message,
        code=error.code,
        details={**error.details, "reported_type": error.type},
    )
