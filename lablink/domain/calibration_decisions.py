"""Commands on an instrument's calibration, and its alarms: pure decisions on the aggregate
of ``lablink.domain.calibration``.

Each ``decide_*`` returns the events a command produces or raises a named error naming the
field, the value and why (``InvalidRequest``), the certificate (``CalibrationNotFound``,
``CalibrationExists``) or the instrument (``CalibrationStateConflict``), writing nothing.
The clock is passed in (``now``, ``today``); a reason is checked by the caller
(``domain.reasons``), which knows whether one is required.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

from lablink.domain.calibration import (
    Block,
    CalibrationRecord,
    CalibrationState,
    key_of,
    valid_until,
    warn_from,
)
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
    CalibrationCorrected,
    CalibrationOverridden,
    CalibrationWithdrawn,
    EquipmentCalibrated,
    EquipmentQuarantined,
    EquipmentReleased,
    FieldChange,
)

MAX_CERTIFICATE = 128
MAX_BY = 200
# Dates LabLink reasons about: the instants around them must exist (no year 1, no 9999).
FIRST_DATE = date(1900, 1, 1)
LAST_DATE = date(9000, 12, 31)


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
    changes = tuple(
        FieldChange(field=field, old=old, new=new)
        for field, old, new in (
            ("performed", record.performed.isoformat(), new_performed.isoformat()),
            ("due", record.due.isoformat(), new_due.isoformat()),
            ("by", record.by, new_by),
        )
        if old != new
    )
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
    if record is None or now < warn_from(record, zone, warn_days) or state.warned == key_of(record):
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
