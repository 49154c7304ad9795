"""The interlock on the fire path: a run due on an instrument whose calibration expired (or
is missing while required, or that is quarantined) is recorded ``blocked`` and never reaches
the executor, with one ``calibration_blocked`` alarm per instrument while it stays blocked.

A real engine on a real SQLite file, a manual clock for every instant; the executor is the
harness's, which records every request it is handed (a blocked run must not be one).
"""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

import pytest

from lablink.clock import ManualClock
from lablink.errors import CalibrationBlocked
from tests.support.calibration import (
    DAY_AFTER_DUE,
    DUE,
    HOURLY,
    PSU,
    T0,
    alarms,
    calibrate,
    calibrations,
    executions,
    hours,
)
from tests.support.harness import Harness


async def test_a_run_due_the_day_after_the_due_date_is_blocked_and_raises_one_alarm(
    bench: Harness,
) -> None:
    h = bench
    calibrate(h)  # CAL-1, due 2026-03-10
    first = h.service.create_job(HOURLY, "alice")
    await h.at(hours(T0, 1))
    assert [e["status"] for e in executions(h, first)] == ["completed"]
    assert len(h.executor.requests) == 1

    # The day after the due date: a second job on the same instrument, and two hours of fires.
    h.clock.set(DAY_AFTER_DUE)
    first_again = h.service.create_job({**HOURLY, "name": "Another"}, "bob")
    await h.at(hours(DAY_AFTER_DUE, 1))
    await h.at(hours(DAY_AFTER_DUE, 2))

    assert len(h.executor.requests) == 1  # nothing more was dispatched
    for job_id in (first, first_again):
        blocked = [e for e in executions(h, job_id) if e["status"] == "blocked"]
        assert len(blocked) == 2, executions(h, job_id)
        for row in blocked:
            assert row["cause"] == "calibration_expired"
            assert "CAL-1" in row["message"]
            assert DUE.isoformat() in row["message"]
            error = json.loads(row["error"])
            assert error["type"] == "calibration_expired"
            assert error["details"] == {
                "equipment_id": PSU,
                "certificate": "CAL-1",
                "due": DUE.isoformat(),
            }
    # Four blocked runs, one alarm: raised by the first of them.
    (alarm,) = alarms(h, "calibration_blocked")
    assert alarm["state"] == "active"
    assert alarm["equipment_id"] == PSU
    assert json.loads(alarm["error"])["cause"] == "calibration_expired"
    assert alarm["execution_id"] in {
        e["execution_id"] for job in (first, first_again) for e in executions(h, job)
    }


async def test_the_last_instant_of_the_due_date_still_runs_midnight_after_it_blocks(
    bench: Harness,
) -> None:
    h = bench
    calibrate(h)
    # 2026-03-10 23:59:59 in Berlin is 22:59:59 UTC; midnight after it is 23:00 UTC.
    midnight = DAY_AFTER_DUE.replace(hour=0) - timedelta(hours=1)
    h.clock.set(midnight - timedelta(hours=1, seconds=1))
    job_id = h.service.create_job(HOURLY, "alice")
    await h.at(midnight - timedelta(seconds=1))
    await h.at(midnight + timedelta(hours=1) - timedelta(seconds=1))
    assert [e["status"] for e in executions(h, job_id)] == ["completed", "blocked"]


async def test_a_new_certificate_unblocks_and_clears_the_alarm(bench: Harness) -> None:
    h = bench
    calibrate(h)
    h.clock.set(DAY_AFTER_DUE)
    job_id = h.service.create_job(HOURLY, "alice")
    await h.at(hours(DAY_AFTER_DUE, 1))
    assert [e["status"] for e in executions(h, job_id)] == ["blocked"]
    (alarm,) = alarms(h, "calibration_blocked")
    assert alarm["state"] == "active"

    calibrate(h, "CAL-2", performed=DAY_AFTER_DUE.date(), due=date(2027, 3, 11))
    (alarm,) = alarms(h, "calibration_blocked")
    assert (alarm["state"], alarm["cleared_by"]) == ("cleared", "calibration")
    await h.at(hours(DAY_AFTER_DUE, 2))
    assert [e["status"] for e in executions(h, job_id)] == ["blocked", "completed"]
    assert len(h.executor.requests) == 1


