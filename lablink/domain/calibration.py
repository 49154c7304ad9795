"""An instrument's calibration: its certificates, an administrator's override or quarantine,
and whether a run may be dispatched to it now (ISO/IEC 17025: equipment past its
calibration due date is taken out of service).

The aggregate is the stream ``calibration:<equipment_id>``. ``evolve`` folds one event and
never raises; the ``decide_*`` functions return the events a command produces or raise a
named error, writing nothing. Whether a calibration holds depends on the time: ``assess``
takes the instant, the lab's time zone (a due date is a calendar date there) and the
settings, and is the one place the rules live, for the scheduler's fire path and for the
views alike.

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

from lablink.domain.validation import text_problem
from lablink.errors import (
    CalibrationExists,
    CalibrationNotFound,
    CalibrationStateConflict,
    FieldError,
    InvalidRequest,
)
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
    FieldChange,
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
MAX_CERTIFICATE = 128
MAX_BY = 200
# Dates LabLink reasons about: the instants around them must exist (no year 1, no 9999).
FIRST_DATE = date(1900, 1, 1)
LAST_DATE = date(9000, 12, 31)


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


def _key(record: CalibrationRecord | None) -> str:
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
    if state.due_alarm and _key(state.record) != state.warned:
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


# -- commands ---------------------------------------------------------------------------------


def _text(errors: list[FieldError], field: str, value: str, limit: int) -> str:
    text = value.strip()
    problem = text_problem(text)
    if not text:
        errors.append(FieldError(field=field, value=value, reason="must not be empty"))
    elif len(text) > limit:
        errors.append(
            FieldError(field=field, value=value, reason=f"at most {limit} characters ({len(text)})")
        )
    elif problem is not None:
        errors.append(FieldError(field=field, value=value, reason=problem))
    return text


def _dates(errors: list[FieldError], performed: date, due: date, today: date) -> None:
    for field, value in (("performed", performed), ("due", due)):
        if not FIRST_DATE <= value <= LAST_DATE:
            errors.append(
                FieldError(
                    field=field,
                    value=value.isoformat(),
                    reason=f"must be between {FIRST_DATE.isoformat()} and {LAST_DATE.isoformat()}",
                )
            )
    if performed > today:
        errors.append(
            FieldError(
                field="performed",
                value=performed.isoformat(),
                reason=f"is in the future (today is {today.isoformat()})",
            )
        )
    if due <= performed:
        errors.append(
            FieldError(
                field="due",
                value=due.isoformat(),
                reason=f"must be after performed ({performed.isoformat()})",
            )
        )


def checked_certificate(value: str) -> str:
    """A certificate id: 1 to 128 characters, no control characters, no '/' (it names the
    record in URLs)."""
    errors: list[FieldError] = []
    certificate = _text(errors, "certificate", value, MAX_CERTIFICATE)
    if not errors and ("/" in certificate or "\\" in certificate):
        errors.append(
            FieldError(
                field="certificate",
                value=value,
                reason="must not hold '/' or '\\' (it names the record in URLs)",
            )
        )
    if errors:
        raise InvalidRequest(errors)
    return certificate


def decide_calibrate(
    state: CalibrationState,
    *,
    certificate: str,
    performed: date,
    due: date,
    by: str,
    today: date,
    source: str = "api",
) -> list[AnyEvent]:
    errors: list[FieldError] = []
    try:
        certificate = checked_certificate(certificate)
    except InvalidRequest as exc:
        errors += exc.errors
    by = _text(errors, "by", by, MAX_BY)
    _dates(errors, performed, due, today)
    if errors:
        raise InvalidRequest(errors)
    if state.has(certificate):
        raise CalibrationExists(state.equipment_id, certificate)
    return [
        EquipmentCalibrated(
            equipment_id=state.equipment_id,
            certificate=certificate,
            performed=performed,
            due=due,
            by=by,
            source=source,
        )
    ]


def _in_force(state: CalibrationState, certificate: str) -> CalibrationRecord:
    for record in state.records:
        if record.certificate == certificate:
            return record
    if certificate in state.withdrawn:
        raise CalibrationStateConflict(
            state.equipment_id, f"certificate {certificate!r} was withdrawn"
        )
    raise CalibrationNotFound(state.equipment_id, certificate)


def decide_correct(
    state: CalibrationState,
    *,
    certificate: str,
    performed: date | None,
    due: date | None,
    by: str | None,
    reason: str | None,
    today: date,
) -> list[AnyEvent]:
    """Correct a certificate's dates or performer; nothing when nothing changes."""
    record = _in_force(state, certificate)
    errors: list[FieldError] = []
    new_by = _text(errors, "by", by, MAX_BY) if by is not None else record.by
    new_performed = performed if performed is not None else record.performed
    new_due = due if due is not None else record.due
    _dates(errors, new_performed, new_due, today)
    if errors:
        raise InvalidRequest(errors)
    changes = {
        field: FieldChange(old=old, new=new)
        for field, old, new in (
            ("performed", record.performed.isoformat(), new_performed.isoformat()),
            ("due", record.due.isoformat(), new_due.isoformat()),
            ("by", record.by, new_by),
        )
        if old != new
    }
    if not changes:
        return []
    return [
        CalibrationCorrected(
            equipment_id=state.equipment_id,
            certificate=record.certificate,
            performed=new_performed,
            due=new_due,
            by=new_by,
            changes=changes,
            reason=reason,
        )
    ]


