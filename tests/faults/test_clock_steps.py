"""Finding 10: a backward wall-clock step silenced 1 s jobs for an hour, with no record.

The injected clock steps (``ManualClock.step`` moves the wall clock and not its monotonic
time), and the engine is turned by hand: no sleeps. The rule (docs/scheduling.md, "Clock
steps"): the step is recorded (``scheduler.clock_stepped``), every timer is planned again;
set back, calendar jobs never fire a scheduled time twice and interval jobs, which count
elapsed time, are re-anchored by an event in their stream and go on every interval; set
forward, the fires now due follow the misfire rules. Timeouts count elapsed time either way.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from lablink.clock import ClockStep, ManualClock, StepDetector, SystemClock
from lablink.events import ClockStepped, ExecutionRequested, JobReanchored
from lablink.health import Health
from lablink.logstore import open_store
from lablink.projections.reading import reading_views
from lablink.repository import JobRepository
from lablink.scheduler.engine import Engine, recovery_lists
from lablink.supervision import Supervisor
from tests.support.eventually import eventually
from tests.support.harness import GateExecutor, Harness

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # 10:00 in Berlin
HOUR = timedelta(hours=1)
TICKER: dict[str, Any] = {
    "name": "Every second",
    "schedule_type": "measurement",
    "equipment_id": "power_supply_1",
    "trigger_type": "interval",
    "interval_seconds": 1,
    "parameters": {"command": "get_voltage"},
}
DAILY: dict[str, Any] = {
    "name": "Daily at 10:01",
    "schedule_type": "measurement",
    "equipment_id": "power_supply_1",
    "trigger_type": "daily",
    "time_of_day": "10:01",  # Europe/Berlin: 09:01 UTC
    "parameters": {"command": "get_voltage"},
}


def at(text: str) -> datetime:
    return datetime.fromisoformat(f"2026-03-02T{text}+00:00")


async def seconds(harness: Harness, count: int) -> None:
    """Let ``count`` seconds pass, one turn of the loop each."""
    for _ in range(count):
        harness.clock.advance(1)
        await harness.engine.turn()
        await harness.settle()


def steps(harness: Harness) -> list[ClockStepped]:
    return [
        r.event for r in harness.store.read_stream("scheduler") if isinstance(r.event, ClockStepped)
    ]


def scheduled(harness: Harness, job_id: str, status: str | None = None) -> list[str]:
    return [
        r["scheduled_time"]
        for r in harness.executions(job_id)
        if status is None or r["status"] == status
    ]


def test_the_detector_tells_a_step_from_time_passing() -> None:
    clock = ManualClock(START)
    detector = StepDetector(clock)
    assert detector.check() is None  # the first reading
    clock.advance(3600)
    clock.step(0.5)  # a slew-sized correction is no step
    assert detector.check() is None
    clock.step(-HOUR)
    step = detector.check()
    assert step == ClockStep(
        seconds=-3600.0,
        wall_before=START + HOUR + timedelta(seconds=0.5),
        wall_after=START + timedelta(seconds=0.5),
    )
    assert detector.check() is None  # measured from the new offset
    clock.step(90)
    forward = detector.check()
    assert forward is not None
    assert forward.seconds == 90.0


async def test_set_back_an_hour_interval_jobs_go_on_and_calendar_jobs_do_not_repeat(
    harness: Harness, invariants: Any
) -> None:
    ticker = harness.service.create_job(TICKER, "tester")
    daily = harness.service.create_job(DAILY, "tester")
    await seconds(harness, 65)  # 09:01:05; the daily job ran at 09:01:00
    assert scheduled(harness, daily) == ["2026-03-02T09:01:00.000000Z"]
    assert len(scheduled(harness, ticker, "completed")) == 65

    harness.clock.step(-HOUR)  # 08:01:05
    await harness.engine.turn()
    (stepped,) = steps(harness)
    assert stepped.step_seconds == -3600.0
    assert (stepped.wall_before, stepped.wall_after) == (at("09:01:05"), at("08:01:05"))
    assert (stepped.planned_jobs, stepped.reanchored_jobs) == (2, 1)
    (reanchored,) = [
        r.event for r in harness.store.read_stream(ticker) if isinstance(r.event, JobReanchored)
    ]
    assert reanchored.shift_seconds == -3600.0
    assert reanchored.last_fire_time == at("08:01:05")

    # No hour of silence: the 1 s job fires every second of the new time line.
    await seconds(harness, 10)
    after_step = [s for s in scheduled(harness, ticker) if s < "2026-03-02T09:00"]
    assert after_step == [f"2026-03-02T08:01:{n:02d}.000000Z" for n in range(6, 16)]
    assert {r["trigger_info"] for r in harness.executions(ticker)[-10:]} == {"scheduled"}
    assert harness.engine.timers.planned(daily) == at("09:01:00") + timedelta(days=1)

    # An hour later on the new clock, 09:01:00 comes round again: the daily job already ran
    # that scheduled time and does not run it twice; it goes on tomorrow.
    harness.clock.advance(timedelta(minutes=59, seconds=50))  # 09:01:05 again
    await harness.engine.turn()
    await harness.settle()
    assert scheduled(harness, daily) == ["2026-03-02T09:01:00.000000Z"]
    assert harness.job(daily)["next_run_time"] == "2026-03-03T09:01:00.000000Z"
    assert len(steps(harness)) == 1

    # Replay and restart agree with the live engine: the re-anchor is in the job's stream.
    planned = harness.engine.timers.planned(ticker)
    await harness.close()
    again = await Harness(harness.path, harness.clock).start()
    try:
        assert again.engine.timers.planned(ticker) == planned
        assert again.job(ticker)["next_run_time"] == harness.job(ticker)["next_run_time"]
    finally:
        await again.close()
    await invariants(harness.path, acknowledged_jobs=[ticker, daily])


async def test_set_forward_an_hour_the_missed_fires_follow_the_misfire_rules(
    harness: Harness, invariants: Any
) -> None:
    ticker = harness.service.create_job(TICKER, "tester")
    await seconds(harness, 5)
    harness.clock.step(HOUR)
    await harness.engine.turn()
    await harness.settle()
    (stepped,) = steps(harness)
    assert stepped.step_seconds == 3600.0
    assert stepped.reanchored_jobs == 0
    stream = harness.store.read_stream(ticker)
    assert not [r for r in stream if isinstance(r.event, JobReanchored)]
    # Every fire of the hour is accounted for, in the records the misfire rules make,
    # plus one catch-up run of the latest; bounded: no row per missed second.
    decided = [r.event for r in stream if r.occurred_at == harness.clock.now()]
    covered = sum(
        getattr(e, "missed_count", 0)
        + getattr(e, "coalesced_count", 0)
        + isinstance(e, ExecutionRequested)
        for e in decided
    )
    assert covered == 3600
    assert harness.executions(ticker)[-1]["trigger_info"] == "catch_up"
    assert len(decided) <= 6
    await seconds(harness, 3)
    assert harness.executions(ticker)[-1]["trigger_info"] == "scheduled"
    await harness.close()
    await invariants(harness.path, acknowledged_jobs=[ticker])


async def test_timeouts_count_elapsed_time_across_steps(harness: Harness, invariants: Any) -> None:
    harness.executor.hold = True
    job_id = harness.service.create_job(
        {**TICKER, "name": "slow", "interval_seconds": 600, "timeout_seconds": 120}, "tester"
    )
    await seconds(harness, 600)
    (execution_id,) = harness.executor.held()

    def status() -> str:
        (row,) = harness.rows("SELECT status FROM executions WHERE execution_id = ?", execution_id)
        return str(row["status"])

    harness.clock.step(HOUR)  # a clock set forward times nothing out
    await harness.engine.turn()
    await asyncio.sleep(0)
    assert status() == "running"
    harness.clock.step(-2 * HOUR)
    await harness.engine.turn()
    assert status() == "running"
    # ...and one set back does not stretch the timeout by an hour.
    await seconds(harness, 125)
    assert status() == "timed_out"
    assert harness.executor.stopped == [execution_id]
    await harness.close()
    await invariants(harness.path, acknowledged_jobs=[job_id])


@pytest.mark.slow
async def test_the_live_loop_on_the_real_clock_sees_no_step(tmp_path: Path) -> None:
    db = tmp_path / "data" / "scheduler.db"
    clock = SystemClock()
    store = open_store(db)
    jobs = JobRepository(store)
    supervisor = Supervisor(Health(clock))
    engine = Engine(store, clock, GateExecutor(), jobs=jobs, supervisor=supervisor)
    with reading_views(store) as views:
        active, unfinished = recovery_lists(views)
    await engine.start(active, unfinished)
    try:
        # The idle loop wakes about once a second.
        await eventually(lambda: engine.turns, until=lambda turns: turns >= 4, interval=0.1)
        assert store.read_stream("scheduler") == []
        assert engine.probe().state == "ok"
    finally:
        await engine.aclose()
        await supervisor.aclose()
        store.close()
