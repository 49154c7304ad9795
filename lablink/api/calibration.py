"""Instruments' calibration: certificates (record, list, correct, withdraw), an override, a
quarantine and its release (docs/calibration.md)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import date, datetime
from typing import Any, TypeVar

import msgspec
from litestar import Controller, Request, get, post, put
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody

from lablink.api.auth import actor
from lablink.api.bodies import takes
from lablink.api.calibration_views import (
    CalibrationRecordView,
    CalibrationSummary,
    one_summary,
    record_views,
)
from lablink.api.context import ApiContext
from lablink.api.openapi import READ_ERRORS, WRITE_ERRORS
from lablink.api.responses import Envelope
from lablink.errors import EquipmentNotFound

T = TypeVar("T")
READ = {"role": "viewer"}
# Recording a certificate is a technician's work; changing or withdrawing one, overriding
# the interlock and taking an instrument out of service or back are an administrator's.
RECORD = {"role": "operator"}
ADMIN = {"role": "admin"}


class CalibrationBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A calibration certificate: its id, when it was performed, when it falls due (dates,
    ``YYYY-MM-DD``, in the server's time zone) and who performed it."""

    certificate: str
    performed: date
    due: date
    by: str


class CorrectionBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The fields to correct (the others stay), and why."""

    performed: date | None = None
    due: date | None = None
    by: str | None = None
    reason: str | None = None


class ReasonBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    reason: str | None = None


class OverrideBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Runs go ahead despite an expired or missing calibration until ``expires_at`` (ISO
    8601; without an offset, in the server's time zone). ``reason`` is required."""

    reason: str | None = None
    expires_at: datetime


class CalibrationList(Envelope, kw_only=True):
    equipment_id: str
    calibration: CalibrationSummary
    count: int
    calibrations: list[CalibrationRecordView]


class CalibrationAnswer(Envelope, kw_only=True):
    message: str
    equipment_id: str
    calibration: CalibrationSummary


