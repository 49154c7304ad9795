"""Pure decisions of the clock side: a due fire, run-now, and the end of an execution.

Each function takes the job's folded state, the instant and an id source, and returns the
events to append. Conflict policies, misfires, coalescing, max_executions and completion are
decided here, so the engine that calls them holds no scheduling rules of its own.

Catch-up after downtime or a late tick (DESIGN.md, "Misfire"; docs/scheduling.md has the
table of statuses). A due fire is *late* by now - its scheduled time, and *missed* only when
that is beyond misfire_grace_time:
- coalesce=True: all due fires collapse into one run of the latest one. The others are one
  ``missed`` record for those beyond the grace time and one ``coalesced`` record, naming the
  run, for those within it; each states how many, the window and how late they were. The run
  is ``scheduled`` if it is the only due fire and starts within misfire_grace_time, else
  ``catch_up``.
- coalesce=False: the latest due fires within misfire_grace_time run in turn (each subject to
  the conflict policy, at most MAX_CATCH_UP_RUNS); older ones become one ``missed`` record,
  whose reason says how many of them were still within the grace time but over that cap.
Either way the work is bounded: a 1-second job down for a week writes a handful of events.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, cast

from lablink.domain import triggers
from lablink.domain.calibration import Block
from lablink.domain.job import JobState, evolve, next_fire_of
from lablink.domain.schedule import Schedule
from lablink.errors import CalibrationBlocked, ExecutionRefused, JobNotFound
from lablink.events import (
    AlarmRaised,
    AnyEvent,
    ExecutionBlocked,
    ExecutionCancelled,
    ExecutionCoalesced,
    ExecutionError,
    ExecutionFailed,
    ExecutionInterrupted,
    ExecutionLateResult,
    ExecutionMissed,
    ExecutionProgressed,
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
    blocked: Block | None = None,
) -> JobState:
    """Start, queue or skip one execution according to the job's conflict policy; record it
    ``blocked`` instead when its instrument may not be used (its calibration, a quarantine):
    a run that is not dispatched takes no place in the line."""
    common = {
        "job_id": state.job_id,
        "execution_id": execution_id,
        "scheduled_time": scheduled_time,
        "actual_time": now,
        "trigger_info": trigger_info,
    }
    if blocked is not None:
        return _apply(
            state,
            events,
            ExecutionBlocked(
                **common,  # type: ignore[arg-type]
                equipment_id=blocked.equipment_id,
                cause=blocked.cause,
                reason=blocked.reason,
                certificate=blocked.certificate,
                due=blocked.due,
            ),
        )
    active = _active(state)
    policy = spec.conflict_policy
    limit = 1 if policy == "skip" else spec.max_instances
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


@dataclass(frozen=True, slots=True)
class _Streak:
    """Consecutive due fires written as one record: how many, the first and the last."""

    count: int
    first: datetime
    last: datetime


@dataclass(frozen=True, slots=True)
class _Plan:
    runs: list[datetime]
    missed: _Streak | None = None
    coalesced: _Streak | None = None
    # Of the missed fires (coalesce=False), those still within the grace time that the
    # catch-up cap left out.
    over_cap: int = 0


def _streak(schedule: Schedule, first: datetime, before: datetime) -> _Streak | None:
    """The fires in [first, before), ``first`` being a fire of the schedule."""
    if before <= first:
        return None
    count = triggers.count_fires_between(schedule, first - _TICK, before - _TICK)
    if not count:
        return None
    return _Streak(count, first, _latest_fire(schedule, first, before - _TICK))


def _last_fires(schedule: Schedule, after: datetime, until: datetime, count: int) -> list[datetime]:
    """The latest ``count`` fires in (after, until]."""
    if schedule.interval is not None:
        # At most count + 1 fires fit in count + 1 intervals: no need to walk from ``after``.
        after = max(after, until - timedelta(seconds=schedule.interval * (count + 1)))
        return triggers.fires_between(schedule, after, until, count + 2)[-count:]
    # Cron and calendar triggers fire at most once a minute: a week's grace is 10,080 fires.
    return triggers.fires_between(schedule, after, until, 10_000_000)[-count:]


def _plan_runs(schedule: Schedule, spec: JobSpec, first: datetime, now: datetime) -> _Plan:
    """Which due fires (``first`` <= t <= ``now``) run, which are missed, which coalesced."""
    # A fire scheduled before the cutoff is later than misfire_grace_time allows.
    cutoff = now - timedelta(seconds=spec.misfire_grace_time)
    due = 1 + triggers.count_fires_between(schedule, first, now)
    latest = first if due == 1 else _latest_fire(schedule, first, now)
    if spec.coalesce:
        missed = _streak(schedule, first, min(cutoff, latest))
        start = first if missed is None else triggers.next_fire(schedule, missed.last)
        coalesced = None
        if start is not None and start < latest:
            coalesced = _streak(schedule, start, latest)
        return _Plan([latest], missed, coalesced)
    lower = max(first, cutoff) - _TICK
    within = triggers.count_fires_between(schedule, lower, now)
    runs = _last_fires(schedule, lower, now, min(within, MAX_CATCH_UP_RUNS)) if within else []
    missed = _streak(schedule, first, runs[0] if runs else latest + _TICK)
    return _Plan(runs, missed, over_cap=within - len(runs))


def _on_time(state: JobState, spec: JobSpec, first: datetime, now: datetime) -> _Plan | None:
    """The plan of the common fire, the only one due and within misfire_grace_time (what
    ``_plan_runs`` would say: one run, nothing missed or coalesced), or None when more is
    due or it is late. The fire that follows is the state's next one once this fire is
    recorded, so the completion check and the engine's plan find it already computed."""
    assert state.anchor is not None
    assert state.rescheduled_at is not None
    if now - first > timedelta(seconds=spec.misfire_grace_time):
        return None  # late: missed, whatever else is due
    following = next_fire_of(spec, state.anchor, state.status, state.rescheduled_at, first)
    if following is not None and following <= now:
        return None
    return _Plan([first])