def decide_withdraw(
    state: CalibrationState, *, certificate: str, reason: str | None
) -> list[AnyEvent]:
    record = _in_force(state, certificate)
    return [
        CalibrationWithdrawn(
            equipment_id=state.equipment_id, certificate=record.certificate, reason=reason
        )
    ]


def decide_override(
    state: CalibrationState, *, reason: str, expires_at: datetime, by: str, now: datetime
) -> list[AnyEvent]:
    """Runs go ahead despite an expired or missing calibration until ``expires_at`` (a
    later override replaces it). ``reason`` is required (checked by the caller)."""
    if expires_at <= now:
        raise InvalidRequest.one(
            "expires_at",
            expires_at.isoformat(),
            f"must be in the future (now is {now.astimezone(UTC).isoformat()})",
        )
    return [
        CalibrationOverridden(
            equipment_id=state.equipment_id,
            reason=reason,
            expires_at=expires_at.astimezone(UTC),
            by=by,
        )
    ]


def decide_quarantine(state: CalibrationState, *, reason: str, by: str) -> list[AnyEvent]:
    if state.quarantine is not None:
        raise CalibrationStateConflict(
            state.equipment_id,
            f"already quarantined by {state.quarantine.by}: {state.quarantine.reason}",
        )
    return [EquipmentQuarantined(equipment_id=state.equipment_id, reason=reason, by=by)]


def decide_release(state: CalibrationState, *, reason: str, by: str) -> list[AnyEvent]:
    if state.quarantine is None:
        raise CalibrationStateConflict(state.equipment_id, "is not quarantined")
    return [EquipmentReleased(equipment_id=state.equipment_id, reason=reason, by=by)]


# -- alarms -----------------------------------------------------------------------------------


def _alarm_id(state: CalibrationState, kind: str) -> str:
    return f"alarm_calibration_{kind}_{state.equipment_id}_{state.alarms + 1}"


def decide_block_alarm(
    state: CalibrationState,
    block: Block,
    *,
    job_id: str,
    job_name: str,
    execution_id: str,
    at: datetime,
) -> list[AnyEvent]:
    """The first run blocked on an instrument raises one alarm; the runs after it, while the
    instrument stays blocked, raise none."""
    if state.block_alarm:
        return []
    return [
        AlarmRaised(
            alarm_id=_alarm_id(state, "blocked"),
            kind="calibration_blocked",
            severity="critical",
            message=f"runs on {block.equipment_id} are not dispatched: {block.reason}",
            equipment_id=block.equipment_id,
            job_id=job_id,
            job_name=job_name,
            execution_id=execution_id,
            execution_time=at,
            error={
                "type": "calibration_blocked",
                "cause": block.cause,
                "certificate": block.certificate,
                "due": block.due.isoformat() if block.due is not None else None,
            },
            equipment={"equipment_id": block.equipment_id},
        )
    ]


def decide_due_alarm(
    state: CalibrationState, *, now: datetime, zone: ZoneInfo, warn_days: float
) -> list[AnyEvent]:
    """The certificate in force falls due within ``warn_days`` (or already has): one warning
    per certificate and due date."""
    record = state.record
    if record is None or now < warn_from(record, zone, warn_days) or state.warned == _key(record):
        return []
    due = record.due.isoformat()
    expired = now >= valid_until(record, zone)
    when = f"expired: it was due {due}" if expired else f"is due {due}"
    return [
        AlarmRaised(
            alarm_id=_alarm_id(state, "due"),
            kind="calibration_due",
            severity="warning",
            message=f"the calibration of {state.equipment_id} (certificate {record.certificate})"
            f" {when}",
            equipment_id=state.equipment_id,
            error={
                "type": "calibration_due",
                "certificate": record.certificate,
                "due": due,
                "warn_days": warn_days,
            },
            equipment={"equipment_id": state.equipment_id},
        )
    ]
