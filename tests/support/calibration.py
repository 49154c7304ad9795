"""What the calibration tests share: dates around one certificate's due date, and the
calibration service the API uses over a harness (the alarms it clears included)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from lablink.alarm_service import AlarmService
from lablink.calibration_service import CalibrationService
from tests.support.harness import Harness

BERLIN = ZoneInfo("Europe/Berlin")
PSU = "power_supply_1"
# A Monday. The certificate in force falls due on Tuesday the 10th: it holds through that
# day, in the server's zone (Europe/Berlin), and has expired from midnight after it.
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
PERFORMED = date(2025, 3, 10)
DUE = date(2026, 3, 10)
DAY_AFTER_DUE = datetime(2026, 3, 11, 9, 0, tzinfo=UTC)
HOURLY: dict[str, Any] = {
    "name": "Hourly voltage",
    "schedule_type": "measurement",
    "equipment_id": PSU,
    "trigger_type": "interval",
    "interval_hours": 1,
    "parameters": {"command": "get_voltage"},
}


def hours(start: datetime, n: float) -> datetime:
    return start + timedelta(hours=n)


def calibrations(h: Harness, **settings: Any) -> CalibrationService:
    """The service the API uses over the harness's store: its clock, the server's zone."""
    return CalibrationService(
        h.store,
        h.clock,
        zone=BERLIN,
        alarms=AlarmService.on_store(h.store, h.clock),
        **settings,
    )


def calibrate(
    h: Harness,
    certificate: str = "CAL-1",
    *,
    performed: date = PERFORMED,
    due: date = DUE,
    equipment_id: str = PSU,
) -> None:
    calibrations(h).calibrate(
        equipment_id,
        certificate=certificate,
        performed=performed,
        due=due,
        by="Metrology Lab GmbH",
        actor="alice",
    )


def alarms(h: Harness, kind: str) -> list[dict[str, Any]]:
    return h.rows(
        "SELECT alarm_id, state, equipment_id, job_id, execution_id, message, error, cleared_by"
        " FROM alarms WHERE kind = ? ORDER BY raised_position",
        kind,
    )


def executions(h: Harness, job_id: str) -> list[dict[str, Any]]:
    return h.rows(
        "SELECT execution_id, status, cause, message, error, trigger_info FROM executions"
        " WHERE job_id = ? ORDER BY seq",
        job_id,
    )
