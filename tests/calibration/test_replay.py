"""The calibration view is a fold of the log like the others: rebuilt from position 0 (as
`lablink replay` does), it holds exactly what the live fold made, blocked executions,
corrections, withdrawals, overrides, quarantines and calibration alarms included."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from lablink.eventstore.sqlite import SQLiteEventStore, connect
from lablink.projections.compare import first_difference, view_tables
from lablink.projections.runner import Projector
from tests.support.calibration import DAY_AFTER_DUE, HOURLY, PSU, calibrate, calibrations, hours
from tests.support.harness import Harness
from tests.support.views import open_views


async def test_a_rebuild_equals_the_live_views(bench: Harness, tmp_path: Path) -> None:
    h = bench
    calibrate(h)
    service = calibrations(h)
    service.correct(
        PSU, "CAL-1", performed=None, due=date(2026, 3, 9), by=None, reason="typo", actor="a"
    )
    calibrate(h, "CAL-0", performed=date(2024, 1, 1), due=date(2025, 1, 1))
    service.withdraw(PSU, "CAL-0", reason="superseded", actor="a")
    h.clock.set(DAY_AFTER_DUE)
    job_id = h.service.create_job(HOURLY, "alice")
    await h.at(hours(DAY_AFTER_DUE, 1))
    service.override(PSU, reason="booked", expires_at=hours(DAY_AFTER_DUE, 1.5), actor="a")
    await h.at(hours(DAY_AFTER_DUE, 2))
    service.quarantine("multimeter_1", reason="lid", actor="a")
    service.release("multimeter_1", reason="fixed", actor="a")
    assert h.rows("SELECT COUNT(*) AS n FROM executions WHERE job_id = ?", job_id) == [{"n": 2}]

    log = SQLiteEventStore(h.path)
    rebuilt = connect(tmp_path / "rebuilt.db")
    live = open_views(h.path)
    try:
        projector = Projector()
        projector.rebuild(log, rebuilt)
        assert first_difference(live, rebuilt, view_tables(projector)) is None
        assert rebuilt.execute("SELECT COUNT(*) FROM calibrations").fetchone() == (2,)
        assert rebuilt.execute("SELECT COUNT(*) FROM calibration_controls").fetchone() == (2,)
    finally:
        live.close()
        rebuilt.close()
        log.close()
