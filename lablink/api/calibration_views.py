"""Instruments' calibration as the API and the dashboard show it: the calibration view's rows,
assessed at the reader's instant by the same rules as the fire path
(``lablink.domain.calibration.assess``)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import msgspec

from lablink.domain.calibration import CalibrationRecord, Override, Quarantine, assess, in_force
from lablink.eventstore.base import parse_instant
from lablink.projections.calibration import calibration_rows, control_rows
from lablink.projections.views import iso


@dataclass(frozen=True)
class CalibrationRules:
    """What a status depends on besides the facts: the instant and the settings."""

    now: datetime
    zone: ZoneInfo
    warn_days: float
    require: bool


class OverrideView(msgspec.Struct, kw_only=True):
    reason: str
    expires_at: str
    by: str | None
    at: str | None
    # False once expires_at has passed: it no longer lets runs go ahead.
    active: bool


class QuarantineView(msgspec.Struct, kw_only=True):
    reason: str | None
    by: str | None
    since: str | None


class CalibrationSummary(msgspec.Struct, kw_only=True):
    """An instrument's calibration now: ``status`` one of valid, due_soon, expired, missing,
    overridden, quarantined; ``blocked`` whether a run due now would be blocked, and
    ``cause`` why (or what the override lifts)."""

    status: str
    blocked: bool
    cause: str | None
    reason: str
    certificate: str | None
    performed: str | None
    due: str | None
    by: str | None
    # When the certificate in force stops holding (midnight after its due date, in the
    # server's time zone), and from when it is due soon.
    valid_until: str | None
    warn_from: str | None
    override: OverrideView | None
    quarantine: QuarantineView | None


class CalibrationRecordView(msgspec.Struct, kw_only=True):
    certificate: str
    performed: str
    due: str
    by: str
    # "active" or "withdrawn"; ``in_force``: the certificate the status is worked out from.
    state: str
    in_force: bool
    source: str | None
    recorded_at: str | None
    recorded_by: str | None
    corrections: int
    corrected_at: str | None
    corrected_by: str | None
    correction_reason: str | None
    # The last correction's fields, each {"old": …, "new": …}.
    changes: list[dict[str, Any]] | None
    withdrawn_at: str | None
    withdrawn_by: str | None
    withdraw_reason: str | None


def _record(row: dict[str, Any]) -> CalibrationRecord:
    return CalibrationRecord(
        certificate=row["certificate"],
        performed=date.fromisoformat(row["performed"]),
        due=date.fromisoformat(row["due"]),
        by=row["performed_by"],
    )


def summary(
    equipment_id: str,
    records: Iterable[dict[str, Any]],
    control: dict[str, Any] | None,
    rules: CalibrationRules,
) -> CalibrationSummary:
    active = [_record(r) for r in records if r["state"] == "active"]
    override = quarantine = None
    override_view = quarantine_view = None
    if control is not None and control["override_expires_at"]:
        expires_at = parse_instant(control["override_expires_at"])
        override = Override(
            reason=control["override_reason"], expires_at=expires_at, by=control["override_by"]
        )
        override_view = OverrideView(
            reason=control["override_reason"],
            expires_at=iso(control["override_expires_at"]) or "",
            by=control["override_by"],
            at=iso(control["override_at"]),
            active=rules.now < expires_at,
        )
    if control is not None and control["quarantined"]:
        quarantine = Quarantine(reason=control["quarantine_reason"], by=control["quarantine_by"])
        quarantine_view = QuarantineView(
            reason=control["quarantine_reason"],
            by=control["quarantine_by"],
            since=iso(control["quarantined_at"]),
        )
    found = assess(
        equipment_id,
        in_force(active),
        override,
        quarantine,
        now=rules.now,
        zone=rules.zone,
        warn_days=rules.warn_days,
        require=rules.require,
    )
    record = found.record
    return CalibrationSummary(
        status=found.status,
        blocked=found.blocked,
        cause=found.cause,
        reason=found.reason,
        certificate=record.certificate if record is not None else None,
        performed=record.performed.isoformat() if record is not None else None,
        due=record.due.isoformat() if record is not None else None,
        by=record.by if record is not None else None,
        valid_until=_local(found.valid_until, rules.zone),
        warn_from=_local(found.warn_from, rules.zone),
        override=override_view,
        quarantine=quarantine_view,
    )


def _local(when: datetime | None, zone: ZoneInfo) -> str | None:
    """An instant in the server's zone: a due date's midnight reads as midnight."""
    return when.astimezone(zone).isoformat() if when is not None else None


def record_views(records: list[dict[str, Any]]) -> list[CalibrationRecordView]:
    active = [r for r in records if r["state"] == "active"]
    current = in_force([_record(r) for r in active])
    return [
        CalibrationRecordView(
            certificate=r["certificate"],
            performed=r["performed"],
            due=r["due"],
            by=r["performed_by"],
            state=r["state"],
            in_force=current is not None
            and r["state"] == "active"
            and r["certificate"] == current.certificate,
            source=r["source"],
            recorded_at=iso(r["recorded_at"]),
            recorded_by=r["recorded_by"],
            corrections=r["corrections"] or 0,
            corrected_at=iso(r["corrected_at"]),
            corrected_by=r["corrected_by"],
            correction_reason=r["correction_reason"],
            changes=json.loads(r["correction_changes"]) if r["correction_changes"] else None,
            withdrawn_at=iso(r["withdrawn_at"]),
            withdrawn_by=r["withdrawn_by"],
            withdraw_reason=r["withdraw_reason"],
        )
        for r in records
    ]


def summaries(conn: sqlite3.Connection, rules: CalibrationRules) -> dict[str, CalibrationSummary]:
    """Every instrument with calibration facts, by id (the others: ``missing_summary``)."""
    records: dict[str, list[dict[str, Any]]] = {}
    for row in calibration_rows(conn):
        records.setdefault(row["equipment_id"], []).append(row)
    controls = {row["equipment_id"]: row for row in control_rows(conn)}
    return {
        eid: summary(eid, records.get(eid, []), controls.get(eid), rules)
        for eid in sorted({*records, *controls})
    }


def one_summary(
    conn: sqlite3.Connection, equipment_id: str, rules: CalibrationRules
) -> tuple[CalibrationSummary, list[dict[str, Any]]]:
    """One instrument's summary, and its records' rows (withdrawn ones too), oldest first."""
    records = calibration_rows(conn, equipment_id)
    controls = control_rows(conn, equipment_id)
    return summary(equipment_id, records, controls[0] if controls else None, rules), records


def missing_summary(equipment_id: str, rules: CalibrationRules) -> CalibrationSummary:
    """An instrument with no calibration fact at all."""
    return summary(equipment_id, [], None, rules)
