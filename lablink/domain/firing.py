"""Pure decisions of the clock side: a due fire, run-now, and the end of an execution.

Each function takes the job's folded state, the instant and an id source, and returns the
events to append. Conflict policies, misfires, coalescing, max_executions and completion are
decided here, so the engine that calls them holds no scheduling rules of its own.

Catch-up after downtime (DESIGN.md, "Misfire"):
- coalesce=True: all due fires collapse into one run of the latest one, plus one ``missed``
  record for the others stating how many and over which window. The run is ``scheduled`` if it
  is the only due fire and starts within misfire_grace_time, else ``catch_up``.
- coalesce=False: every due fire within misfire_grace_time of now runs in turn (each subject to
  the conflict policy, at most MAX_CATCH_UP_RUNS); older ones become one ``missed`` record.
Either way the work is bounded: a 1-second job down for a week writes a handful of events.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from lablink.domain import triggers
from lablink.domain.job import JobState, evolve
from lablink.domain.schedule import Schedule
from lablink.errors import ExecutionRefused, JobNotFound
from lablink.events import (
    AlarmRaised,
    AnyEvent,
    ExecutionCancelled,
    ExecutionError,
    ExecutionFailed,
    ExecutionInterrupted,
    ExecutionMissed,
    ExecutionQueued,
    ExecutionRequested,
    ExecutionSkipped,
    ExecutionStarted,
    ExecutionSucceeded,
    ExecutionTimedOut,
    JobCompleted,
    JobSpec,
    TriggerInfo,
)

MAX_CATCH_UP_RUNS = 100
NewId = Callable[[], str]


@dataclass(frozen=True, slots=True)
class Decision:
    events: list[AnyEvent]
    state: JobState  # the state after the events, for the caller's cache and plans

    @property
    def started(self) -> list[ExecutionStarted]:
        return [e for e in self.events if isinstance(e, ExecutionStarted)]


def _apply(state: JobState, events: list[AnyEvent], *new: AnyEvent) -> JobState:
    for event in new:
        events.append(event)
        state = evolve(state, event)
    return state


# How loud a failure alarm is, by how the execution ended.
ALARM_SEVERITY = {"failed": "critical", "timed_out": "critical", "interrupted": "warning"}


def alarm_id(execution_id: str) -> str:
    """One failure alarm per execution: its id follows from the execution's."""
    return f"alarm_{execution_id.removeprefix('exec_')}"


def _alarm(
    state: JobState,
    execution_id: str,
    how: str,
    message: str,
    error: dict[str, object],
    when: datetime | None,
    equipment: Mapping[str, Any] | None = None,
) -> list[AnyEvent]:
    """With ``on_failure_alarm``, an execution that ends failed, timed out or interrupted
    raises an alarm, in the same append as the fact itself: never one without the other."""
    spec = state.spec
    if spec is None or not spec.on_failure_alarm:
        return []
    scheduled = state.requests.get(execution_id)
    return [
        AlarmRaised(
            alarm_id=alarm_id(execution_id),
            kind="job_failure",
            severity=ALARM_SEVERITY[how],  # type: ignore[arg-type]
            message=f"job {spec.name!r} ({state.job_id}) {how.replace('_', ' ')} on "
            f"{spec.equipment_id}: {message}",
            equipment_id=spec.equipment_id,
            job_id=state.job_id,
            job_name=spec.name,
            execution_id=execution_id,
            execution_time=when or (scheduled[0] if scheduled else None),
            error=dict(error),
            equipment={**(equipment or {}), "equipment_id": spec.equipment_id},
        )
    ]


def _active(state: JobState) -> tuple[str, ...]:
    return (*state.pending, *state.running)


