"""What an execution is on its way to an instrument, and what comes back.

The engine builds an ``ExecutionRequest`` for each execution and gets an ``Outcome`` back,
whichever executor ran it: the in-process bench or an equipment agent over NATS, where the
same two types travel inside the protocol's messages (``protocol``). One outcome type on
both sides, so nothing converts it on the way.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Literal, NamedTuple

import msgspec

from lablink.events import ExecutionError, ExecutionProgressed, JobSpec
from lablink.instruments.errors import ProfileError


class ExecutionRequest(msgspec.Struct, frozen=True, kw_only=True):
    execution_id: str
    job_id: str
    job_name: str
    spec: JobSpec
    scheduled_time: datetime
    trigger_info: str


class Outcome(msgspec.Struct, frozen=True, kw_only=True):
    """How an execution ended, with its times as those who saw them say.

    ``instrument_started_at`` and ``instrument_ended_at`` are taken by whoever drove the
    instrument (an agent: on its clock), on the instrument's worker, right around the
    operation's I/O; None when the instrument was never touched. ``dispatched_at`` is when
    the scheduler's executor sent the command on (to an agent: the run request); an agent
    leaves it None."""

    status: Literal["completed", "failed"]
    result: dict[str, Any] = msgspec.field(default_factory=dict)
    error: ExecutionError | None = None
    dispatched_at: datetime | None = None
    instrument_started_at: datetime | None = None
    instrument_ended_at: datetime | None = None

    @classmethod
    def ok(cls, **result: Any) -> Outcome:
        return cls(status="completed", result=result)

    @classmethod
    def failed(cls, type: str, message: str, *, code: int | None = None, **details: Any) -> Outcome:
        return cls(
            status="failed",
            error=ExecutionError(type=type, message=message, code=code, details=details),
        )


# Called by an executor while it works: progress in [0, 1], a message, optional data.
ProgressReport = Callable[[float, str, dict[str, Any]], Awaitable[None]]
# Records many executions' progress together, in order (``Engine.record_progress``): an
# agent executor's reports of one fetch.
ProgressBatch = Callable[[Sequence[ExecutionProgressed]], Awaitable[None]]


class InstrumentTimes(NamedTuple):
    """What an executor knows, while an execution runs, of its operation on the instrument
    (the times of ``Outcome``, before the outcome): None for what it does not know."""

    started_at: datetime | None = None
    ended_at: datetime | None = None


# A profile's settings by profile id (None: no such profile).
ProfileLookup = Callable[[str], Mapping[str, Any] | None]


def resolve_profile(
    request: ExecutionRequest, profiles: ProfileLookup | None
) -> Mapping[str, Any] | None:
    """The settings of the job's profile; None when it names none or no profiles are known
    (then nothing is applied). An unknown profile fails the execution before it runs."""
    spec = request.spec
    if spec.profile_id is None or profiles is None:
        return None
    settings = profiles(spec.profile_id)
    if settings is None:
        raise ProfileError(
            spec.equipment_id,
            f"profile {spec.profile_id!r} not found",
            details={"profile_id": spec.profile_id},
        )
    return settings
