"""Given/when/then on plain events: the job aggregate's decisions, and what it refuses."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from lablink.domain.job import (
    CompleteJob,
    CreateJob,
    DeleteJob,
    JobCommand,
    JobState,
    PauseJob,
    ResumeJob,
    UpdateJob,
    decide,
    evolve,
)
from lablink.domain.requests import parse_job_request
from lablink.errors import InvalidRequest, JobNotFound, JobStateConflict
from lablink.events import (
    AnyEvent,
    ExecutionMissed,
    ExecutionRequested,
    ExecutionSkipped,
    ExecutionStarted,
    ExecutionSucceeded,
    JobCompleted,
    JobCreated,
    JobDeleted,
    JobPaused,
    JobResumed,
    JobUpdated,
)

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
JOB = "job_1"
HOURLY: dict[str, Any] = {
    "name": "Hourly Voltage Check",
    "description": "Measure output voltage every hour",
    "schedule_type": "measurement",
    "equipment_id": "power_supply_1",
    "trigger_type": "interval",
    "interval_hours": 1,
    "parameters": {"command": "get_voltage"},
    "enabled": True,
}


def given(*events: AnyEvent) -> JobState:
    state = JobState(job_id=JOB)
    for event in events:
        state = evolve(state, event)
    return state


def when(state: JobState, command: JobCommand, now: datetime = NOW) -> list[AnyEvent]:
    return decide(state, command, now)


def create(body: dict[str, Any], tz: str = "Europe/Berlin") -> CreateJob:
    return CreateJob(
        job_id=JOB, request=parse_job_request(body), default_timezone=tz, created_by="alice"
    )


def created(body: dict[str, Any] = HOURLY) -> JobCreated:
    (event,) = when(given(), create(body))
    assert isinstance(event, JobCreated)
    return event


def refusal(body: dict[str, Any], now: datetime = NOW) -> dict[str, str]:
    """field -> reason, for a create that must be refused."""
    with pytest.raises(InvalidRequest) as caught:
        when(given(), create(body), now)
    for error in caught.value.errors:
        assert error.field
        assert error.reason
    return {e.field: e.reason for e in caught.value.errors}


# -- create ----------------------------------------------------------------------------------


def test_create_records_the_normalised_spec_and_who_created_it() -> None:
    event = created()
    assert event.job_id == JOB
    assert event.enabled is True
    assert event.created_by == "alice"
    assert event.created_at == NOW
    assert event.anchor == NOW
    assert event.spec.timezone == "Europe/Berlin"
    assert event.spec.interval_hours == 1
    assert event.spec.timeout_seconds == 60.0
    assert event.spec.conflict_policy == "skip"
    assert event.spec.max_instances == 1
    assert event.spec.misfire_grace_time == 300.0
    assert event.spec.coalesce is True


def test_created_job_state_and_next_fire() -> None:
    state = given(created())
    assert state.exists
    assert state.status == "active"
    assert state.enabled
    assert state.next_fire_time() == NOW + timedelta(hours=1)


def test_created_disabled_is_paused_and_has_no_next_fire() -> None:
    state = given(created({**HOURLY, "enabled": False}))
    assert state.status == "paused"
    assert state.next_fire_time() is None


def test_naive_dates_are_wall_clock_in_the_jobs_zone_and_aware_ones_absolute() -> None:
    body = {
        **HOURLY,
        "trigger_type": "daily",
        "time_of_day": "09:00:00",
        "interval_hours": None,
        "start_date": "2026-07-01T00:00:00",
        "end_date": "2026-08-01T00:00:00+00:00",
    }
    del body["interval_hours"]
    spec = created(body).spec
    assert spec.start_date == datetime(2026, 6, 30, 22, 0, tzinfo=UTC)  # CEST = UTC+2
    assert spec.end_date == datetime(2026, 8, 1, 0, 0, tzinfo=UTC)


def test_acquisition_timeout_defaults_to_duration_plus_margin() -> None:
    body = {
        "name": "Weekly capture",
        "schedule_type": "acquisition",
        "equipment_id": "scope_1",
        "trigger_type": "weekly",
        "day_of_week": 1,
        "time_of_day": "08:00:00",
        "parameters": {"duration": 600, "sample_rate": 1000000, "channels": [1, 2, 3, 4]},
    }
    assert created(body).spec.timeout_seconds == 660.0


def test_creating_twice_is_a_conflict() -> None:
    with pytest.raises(JobStateConflict):
        when(given(created()), create(HOURLY))


# -- refusals: every one names the field, and nothing is decided ----------------------------


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"cron_expression": "0 * * *"}, "cron_expression", "5 fields"),
        ({"cron_expression": "61 * * * *"}, "cron_expression", ""),
        ({"cron_expression": "0 0 30 2 *"}, "cron_expression", "never"),
        ({"interval_hours": 1}, "interval_hours", "does not apply"),
    ],
)
def test_bad_cron_jobs(changes: dict[str, Any], field: str, words: str) -> None:
    body = {**HOURLY, "trigger_type": "cron", "cron_expression": "0 * * * *"}
    del body["interval_hours"]
    errors = refusal({**body, **changes})
    assert field in errors
    assert words in errors[field]


def test_interval_summing_below_one_second() -> None:
    body = {**HOURLY, "interval_seconds": 0.5}
    del body["interval_hours"]
    assert "1 s" in refusal(body)["interval_seconds"]


def test_interval_without_any_interval_field() -> None:
    body = dict(HOURLY)
    del body["interval_hours"]
    assert "interval_seconds" in refusal(body)


@pytest.mark.parametrize("day", [-1, 7, 10])
def test_day_of_week_outside_0_to_6(day: int) -> None:
    body = {**HOURLY, "trigger_type": "weekly", "day_of_week": day, "time_of_day": "09:00:00"}
    del body["interval_hours"]
    assert "0 (Monday)" in refusal(body)["day_of_week"]


def test_weekly_without_day_of_week() -> None:
    body = {**HOURLY, "trigger_type": "weekly", "time_of_day": "09:00:00"}
    del body["interval_hours"]
    assert "required" in refusal(body)["day_of_week"]


@pytest.mark.parametrize("day", [0, 32, -2])
def test_day_of_month_outside_1_to_31_and_not_minus_1(day: int) -> None:
    body = {**HOURLY, "trigger_type": "monthly", "day_of_month": day, "time_of_day": "12:00:00"}
    del body["interval_hours"]
    assert "-1" in refusal(body)["day_of_month"]


@pytest.mark.parametrize("value", ["25:00:00", "12:60:00", "noon", "1:00"])
def test_time_of_day_must_exist(value: str) -> None:
    body = {**HOURLY, "trigger_type": "daily", "time_of_day": value}
    del body["interval_hours"]
    assert "HH:MM:SS" in refusal(body)["time_of_day"]


def test_end_before_start() -> None:
    errors = refusal(
        {**HOURLY, "start_date": "2026-05-01T00:00:00", "end_date": "2026-04-01T00:00:00"}
    )
    assert "before start_date" in errors["end_date"]


def test_schedule_entirely_in_the_past() -> None:
    errors = refusal({**HOURLY, "end_date": "2026-01-01T00:00:00"})
    assert "past" in errors["end_date"]


def test_date_job_in_the_past_beyond_grace_but_accepted_within_grace() -> None:
    body = {**HOURLY, "trigger_type": "date", "run_date": "2025-12-25T10:00:00"}
    del body["interval_hours"]
    assert "past" in refusal(body)["run_date"]
    # Two minutes ago (in Berlin wall time) is within the 300 s grace: accepted, fires once.
    recent = {**body, "run_date": "2026-03-02T09:58:00"}
    state = given(created(recent))
    assert state.next_fire_time() == datetime(2026, 3, 2, 8, 58, tzinfo=UTC)


def test_unknown_timezone() -> None:
    assert "IANA" in refusal({**HOURLY, "timezone": "Mars/Olympus_Mons"})["timezone"]


def test_unknown_fields_are_refused_by_name() -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_job_request({**HOURLY, "interval_hour": 1})
    (error,) = caught.value.errors
    assert (error.field, error.value, error.reason) == ("interval_hour", 1, "unknown field")


def test_wrong_types_name_the_field_and_value() -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_job_request({**HOURLY, "max_instances": "many"})
    (error,) = caught.value.errors
    assert (error.field, error.value) == ("max_instances", "many")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("equipment_id", "psu.1"),
        ("equipment_id", "psu>"),
        ("equipment_id", "psu 1"),
        ("equipment_id", "*"),
        ("equipment_id", ""),
        ("equipment_id", "x" * 65),
        ("profile_id", "a.b"),
    ],
)
def test_ids_that_could_break_a_nats_subject(field: str, value: str) -> None:
    assert "NATS" in refusal({**HOURLY, field: value})[field]


def test_all_problems_are_reported_together() -> None:
    errors = refusal({**HOURLY, "equipment_id": "a.b", "max_instances": 0, "timezone": "Nowhere"})
    assert {"equipment_id", "max_instances", "timezone"} <= set(errors)


def test_command_job_needs_a_command() -> None:
    body = {**HOURLY, "schedule_type": "command", "parameters": {}}
    assert "command" in refusal(body)["parameters.command"]


def test_acquisition_needs_a_positive_duration() -> None:
    body = {**HOURLY, "schedule_type": "acquisition", "parameters": {"duration": -5}}
    assert "duration" in refusal(body)["parameters.duration"]


def test_the_guides_weekly_capture_is_a_size_an_instrument_can_take() -> None:
    weekly = {"duration": 600, "sample_rate": 1_000_000, "channels": [1, 2, 3, 4]}
    event = created({**HOURLY, "schedule_type": "acquisition", "parameters": weekly})
    assert event.spec.parameters == weekly


@pytest.mark.parametrize(
    ("parameters", "field", "reason"),
    [
        ({"duration": 30 * 86_400}, "duration", "longer than an acquisition may run"),
        ({"duration": 60, "sample_rate": 5e12}, "sample_rate", "fastest instrument"),
        ({"duration": 60, "sample_rate": 0}, "sample_rate", "above 0"),
        ({"duration": 60, "sample_rate": "fast"}, "sample_rate", "must be a number"),
        ({"duration": 0.5, "sample_rate": 1}, "sample_rate", "takes no sample"),
        ({"duration": 60, "channels": [1, 2, 3, 4, 5]}, "channels", "1 to 4 distinct"),
        ({"duration": 60, "channels": [1, 1]}, "channels", "distinct"),
        ({"duration": 60, "channels": []}, "channels", "distinct"),
        ({"duration": 60, "format": "xlsx"}, "format", "one of csv"),
    ],
)
def test_acquisition_sizes_no_instrument_could_take_are_refused(
    parameters: dict[str, Any], field: str, reason: str
) -> None:
    body = {**HOURLY, "schedule_type": "acquisition", "parameters": parameters}
    assert reason in refusal(body)[f"parameters.{field}"]


# -- update / pause / resume / delete / complete ---------------------------------------------


def test_update_changes_only_given_fields_and_lists_them() -> None:
    state = given(created())
    later = NOW + timedelta(minutes=10)
    (event,) = when(
        state, UpdateJob(job_id=JOB, changes={"name": "Renamed"}, default_timezone="UTC"), later
    )
    assert isinstance(event, JobUpdated)
    assert event.changed_fields == ("name",)
    assert event.spec.name == "Renamed"
    assert event.spec.interval_hours == 1
    assert event.spec.timezone == "Europe/Berlin"  # kept, not replaced by the default
    assert event.anchor == NOW  # interval phase is kept
    assert event.updated_at == later


def test_update_to_another_trigger_type_drops_the_old_trigger_fields() -> None:
    state = given(created())
    (event,) = when(
        state,
        UpdateJob(
            job_id=JOB,
            changes={"trigger_type": "daily", "time_of_day": "14:30:00"},
            default_timezone="UTC",
        ),
    )
    assert isinstance(event, JobUpdated)
    assert event.spec.interval_hours is None
    assert event.spec.time_of_day == "14:30:00"


def test_update_that_changes_nothing_records_nothing() -> None:
    state = given(created())
    cmd = UpdateJob(job_id=JOB, changes={"name": HOURLY["name"]}, default_timezone="UTC")
    assert when(state, cmd) == []


def test_update_with_invalid_values_is_refused_whole() -> None:
    state = given(created())
    cmd = UpdateJob(
        job_id=JOB, changes={"name": "ok", "interval_hours": -1}, default_timezone="UTC"
    )
    with pytest.raises(InvalidRequest) as caught:
        when(state, cmd)
    assert caught.value.errors[0].field == "interval_hours"


def test_update_enabled_false_pauses() -> None:
    state = given(created())
    events = when(state, UpdateJob(job_id=JOB, changes={"enabled": False}, default_timezone="UTC"))
    assert [type(e) for e in events] == [JobPaused]


def test_pause_then_resume_restarts_from_now_without_catch_up() -> None:
    state = given(created(), JobPaused(job_id=JOB))
    assert state.next_fire_time() is None
    resume_at = NOW + timedelta(hours=5, minutes=20)
    (event,) = when(state, ResumeJob(job_id=JOB), resume_at)
    assert event == JobResumed(job_id=JOB, resumed_at=resume_at)
    resumed = evolve(state, event)
    # anchor + n x 1 h, the first after the resume: 15:00 UTC, not the paused 10:00..14:00.
    assert resumed.next_fire_time() == NOW + timedelta(hours=6)


def test_pause_and_resume_are_idempotent() -> None:
    assert when(given(created(), JobPaused(job_id=JOB)), PauseJob(job_id=JOB)) == []
    assert when(given(created()), ResumeJob(job_id=JOB)) == []


def test_commands_on_a_missing_or_deleted_job() -> None:
    for state in (given(), given(created(), JobDeleted(job_id=JOB))):
        for command in (
            PauseJob(job_id=JOB),
            ResumeJob(job_id=JOB),
            DeleteJob(job_id=JOB),
            CompleteJob(job_id=JOB),
            UpdateJob(job_id=JOB, changes={"name": "x"}, default_timezone="UTC"),
        ):
            with pytest.raises(JobNotFound):
                when(state, command)


def test_completed_job_cannot_be_resumed_or_paused() -> None:
    state = given(created(), JobCompleted(job_id=JOB, reason="max_executions"))
    assert state.next_fire_time() is None
    with pytest.raises(JobStateConflict):
        when(state, ResumeJob(job_id=JOB))
    with pytest.raises(JobStateConflict):
        when(state, PauseJob(job_id=JOB))


# -- execution facts fold into the state the engine will decide from -------------------------


def test_execution_facts_track_running_count_and_next_fire() -> None:
    fire = NOW + timedelta(hours=1)
    state = given(
        created(),
        ExecutionRequested(
            job_id=JOB,
            execution_id="exec_1",
            scheduled_time=fire,
            actual_time=fire,
            trigger_info="scheduled",
        ),
        ExecutionStarted(job_id=JOB, execution_id="exec_1", started_at=fire),
    )
    assert state.running == ("exec_1",)
    assert state.counted_runs == 1
    assert state.next_fire_time() == fire + timedelta(hours=1)
    state = evolve(
        state,
        ExecutionSucceeded(job_id=JOB, execution_id="exec_1", completed_at=fire, started_at=fire),
    )
    assert state.running == ()


def test_run_now_does_not_count_or_move_the_schedule() -> None:
    state = given(
        created(),
        ExecutionRequested(
            job_id=JOB,
            execution_id="exec_m",
            scheduled_time=NOW,
            actual_time=NOW,
            trigger_info="manual",
        ),
        ExecutionStarted(job_id=JOB, execution_id="exec_m", started_at=NOW),
    )
    assert state.counted_runs == 0
    assert state.last_fire_time is None
    assert state.next_fire_time() == NOW + timedelta(hours=1)


def test_missed_and_skipped_fires_move_the_schedule_and_count_consecutive_misses() -> None:
    t1, t5 = NOW + timedelta(hours=1), NOW + timedelta(hours=5)
    state = given(
        created(),
        ExecutionMissed(
            job_id=JOB,
            execution_id="exec_1",
            scheduled_time=t1,
            actual_time=t5,
            missed_count=4,
            window_start=t1,
            window_end=t5 - timedelta(hours=1),
            reason="scheduler down",
        ),
        ExecutionSkipped(
            job_id=JOB,
            execution_id="exec_2",
            scheduled_time=t5,
            actual_time=t5,
            trigger_info="scheduled",
            reason="exec_0 running",
        ),
    )
    assert state.consecutive_missed == 5
    assert state.next_fire_time() == t5 + timedelta(hours=1)
