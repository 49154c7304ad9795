"""Facts about one execution of a job.

Execution events live in their job's stream (so the job aggregate sees running and counted
executions under the same optimistic lock) and carry the execution id as correlation id.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import msgspec

from lablink.events.base import Event

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
]
EXECUTION_STATUSES: tuple[str, ...] = (
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
)
FINAL_STATUSES: frozenset[str] = frozenset(
    {"completed", "failed", "timed_out", "cancelled", "interrupted", "skipped", "missed"}
)


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


class ExecutionFailed(Event, frozen=True, kw_only=True, tag="execution.failed"):
    job_id: str
    execution_id: str
    completed_at: datetime
    started_at: datetime | None = None
    error: ExecutionError


class ExecutionTimedOut(Event, frozen=True, kw_only=True, tag="execution.timed_out"):
    job_id: str
    execution_id: str
    completed_at: datetime
    started_at: datetime | None = None
    timeout_seconds: float


class ExecutionCancelled(Event, frozen=True, kw_only=True, tag="execution.cancelled"):
    job_id: str
    execution_id: str
    completed_at: datetime
    started_at: datetime | None = None
    reason: str = ""


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
    """One record for one or many fires that could not start within the grace time."""

    job_id: str
    execution_id: str
    scheduled_time: datetime
    actual_time: datetime
    missed_count: int
    window_start: datetime
    window_end: datetime
    reason: str