def _place(
    state: JobState,
    spec: JobSpec,
    events: list[AnyEvent],
    *,
    execution_id: str,
    scheduled_time: datetime,
    now: datetime,
    trigger_info: TriggerInfo,
) -> JobState:
    """Start, queue or skip one execution according to the job's conflict policy."""
    active = _active(state)
    policy = spec.conflict_policy
    limit = 1 if policy == "skip" else spec.max_instances
    common = {
        "job_id": state.job_id,
        "execution_id": execution_id,
        "scheduled_time": scheduled_time,
        "actual_time": now,
        "trigger_info": trigger_info,
    }
    if len(active) < limit:
        return _apply(
            state,
            events,
            ExecutionRequested(**common),  # type: ignore[arg-type]
            ExecutionStarted(job_id=state.job_id, execution_id=execution_id, started_at=now),
        )
    if policy == "queue" and not (spec.coalesce and state.queued):
        return _apply(
            state,
            events,
            ExecutionQueued(**common, behind=active),  # type: ignore[arg-type]
        )
    if policy == "queue":
        reason = (
            f"execution {state.queued[0]} is already waiting (conflict_policy queue with "
            "coalesce keeps at most one waiting)"
        )
    elif policy == "skip":
        reason = f"execution {', '.join(active)} is still running (conflict_policy skip)"
    else:
        reason = (
            f"max_instances={spec.max_instances} executions already running: "
            f"{', '.join(active)} (conflict_policy replace)"
        )
    return _apply(
        state,
        events,
        ExecutionSkipped(**common, reason=reason, running=active),  # type: ignore[arg-type]
    )


def _completion(state: JobState, spec: JobSpec) -> JobCompleted | None:
    if state.status != "active":
        return None
    if spec.max_executions is not None and state.counted_runs >= spec.max_executions:
        return JobCompleted(job_id=state.job_id, reason="max_executions")
    if state.next_fire_time() is not None:
        return None
    if spec.trigger_type == "date":
        return JobCompleted(job_id=state.job_id, reason="date_ran")
    if spec.end_date is not None:
        return JobCompleted(job_id=state.job_id, reason="end_date")
    return JobCompleted(job_id=state.job_id, reason="no_more_fires")


_TICK = timedelta(microseconds=1)


def _latest_fire(schedule: Schedule, first: datetime, until: datetime) -> datetime:
    """The last fire in [first, until]; looks back in growing windows, not fire by fire."""
    if schedule.end_date is not None:
        until = min(until, schedule.end_date)
    if schedule.interval is not None:
        lookbacks = [timedelta(seconds=schedule.interval + 1)]
    else:
        lookbacks = [timedelta(hours=2), timedelta(days=2), timedelta(days=64)]
    for lookback in lookbacks:
        start = until - lookback
        if start < first:
            break
        fires = triggers.fires_between(schedule, start, until, 1_000_000)
        if fires:
            return fires[-1]
    fires = triggers.fires_between(schedule, first - _TICK, until, 10_000_000)
    return fires[-1] if fires else first


def _plan_runs(
    schedule: Schedule, spec: JobSpec, first: datetime, now: datetime
) -> tuple[list[datetime], int, datetime | None]:
    """(fires to run, how many due fires are missed, the last missed fire)."""
    due = 1 + triggers.count_fires_between(schedule, first, now)
    latest = first if due == 1 else _latest_fire(schedule, first, now)
    if spec.coalesce:
        runs = [latest]
    else:
        grace = timedelta(seconds=spec.misfire_grace_time)
        runs = triggers.fires_between(
            schedule, max(first, now - grace) - _TICK, now, MAX_CATCH_UP_RUNS
        )
    missed = due - len(runs)
    if not missed:
        return runs, 0, None
    last_missed = _latest_fire(schedule, first, (runs[0] if runs else latest + _TICK) - _TICK)
    return runs, missed, last_missed


