"""What a running execution's reports leave in the log (issue 19), on plain events: a timeout
keeps what was known of the instrument by then, and progress is recorded, in order, only
for executions that still run."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from lablink.domain.firing import decide_finish, decide_progress, decide_run_now, decide_timeout
from lablink.domain.job import CreateJob, JobState, decide, fold
from lablink.domain.requests import parse_job_request
from lablink.events import ExecutionProgressed, ExecutionTimedOut

T0 = datetime(2026, 12, 5, 9, 0, tzinfo=UTC)


def running(*execution_ids: str) -> JobState:
    """A job (replace: several at once) with these executions running, started at T0."""
    request = parse_job_request(
        {
            "name": "reading",
            "schedule_type": "measurement",
            "equipment_id": "power_supply_1",
            "trigger_type": "interval",
            "interval_hours": 1,
            "conflict_policy": "replace",
            "max_instances": 4,
            "timeout_seconds": 5,
        }
    )
    command = CreateJob(job_id="job_1", request=request, default_timezone="UTC", created_by="t")
    state = fold(JobState(job_id="job_1"), decide(JobState(job_id="job_1"), command, T0))
    for execution_id in execution_ids:
        state = decide_run_now(state, T0, execution_id).state
    return state


def progressed(execution_id: str, done: int) -> ExecutionProgressed:
    return ExecutionProgressed(
        job_id="job_1", execution_id=execution_id, progress=done / 10, data={"done": done}
    )


def test_a_timeout_records_the_instrument_times_known_then() -> None:
    began = T0 + timedelta(seconds=1)
    decision = decide_timeout(
        running("exec_1"),
        "exec_1",
        T0 + timedelta(seconds=6),
        dispatched_at=T0,
        instrument_started_at=began,
    )
    (timed_out,) = [e for e in decision.events if isinstance(e, ExecutionTimedOut)]
    assert (timed_out.instrument_started_at, timed_out.instrument_ended_at) == (began, None)
    assert timed_out.dispatched_at == T0


def test_a_timeout_before_the_instrument_was_reached_has_no_instrument_times() -> None:
    decision = decide_timeout(running("exec_1"), "exec_1", T0 + timedelta(seconds=6))
    (timed_out,) = [e for e in decision.events if isinstance(e, ExecutionTimedOut)]
    assert (timed_out.instrument_started_at, timed_out.instrument_ended_at) == (None, None)


def test_progress_is_recorded_in_order_for_running_executions_only() -> None:
    state = running("exec_1", "exec_2")
    state = decide_finish(state, "exec_2", T0 + timedelta(seconds=2), result={}).state
    reports = [progressed("exec_1", 1), progressed("exec_2", 1), progressed("exec_1", 2)]
    decision = decide_progress(state, reports)
    # exec_2's result was recorded first: its progress would come after its end.
    assert decision.events == [reports[0], reports[2]]
    assert decision.state is state
