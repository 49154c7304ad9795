"""An instrument's calibration: its certificates, an administrator's override or quarantine,
and whether a run may be dispatched to it now (ISO/IEC 17025: equipment past its
calibration due date is taken out of service).

The aggregate is the stream ``calibration:<equipment_id>``. ``evolve`` folds one event and
never raises; the commands on it are in ``lablink.domain.calibration_decisions``. Whether a
calibration holds depends on the time: ``assess`` takes the instant, the lab's time zone (a
due date is a calendar date there) and the settings, and is the one place the rules live,
for the scheduler's fire path and for the views alike.

The rules (docs/calibration.md):

- The certificate in force is the one performed last (of those not withdrawn; on a tie, the
  one recorded last). It is valid through its due date: expired from midnight after it,
  in the server's time zone; ``due_soon`` from midnight ``warn_days`` before it.
- Expired: runs are blocked (``calibration_expired``). No certificate at all: runs go ahead
  (``missing``), unless the lab requires calibration (``calibration_missing``).
- An override lets runs go ahead despite an expired or missing calibration until it
  expires; a quarantine blocks runs whatever the calibration says, until a release.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

import msgspec
from msgspec.structs import replace

from lablink.events import (
    AlarmRaised,
    AnyEvent,
    BlockCause,
    CalibrationCorrected,
    CalibrationOverridden,
    CalibrationWithdrawn,
    EquipmentCalibrated,
    EquipmentQuarantined,
    EquipmentReleased,
)

StatusName = Literal["valid", "due_soon", "expired", "missing", "overridden", "quarantined"]
STATUSES: tuple[StatusName, ...] = (
    "valid",
    "due_soon",
    "expired",
    "missing",
    "overridden",
    "quarantined",
)


def stream_id(equipment_id: str) -> str:
    return f"calibration:{equipment_id}"


class CalibrationRecord(msgspec.Struct, frozen=True, kw_only=True):
    certificate: str
    performed: date
    due: date
    by: str


class Override(msgspec.Struct, frozen=True, kw_only=True):
    reason: str
    expires_at: datetime
    by: str


class Quarantine(msgspec.Struct, frozen=True, kw_only=True):
    reason: str
    by: str


class CalibrationState(msgspec.Struct, frozen=True, kw_only=True):
    equipment_id: str
    # The certificates in force (not withdrawn), in the order they were recorded.
    records: tuple[CalibrationRecord, ...] = ()
    # Withdrawn certificates: their ids are never used again on this instrument.
    withdrawn: frozenset[str] = frozenset()
    override: Override | None = None
    quarantine: Quarantine | None = None
    # The calibration_blocked alarm raised for the present blocking, until a fact that may
    # end it (a certificate, a correction, an override, a release): one alarm per
    # instrument while it is blocked, not one per run.
    block_alarm: str = ""
    # The certificate and due date ("<certificate>|<due>") the last calibration_due warning
    # was for, and that warning's alarm while that certificate is the one in force.
    warned: str = ""
    due_alarm: str = ""
    # Calibration alarms raised on this instrument: their ids count up.
    alarms: int = 0

    @property
    def record(self) -> CalibrationRecord | None:
        return in_force(self.records)

    def has(self, certificate: str) -> bool:
        return certificate in self.withdrawn or any(
            r.certificate == certificate for r in self.records
        )


def in_force(records: Sequence[CalibrationRecord]) -> CalibrationRecord | None:
    """The certificate performed last (the last recorded of those performed that day)."""
    best: CalibrationRecord | None = None
    for record in records:
        if best is None or record.performed >= best.performed:
            best = record
    return best


def key_of(record: CalibrationRecord | None) -> str:
    return f"{record.certificate}|{record.due.isoformat()}" if record is not None else ""


# -- time -------------------------------------------------------------------------------------


def start_of(day: date, zone: ZoneInfo) -> datetime:
    """Midnight at the start of ``day`` in ``zone``, as a UTC instant."""
    return datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)


def valid_until(record: CalibrationRecord, zone: ZoneInfo) -> datetime:
    """The instant the record stops holding: midnight after its due date."""
    return start_of(record.due + timedelta(days=1), zone)


def warn_from(record: CalibrationRecord, zone: ZoneInfo, warn_days: float) -> datetime:
    """From when it is due soon: midnight ``warn_days`` before its due date."""
    return start_of(record.due, zone) - timedelta(days=warn_days)


def today(now: datetime, zone: ZoneInfo) -> date:
    return now.astimezone(zone).date()


# -- assessment -------------------------------------------------------------------------------


class Block(msgspec.Struct, frozen=True, kw_only=True):
    """Why runs on an instrument are not dispatched now."""

    equipment_id: str
    cause: BlockCause
    reason: str
    certificate: str | None = None
    due: date | None = None


class Assessment(msgspec.Struct, frozen=True, kw_only=True):
    """An instrument's calibration at one instant."""

    equipment_id: str
    status: StatusName
    # What blocks runs, or would without the override (status ``overridden``); None: nothing.
    cause: BlockCause | None
    blocked: bool
    reason: str
    record: CalibrationRecord | None
    valid_until: datetime | None
    warn_from: datetime | None
    override: Override | None
    quarantine: Quarantine | None

    @property
    def block(self) -> Block | None:
        if not self.blocked or self.cause is None:
            return None
        record = self.record
        return Block(
            equipment_id=self.equipment_id,
            cause=self.cause,
            reason=self.reason,
            certificate=record.certificate if record is not None else None,
            due=record.due if record is not None else None,
        )


