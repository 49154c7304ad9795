"""The job aggregate: its state is a fold of its own events, and nothing else.

``decide(state, command, now)`` returns the events a command produces (or raises, writing
nothing); ``evolve(state, event)`` folds one event and never raises. Both are pure.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any, TypeVar

import msgspec
from msgspec.structs import replace

from lablink.domain.changes import field_changes
from lablink.domain.planning import planned_next_fire
from lablink.domain.reasons import Reasoned
from lablink.domain.requests import JobRequest, parse_job_changes, request_of
from lablink.domain.validation import ALL_TRIGGER_FIELDS, normalise
from lablink.errors import InvalidRequest, JobNotFound, JobStateConflict
from lablink.events import (
    ENDED_WITHOUT_RESULT,
    AnyEvent,
    ExecutionBlocked,
    ExecutionCoalesced,
    ExecutionDataRemoved,
    ExecutionDataStored,
    ExecutionEnded,
    ExecutionFailed,
    ExecutionLateResult,
    ExecutionMissed,
    ExecutionQueued,
    ExecutionRequested,
    ExecutionSkipped,
    ExecutionStarted,
    ExecutionSucceeded,
    JobCompleted,
    JobCreated,
    JobDeleted,
    JobPaused,
    JobReanchored,
    JobResumed,
    JobSpec,
    JobUpdated,
)

JobStatus = str  # "active" | "paused" | "completed" | "deleted"
# How many executions ended without their result a job remembers (see JobState.unsettled).
MAX_UNSETTLED = 32
# How many captures still uploading a job remembers (see JobState.awaiting_data), and how
# many of those it remembers as removed before their upload came (JobState.data_removed).
MAX_AWAITING_DATA = 256
# How many recorded uploads a job remembers (JobState.data_stored): a repeated report of one
# (an agent killed before it forgot the upload) records nothing.
MAX_DATA_STORED = 32


class JobState(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """The job aggregate's state. A msgspec Struct: copying one field at a time (every
    event does) and encoding it for the jobs view's snapshot are both cheap. Not tracked by
    the cycle collector (``gc=False``): a state refers only to immutable values and fresh
    dicts of them, so it can never be part of a cycle, and the engine makes a few per fire."""

    job_id: str
    exists: bool = False
    spec: JobSpec | None = None
    status: JobStatus = "new"
    anchor: datetime | None = None
    created_at: datetime | None = None
    created_by: str = ""
    # The newest instant the schedule was (re)started from: creation, update or resume.
    rescheduled_at: datetime | None = None
    # Fires of the schedule (not run-now) that started or were recorded: the
    # max_executions count, which survives retention because it lives in the log.
    counted_runs: int = 0
    # The newest scheduled_time handled for a scheduled/catch-up fire: nothing fires twice.
    last_fire_time: datetime | None = None
    pending: tuple[str, ...] = ()
    running: tuple[str, ...] = ()
    # When each running execution started, so final facts can carry it.
    started: dict[str, datetime] = msgspec.field(default_factory=dict)
    # (scheduled_time, trigger_info) of every execution not yet ended.
    requests: dict[str, tuple[datetime, str]] = msgspec.field(default_factory=dict)
    queued: tuple[str, ...] = ()
    # Run-now executions not yet ended: they never count toward max_executions.
    manual: frozenset[str] = frozenset()
    consecutive_missed: int = 0
    # Whether the parameters were checked against the instrument's driver when last saved
    # ("passed") or are left for the agent ("pending"); see domain/parameters.py.
    parameters_check: str = "pending"
    # The newest executions that ended while running without their agent's result (agent
    # lost, timed out, cancelled, interrupted…): a result that still comes for one of them
    # is kept as a late result, once. Bounded: it travels in every snapshot.
    unsettled: tuple[str, ...] = ()
    # Executions whose result says their capture is ``pending_upload``: the agent's word that
    # the object store has it (ExecutionDataStored) is recorded once, for one of these.
    # Bounded: it travels in every snapshot.
    awaiting_data: tuple[str, ...] = ()
    # The newest of those whose upload was recorded (ExecutionDataStored, or removed as lost),
    # and those retention or the bound removed while they still awaited it (their object,
    # when it comes, is deleted). Bounded: they travel in every snapshot.
    data_stored: tuple[str, ...] = ()
    data_removed: tuple[str, ...] = ()

    @property
    def enabled(self) -> bool:
        return self.status == "active"

    def next_fire_time(self) -> datetime | None:
        if self.spec is None or self.anchor is None or self.rescheduled_at is None:
            return None
        return next_fire_of(
            self.spec, self.anchor, self.status, self.rescheduled_at, self.last_fire_time
        )


# A fire asks for the job's next fire several times (the decision, its completion check, the
# engine's plan, the finish's completion check) of states that differ only in fields the
# answer does not depend on. The answer is a pure function of these inputs, so it is kept:
# one computation per fire instead of five. Keyed by the spec's identity (a JobSpec holds
# dicts, so it has no hash); the entry keeps the spec alive, so its id cannot be reused
# while the entry stands. Bounded by clearing: a miss only costs the computation.
_NextFireKey = tuple[int, datetime, str, datetime, datetime | None]
_next_fires: dict[_NextFireKey, tuple[JobSpec, datetime | None]] = {}
NEXT_FIRES_KEPT = 65_536


def next_fire_of(
    spec: JobSpec,
    anchor: datetime,
    status: str,
    rescheduled_at: datetime,
    last_fire_time: datetime | None,
) -> datetime | None:
    """``planned_next_fire``, remembered (see ``_next_fires``)."""
    if status != "active":
        return None
    key = (id(spec), anchor, status, rescheduled_at, last_fire_time)
    hit = _next_fires.get(key)
    if hit is not None and hit[0] is spec:
        return hit[1]
    when = planned_next_fire(spec, anchor, status, rescheduled_at, last_fire_time)
    if len(_next_fires) >= NEXT_FIRES_KEPT:
        _next_fires.clear()
    _next_fires[key] = (spec, when)
    return when


# -- commands ---------------------------------------------------------------------------------


class CreateJob(msgspec.Struct, frozen=True, kw_only=True):
    job_id: str
    request: JobRequest
    default_timezone: str
    created_by: str


class UpdateJob(Reasoned, frozen=True, kw_only=True):
    """Change the fields given in ``changes``; the rest stay."""

    job_id: str
    changes: dict[str, Any]
    default_timezone: str = "UTC"


class PauseJob(Reasoned, frozen=True, kw_only=True):
    job_id: str


class ResumeJob(Reasoned, frozen=True, kw_only=True):
    job_id: str


class DeleteJob(Reasoned, frozen=True, kw_only=True):
    job_id: str


class CompleteJob(msgspec.Struct, frozen=True, kw_only=True):
    job_id: str
    reason: str = "manual"


JobCommand = CreateJob | UpdateJob | PauseJob | ResumeJob | DeleteJob | CompleteJob


# -- evolve -----------------------------------------------------------------------------------


_V = TypeVar("_V")


def _without(items: tuple[str, ...], item: str) -> tuple[str, ...]:
    if item not in items:
        return items  # the common case: nothing to rebuild
    return tuple(i for i in items if i != item)


def _dropped(mapping: dict[str, _V], key: str) -> dict[str, _V]:
    """``mapping`` without ``key``: a new dict (states share theirs), or the same one."""
    if key not in mapping:
        return mapping
    smaller = dict(mapping)
    del smaller[key]
    return smaller


def _ended(state: JobState, execution_id: str) -> JobState:
    return replace(
        state,
        pending=_without(state.pending, execution_id),
        running=_without(state.running, execution_id),
        queued=_without(state.queued, execution_id),
        manual=state.manual - {execution_id} if execution_id in state.manual else state.manual,
        started=_dropped(state.started, execution_id),
        requests=_dropped(state.requests, execution_id),
    )


def _without_result(event: AnyEvent) -> bool:
    """Did this end come from the scheduler's side, so that the agent's result may follow?"""
    if isinstance(event, ExecutionSucceeded):
        return False
    if isinstance(event, ExecutionFailed):
        return event.error.type in ENDED_WITHOUT_RESULT
    return True


def _upload_pending(result: dict[str, Any]) -> bool:
    data = result.get("data")
    return isinstance(data, dict) and data.get("status") == "pending_upload"


def _awaiting_data(state: JobState, execution_id: str) -> JobState:
    awaiting = (*_without(state.awaiting_data, execution_id), execution_id)
    return replace(state, awaiting_data=awaiting[-MAX_AWAITING_DATA:])


def _remembered(items: tuple[str, ...], item: str, limit: int) -> tuple[str, ...]:
    return (*_without(items, item), item)[-limit:]


def _note_fire(
    state: JobState, execution_id: str, scheduled_time: datetime, trigger_info: str
) -> JobState:
    if trigger_info == "manual":
        return replace(state, manual=state.manual | {execution_id})
    newest = state.last_fire_time
    return replace(
        state,
        last_fire_time=scheduled_time if newest is None or scheduled_time > newest else newest,
    )


def evolve(state: JobState, event: AnyEvent) -> JobState:
    match event:
        case JobCreated():
            return replace(
                state,
                exists=True,
                spec=event.spec,
                status="active" if event.enabled else "paused",
                anchor=event.anchor,
                created_at=event.created_at,
                created_by=event.created_by,
                rescheduled_at=event.created_at,
                parameters_check=event.parameters_check,
            )
        case JobUpdated():
            return replace(
                state,
                spec=event.spec,
                anchor=event.anchor,
                rescheduled_at=event.updated_at,
                parameters_check=event.parameters_check or state.parameters_check,
            )
        case JobPaused():
            return replace(state, status="paused")
        case JobResumed():
            return replace(state, status="active", rescheduled_at=event.resumed_at)
        case JobReanchored():
            return replace(
                state,
                anchor=event.anchor,
                rescheduled_at=event.rescheduled_at,
                last_fire_time=event.last_fire_time,
            )
        case JobDeleted():
            return replace(state, status="deleted")
        case JobCompleted():
            return replace(state, status="completed")
        case ExecutionRequested():
            # One copy of the state per fire, not two (``_note_fire`` folded in).
            execution_id, scheduled_time = event.execution_id, event.scheduled_time
            requests = {**state.requests, execution_id: (scheduled_time, event.trigger_info)}
            if event.trigger_info == "manual":
                return replace(
                    state,
                    manual=state.manual | {execution_id},
                    pending=(*state.pending, execution_id),
                    requests=requests,
                )
            newest = state.last_fire_time
            return replace(
                state,
                last_fire_time=scheduled_time
                if newest is None or scheduled_time > newest
                else newest,
                pending=(*state.pending, execution_id),
                requests=requests,
            )
        case ExecutionQueued():
            state = _note_fire(state, event.execution_id, event.scheduled_time, event.trigger_info)
            return replace(
                state,
                queued=(*state.queued, event.execution_id),
                requests={
                    **state.requests,
                    event.execution_id: (event.scheduled_time, event.trigger_info),
                },
            )
        case ExecutionStarted():
            waiting = event.execution_id in state.pending or event.execution_id in state.queued
            # Only schedule-driven runs count toward max_executions; run-now is a test.
            counts = waiting and event.execution_id not in state.manual
            return replace(
                state,
                pending=_without(state.pending, event.execution_id),
                queued=_without(state.queued, event.execution_id),
                running=(*state.running, event.execution_id),
                started={**state.started, event.execution_id: event.started_at},
                counted_runs=state.counted_runs + (1 if counts else 0),
                consecutive_missed=0 if counts else state.consecutive_missed,
            )
        case _ if isinstance(event, ExecutionEnded):
            ended = _ended(state, event.execution_id)
            if event.execution_id in state.running and _without_result(event):
                unsettled = (*state.unsettled, event.execution_id)[-MAX_UNSETTLED:]
                ended = replace(ended, unsettled=unsettled)
            if isinstance(event, ExecutionSucceeded) and _upload_pending(event.result):
                ended = _awaiting_data(ended, event.execution_id)
            return ended
        case ExecutionLateResult():
            if event.execution_id not in state.unsettled:
                return state
            state = replace(state, unsettled=_without(state.unsettled, event.execution_id))
            if _upload_pending(event.result):
                state = _awaiting_data(state, event.execution_id)
            return state
        case ExecutionDataStored():
            return replace(
                state,
                awaiting_data=_without(state.awaiting_data, event.execution_id),
                data_stored=_remembered(state.data_stored, event.execution_id, MAX_DATA_STORED),
            )
        case ExecutionDataRemoved():
            execution_id = event.execution_id
            if event.reason == "lost":
                return replace(
                    state,
                    awaiting_data=_without(state.awaiting_data, execution_id),
                    data_stored=_remembered(state.data_stored, execution_id, MAX_DATA_STORED),
                )
            if execution_id not in state.awaiting_data:
                return state  # a stored capture: nothing awaited it
            return replace(
                state,
                awaiting_data=_without(state.awaiting_data, execution_id),
                data_removed=_remembered(state.data_removed, execution_id, MAX_AWAITING_DATA),
            )
        case ExecutionSkipped():
            if event.trigger_info == "manual":
                return state
            state = _note_fire(state, event.execution_id, event.scheduled_time, event.trigger_info)
            return replace(state, consecutive_missed=state.consecutive_missed + 1)
        case ExecutionMissed():
            state = _note_fire(state, event.execution_id, event.window_end, "scheduled")
            return replace(state, consecutive_missed=state.consecutive_missed + event.missed_count)
        case ExecutionCoalesced():
            # Not missed: they ran as the run they joined, which counts (or is skipped) itself.
            return _note_fire(state, event.execution_id, event.window_end, "scheduled")
        case ExecutionBlocked() if event.queued:
            # It waited in the line (its fire noted then); blocked at its turn, it leaves it.
            return _ended(state, event.execution_id)
        case ExecutionBlocked():
            # The fire was handled (it never fires again) but did not run: it counts toward
            # no max_executions, and the calibration_blocked alarm says why, not the
            # dead-man's switch.
            if event.trigger_info == "manual":
                return state
            return _note_fire(state, event.execution_id, event.scheduled_time, event.trigger_info)
        case _:
            return state


def decide_reanchor(state: JobState, shift: timedelta, now: datetime) -> list[AnyEvent]:
    """The wall clock was set back by ``shift`` (negative) and now reads ``now``: an active
    interval job's fire times move with it.

    Interval triggers count elapsed time (docs/scheduling.md, "Clock steps"), so the anchor,
    the last handled fire and the restart instant all move by the step, and the next fire
    comes one interval after the last one in elapsed time: no hour of silence after the clock
    is set back. Calendar triggers (cron, daily, weekly, monthly, date) do not move: they
    name wall-clock times, and never fire a scheduled time they already fired. Neither does
    an interval job whose ``start_date`` is still ahead: its start is a wall-clock time too.
    """
    spec = state.spec
    if (
        spec is None
        or spec.trigger_type != "interval"
        or state.status != "active"
        or state.anchor is None
        or state.rescheduled_at is None
        or not shift
        or (spec.start_date is not None and spec.start_date > now)
    ):
        return []
    return [
        JobReanchored(
            job_id=state.job_id,
            shift_seconds=shift.total_seconds(),
            anchor=state.anchor + shift,
            rescheduled_at=state.rescheduled_at + shift,
            last_fire_time=None if state.last_fire_time is None else state.last_fire_time + shift,
        )
    ]


def fold(state: JobState, events: Iterable[AnyEvent]) -> JobState:
    for event in events:
        state = evolve(state, event)
    return state


# -- decide -----------------------------------------------------------------------------------


def _require_live(state: JobState, job_id: str) -> JobSpec:
    if not state.exists or state.spec is None or state.status == "deleted":
        raise JobNotFound(job_id)
    return state.spec


def decide(state: JobState, command: JobCommand, now: datetime) -> list[AnyEvent]:
    match command:
        case CreateJob():
            if state.exists:
                raise JobStateConflict(command.job_id, "a job with this id already exists")
            spec, anchor = normalise(
                command.request, now=now, default_timezone=command.default_timezone
            )
            return [
                JobCreated(
                    job_id=command.job_id,
                    spec=spec,
                    enabled=command.request.enabled,
                    created_by=command.created_by,
                    created_at=now,
                    anchor=anchor,
                )
            ]
        case UpdateJob():
            return _decide_update(state, command, now)
        case PauseJob():
            _require_live(state, command.job_id)
            if state.status == "completed":
                raise JobStateConflict(
                    command.job_id, "the job is completed; it has no fires to pause"
                )
            reason = command.checked_reason(writes=state.status != "paused")
            if state.status == "paused":
                return []
            return [JobPaused(job_id=command.job_id, reason=reason or "")]
        case ResumeJob():
            _require_live(state, command.job_id)
            if state.status == "completed":
                raise JobStateConflict(
                    command.job_id, "the job is completed; update its schedule to run it again"
                )
            reason = command.checked_reason(writes=state.status != "active")
            if state.status == "active":
                return []
            return [JobResumed(job_id=command.job_id, resumed_at=now, reason=reason)]
        case DeleteJob():
            _require_live(state, command.job_id)
            return [JobDeleted(job_id=command.job_id, reason=command.checked_reason(writes=True))]
        case CompleteJob():
            _require_live(state, command.job_id)
            if state.status == "completed":
                return []
            return [JobCompleted(job_id=command.job_id, reason="manual")]


def _decide_update(state: JobState, command: UpdateJob, now: datetime) -> list[AnyEvent]:
    spec = _require_live(state, command.job_id)
    assert state.anchor is not None
    if "version" in command.changes:
        raise InvalidRequest.one(
            "version", command.changes["version"], "pass the version as expected_version"
        )
    changes = parse_job_changes(command.changes)
    # The changes laid on the stored spec, each field as the client wrote it (None: unset).
    cleared: dict[str, Any] = {}
    if changes.get("trigger_type", spec.trigger_type) != spec.trigger_type:
        # A new trigger type starts from a clean slate of trigger fields.
        cleared.update(dict.fromkeys(ALL_TRIGGER_FIELDS))
    if "timeout_seconds" not in changes and ("parameters" in changes or "schedule_type" in changes):
        cleared["timeout_seconds"] = None  # the default for the new type or parameters
    request = replace(request_of(spec, enabled=state.enabled), **{**cleared, **changes})
    new_spec, anchor = normalise(
        request, now=now, default_timezone=command.default_timezone, anchor=state.anchor
    )
    altered = field_changes(spec, new_spec)
    changed = tuple(sorted(c.field for c in altered))
    toggles = "enabled" in command.changes and request.enabled != state.enabled
    if toggles and state.status == "completed" and not changed:
        raise JobStateConflict(
            command.job_id, "the job is completed; change its schedule to run it again"
        )
    updates = bool(changed) or anchor != state.anchor
    reason = command.checked_reason(writes=updates or toggles)
    events: list[AnyEvent] = []
    if updates:
        events.append(
            JobUpdated(
                job_id=command.job_id,
                spec=new_spec,
                anchor=anchor,
                updated_at=now,
                changed_fields=changed,
                reason=reason,
                changes=altered,
            )
        )
    if toggles:
        events.append(
            JobResumed(job_id=command.job_id, resumed_at=now, reason=reason)
            if request.enabled
            else JobPaused(job_id=command.job_id, reason=reason or "updated with enabled=false")
        )
    return events