def _span(delta: timedelta) -> str:
    seconds = delta.total_seconds()
    if seconds < 10:
        return f"{seconds:.3f} s"
    if seconds < 3600:
        return f"{seconds:.1f} s"
    return f"{seconds / 3600:.1f} h ({seconds:.0f} s)"


def _late(streak: _Streak, now: datetime) -> str:
    """How late the fires of a streak were at ``now``: the last one least, the first most."""
    if streak.count == 1:
        return f"{_span(now - streak.first)} late"
    return f"{_span(now - streak.last)} to {_span(now - streak.first)} late"


def _fires(streak: _Streak) -> str:
    if streak.count == 1:
        return f"1 fire at {streak.first.isoformat()}"
    return f"{streak.count} fires from {streak.first.isoformat()} to {streak.last.isoformat()}"


def _missed_reason(spec: JobSpec, plan: _Plan, streak: _Streak, now: datetime) -> str:
    grace = f"misfire_grace_time={spec.misfire_grace_time:g}s"
    if plan.over_cap:
        beyond = streak.count - plan.over_cap
        why = [f"{beyond} could not start within {grace}"] if beyond else []
        why.append(
            f"{plan.over_cap} {'was' if plan.over_cap == 1 else 'were'} within {grace} but "
            f"beyond the {MAX_CATCH_UP_RUNS} catch-up runs coalesce=false allows (the latest "
            f"{len(plan.runs)} ran)"
        )
        return (
            f"{_fires(streak)} were not run ({_late(streak, now)} when the scheduler reached "
            f"them): {'; '.join(why)}"
        )
    tail = "; coalesce runs only the latest due fire" if spec.coalesce else ""
    return (
        f"{_fires(streak)} could not start within {grace}: "
        f"{_late(streak, now)} when the scheduler reached them{tail}"
    )


