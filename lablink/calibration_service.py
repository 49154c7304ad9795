"""Commands on instruments' calibration, through the write path (``lablink.handler``).

From HTTP (``POST /api/equipment/{id}/calibrations`` and its siblings; the CLI goes through
them) and from serve's lab.toml (``record_lab_calibrations``). After a command, a
calibration alarm whose cause it ended (a new certificate, an override, a release) clears
itself, as an offline alarm does when its instrument comes back.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection, Sequence
from datetime import date, datetime
from typing import NamedTuple
from zoneinfo import ZoneInfo

import structlog

from lablink.alarm_service import AlarmService
from lablink.clock import Clock
from lablink.domain import calibration_decisions as rules
from lablink.domain.calibration import CalibrationRecord, CalibrationState, evolve, stream_id, today
from lablink.domain.reasons import checked_reason, required_reason
from lablink.domain.validation import ID_PATTERN
from lablink.equipment_service import load_equipment
from lablink.errors import (
    AlarmNotFound,
    AlarmStateConflict,
    CalibrationExists,
    EquipmentNotFound,
    FieldError,
    InvalidRequest,
)
from lablink.events import RecordedEvent
from lablink.eventstore.base import EventStore
from lablink.handler import CommandHandler, Decide, Handled
from lablink.instruments.simulated import SIMULATED_BENCH
from lablink.repository import Repository, keyed

log = structlog.get_logger(tag="scheduler")

# Who records a lab.toml's certificates, and who clears a calibration alarm.
SERVE_ACTOR = "lablink serve"
CLEARED_BY = "calibration"


def calibration_repository(store: EventStore) -> Repository[CalibrationState]:
    return keyed(store, CalibrationState, "equipment_id", evolve, stream_id)


def known_equipment(store: EventStore, configured: Collection[str] = ()) -> Callable[[str], bool]:
    """Whether LabLink knows an instrument: an agent reported it, it is on the simulated
    bench or in serve's lab.toml, or it already has calibration facts."""

    def known(equipment_id: str) -> bool:
        if not ID_PATTERN.match(equipment_id):
            return False
        if equipment_id in SIMULATED_BENCH or equipment_id in configured:
            return True
        if load_equipment(store, equipment_id)[0].known:
            return True
        return store.stream_version(stream_id(equipment_id)) > 0

    return known


