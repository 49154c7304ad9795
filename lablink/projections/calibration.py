"""Instruments' calibration records, overrides and quarantines, as the API shows them.

Whether a calibration holds depends on the time, so the fold keeps the facts only (dates,
override expiry, quarantine); the status (valid, due soon, expired, …) is worked out when it
is read, by ``lablink.domain.calibration.assess``, at the reader's instant.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

import sqlite_utils

from lablink.events import (
    CALIBRATION_FACTS,
    CalibrationCorrected,
    CalibrationOverridden,
    CalibrationWithdrawn,
    EquipmentCalibrated,
    EquipmentQuarantined,
    EquipmentReleased,
    RecordedEvent,
)
from lablink.projections.base import Where, as_dicts, instant, to_json

RECORDS = "calibrations"
CONTROLS = "calibration_controls"
RECORD_COLUMNS = (
    "equipment_id",
    "certificate",
    "performed",
    "due",
    "performed_by",
    "state",  # "active" or "withdrawn"
    "source",
    "recorded_at",
    "recorded_by",
    "recorded_position",
    "corrections",
    "corrected_at",
    "corrected_by",
    "correction_reason",
    "correction_changes",
    "withdrawn_at",
    "withdrawn_by",
    "withdraw_reason",
)
CONTROL_COLUMNS = (
    "equipment_id",
    "override_reason",
    "override_expires_at",
    "override_by",
    "override_at",
    "quarantined",
    "quarantine_reason",
    "quarantine_by",
    "quarantined_at",
)

_FACTS = frozenset(CALIBRATION_FACTS)


class CalibrationProjection:
    name = "calibration"
    tables: tuple[str, ...] = (RECORDS, CONTROLS)

    def create(self, db: sqlite_utils.Database) -> None:
        types: dict[str, Any] = {c: str for c in RECORD_COLUMNS}
        types.update(recorded_position=int, corrections=int)
        db.table(RECORDS).create(types, pk=("equipment_id", "certificate"), if_not_exists=True)
        controls: dict[str, Any] = {c: str for c in CONTROL_COLUMNS}
        controls["quarantined"] = int
        db.table(CONTROLS).create(controls, pk="equipment_id", if_not_exists=True)

    def forget(self) -> None:
        """Nothing is kept between batches."""

    def apply(self, conn: sqlite3.Connection, events: Sequence[RecordedEvent]) -> None:
        # Calibration facts are rare: one set lookup passes every other event by.
        for recorded in [r for r in events if type(r.event) in _FACTS]:
            at = instant(recorded.occurred_at)
            match recorded.event:
                case EquipmentCalibrated() as event:
                    conn.execute(
                        f"INSERT INTO {RECORDS} (equipment_id, certificate, performed, due,"
                        " performed_by, state, source, recorded_at, recorded_by, recorded_position,"
                        " corrections)"
                        " VALUES (?, ?, ?, ?, ?, 'active', ?, ?, ?, ?, 0)"
                        " ON CONFLICT(equipment_id, certificate) DO NOTHING",
                        (
                            event.equipment_id,
                            event.certificate,
                            event.performed.isoformat(),
                            event.due.isoformat(),
                            event.by,
                            event.source,
                            at,
                            recorded.actor,
                            recorded.position,
                        ),
                    )
                case CalibrationCorrected() as event:
                    conn.execute(
                        f"UPDATE {RECORDS} SET performed = ?, due = ?, performed_by = ?,"
                        " corrections = corrections + 1, corrected_at = ?, corrected_by = ?,"
                        " correction_reason = ?, correction_changes = ?"
                        " WHERE equipment_id = ? AND certificate = ?",
                        (
                            event.performed.isoformat(),
                            event.due.isoformat(),
                            event.by,
                            at,
                            recorded.actor,
                            event.reason,
                            to_json(event.changes),
                            event.equipment_id,
                            event.certificate,
                        ),
                    )
                case CalibrationWithdrawn() as event:
                    conn.execute(
                        f"UPDATE {RECORDS} SET state = 'withdrawn', withdrawn_at = ?,"
                        " withdrawn_by = ?, withdraw_reason = ?"
                        " WHERE equipment_id = ? AND certificate = ?",
                        (at, recorded.actor, event.reason, event.equipment_id, event.certificate),
                    )
                case CalibrationOverridden() as event:
                    self._control(
                        conn,
                        event.equipment_id,
                        override_reason=event.reason,
                        override_expires_at=instant(event.expires_at),
                        override_by=event.by,
                        override_at=at,
                    )
                case EquipmentQuarantined() as event:
                    self._control(
                        conn,
                        event.equipment_id,
                        quarantined=1,
                        quarantine_reason=event.reason,
                        quarantine_by=event.by,
                        quarantined_at=at,
                    )
                case EquipmentReleased() as event:
                    self._control(
                        conn,
                        event.equipment_id,
                        quarantined=0,
                        quarantine_reason=None,
                        quarantine_by=None,
                        quarantined_at=None,
                    )

    @staticmethod
    def _control(conn: sqlite3.Connection, equipment_id: str, **fields: Any) -> None:
        conn.execute(
            f"INSERT INTO {CONTROLS} (equipment_id, quarantined) VALUES (?, 0)"
            " ON CONFLICT(equipment_id) DO NOTHING",
            (equipment_id,),
        )
        assignments = ", ".join(f"{column} = ?" for column in fields)
        conn.execute(
            f"UPDATE {CONTROLS} SET {assignments} WHERE equipment_id = ?",
            (*fields.values(), equipment_id),
        )


# -- reads (this module owns the calibrations and calibration_controls tables) ---------------


def calibration_rows(
    conn: sqlite3.Connection, equipment_id: str | None = None
) -> list[dict[str, Any]]:
    """Every certificate ever recorded (withdrawn ones too), by instrument, oldest first."""
    where = Where().equals("equipment_id", equipment_id)
    return as_dicts(
        conn.execute(
            f"SELECT * FROM {RECORDS}{where} ORDER BY equipment_id, recorded_position", where.args
        )
    )


def control_rows(conn: sqlite3.Connection, equipment_id: str | None = None) -> list[dict[str, Any]]:
    """Each instrument's override and quarantine (only those that ever had one)."""
    where = Where().equals("equipment_id", equipment_id)
    return as_dicts(
        conn.execute(f"SELECT * FROM {CONTROLS}{where} ORDER BY equipment_id", where.args)
    )


def calibrated_equipment(conn: sqlite3.Connection) -> list[str]:
    """The instruments with any calibration fact: an index for the due-date watch, which
    decides from each instrument's own stream."""
    rows = conn.execute(
        f"SELECT equipment_id FROM {RECORDS} UNION SELECT equipment_id FROM {CONTROLS}"
        " ORDER BY equipment_id"
    )
    return [str(row[0]) for row in rows]
