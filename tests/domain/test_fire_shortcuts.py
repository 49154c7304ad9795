"""The fire path's shortcuts (issue 14, loop cost per fire) decide exactly what the long way
decides: the kept next fire (``next_fire_of``) equals ``planned_next_fire``, and the plan of
an on-time fire (``_on_time``) equals ``_plan_runs``'s whenever it gives one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from lablink.domain import job as job_module
from lablink.domain.firing import _on_time, _plan_runs
from lablink.domain.job import CreateJob, JobState, decide, fold, next_fire_of
from lablink.domain.planning import planned_next_fire
from lablink.domain.requests import parse_job_request
from lablink.domain.schedule import Schedule

T0 = datetime(2026, 3, 29, 0, 30, tzinfo=UTC)  # the night Berlin springs forward

TRIGGERS: list[dict[str, Any]] = [
    {"trigger_type": "interval", "interval_seconds": 1},
    {"trigger_type": "interval", "interval_seconds": 7},
    {"trigger_type": "interval", "interval_minutes": 30, "timezone": "Europe/Berlin"},
    {"trigger_type": "cron", "cron_expression": "*/5 1-3 * * *", "timezone": "Europe/Berlin"},
    {"trigger_type": "daily", "time_of_day": "02:30", "timezone": "Europe/Berlin"},
]


def created(trigger: dict[str, Any], grace: int, coalesce: bool) -> JobState:
    request = parse_job_request(
        {
            "name": "reading",
            "schedule_type": "measurement",
            "equipment_id": "power_supply_1",
            "parameters": {"command": "get_voltage"},
            "misfire_grace_time": grace,
            "coalesce": coalesce,
            **trigger,
        }
    )
    command = CreateJob(job_id="job_1", request=request, default_timezone="UTC", created_by="t")
    return fold(JobState(job_id="job_1"), decide(JobState(job_id="job_1"), command, T0))


@settings(max_examples=300, deadline=None)
@given(
    trigger=st.sampled_from(TRIGGERS),
    grace=st.integers(min_value=1, max_value=4000),
    coalesce=st.booleans(),
    late=st.floats(min_value=0, max_value=20_000, allow_nan=False),
)
def test_an_on_time_plan_is_the_plan_of_the_long_way(
    trigger: dict[str, Any], grace: int, coalesce: bool, late: float
) -> None:
    state = created(trigger, grace, coalesce)
    assert state.spec is not None
    assert state.anchor is not None
    first = state.next_fire_time()
    assert first is not None
    now = first + timedelta(seconds=late)
    short = _on_time(state, state.spec, first, now)
    long = _plan_runs(Schedule.from_spec(state.spec, state.anchor), state.spec, first, now)
    if short is not None:
        assert short == long
    else:
        # The long way only when the fire is late or more than one fire is due.
        late_fire = now - first > timedelta(seconds=grace)
        assert late_fire or long.runs != [first] or long.missed or long.coalesced


@settings(max_examples=300, deadline=None)
@given(
    trigger=st.sampled_from(TRIGGERS),
    after=st.floats(min_value=0, max_value=400_000, allow_nan=False),
    status=st.sampled_from(["active", "paused", "completed"]),
    clear=st.booleans(),
)
def test_the_kept_next_fire_is_the_planned_one(
    trigger: dict[str, Any], after: float, status: str, clear: bool
) -> None:
    state = created(trigger, 300, True)
    assert state.spec is not None
    assert state.anchor is not None
    assert state.rescheduled_at is not None
    if clear:
        job_module._next_fires.clear()
    last = T0 + timedelta(seconds=after)
    args = (state.spec, state.anchor, status, state.rescheduled_at, last)
    expected = planned_next_fire(*args)
    assert next_fire_of(*args) == expected
    assert next_fire_of(*args) == expected  # kept
    # Another spec object (an update) is never answered from the first one's entry.
    other = created({"trigger_type": "interval", "interval_seconds": 11}, 300, True).spec
    assert other is not None
    moved = (other, state.anchor, status, state.rescheduled_at, last)
    assert next_fire_of(*moved) == planned_next_fire(*moved)


def test_the_kept_answers_are_bounded() -> None:
    state = created(TRIGGERS[0], 300, True)
    assert state.spec is not None
    assert state.anchor is not None
    assert state.rescheduled_at is not None
    for second in range(job_module.NEXT_FIRES_KEPT + 10):
        last = T0 + timedelta(seconds=second)
        next_fire_of(state.spec, state.anchor, "active", state.rescheduled_at, last)
    assert len(job_module._next_fires) <= job_module.NEXT_FIRES_KEPT