async def test_the_expiry_of_an_override_blocks_again(bench: Harness) -> None:
    h = bench
    calibrate(h)
    h.clock.set(DAY_AFTER_DUE)
    job_id = h.service.create_job(HOURLY, "alice")
    await h.at(hours(DAY_AFTER_DUE, 1))
    calibrations(h).override(
        PSU,
        reason="recalibration booked for Friday",
        expires_at=hours(DAY_AFTER_DUE, 2.5),
        actor="admin",
    )
    await h.at(hours(DAY_AFTER_DUE, 2))  # the override holds
    await h.at(hours(DAY_AFTER_DUE, 3))  # it expired at 2.5 h
    assert [e["status"] for e in executions(h, job_id)] == ["blocked", "completed", "blocked"]
    assert executions(h, job_id)[-1]["cause"] == "calibration_expired"
    # The override ended the first alarm; blocked again, the instrument has a new one.
    first, second = alarms(h, "calibration_blocked")
    assert (first["state"], second["state"]) == ("cleared", "active")


async def test_no_record_runs_by_default(bench: Harness) -> None:
    h = bench
    job_id = h.service.create_job(HOURLY, "alice")
    await h.at(hours(T0, 1))
    assert [e["status"] for e in executions(h, job_id)] == ["completed"]
    assert alarms(h, "calibration_blocked") == []


async def test_no_record_blocks_when_calibration_is_required(tmp_path: Path) -> None:
    h = await Harness(
        tmp_path / "data" / "scheduler.db", ManualClock(T0), require_calibration=True
    ).start()
    try:
        job_id = h.service.create_job(HOURLY, "alice")
        await h.at(hours(T0, 1))
        (row,) = executions(h, job_id)
        assert (row["status"], row["cause"]) == ("blocked", "calibration_missing")
        assert "LABLINK_REQUIRE_CALIBRATION=1" in row["message"]
        assert h.executor.requests == []
        calibrate(h)
        await h.at(hours(T0, 2))
        assert [e["status"] for e in executions(h, job_id)] == ["blocked", "completed"]
    finally:
        await h.close()


async def test_a_quarantine_blocks_a_calibrated_instrument_until_its_release(
    bench: Harness,
) -> None:
    h = bench
    calibrate(h)
    service = calibrations(h)
    service.quarantine(PSU, reason="dropped from the bench", actor="admin")
    # An override lifts an expired calibration, never a quarantine.
    service.override(PSU, reason="urgent", expires_at=hours(T0, 24), actor="admin")
    job_id = h.service.create_job(HOURLY, "alice")
    await h.at(hours(T0, 1))
    (row,) = executions(h, job_id)
    assert (row["status"], row["cause"]) == ("blocked", "quarantined")
    assert "dropped from the bench" in row["message"]
    service.release(PSU, reason="checked against the reference", actor="admin")
    await h.at(hours(T0, 2))
    assert [e["status"] for e in executions(h, job_id)] == ["blocked", "completed"]


async def test_run_now_on_a_blocked_instrument_is_refused_and_writes_nothing(
    bench: Harness,
) -> None:
    h = bench
    calibrate(h)
    h.clock.set(DAY_AFTER_DUE)
    job_id = h.service.create_job(HOURLY, "alice")
    before = h.store.last_position()
    with pytest.raises(CalibrationBlocked) as refused:
        await h.engine.run_now(job_id, "alice")
    assert (refused.value.cause, refused.value.equipment_id) == ("calibration_expired", PSU)
    assert h.store.last_position() == before
    assert h.executor.requests == []


