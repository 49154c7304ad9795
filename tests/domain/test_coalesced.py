"""`missed` means missed: a fire late by less than misfire_grace_time that ``coalesce`` merges
into one run is recorded as ``coalesced`` into that run; only fires beyond the grace time are
``missed``, and each record states how late its fires actually were."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

from lablink.domain.firing import decide_fire
from lablink.domain.job import CreateJob, JobState, decide, fold
from lablink.domain.requests import parse_job_request
from lablink.events import (
    AnyEvent,
    ExecutionCoalesced,
    ExecutionMissed,
    ExecutionRequested,
    ExecutionSkipped,
    ExecutionStarted,
)

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
EVERY_SECOND: dict[str, Any] = {
    "name": "1 s reading",
    "schedule_type": "measurement",
    "equipment_id": "power_supply_1",
    "trigger_type": "interval",
    "interval_seconds": 1,
    "parameters": {"command": "get_voltage"},
}


def created(**fields: Any) -> JobState:
    request = parse_job_request({**EVERY_SECOND, **fields})
    command = CreateJob(job_id="job_1", request=request, default_timezone="UTC", created_by="alice")
    events = decide(JobState(job_id="job_1"), command, T0)
    return fold(JobState(job_id="job_1"), events)


def ids() -> Any:
    counter = itertools.count(1)
    return lambda: f"exec_{next(counter)}"


def of(events: list[AnyEvent], kind: type[Any]) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]


def test_fires_a_few_seconds_late_are_coalesced_into_the_run_not_missed() -> None:
    # The engine reached the job 20.25 s after its first due fire (a loaded machine):
    # 21 fires are due, all well inside the default grace of 300 s.
    decision = decide_fire(created(), T0 + timedelta(seconds=21.25), ids())
    assert of(decision.events, ExecutionMissed) == []
    (merged,) = of(decision.events, ExecutionCoalesced)
    (run,) = of(decision.events, ExecutionRequested)
    assert run.scheduled_time == T0 + timedelta(seconds=21)
    assert merged.into_execution_id == run.execution_id
    assert merged.coalesced_count == 20
    assert (merged.window_start, merged.window_end) == (
        T0 + timedelta(seconds=1),
        T0 + timedelta(seconds=20),
    )
    # The actual lateness, least (the fire of :20) to most (the fire of :01).
    assert "1.250 s to 20.2 s late" in merged.reason
    assert "within misfire_grace_time=300s" in merged.reason
    assert f"coalesced into execution {run.execution_id}" in merged.reason
    # Recorded before the run it joined: the run stays the job's latest execution.
    assert decision.events.index(merged) < decision.events.index(run)
    # Coalesced fires are not a missed streak (alarm_after_missed counts missed and skipped).
    assert decision.state.consecutive_missed == 0


def test_only_fires_beyond_the_grace_time_are_missed_and_their_lateness_is_stated() -> None:
    state = created(misfire_grace_time=10)
    decision = decide_fire(state, T0 + timedelta(seconds=30.5), ids())
    (missed,) = of(decision.events, ExecutionMissed)
    (merged,) = of(decision.events, ExecutionCoalesced)
    (run,) = of(decision.events, ExecutionRequested)
    # Due: :01 .. :30. Beyond 10 s: :01 .. :20 (late 10.5 s to 29.5 s). Within: :21 .. :29.
    assert (missed.missed_count, missed.window_start, missed.window_end) == (
        20,
        T0 + timedelta(seconds=1),
        T0 + timedelta(seconds=20),
    )
    assert "could not start within misfire_grace_time=10s" in missed.reason
    assert "10.5 s to 29.5 s late" in missed.reason
    assert "coalesced into one run" not in missed.reason
    assert merged.coalesced_count == 9
    assert (merged.window_start, merged.window_end) == (
        T0 + timedelta(seconds=21),
        T0 + timedelta(seconds=29),
    )
    assert run.scheduled_time == T0 + timedelta(seconds=30)
    assert run.trigger_info == "catch_up"


def test_a_week_down_stays_bounded() -> None:
    decision = decide_fire(created(), T0 + timedelta(days=7, seconds=0.5), ids())
    (missed,) = of(decision.events, ExecutionMissed)
    (merged,) = of(decision.events, ExecutionCoalesced)
    assert missed.missed_count + merged.coalesced_count + 1 == 7 * 86400
    assert merged.coalesced_count == 299
    assert len(decision.events) == 4  # missed, coalesced, pending, started
    assert "h (" in missed.reason  # a week of lateness is shown in hours as well


def test_one_due_fire_within_the_grace_is_neither_missed_nor_coalesced() -> None:
    decision = decide_fire(created(), T0 + timedelta(seconds=1.5), ids())
    assert [type(e) for e in decision.events] == [ExecutionRequested, ExecutionStarted]
    assert decision.events[0].trigger_info == "scheduled"  # type: ignore[union-attr]


def test_the_coalesced_run_refused_by_the_conflict_policy_still_names_it() -> None:
    state = created()
    first = decide_fire(state, T0 + timedelta(seconds=1), ids())  # starts, keeps running
    decision = decide_fire(first.state, T0 + timedelta(seconds=4.5), ids())
    (merged,) = of(decision.events, ExecutionCoalesced)
    (skipped,) = of(decision.events, ExecutionSkipped)
    assert merged.into_execution_id == skipped.execution_id
    assert merged.coalesced_count == 2


def test_without_coalesce_the_cap_is_stated_and_the_latest_fires_run() -> None:
    state = created(coalesce=False, conflict_policy="replace", max_instances=100)
    decision = decide_fire(state, T0 + timedelta(seconds=150.5), ids())
    runs = of(decision.events, ExecutionRequested) + of(decision.events, ExecutionSkipped)
    (missed,) = of(decision.events, ExecutionMissed)
    assert of(decision.events, ExecutionCoalesced) == []
    assert len(runs) == 100
    assert min(r.scheduled_time for r in runs) == T0 + timedelta(seconds=51)
    assert max(r.scheduled_time for r in runs) == T0 + timedelta(seconds=150)
    assert (missed.missed_count, missed.window_end) == (50, T0 + timedelta(seconds=50))
    assert (
        "50 were within misfire_grace_time=300s but beyond the 100 catch-up runs" in missed.reason
    )
    assert "could not start" not in missed.reason
