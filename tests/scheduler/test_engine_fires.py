"""Triggers through the engine: fires at the trigger's instants, recorded as events, in the
job's time zone, across DST, month ends and leap days; completion by date, end and count."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from tests.support.harness import Harness

BASE: dict[str, Any] = {
    "name": "Hourly Voltage Check",
    "schedule_type": "measurement",
    "equipment_id": "power_supply_1",
    "parameters": {"command": "get_voltage"},
}


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def z(instant: datetime) -> str:
    return instant.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def fires_until(h: Harness, job_id: str, end: datetime) -> list[str]:
    """Step the clock from fire to fire (as the timer loop would) and list the fires."""
    while True:
        planned = h.engine.timers.planned(job_id)
        if planned is None or planned > end:
            break
        await h.at(planned)
    return [e["scheduled_time"] for e in h.executions(job_id) if e["trigger_info"] == "scheduled"]


async def test_interval_job_fires_on_time_and_records_the_lifecycle(harness: Harness) -> None:
    h = harness
    job = h.service.create_job({**BASE, "trigger_type": "interval", "interval_hours": 1}, "alice")
    h.engine.plan(job)
    assert await h.at(utc(2026, 3, 2, 9, 59, 59)) == 0
    assert h.executions(job) == []
    assert await h.at(utc(2026, 3, 2, 10, 0)) == 1
    (execution,) = h.rows("SELECT * FROM executions")
    assert execution["status"] == "completed"
    assert execution["scheduled_time"] == "2026-03-02T10:00:00.000000Z"
    assert execution["trigger_info"] == "scheduled"
    assert execution["progress"] == 1.0  # completed; the 0.5 report is in the events below
    types = [r["type"] for r in h.rows("SELECT type FROM events WHERE stream_id = ?", job)]
    assert types == [
        "job.created",
        "execution.pending",
        "execution.started",
        "execution.progressed",
        "execution.completed",
    ]
    assert h.job(job)["next_run_time"] == "2026-03-02T11:00:00.000000Z"
    (request,) = h.executor.requests
    assert request.scheduled_time == utc(2026, 3, 2, 10)


async def test_guide_cron_business_hours(harness: Harness) -> None:
    h = harness  # Monday 2026-03-02 09:00 UTC = 10:00 in Berlin
    job = h.service.create_job(
        {**BASE, "trigger_type": "cron", "cron_expression": "0 9-17 * * 1-5", "timezone": "UTC"},
        "alice",
    )
    h.engine.plan(job)
    fires = await fires_until(h, job, utc(2026, 3, 9, 9, 30))
    # Mon 10..17 (8), Tue–Fri 9..17 (4 x 9), next Monday 09:00.
    assert len(fires) == 8 + 36 + 1
    assert fires[0] == "2026-03-02T10:00:00.000000Z"
    assert fires[8] == "2026-03-03T09:00:00.000000Z"
    assert fires[-1] == "2026-03-09T09:00:00.000000Z"
    assert not any(f.startswith(("2026-03-07", "2026-03-08")) for f in fires)


async def test_daily_in_berlin_across_spring_forward(harness: Harness) -> None:
    h = harness
    h.clock.set(utc(2026, 3, 27, 12))
    job = h.service.create_job({**BASE, "trigger_type": "daily", "time_of_day": "02:30:00"}, "a")
    h.engine.plan(job)
    fires = await fires_until(h, job, utc(2026, 3, 31))
    assert fires == [
        z(utc(2026, 3, 28, 1, 30)),  # 02:30 CET
        z(utc(2026, 3, 29, 1, 0)),  # 02:30 does not exist: right after the jump (03:00 CEST)
        z(utc(2026, 3, 30, 0, 30)),  # 02:30 CEST
    ]


async def test_daily_in_berlin_across_fall_back_runs_once(harness: Harness) -> None:
    h = harness
    h.clock.set(utc(2026, 10, 23, 12))
    job = h.service.create_job({**BASE, "trigger_type": "daily", "time_of_day": "02:30:00"}, "a")
    h.engine.plan(job)
    fires = await fires_until(h, job, utc(2026, 10, 27))
    assert fires == [
        z(utc(2026, 10, 24, 0, 30)),
        z(utc(2026, 10, 25, 0, 30)),  # first of the two 02:30s (CEST)
        z(utc(2026, 10, 26, 1, 30)),
    ]


async def test_weekly_guide_example_tuesday_0900(harness: Harness) -> None:
    h = harness
    job = h.service.create_job(
        {**BASE, "trigger_type": "weekly", "day_of_week": 1, "time_of_day": "09:00:00"}, "a"
    )
    h.engine.plan(job)
    fires = await fires_until(h, job, utc(2026, 3, 18))
    assert fires == [z(utc(2026, 3, 3, 8)), z(utc(2026, 3, 10, 8)), z(utc(2026, 3, 17, 8))]


async def test_monthly_31st_skips_short_months_and_minus_one_is_the_last_day(
    harness: Harness,
) -> None:
    h = harness
    h.clock.set(utc(2027, 12, 1))
    day31 = h.service.create_job(
        {
            **BASE,
            "trigger_type": "monthly",
            "day_of_month": 31,
            "time_of_day": "12:00:00",
            "timezone": "UTC",
        },
        "a",
    )
    last = h.service.create_job(
        {
            **BASE,
            "trigger_type": "monthly",
            "day_of_month": -1,
            "time_of_day": "12:00:00",
            "timezone": "UTC",
        },
        "a",
    )
    leap = h.service.create_job(
        {
            **BASE,
            "trigger_type": "monthly",
            "day_of_month": 29,
            "time_of_day": "12:00:00",
            "timezone": "UTC",
        },
        "a",
    )
    for job in (day31, last, leap):
        h.engine.plan(job)
    end = utc(2028, 5, 1)
    while (due := h.engine.timers.next_due()) is not None and due <= end:
        await h.at(due)

    def days(job: str) -> list[str]:
        return [e["scheduled_time"][:10] for e in h.executions(job)]

    assert days(day31) == ["2027-12-31", "2028-01-31", "2028-03-31"]
    assert days(last) == ["2027-12-31", "2028-01-31", "2028-02-29", "2028-03-31", "2028-04-30"]
    assert days(leap) == ["2027-12-29", "2028-01-29", "2028-02-29", "2028-03-29", "2028-04-29"]


async def test_date_job_runs_once_then_completes(harness: Harness) -> None:
    h = harness
    job = h.service.create_job(
        {**BASE, "trigger_type": "date", "run_date": "2026-12-25T10:00:00"}, "a"
    )
    h.engine.plan(job)
    await h.at(utc(2026, 12, 25, 9))
    assert [e["status"] for e in h.executions(job)] == ["completed"]
    row = h.job(job)
    assert (row["status"], row["enabled"], row["next_run_time"]) == ("completed", 0, None)
    assert h.engine.timers.planned(job) is None
    assert await h.at(utc(2027, 12, 25, 9)) == 0


async def test_max_executions_completes_the_job(harness: Harness) -> None:
    h = harness
    job = h.service.create_job(
        {**BASE, "trigger_type": "interval", "interval_minutes": 30, "max_executions": 3}, "a"
    )
    h.engine.plan(job)
    await fires_until(h, job, utc(2026, 3, 3))
    assert [e["status"] for e in h.executions(job)] == ["completed"] * 3
    row = h.job(job)
    assert (row["status"], row["execution_count"], row["next_run_time"]) == ("completed", 3, None)


async def test_start_and_end_date_bound_the_guide_execution_limits_example(
    harness: Harness,
) -> None:
    h = harness
    h.clock.set(utc(2026, 10, 20))
    job = h.service.create_job(
        {
            **BASE,
            "name": "One-time Daily Test",
            "trigger_type": "daily",
            "time_of_day": "09:00:00",
            "max_executions": 30,
            "start_date": "2026-11-01T00:00:00",
            "end_date": "2026-12-01T00:00:00",
        },
        "a",
    )
    h.engine.plan(job)
    fires = await fires_until(h, job, utc(2027, 1, 1))
    assert len(fires) == 30
    assert fires[0] == z(utc(2026, 11, 1, 8))
    assert fires[-1] == z(utc(2026, 11, 30, 8))
    assert h.job(job)["status"] == "completed"


async def test_pause_resume_delete_update_take_effect_on_the_timers(harness: Harness) -> None:
    h = harness
    job = h.service.create_job({**BASE, "trigger_type": "interval", "interval_hours": 1}, "a")
    h.engine.plan(job)
    h.service.pause_job(job, "bob")
    assert h.engine.timers.planned(job) is None
    assert await h.at(utc(2026, 3, 2, 13)) == 0
    h.service.resume_job(job, "bob")
    # Resumed at 13:00: the next fire is 14:00; 10:00..13:00 are not caught up.
    assert h.engine.timers.planned(job) == utc(2026, 3, 2, 14)
    h.service.update_job(job, {"interval_hours": None, "interval_minutes": 10}, "bob")
    assert h.engine.timers.planned(job) == utc(2026, 3, 2, 13, 10)
    await h.at(utc(2026, 3, 2, 13, 10))
    assert len(h.executions(job)) == 1
    h.service.delete_job(job, "bob")
    assert h.engine.timers.planned(job) is None
    assert await h.at(utc(2026, 3, 2, 14)) == 0
