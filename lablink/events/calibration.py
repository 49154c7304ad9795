"""Facts about an instrument's calibration (stream: ``calibration:<equipment_id>``).

A calibration record is identified by its certificate within its instrument. Records are
never edited in place: a correction or a withdrawal is a fact of its own with its reason, and
a correction keeps the changed fields' old and new values (EU GMP Annex 11). An override and
a quarantine are an administrator's facts about the instrument, each with its reason.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from lablink.events.base import Event
from lablink.events.changes import FieldChange

# Why a run due on an instrument was not dispatched (docs/calibration.md).
BlockCause = Literal["calibration_expired", "calibration_missing", "quarantined"]
BLOCK_CAUSES: tuple[BlockCause, ...] = (
    "calibration_expired",
    "calibration_missing",
    "quarantined",
)


class EquipmentCalibrated(Event, frozen=True, kw_only=True, tag="equipment.calibrated"):
    """A calibration certificate recorded for an instrument: valid through ``due`` (a date in
    the server's time zone)."""

    equipment_id: str
    certificate: str
    performed: date
    due: date
    # Who performed the calibration (a person or a calibration laboratory).
    by: str
    # Where the record came from: "api" (HTTP, the CLI) or "lab.toml" (serve's agent config).
    source: str = "api"


class CalibrationCorrected(Event, frozen=True, kw_only=True, tag="equipment.calibration_corrected"):
    """A recorded certificate's dates or performer corrected: the record as it now reads,
    and the fields that changed with their old and new values."""

    equipment_id: str
    certificate: str
    performed: date
    due: date
    by: str
    # Each changed field (performed, due, by) with its old and new value as text (dates in
    # ISO 8601), in the same shape as a job's or a profile's update.
    changes: tuple[FieldChange, ...]
    reason: str | None = None


class CalibrationWithdrawn(Event, frozen=True, kw_only=True, tag="equipment.calibration_withdrawn"):
    """A certificate no longer counts (recorded in error, revoked by its laboratory)."""

    equipment_id: str
    certificate: str
    reason: str | None = None


class CalibrationOverridden(
    Event, frozen=True, kw_only=True, tag="equipment.calibration_overridden"
):
    """An administrator lets runs go ahead despite an expired or missing calibration until
    ``expires_at`` (not despite a quarantine). ``by``: the administrator."""

    equipment_id: str
    reason: str
    expires_at: datetime
    by: str


class EquipmentQuarantined(Event, frozen=True, kw_only=True, tag="equipment.quarantined"):
    """Taken out of service: no run is dispatched to it until it is released."""

    equipment_id: str
    reason: str
    by: str


class EquipmentReleased(Event, frozen=True, kw_only=True, tag="equipment.released"):
    """Back in service after a quarantine."""

    equipment_id: str
    reason: str
    by: str


CalibrationFact = (
    EquipmentCalibrated
    | CalibrationCorrected
    | CalibrationWithdrawn
    | CalibrationOverridden
    | EquipmentQuarantined
    | EquipmentReleased
)
CALIBRATION_FACTS: tuple[type[CalibrationFact], ...] = (
    EquipmentCalibrated,
    CalibrationCorrected,
    CalibrationWithdrawn,
    CalibrationOverridden,
    EquipmentQuarantined,
    EquipmentReleased,
)
