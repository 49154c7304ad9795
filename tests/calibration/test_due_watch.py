"""The ``calibration_due`` warning: LABLINK_CALIBRATION_WARN_DAYS before the due date, once
per certificate and due date, cleared when a new certificate takes over. Turned by hand on
a manual clock; and once on the real clock, as `lablink serve` runs it (its own loop under
a supervisor), polled with a generous deadline."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from lablink.alarm_service import AlarmService
from lablink.calibration_service import CalibrationService
from lablink.clock import ManualClock, SystemClock
from lablink.scheduler.calibration_watch import CalibrationWatch
from tests.support.calibration import BERLIN, DUE, PSU, T0, alarms, calibrate, calibrations
from tests.support.eventually import eventually
from tests.support.harness import Harness

# 14 days before 2026-03-10, from midnight in Berlin: 2026-02-24T00:00+01:00.
WARN_FROM = datetime(2026, 2, 23, 23, 0, tzinfo=UTC)


def watch(h: Harness, warn_days: float = 14.0) -> CalibrationWatch:
    return CalibrationWatch(h.store, h.clock, calibrations(h), warn_days=warn_days)


async def test_a_warning_goes_out_warn_days_before_the_due_date_once(tmp_path: Path) -> None:
    h = await Harness(
        tmp_path / "data" / "scheduler.db", ManualClock(datetime(2026, 2, 20, tzinfo=UTC))
    ).start()
    try:
        calibrate(h)  # due 2026-03-10
        due = watch(h)
        assert due.turn(WARN_FROM - timedelta(microseconds=1)) == []
        (raised,) = due.turn(WARN_FROM)
        assert due.turn(WARN_FROM + timedelta(days=3)) == []  # once per certificate
        (alarm,) = alarms(h, "calibration_due")
        assert (alarm["alarm_id"], alarm["state"], alarm["equipment_id"]) == (raised, "active", PSU)
        assert json.loads(alarm["error"]) == {
            "type": "calibration_due",
            "certificate": "CAL-1",
            "due": DUE.isoformat(),
            "warn_days": 14.0,
        }
        assert "is due 2026-03-10" in alarm["message"]

        # A new certificate takes over: the warning about the old one clears itself, and the
        # new one is warned of 14 days before its own due date.
        h.clock.set(WARN_FROM + timedelta(days=5))
        calibrate(h, "CAL-2", performed=date(2026, 2, 28), due=date(2027, 2, 28))
        (alarm,) = alarms(h, "calibration_due")
        assert (alarm["state"], alarm["cleared_by"]) == ("cleared", "calibration")
        assert due.turn(datetime(2027, 2, 13, 22, 59, tzinfo=UTC)) == []
        assert len(due.turn(datetime(2027, 2, 13, 23, 0, tzinfo=UTC))) == 1
    finally:
        await h.close()


async def test_a_correction_of_the_due_date_is_warned_of_again(bench: Harness) -> None:
    h = bench
    calibrate(h)  # due 2026-03-10; T0 is 2026-03-02: within the warning days already
    due = watch(h)
    assert len(due.turn(T0)) == 1
    calibrations(h).correct(
        PSU,
        "CAL-1",
        performed=None,
        due=date(2026, 3, 12),
        by=None,
        reason="the lab's letter says the 12th",
        actor="alice",
    )
    assert len(due.turn(T0)) == 1  # a new due date: a new warning (the old one cleared)
    first, second = alarms(h, "calibration_due")
    assert (first["state"], second["state"]) == ("cleared", "active")
    assert "is due 2026-03-12" in second["message"]


async def test_an_instrument_without_records_or_with_a_distant_due_date_is_quiet(
    bench: Harness,
) -> None:
    h = bench
    calibrate(h, due=date(2027, 3, 10))
    calibrations(h).quarantine("multimeter_1", reason="no records, but a fact", actor="admin")
    assert watch(h, warn_days=30).turn(T0) == []
    assert alarms(h, "calibration_due") == []


async def test_the_watch_warns_on_the_real_clock(tmp_path: Path) -> None:
    """`lablink serve`'s loop, on the system clock: a certificate that falls due tomorrow is
    warned of within the loop's recheck."""
    clock = SystemClock()
    h = await Harness(tmp_path / "data" / "scheduler.db", ManualClock(clock.now())).start()
    try:
        today = clock.now().astimezone(BERLIN).date()
        service = CalibrationService(
            h.store, clock, zone=BERLIN, alarms=AlarmService.on_store(h.store, clock)
        )
        service.calibrate(
            PSU,
            certificate="CAL-REAL",
            performed=today - timedelta(days=300),
            due=today + timedelta(days=1),
            by="Metrology Lab",
            actor="alice",
        )
        loop = CalibrationWatch(
            h.store, clock, service, warn_days=14, recheck=timedelta(seconds=0.05)
        )
        await loop.start()
        try:
            raised = await eventually(lambda: alarms(h, "calibration_due"))
            assert raised[0]["equipment_id"] == PSU
            turns = loop.turns
            await eventually(lambda: loop.turns >= turns + 3)
            assert len(alarms(h, "calibration_due")) == 1  # later turns raise nothing again
        finally:
            await loop.aclose()
    finally:
        await h.close()