async def test_blocked_runs_count_for_nothing_but_are_never_fired_twice(bench: Harness) -> None:
    h = bench
    calibrate(h)
    h.clock.set(DAY_AFTER_DUE)
    job_id = h.service.create_job({**HOURLY, "max_executions": 1}, "alice")
    await h.at(hours(DAY_AFTER_DUE, 1))
    await h.at(hours(DAY_AFTER_DUE, 1))  # the same instant again: nothing new
    assert [e["status"] for e in executions(h, job_id)] == ["blocked"]
    assert h.job(job_id)["status"] == "active"  # a blocked run is no execution of max 1
    calibrate(h, "CAL-2", performed=DAY_AFTER_DUE.date(), due=date(2027, 3, 11))
    await h.at(hours(DAY_AFTER_DUE, 2))
    assert [e["status"] for e in executions(h, job_id)] == ["blocked", "completed"]
    assert h.job(job_id)["status"] == "completed"


async def test_the_fire_path_reads_an_instruments_calibration_once_per_change(
    bench: Harness,
) -> None:
    """Folded from the log's stream when first asked, then kept until a calibration fact is
    committed: not one read per fire."""
    h = bench
    calibrate(h)
    h.service.create_job(HOURLY, "alice")
    for n in range(1, 5):
        await h.at(hours(T0, n))
    assert h.gate.loads == 1
    calibrations(h).quarantine(PSU, reason="lid open", actor="admin")
    await h.at(hours(T0, 5))
    await h.at(hours(T0, 6))
    assert h.gate.loads == 3  # the quarantine, then the alarm the first blocked run raised


async def test_a_date_job_whose_one_run_was_blocked_is_completed(bench: Harness) -> None:
    h = bench
    calibrate(h)
    h.clock.set(DAY_AFTER_DUE)
    once = {
        **HOURLY,
        "trigger_type": "date",
        "run_date": hours(DAY_AFTER_DUE, 1).isoformat(),
        "alarm_after_missed": 1,
    }
    del once["interval_hours"]
    job_id = h.service.create_job(once, "alice")
    await h.at(hours(DAY_AFTER_DUE, 1))
    assert [e["status"] for e in executions(h, job_id)] == ["blocked"]
    assert h.job(job_id)["status"] == "completed"
    # The calibration alarm says why it did not run; the dead-man's switch stays quiet.
    assert len(alarms(h, "calibration_blocked")) == 1
    assert alarms(h, "missed_runs") == []


async def test_a_queued_run_whose_turn_comes_after_the_due_date_is_blocked_not_started(
    bench: Harness,
) -> None:
    """A run that waited in the line (conflict policy queue) is judged again when its turn
    comes: past the due date it is recorded blocked, never dispatched, and counted once."""
    h = bench
    calibrate(h)  # CAL-1, due 2026-03-10
    h.executor.hold = True
    h.clock.set(DAY_AFTER_DUE - timedelta(days=1, hours=2))
    job_id = h.service.create_job(
        {**HOURLY, "conflict_policy": "queue", "timeout_seconds": 7 * 86400}, "alice"
    )
    await h.at(DAY_AFTER_DUE - timedelta(days=1, hours=1))  # runs, held by the executor
    await h.at(DAY_AFTER_DUE - timedelta(days=1))  # 2026-03-10 09:00: still valid, queued
    (running,) = h.executor.held()
    assert [e["status"] for e in executions(h, job_id)][-2:] == ["running", "queued"]
    dispatched = len(h.executor.requests)

    # The running one ends after the due date: the queued one's turn, on a blocked instrument.
    h.clock.set(DAY_AFTER_DUE)
    h.executor.release(running)
    await h.settle()

    assert len(h.executor.requests) == dispatched  # the queued run was never dispatched
    ended, waited = executions(h, job_id)
    assert (ended["execution_id"], ended["status"]) == (running, "completed")
    assert (waited["status"], waited["cause"]) == ("blocked", "calibration_expired")
    (history,) = h.rows(
        "SELECT total_executions, successful, blocked, last_status FROM job_history"
        " WHERE job_id = ?",
        job_id,
    )
    assert history == {
        "total_executions": 2,
        "successful": 1,
        "blocked": 1,
        "last_status": "blocked",
    }
    statuses = h.rows("SELECT status, SUM(count) AS n FROM stats_buckets GROUP BY status")
    counted = {r["status"]: r["n"] for r in statuses if r["n"]}
    assert counted == {"completed": 1, "blocked": 1}
    assert [a["state"] for a in alarms(h, "calibration_blocked")] == ["active"]