def assess(
    equipment_id: str,
    record: CalibrationRecord | None,
    override: Override | None,
    quarantine: Quarantine | None,
    *,
    now: datetime,
    zone: ZoneInfo,
    warn_days: float,
    require: bool,
) -> Assessment:
    """The status at ``now`` of an instrument whose certificate in force is ``record``."""
    until = valid_until(record, zone) if record is not None else None
    warn = warn_from(record, zone, warn_days) if record is not None else None
    active = override if override is not None and now < override.expires_at else None
    status: StatusName
    cause: BlockCause | None = None
    if record is None or until is None or warn is None:
        status = "missing"
        reason = f"{equipment_id} has no calibration record"
        if require:
            cause = "calibration_missing"
            reason += " (LABLINK_REQUIRE_CALIBRATION=1)"
    elif now >= until:
        status, cause = "expired", "calibration_expired"
        reason = (
            f"the calibration of {equipment_id} expired: certificate {record.certificate}"
            f" was due {record.due.isoformat()}"
        )
    elif now >= warn:
        status = "due_soon"
        reason = (
            f"the calibration of {equipment_id} is due {record.due.isoformat()}"
            f" (certificate {record.certificate})"
        )
    else:
        status = "valid"
        reason = f"certificate {record.certificate} holds through {record.due.isoformat()}"
    blocked = cause is not None
    if quarantine is not None:
        status, cause, blocked = "quarantined", "quarantined", True
        reason = f"{equipment_id} is quarantined by {quarantine.by}: {quarantine.reason}"
    elif blocked and active is not None:
        status, blocked = "overridden", False
        reason += (
            f"; overridden by {active.by} until {active.expires_at.astimezone(UTC).isoformat()}:"
            f" {active.reason}"
        )
    return Assessment(
        equipment_id=equipment_id,
        status=status,
        cause=cause,
        blocked=blocked,
        reason=reason,
        record=record,
        valid_until=until,
        warn_from=warn,
        override=active,
        quarantine=quarantine,
    )


def assess_state(
    state: CalibrationState, *, now: datetime, zone: ZoneInfo, warn_days: float, require: bool
) -> Assessment:
    return assess(
        state.equipment_id,
        state.record,
        state.override,
        state.quarantine,
        now=now,
        zone=zone,
        warn_days=warn_days,
        require=require,
    )


# -- evolve -----------------------------------------------------------------------------------


def _records_changed(
    state: CalibrationState, records: tuple[CalibrationRecord, ...]
) -> CalibrationState:
    """New records; a warning about a certificate no longer in force (or no longer due then)
    is over."""
    state = replace(state, records=records)
    if state.due_alarm and key_of(state.record) != state.warned:
        state = replace(state, due_alarm="")
    return state


def evolve(state: CalibrationState, event: AnyEvent) -> CalibrationState:
    match event:
        case EquipmentCalibrated():
            record = CalibrationRecord(
                certificate=event.certificate,
                performed=event.performed,
                due=event.due,
                by=event.by,
            )
            state = _records_changed(state, (*state.records, record))
            return replace(state, block_alarm="")
        case CalibrationCorrected():
            records = tuple(
                CalibrationRecord(
                    certificate=r.certificate, performed=event.performed, due=event.due, by=event.by
                )
                if r.certificate == event.certificate
                else r
                for r in state.records
            )
            return replace(_records_changed(state, records), block_alarm="")
        case CalibrationWithdrawn():
            records = tuple(r for r in state.records if r.certificate != event.certificate)
            state = _records_changed(state, records)
            return replace(state, withdrawn=state.withdrawn | {event.certificate})
        case CalibrationOverridden():
            override = Override(reason=event.reason, expires_at=event.expires_at, by=event.by)
            return replace(state, override=override, block_alarm="")
        case EquipmentQuarantined():
            return replace(state, quarantine=Quarantine(reason=event.reason, by=event.by))
        case EquipmentReleased():
            return replace(state, quarantine=None, block_alarm="")
        case AlarmRaised(kind="calibration_blocked"):
            return replace(state, block_alarm=event.alarm_id, alarms=state.alarms + 1)
        case AlarmRaised(kind="calibration_due"):
            warned = f"{event.error.get('certificate')}|{event.error.get('due')}"
            return replace(state, due_alarm=event.alarm_id, warned=warned, alarms=state.alarms + 1)
    return state