class CalibrationService:
    def __init__(
        self,
        store: EventStore,
        clock: Clock,
        *,
        zone: ZoneInfo,
        require_reason: bool = False,
        known: Callable[[str], bool] | None = None,
        alarms: AlarmService | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.zone = zone
        self.require_reason = require_reason
        self.known = known if known is not None else known_equipment(store)
        self.alarms = alarms
        self.repository = calibration_repository(store)
        self.handler = CommandHandler(store, clock)

    def load(self, equipment_id: str) -> tuple[CalibrationState, int]:
        return self.repository.current(equipment_id)

    def require_known(self, equipment_id: str) -> None:
        if not self.known(equipment_id):
            raise EquipmentNotFound(equipment_id)

    def _handle(
        self, equipment_id: str, decide: Decide[CalibrationState], actor: str
    ) -> list[RecordedEvent]:
        self.require_known(equipment_id)
        handled = self.handler.handle(self.repository, equipment_id, decide, actor)
        self._clear_ended(handled)
        return handled.recorded

    def _clear_ended(self, handled: Handled[CalibrationState]) -> None:
        """The alarms whose cause the command ended clear themselves (best effort: one
        someone cleared already, or a view too far behind to find it, stays as it is)."""
        if self.alarms is None:
            return
        before, after = handled.before, handled.state
        for alarm_id in (before.block_alarm, before.due_alarm):
            if alarm_id and alarm_id not in (after.block_alarm, after.due_alarm):
                try:
                    with contextlib.suppress(AlarmStateConflict, AlarmNotFound):
                        self.alarms.clear(
                            alarm_id, by=CLEARED_BY, note="calibration changed", actor=CLEARED_BY
                        )
                except Exception as exc:
                    # The command is recorded: a clear that cannot be done now must not
                    # turn its answer into an error.
                    log.warning("calibration alarm not cleared", alarm_id=alarm_id, error=str(exc))

    def _today(self) -> date:
        return today(self.clock.now(), self.zone)

    # -- commands --------------------------------------------------------------------------

    def calibrate(
        self,
        equipment_id: str,
        *,
        certificate: str,
        performed: date,
        due: date,
        by: str,
        actor: str,
        source: str = "api",
    ) -> list[RecordedEvent]:
        today = self._today()
        return self._handle(
            equipment_id,
            lambda s, _: rules.decide_calibrate(
                s,
                certificate=certificate,
                performed=performed,
                due=due,
                by=by,
                today=today,
                source=source,
            ),
            actor,
        )

    def correct(
        self,
        equipment_id: str,
        certificate: str,
        *,
        performed: date | None,
        due: date | None,
        by: str | None,
        reason: object,
        actor: str,
    ) -> list[RecordedEvent]:
        why = checked_reason(reason, required=self.require_reason)
        today = self._today()
        return self._handle(
            equipment_id,
            lambda s, _: rules.decide_correct(
                s,
                certificate=certificate,
                performed=performed,
                due=due,
                by=by,
                reason=why,
                today=today,
            ),
            actor,
        )

    def withdraw(
        self, equipment_id: str, certificate: str, *, reason: object, actor: str
    ) -> list[RecordedEvent]:
        why = checked_reason(reason, required=self.require_reason)
        return self._handle(
            equipment_id,
            lambda s, _: rules.decide_withdraw(s, certificate=certificate, reason=why),
            actor,
        )

    def override(
        self, equipment_id: str, *, reason: object, expires_at: datetime, actor: str
    ) -> list[RecordedEvent]:
        why = required_reason(reason, "an override needs a reason: why runs may go ahead")
        at = expires_at if expires_at.tzinfo is not None else expires_at.replace(tzinfo=self.zone)
        return self._handle(
            equipment_id,
            lambda s, now: rules.decide_override(s, reason=why, expires_at=at, by=actor, now=now),
            actor,
        )

    def quarantine(self, equipment_id: str, *, reason: object, actor: str) -> list[RecordedEvent]:
        why = required_reason(reason, "a quarantine needs a reason")
        return self._handle(
            equipment_id, lambda s, _: rules.decide_quarantine(s, reason=why, by=actor), actor
        )

    def release(self, equipment_id: str, *, reason: object, actor: str) -> list[RecordedEvent]:
        why = required_reason(reason, "a release needs a reason")
        return self._handle(
            equipment_id, lambda s, _: rules.decide_release(s, reason=why, by=actor), actor
        )

    def warn_due(
        self, equipment_id: str, *, warn_days: float, actor: str, at: datetime | None = None
    ) -> list[RecordedEvent]:
        """The ``calibration_due`` warning, when the certificate in force falls due within
        ``warn_days`` and has not been warned of (the due-date watch); decided at ``at``
        (default: the clock's now)."""
        return self.handler.handle(
            self.repository,
            equipment_id,
            lambda s, now: rules.decide_due_alarm(s, now=now, zone=self.zone, warn_days=warn_days),
            actor,
            at=at,
        ).recorded


# -- lab.toml ----------------------------------------------------------------------------------


class LabCalibration(NamedTuple):
    """A certificate of serve's lab.toml: its instrument, the record, and where it is in the
    file (``instruments[0].calibration[1]``, for the errors that name it)."""

    equipment_id: str
    record: CalibrationRecord
    key: str


def record_lab_calibrations(
    service: CalibrationService, entries: Sequence[LabCalibration]
) -> list[str]:
    """Record the certificates of serve's lab.toml that the log does not hold; returns
    ``<instrument>/<certificate>`` of each recorded. Idempotent: a certificate already on
    record (withdrawn too) is left as it is; one on record with other dates is reported in
    the log (correct it through the API, with a reason), not changed. A certificate the
    rules refuse (performed in the future) raises InvalidRequest naming its key."""
    recorded: list[str] = []
    for equipment_id, record, key in entries:
        state, _ = service.load(equipment_id)
        on_record = next((r for r in state.records if r.certificate == record.certificate), None)
        if on_record is not None or record.certificate in state.withdrawn:
            if on_record is not None and on_record != record:
                log.warning(
                    "lab.toml calibration differs from the record; not changed",
                    equipment_id=equipment_id,
                    certificate=record.certificate,
                    recorded=f"{on_record.performed}..{on_record.due} by {on_record.by}",
                    file=f"{record.performed}..{record.due} by {record.by}",
                )
            continue
        try:
            service.calibrate(
                equipment_id,
                certificate=record.certificate,
                performed=record.performed,
                due=record.due,
                by=record.by,
                actor=SERVE_ACTOR,
                source="lab.toml",
            )
        except CalibrationExists:
            continue  # recorded meanwhile: what this function wanted
        except InvalidRequest as exc:
            raise InvalidRequest(
                [
                    FieldError(field=f"{key}.{e.field}", value=e.value, reason=e.reason)
                    for e in exc.errors
                ]
            ) from None
        recorded.append(f"{equipment_id}/{record.certificate}")
    return recorded