def decide_fire(
    state: JobState, now: datetime, new_id: NewId, blocked: Block | None = None
) -> Decision:
    """The timer for this job went off at ``now``: record what is due, or nothing.
    ``blocked``: the job's instrument may not be used now, so the runs due are recorded
    ``blocked`` (the misfire and coalesce rules still say which fires those are)."""
    spec = state.spec
    if spec is None or state.anchor is None or state.status != "active":
        return Decision([], state)
    events: list[AnyEvent] = []
    streak = state.consecutive_missed
    first = state.next_fire_time()
    if first is not None and first <= now:
        plan = _on_time(state, spec, first, now)
        if plan is None:
            plan = _plan_runs(Schedule.from_spec(spec, state.anchor), spec, first, now)
        missed = plan.missed
        if missed is not None:
            state = _apply(
                state,
                events,
                ExecutionMissed(
                    job_id=state.job_id,
                    execution_id=new_id(),
                    scheduled_time=missed.first,
                    actual_time=now,
                    missed_count=missed.count,
                    window_start=missed.first,
                    window_end=missed.last,
                    reason=_missed_reason(spec, plan, missed, now),
                ),
            )
        grace = timedelta(seconds=spec.misfire_grace_time)
        merged = plan.coalesced
        for scheduled in plan.runs:
            on_time = (
                missed is None
                and merged is None
                and len(plan.runs) == 1
                and now - scheduled <= grace
            )
            execution_id = new_id()
            if merged is not None:
                # Recorded before the run it joined, so that the run is the job's latest
                # execution (history's last_status follows it).
                state = _apply(
                    state,
                    events,
                    ExecutionCoalesced(
                        job_id=state.job_id,
                        execution_id=new_id(),
                        scheduled_time=merged.first,
                        actual_time=now,
                        coalesced_count=merged.count,
                        window_start=merged.first,
                        window_end=merged.last,
                        into_execution_id=execution_id,
                        reason=(
                            f"{_fires(merged)}, {_late(merged, now)} (within "
                            f"misfire_grace_time={spec.misfire_grace_time:g}s), "
                            f"{'was' if merged.count == 1 else 'were'} coalesced "
                            f"into execution {execution_id}, the fire of {scheduled.isoformat()}"
                        ),
                    ),
                )
                merged = None
            state = _place(
                state,
                spec,
                events,
                execution_id=execution_id,
                scheduled_time=scheduled,
                now=now,
                trigger_info="scheduled" if on_time else "catch_up",
                blocked=blocked,
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


def decide_run_now(
    state: JobState, now: datetime, execution_id: str, blocked: Block | None = None
) -> Decision:
    """Run now: works on a disabled job, obeys the conflict policy, moves no schedule and
    does not count toward max_executions. A refusal raises ExecutionRefused (HTTP 409), and
    so does an instrument that may not be used (``blocked``: CalibrationBlocked), writing
    nothing: the person asking is told at once."""
    spec = _require(state, state.job_id)
    if blocked is not None:
        raise CalibrationBlocked(state.job_id, blocked.equipment_id, blocked.cause, blocked.reason)
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


def _start_waiting(
    state: JobState, now: datetime, events: list[AnyEvent], blocked: Block | None = None
) -> JobState:
    """After an execution ends, queued ones start (FIFO) while there is room; when the
    instrument may not be used now (``blocked``), each is recorded blocked instead of
    starting: a run is judged when it would be dispatched, not only when it fell due."""
    spec = state.spec
    while spec is not None and state.queued and len(_active(state)) < spec.max_instances:
        execution_id = state.queued[0]
        if blocked is not None:
            scheduled_time, trigger_info = state.requests.get(execution_id, (now, "scheduled"))
            state = _apply(
                state,
                events,
                ExecutionBlocked(
                    job_id=state.job_id,
                    execution_id=execution_id,
                    scheduled_time=scheduled_time,
                    actual_time=now,
                    trigger_info=cast(TriggerInfo, trigger_info),
                    equipment_id=blocked.equipment_id,
                    cause=blocked.cause,
                    reason=blocked.reason,
                    certificate=blocked.certificate,
                    due=blocked.due,
                    queued=True,
                ),
            )
            continue
        state = _apply(
            state,
            events,
            ExecutionStarted(job_id=state.job_id, execution_id=execution_id, started_at=now),
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
    dispatched_at: datetime | None = None,
    instrument_started_at: datetime | None = None,
    instrument_ended_at: datetime | None = None,
    blocked: Block | None = None,
) -> Decision:
    """The executor reported an outcome, recorded with when the command was dispatched and
    the instrument's own times. Late reports of an execution that already ended (timed out,
    interrupted) change nothing."""
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
            dispatched_at=dispatched_at,
            instrument_started_at=instrument_started_at,
            instrument_ended_at=instrument_ended_at,
        )
    else:
        final = ExecutionFailed(
            job_id=state.job_id,
            execution_id=execution_id,
            completed_at=now,
            started_at=started,
            error=error,
            dispatched_at=dispatched_at,
            instrument_started_at=instrument_started_at,
            instrument_ended_at=instrument_ended_at,
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
    return Decision(events, _start_waiting(state, now, events, blocked))


def decide_progress(state: JobState, reports: Sequence[ExecutionProgressed]) -> Decision:
    """An executor's progress reports for this job, in the order they came: those of
    executions still running are recorded; one whose execution already ended (its result
    was recorded first, or it timed out) is not."""
    running = state.running
    return Decision([r for r in reports if r.execution_id in running], state)


LateVerdict = Literal["late", "running", "foreign", "unknown"]


def late_result_verdict(state: JobState, execution_id: str, equipment_id: str) -> LateVerdict:
    """What a result that no one waited for is, for this job: ``late`` for an execution that
    ended without its result (and has no late result yet); ``running`` for one still under
    way (its result is for the restart's recovery); ``foreign`` when the job drives another
    instrument than the report names; ``unknown`` otherwise (a duplicate of a result already
    recorded, or an execution this job never had)."""
    if state.spec is None or not state.exists:
        return "unknown"
    if state.spec.equipment_id != equipment_id:
        return "foreign"
    if execution_id in state.running or execution_id in state.pending:
        return "running"
    if execution_id in state.unsettled:
        return "late"
    return "unknown"


def decide_late_result(
    state: JobState,
    execution_id: str,
    now: datetime,
    *,
    equipment_id: str,
    status: Literal["completed", "failed"],
    result: Mapping[str, Any] | None = None,
    error: ExecutionError | None = None,
    agent_id: str = "",
    reported_at: datetime | None = None,
    instrument_started_at: datetime | None = None,
    instrument_ended_at: datetime | None = None,
) -> Decision:
    """An agent's result for an execution that already ended without it is kept as its
    own fact (with the instrument's times it reports); the execution's status stays as it
    was. Anything else records nothing."""
    if late_result_verdict(state, execution_id, equipment_id) != "late":
        return Decision([], state)
    events: list[AnyEvent] = []
    state = _apply(
        state,
        events,
        ExecutionLateResult(
            job_id=state.job_id,
            execution_id=execution_id,
            received_at=now,
            status=status,
            result=dict(result or {}),
            error=error,
            agent_id=agent_id,
            equipment_id=equipment_id,
            reported_at=reported_at,
            instrument_started_at=instrument_started_at,
            instrument_ended_at=instrument_ended_at,
        ),
    )
    return Decision(events, state)


def decide_timeout(
    state: JobState,
    execution_id: str,
    now: datetime,
    equipment: Mapping[str, Any] | None = None,
    dispatched_at: datetime | None = None,
    blocked: Block | None = None,
    *,
    instrument_started_at: datetime | None = None,
    instrument_ended_at: datetime | None = None,
) -> Decision:
    """Still running past timeout_seconds: timed out, with what the executor knew of the
    instrument by then (a run stopped on its instrument shows when it began there, as a
    completed one does; None for one that never reached it)."""
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
            dispatched_at=dispatched_at,
            instrument_started_at=instrument_started_at,
            instrument_ended_at=instrument_ended_at,
        ),
        *alarm,
    )
    return Decision(events, _start_waiting(state, now, events, blocked))


def decide_cancel(
    state: JobState,
    execution_id: str,
    now: datetime,
    reason: str,
    dispatched_at: datetime | None = None,
    blocked: Block | None = None,
) -> Decision:
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
            dispatched_at=dispatched_at,
        ),
    )
    return Decision(events, _start_waiting(state, now, events, blocked))


def decide_interrupted(
    state: JobState,
    now: datetime,
    reason: str,
    keep: Collection[str] = (),
    equipment: Mapping[str, Any] | None = None,
    blocked: Block | None = None,
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
        state = _start_waiting(state, now, events, blocked)
    return Decision(events, state)
