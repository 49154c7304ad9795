"""Conflict policies, misfires and coalescing, run now, timeouts and restarts — through the
engine, on a real SQLite file, with a manual clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from lablink.clock import ManualClock
from lablink.errors import ExecutionRefused
from lablink.instruments.execution import Outcome
from tests.support.harness import Harness

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
BASE: dict[str, Any] = {
    "name": "Load test",
    "schedule_type": "command",
    "equipment_id": "load_1",
    "parameters": {"command": "run_load_test", "parameters": {"duration": 60}},
    "trigger_type": "interval",
    "interval_minutes": 10,
    "timeout_seconds": 3600,
}


def minutes(n: float) -> datetime:
    return T0 + timedelta(minutes=n)


def statuses(h: Harness, job: str) -> list[str]:
    return [e["status"] for e in h.executions(job)]


async def create(h: Harness, **fields: Any) -> str:
    job = h.service.create_job({**BASE, **fields}, "alice")
    return job


# -- conflict policies -----------------------------------------------------------------------


async def test_skip_records_a_skipped_execution_naming_the_running_one(harness: Harness) -> None:
    h = harness
    h.executor.hold = True
    job = await create(h)
    await h.at(minutes(10))
    (running,) = h.executor.held()
    await h.at(minutes(20))
    first, second = h.executions(job)
    assert (first["status"], second["status"]) == ("running", "skipped")
    assert running in second["message"]
    assert "conflict_policy skip" in second["message"]
    h.executor.release(running)
    await h.settle()
    await h.at(minutes(30))
    assert statuses(h, job) == ["completed", "skipped", "running"]


async def test_queue_waits_fifo_and_coalesce_keeps_one_waiting(harness: Harness) -> None:
    h = harness
    h.executor.hold = True
    job = await create(h, conflict_policy="queue")
    await h.at(minutes(10))
    await h.at(minutes(20))
    await h.at(minutes(30))
    assert statuses(h, job) == ["running", "queued", "skipped"]
    assert "already waiting" in h.executions(job)[2]["message"]
    first = h.executions(job)[0]["execution_id"]
    h.executor.release(first)
    await h.settle()
    assert statuses(h, job) == ["completed", "running", "skipped"]
    queued = h.executions(job)[1]
    assert queued["scheduled_time"] == "2026-03-02T09:20:00.000000Z"


async def test_queue_without_coalesce_keeps_every_fire_in_order(harness: Harness) -> None:
    h = harness
    h.executor.hold = True
    job = await create(h, conflict_policy="queue", coalesce=False)
    for n in (10, 20, 30):
        await h.at(minutes(n))
    assert statuses(h, job) == ["running", "queued", "queued"]
    for _ in range(2):
        (running,) = h.executor.held()
        h.executor.release(running)
        await h.settle()
    assert statuses(h, job) == ["completed", "completed", "running"]
    started = [r.scheduled_time for r in h.executor.requests]
    assert started == [minutes(10), minutes(20), minutes(30)]


async def test_replace_runs_concurrently_up_to_max_instances(harness: Harness) -> None:
    h = harness
    h.executor.hold = True
    job = await create(h, conflict_policy="replace", max_instances=2)
    for n in (10, 20, 30):
        await h.at(minutes(n))
    assert statuses(h, job) == ["running", "running", "skipped"]
    assert "max_instances=2" in h.executions(job)[2]["message"]
    assert h.job(job)["running_count"] == 2


# -- misfires and coalescing -----------------------------------------------------------------


async def test_a_week_down_with_coalesce_is_one_run_one_missed_and_one_coalesced_record(
    harness: Harness,
) -> None:
    h = harness
    job = await create(h, interval_minutes=None, interval_seconds=1)
    await h.at(T0 + timedelta(days=7, seconds=0.5))
    rows = h.executions(job)
    # Beyond the 300 s grace: missed; the last 299 s of fires: coalesced into the run.
    assert [r["status"] for r in rows] == ["missed", "coalesced", "completed"]
    missed, _, run = rows
    assert missed["missed_count"] == 7 * 86400 - 300
    assert run["trigger_info"] == "catch_up"
    assert run["scheduled_time"] == "2026-03-09T09:00:00.000000Z"
    assert h.rows("SELECT COUNT(*) AS n FROM events")[0]["n"] < 10
    window = h.rows(
        "SELECT window_start, window_end, coalesced_count, coalesced_into FROM executions"
        " WHERE status IN ('missed', 'coalesced') ORDER BY seq"
    )
    assert window == [
        {
            "window_start": "2026-03-02T09:00:01.000000Z",
            "window_end": "2026-03-09T08:55:00.000000Z",
            "coalesced_count": None,
            "coalesced_into": None,
        },
        {
            "window_start": "2026-03-09T08:55:01.000000Z",
            "window_end": "2026-03-09T08:59:59.000000Z",
            "coalesced_count": 299,
            "coalesced_into": run["execution_id"],
        },
    ]
    assert h.job(job)["next_run_time"] == "2026-03-09T09:00:01.000000Z"


async def test_without_coalesce_fires_within_grace_run_in_turn_older_are_missed(
    harness: Harness,
) -> None:
    h = harness
    job = await create(
        h,
        interval_minutes=1,
        coalesce=False,
        misfire_grace_time=180,
        conflict_policy="queue",
    )
    # Down from 09:00 to 09:10:30: fires 09:01..09:10 are due; 09:08, 09:09, 09:10 are
    # within 180 s of now.
    await h.at(minutes(10.5))
    rows = h.executions(job)
    assert [r["status"] for r in rows] == ["missed", "completed", "completed", "completed"]
    assert rows[0]["missed_count"] == 7
    assert [r["scheduled_time"][11:16] for r in rows[1:]] == ["09:08", "09:09", "09:10"]
    assert {r["trigger_info"] for r in rows[1:]} == {"catch_up"}


async def test_a_single_late_fire_beyond_grace_still_runs_once_as_catch_up(
    harness: Harness,
) -> None:
    h = harness
    job = await create(h, misfire_grace_time=60)
    await h.at(minutes(15))  # the 09:10 fire is 5 minutes late
    (run,) = h.executions(job)
    assert (run["status"], run["trigger_info"]) == ("completed", "catch_up")


async def test_a_fire_within_grace_is_scheduled_not_catch_up(harness: Harness) -> None:
    h = harness
    job = await create(h)
    await h.at(minutes(10) + timedelta(seconds=30))
    (run,) = h.executions(job)
    assert run["trigger_info"] == "scheduled"
    assert run["scheduled_time"] == "2026-03-02T09:10:00.000000Z"


# -- run now ---------------------------------------------------------------------------------


async def test_run_now_on_a_disabled_job_is_manual_uncounted_and_moves_nothing(
    harness: Harness,
) -> None:
    h = harness
    job = await create(h, enabled=False, max_executions=1)
    execution_id = await h.engine.run_now(job)
    await h.settle()
    (row,) = h.executions(job)
    assert row["execution_id"] == execution_id
    assert (row["status"], row["trigger_info"]) == ("completed", "manual")
    job_row = h.job(job)
    assert (job_row["status"], job_row["execution_count"]) == ("paused", 0)
    h.service.resume_job(job, "alice")
    assert h.engine.timers.planned(job) == minutes(10)


async def test_run_now_obeys_the_conflict_policy(harness: Harness) -> None:
    h = harness
    h.executor.hold = True
    job = await create(h)
    first = await h.engine.run_now(job)
    with pytest.raises(ExecutionRefused) as refused:
        await h.engine.run_now(job)
    assert refused.value.blocking == (first,)
    assert first in str(refused.value)
    assert statuses(h, job) == ["running"]


# -- timeouts ----------------------------------------------------------------------------------


async def test_timeout_marks_timed_out_and_stops_the_executor(harness: Harness) -> None:
    h = harness
    h.executor.hold = True
    job = await create(h, timeout_seconds=30, conflict_policy="queue")
    await h.at(minutes(10))
    (running,) = h.executor.held()
    await h.at(minutes(10) + timedelta(seconds=29))
    assert statuses(h, job) == ["running"]
    await h.at(minutes(10) + timedelta(seconds=30))
    assert statuses(h, job) == ["timed_out"]
    assert h.executor.stopped == [running]
    error = h.rows("SELECT error FROM executions")[0]["error"]
    assert "timeout_seconds=30" in error


async def test_executor_failure_and_exception_are_recorded(harness: Harness) -> None:
    h = harness
    h.executor.hold = True
    await create(h, conflict_policy="replace", max_instances=2)
    await h.at(minutes(10))
    await h.at(minutes(20))
    first, second = h.executor.held()
    h.executor.release(first, Outcome.failed("instrument", "-222,Data out of range", code=-222))
    h.executor.fail(second, RuntimeError("driver crashed"))
    await h.settle()
    errors = h.rows("SELECT status, error FROM executions ORDER BY seq")
    assert [e["status"] for e in errors] == ["failed", "failed"]
    assert '"code":-222' in errors[0]["error"]
    assert "driver crashed" in errors[1]["error"]


# -- restart -----------------------------------------------------------------------------------


async def test_restart_interrupts_leftovers_catches_up_and_never_runs_a_fire_twice(
    tmp_path: Path,
) -> None:
    path = tmp_path / "scheduler.db"
    clock = ManualClock(T0)
    first = await Harness(path, clock).start()
    first.executor.hold = True
    job = await create(first, conflict_policy="queue", coalesce=False)
    await first.at(minutes(10))
    await first.at(minutes(20))
    assert statuses(first, job) == ["running", "queued"]
    await first.crash()

    clock.set(minutes(31))
    second = await Harness(path, clock).start(prefix="b")
    rows = second.executions(job)
    assert [r["status"] for r in rows] == ["interrupted", "completed"]
    assert rows[1]["scheduled_time"] == "2026-03-02T09:20:00.000000Z"
    # The 09:30 fire was missed while down (within grace): it runs after the restart.
    await second.at(minutes(31))
    scheduled = [r["scheduled_time"] for r in second.executions(job)]
    assert scheduled.count("2026-03-02T09:30:00.000000Z") == 1
    assert len(scheduled) == len(set(scheduled))
    await second.close()


async def test_two_engines_on_one_database_never_run_one_fire_twice(tmp_path: Path) -> None:
    path = tmp_path / "scheduler.db"
    clock = ManualClock(T0)
    one = await Harness(path, clock).start(prefix="a")
    job = await create(one)
    two = await Harness(path, clock).start(prefix="b")
    two.engine.plan(job)
    clock.set(minutes(10))
    await one.engine.tick()
    await two.engine.tick()
    await one.settle()
    await two.settle()
    rows = one.executions(job)
    assert [r["scheduled_time"] for r in rows] == ["2026-03-02T09:10:00.000000Z"]
    await one.close()
    await two.close()