async def _write(call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return await asyncio.to_thread(call, *args, **kwargs)


def _known(context: ApiContext, equipment_id: str) -> None:
    if not context.known_equipment(equipment_id):
        raise EquipmentNotFound(equipment_id)


async def _answer(context: ApiContext, equipment_id: str, message: str) -> CalibrationAnswer:
    await context.caught_up()
    found, _ = one_summary(context.reader, equipment_id, context.calibration_rules())
    return CalibrationAnswer(
        success=True, message=message, equipment_id=equipment_id, calibration=found
    )


class CalibrationController(Controller):
    path = "/api/equipment/{equipment_id:str}"
    tags = ["calibration"]  # noqa: RUF012 (Litestar declares it as an instance attribute)

    @get("/calibrations", opt=READ, responses=READ_ERRORS)
    async def list_calibrations(
        self, context: NamedDependency[ApiContext], equipment_id: FromPath[str]
    ) -> CalibrationList:
        """The instrument's calibration status now, and every certificate ever recorded for
        it (withdrawn ones too), oldest first."""
        _known(context, equipment_id)
        found, rows = one_summary(context.reader, equipment_id, context.calibration_rules())
        items = record_views(rows)
        return CalibrationList(
            success=True,
            equipment_id=equipment_id,
            calibration=found,
            count=len(items),
            calibrations=items,
        )

    @post(
        "/calibrations",
        status_code=200,
        opt=RECORD,
        responses=WRITE_ERRORS,
        **takes(CalibrationBody),
    )
    async def record_calibration(
        self,
        request: Request[Any, Any, Any],
        equipment_id: FromPath[str],
        data: JSONBody[CalibrationBody],
        context: NamedDependency[ApiContext],
    ) -> CalibrationAnswer:
        """Record a certificate (an ``equipment.calibrated`` event). 422 naming the field
        when ``due`` is not after ``performed`` or ``performed`` is in the future; 409 when
        the certificate is already on record; 404 for an unknown instrument."""
        await _write(
            context.calibrations().calibrate,
            equipment_id,
            certificate=data.certificate,
            performed=data.performed,
            due=data.due,
            by=data.by,
            actor=actor(request),
        )
        return await _answer(
            context, equipment_id, f"certificate {data.certificate.strip()!r} recorded"
        )

    @put(
        "/calibrations/{certificate:str}",
        opt=ADMIN,
        responses=WRITE_ERRORS,
        **takes(CorrectionBody),
    )
    async def correct_calibration(
        self,
        request: Request[Any, Any, Any],
        equipment_id: FromPath[str],
        certificate: FromPath[str],
        data: JSONBody[CorrectionBody],
        context: NamedDependency[ApiContext],
    ) -> CalibrationAnswer:
        """Correct a certificate's ``performed``, ``due`` or ``by``, with a ``reason``
        (required with LABLINK_REQUIRE_REASON=1); the event keeps the old and new values."""
        recorded = await _write(
            context.calibrations().correct,
            equipment_id,
            certificate,
            performed=data.performed,
            due=data.due,
            by=data.by,
            reason=data.reason,
            actor=actor(request),
        )
        message = f"certificate {certificate!r} corrected" if recorded else "nothing changed"
        return await _answer(context, equipment_id, message)

    @post(
        "/calibrations/{certificate:str}/withdraw",
        status_code=200,
        opt=ADMIN,
        responses=WRITE_ERRORS,
        **takes(ReasonBody),
    )
    async def withdraw_calibration(
        self,
        request: Request[Any, Any, Any],
        equipment_id: FromPath[str],
        certificate: FromPath[str],
        data: JSONBody[ReasonBody],
        context: NamedDependency[ApiContext],
    ) -> CalibrationAnswer:
        """Withdraw a certificate: it no longer counts (its id is never used again here)."""
        await _write(
            context.calibrations().withdraw,
            equipment_id,
            certificate,
            reason=data.reason,
            actor=actor(request),
        )
        return await _answer(context, equipment_id, f"certificate {certificate!r} withdrawn")

    @post(
        "/calibration-override",
        status_code=200,
        opt=ADMIN,
        responses=WRITE_ERRORS,
        **takes(OverrideBody),
    )
    async def override_calibration(
        self,
        request: Request[Any, Any, Any],
        equipment_id: FromPath[str],
        data: JSONBody[OverrideBody],
        context: NamedDependency[ApiContext],
    ) -> CalibrationAnswer:
        """Let runs go ahead despite an expired or missing calibration until ``expires_at``
        (not despite a quarantine). Without a ``reason``: 422 naming ``reason``, nothing
        written."""
        await _write(
            context.calibrations().override,
            equipment_id,
            reason=data.reason,
            expires_at=data.expires_at,
            actor=actor(request),
        )
        return await _answer(context, equipment_id, "calibration overridden")

    @post("/quarantine", status_code=200, opt=ADMIN, responses=WRITE_ERRORS, **takes(ReasonBody))
    async def quarantine(
        self,
        request: Request[Any, Any, Any],
        equipment_id: FromPath[str],
        data: JSONBody[ReasonBody],
        context: NamedDependency[ApiContext],
    ) -> CalibrationAnswer:
        """Take the instrument out of service (a ``reason`` is required): no run is
        dispatched to it until it is released. 409 if it is already quarantined."""
        await _write(
            context.calibrations().quarantine,
            equipment_id,
            reason=data.reason,
            actor=actor(request),
        )
        return await _answer(context, equipment_id, f"{equipment_id} quarantined")

    @post("/release", status_code=200, opt=ADMIN, responses=WRITE_ERRORS, **takes(ReasonBody))
    async def release(
        self,
        request: Request[Any, Any, Any],
        equipment_id: FromPath[str],
        data: JSONBody[ReasonBody],
        context: NamedDependency[ApiContext],
    ) -> CalibrationAnswer:
        """Put a quarantined instrument back in service (a ``reason`` is required). 409 if
        it is not quarantined."""
        await _write(
            context.calibrations().release, equipment_id, reason=data.reason, actor=actor(request)
        )
        return await _answer(context, equipment_id, f"{equipment_id} released")