def decide_fire(state: JobState, now: datetime, new_id: NewId) -> Decision:
    """The timer for this job went off at ``now``: record what is due, or nothing."""
    spec = state.spec
    if spec is None or state.anchor is None or state.status != "active":
        return Decision([], state)
    events: list[AnyEvent] = []
    streak = state.consecutive_missed
    first = state.next_fire_time()
    if first is not None and first <= now:
        schedule = Schedule.from_spec(spec, state.anchor)
        runs, missed, last_missed = _plan_runs(schedule, spec, first, now)
        if missed and last_missed is not None:
            state = _apply(
                state,
                events,
                ExecutionMissed(
                    job_id=state.job_id,
                    execution_id=new_id(),
                    scheduled_time=first,
                    actual_time=now,
                    missed_count=missed,
                    window_start=first,
                    window_end=last_missed,
                    reason=(
                        f"{missed} fire(s) from {first.isoformat()} to "
                        f"{last_missed.isoformat()} could not start within "
                        f"misfire_grace_time={spec.misfire_grace_time:g}s"
                        + (" (coalesced into one run)" if spec.coalesce else "")
                    ),
                ),
            )
        grace = timedelta(seconds=spec.misfire_grace_time)
        for scheduled in runs:
            on_time = not missed and len(runs) == 1 and now - scheduled <= grace
            state = _place(
                state,
                spec,
                events,
                execution_id=new_id(),
                scheduled_time=scheduled,
                now=now,
                trigger_info="scheduled" if on_time else "catch_up",
            )
            if _completion(state, spec) is not None:
                break
    state = _apply(state, events, *_missed_alarm(state, spec, events, streak, now))
    done = _completion(state, spec)
    if done is not None:
        state = _apply(state, events, done)
    return Decision(events, state)


def _missed_alarm(
    state: JobState, spec: JobSpec, events: list[AnyEvent], before: int, now: datetime
) -> list[AnyEvent]:
    """The dead-man's switch: with ``alarm_after_missed: N``, the fire that makes N
    occurrences in a row missed or skipped raises one alarm (a run that starts resets the
    count, and with it the switch)."""
    limit = spec.alarm_after_missed
    if limit is None or not before < limit <= state.consecutive_missed:
        return []
    last = next(e for e in reversed(events) if isinstance(e, ExecutionMissed | ExecutionSkipped))
    count = state.consecutive_missed
    return [
        AlarmRaised(
            alarm_id=alarm_id(last.execution_id),
            kind="missed_runs",
            severity="warning",
            message=f"job {spec.name!r} ({state.job_id}) has not run: its last {count} "
            f"occurrence(s) were missed or skipped (alarm_after_missed={limit})",
            equipment_id=spec.equipment_id,
            job_id=state.job_id,
            job_name=spec.name,
            execution_id=last.execution_id,
            execution_time=now,
            error={"type": "missed_runs", "consecutive": count, "reason": last.reason},
            equipment={"equipment_id": spec.equipment_id},
        )
    ]


def _require(state: JobState, job_id: str) -> JobSpec:
    if not state.exists or state.spec is None or state.status == "deleted":
        raise JobNotFound(job_id)
    return state.spec


def decide_run_now(state: JobState, now: datetime, execution_id: str) -> Decision:
    """Run now: works on a disabled job, obeys the conflict policy, moves no schedule and
    does not count toward max_executions. A refusal raises ExecutionRefused (HTTP 409)."""
    spec = _require(state, state.job_id)
    events: list[AnyEvent] = []
    after = _place(
        state,
        spec,
        events,
        execution_id=execution_id,
        scheduled_time=now,
        now=now,
        trigger_info="manual",
    )
    refused = [e for e in events if isinstance(e, ExecutionSkipped)]
    if refused:
        raise ExecutionRefused(state.job_id, refused[0].running or state.queued, refused[0].reason)
    return Decision(events, after)


def _start_waiting(state: JobState, now: datetime, events: list[AnyEvent]) -> JobState:
    """After an execution ends, queued ones start (FIFO) while there is room."""
    spec = state.spec
    while spec is not None and state.queued and len(_active(state)) < spec.max_instances:
        state = _apply(
            state,
            events,
            ExecutionStarted(job_id=state.job_id, execution_id=state.queued[0], started_at=now),
        )
    if spec is not None:
        done = _completion(state, spec)
        if done is not None and done.reason == "max_executions":
            state = _apply(state, events, done)
    return state


def decide_finish(
    state: JobState,
    execution_id: str,
    now: datetime,
    *,
    result: dict[str, object] | None = None,
    error: ExecutionError | None = None,
    equipment: Mapping[str, Any] | None = None,
) -> Decision:
    """The executor reported an outcome. Late reports of an execution that already ended
    (timed out, interrupted) change nothing."""
    if execution_id not in state.running:
        return Decision([], state)
    events: list[AnyEvent] = []
    started = state.started.get(execution_id)
    final: AnyEvent
    if error is None:
        final = ExecutionSucceeded(
            job_id=state.job_id,
            execution_id=execution_id,
            completed_at=now,
            started_at=started,
            result=dict(result or {}),
        )
    else:
        final = ExecutionFailed(
            job_id=state.job_id,
            execution_id=execution_id,
            completed_at=now,
            started_at=started,
            error=error,
        )
    alarm = (
        _alarm(
            state,
            execution_id,
            "failed",
            error.message,
            {"type": error.type, "message": error.message, "code": error.code, **error.details},
            started,
            equipment,
        )
        if error is not None
        else []
    )
    state = _apply(state, events, final, *alarm)
    return Decision(events, _start_waiting(state, now, events))


def decide_timeout(
    state: JobState,
    execution_id: str,
    now: datetime,
    equipment: Mapping[str, Any] | None = None,
) -> Decision:
    if execution_id not in state.running or state.spec is None:
        return Decision([], state)
    events: list[AnyEvent] = []
    started = state.started.get(execution_id)
    limit = state.spec.timeout_seconds
    alarm = _alarm(
        state,
        execution_id,
        "timed_out",
        f"still running after timeout_seconds={limit:g}",
        {"type": "timed_out", "timeout_seconds": limit},
        started,
        equipment,
    )
    state = _apply(
        state,
        events,
        ExecutionTimedOut(
            job_id=state.job_id,
            execution_id=execution_id,
            completed_at=now,
            started_at=started,
            timeout_seconds=limit,
        ),
        *alarm,
    )
    return Decision(events, _start_waiting(state, now, events))


def decide_cancel(state: JobState, execution_id: str, now: datetime, reason: str) -> Decision:
    waiting = execution_id in state.queued or execution_id in state.pending
    if execution_id not in state.running and not waiting:
        return Decision([], state)
    events: list[AnyEvent] = []
    state = _apply(
        state,
        events,
        ExecutionCancelled(
            job_id=state.job_id,
            execution_id=execution_id,
            completed_at=now,
            started_at=state.started.get(execution_id),
            reason=reason,
        ),
    )
    return Decision(events, _start_waiting(state, now, events))


def decide_interrupted(
    state: JobState,
    now: datetime,
    reason: str,
    keep: Collection[str] = (),
    equipment: Mapping[str, Any] | None = None,
) -> Decision:
    """On restart: executions the dead scheduler left running or pending are interrupted,
    except those in ``keep`` (an agent still runs them, or has reported how they ended);
    queued ones may then start."""
    events: list[AnyEvent] = []
    for execution_id in (*state.pending, *state.running):
        if execution_id in keep:
            continue
        started = state.started.get(execution_id)
        alarm = _alarm(
            state, execution_id, "interrupted", reason, {"type": "interrupted"}, started, equipment
        )
        state = _apply(
            state,
            events,
            ExecutionInterrupted(
                job_id=state.job_id,
                execution_id=execution_id,
                completed_at=now,
                started_at=started,
                reason=reason,
            ),
            *alarm,
        )
    if events:
        state = _start_waiting(state, now, events)
    return Decision(events, state)
