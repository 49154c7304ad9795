"""The calibration aggregate on plain events: given facts, when a command or an instant, then
events, a status, or a named error. Pure: no store, no clock but the instant passed in."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from lablink.domain.calibration import CalibrationState, assess_state, evolve
from lablink.domain.calibration_decisions import (
    decide_block_alarm,
    decide_calibrate,
    decide_correct,
    decide_due_alarm,
    decide_override,
    decide_release,
    decide_withdraw,
)
from lablink.errors import (
    CalibrationExists,
    CalibrationNotFound,
    CalibrationStateConflict,
    InvalidRequest,
)
from lablink.events import (
    AlarmRaised,
    AnyEvent,
    CalibrationCorrected,
    CalibrationOverridden,
    EquipmentCalibrated,
    EquipmentQuarantined,
    FieldChange,
)

BERLIN = ZoneInfo("Europe/Berlin")
NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
TODAY = date(2026, 3, 2)


def given(*events: AnyEvent) -> CalibrationState:
    state = CalibrationState(equipment_id="psu")
    for event in events:
        state = evolve(state, event)
    return state


def cert(certificate: str, performed: date, due: date) -> EquipmentCalibrated:
    return EquipmentCalibrated(
        equipment_id="psu", certificate=certificate, performed=performed, due=due, by="Lab"
    )


def certificate_in_force(state: CalibrationState) -> str | None:
    return state.record.certificate if state.record is not None else None


def alarm_ids(events: list[AnyEvent]) -> list[str]:
    assert all(isinstance(e, AlarmRaised) for e in events), events
    return [e.alarm_id for e in events if isinstance(e, AlarmRaised)]


def status(state: CalibrationState, at: datetime, *, require: bool = False) -> str:
    return assess_state(state, now=at, zone=BERLIN, warn_days=14, require=require).status


def test_the_status_through_a_certificates_life() -> None:
    state = given(cert("C1", date(2025, 10, 25), date(2026, 10, 25)))
    assert status(state, NOW) == "valid"
    # Due soon from midnight (Berlin) 14 days before the due date.
    assert status(state, datetime(2026, 10, 10, 21, 59, 59, tzinfo=UTC)) == "valid"
    assert status(state, datetime(2026, 10, 10, 22, 0, tzinfo=UTC)) == "due_soon"
    # The due date is the last good day; 2026-10-25 is the day Berlin goes back an hour, so
    # its midnight after is at 23:00 UTC.
    assert status(state, datetime(2026, 10, 25, 22, 59, 59, tzinfo=UTC)) == "due_soon"
    assert status(state, datetime(2026, 10, 25, 23, 0, tzinfo=UTC)) == "expired"


def test_the_certificate_performed_last_is_in_force_whatever_the_order_recorded() -> None:
    state = given(
        cert("NEW", date(2026, 2, 1), date(2027, 2, 1)),
        cert("OLD", date(2025, 2, 1), date(2026, 2, 1)),
    )
    assert certificate_in_force(state) == "NEW"
    assert status(state, NOW) == "valid"
    same_day = evolve(state, cert("AGAIN", date(2026, 2, 1), date(2026, 3, 1)))
    assert certificate_in_force(same_day) == "AGAIN"
    assert status(same_day, NOW) == "expired"


def test_missing_blocks_only_when_required_and_an_override_lifts_it_until_it_expires() -> None:
    state = given()
    assert (status(state, NOW), status(state, NOW, require=True)) == ("missing", "missing")
    assert assess_state(state, now=NOW, zone=BERLIN, warn_days=14, require=False).block is None
    block = assess_state(state, now=NOW, zone=BERLIN, warn_days=14, require=True).block
    assert block is not None
    assert block.cause == "calibration_missing"
    until = NOW + timedelta(hours=2)
    overridden = evolve(
        state,
        CalibrationOverridden(equipment_id="psu", reason="trial", expires_at=until, by="admin"),
    )
    assert status(overridden, NOW, require=True) == "overridden"
    assert status(overridden, NOW) == "missing"  # nothing to lift
    assert status(overridden, until, require=True) == "missing"


def test_a_quarantine_wins_over_a_valid_certificate_and_an_override() -> None:
    state = given(
        cert("C1", date(2026, 1, 1), date(2027, 1, 1)),
        CalibrationOverridden(
            equipment_id="psu", reason="r", expires_at=NOW + timedelta(days=1), by="a"
        ),
        EquipmentQuarantined(equipment_id="psu", reason="dropped", by="admin"),
    )
    found = assess_state(state, now=NOW, zone=BERLIN, warn_days=14, require=False)
    assert (found.status, found.blocked, found.cause) == ("quarantined", True, "quarantined")
    (released,) = decide_release(state, reason="ok", by="admin")
    assert status(evolve(state, released), NOW) == "valid"


def test_commands_refuse_with_named_errors_and_write_nothing() -> None:
    state = given(cert("C1", date(2025, 1, 1), date(2026, 1, 1)))
    with pytest.raises(CalibrationExists) as exists:
        decide_calibrate(
            state, certificate=" C1 ", performed=TODAY, due=date(2027, 1, 1), by="x", today=TODAY
        )
    assert (exists.value.equipment_id, exists.value.object_id) == ("psu", "C1")
    with pytest.raises(InvalidRequest) as bad:
        decide_calibrate(
            state,
            certificate="C2",
            performed=date(2026, 3, 3),
            due=date(2026, 3, 1),
            by="",
            today=TODAY,
        )
    assert [e.field for e in bad.value.errors] == ["by", "performed", "due"]
    with pytest.raises(CalibrationNotFound):
        decide_withdraw(state, certificate="C9", reason=None)
    withdrawn = evolve(state, decide_withdraw(state, certificate="C1", reason="revoked")[0])
    with pytest.raises(CalibrationStateConflict):
        decide_correct(
            withdrawn,
            certificate="C1",
            performed=None,
            due=date(2026, 6, 1),
            by=None,
            reason=None,
            today=TODAY,
        )
    with pytest.raises(CalibrationExists):  # never reused, even withdrawn
        decide_calibrate(
            withdrawn, certificate="C1", performed=TODAY, due=date(2027, 1, 1), by="x", today=TODAY
        )
    with pytest.raises(InvalidRequest) as past:
        decide_override(state, reason="r", expires_at=NOW, by="a", now=NOW)
    assert past.value.errors[0].field == "expires_at"
    with pytest.raises(CalibrationStateConflict):
        decide_release(state, reason="r", by="a")


def test_a_correction_records_old_and_new_values_of_what_changed_only() -> None:
    state = given(cert("C1", date(2025, 1, 1), date(2026, 1, 1)))
    (event,) = decide_correct(
        state,
        certificate="C1",
        performed=date(2025, 1, 1),
        due=date(2026, 7, 1),
        by="Lab",
        reason="six months",
        today=TODAY,
    )
    assert isinstance(event, CalibrationCorrected)
    assert event.changes == (FieldChange(field="due", old="2026-01-01", new="2026-07-01"),)
    assert (
        decide_correct(
            state, certificate="C1", performed=None, due=None, by="Lab", reason=None, today=TODAY
        )
        == []
    )


def test_one_blocked_alarm_while_blocked_and_a_new_one_after_a_fact_that_may_end_it() -> None:
    state = given(cert("C1", date(2025, 1, 1), date(2026, 1, 1)))
    block = assess_state(state, now=NOW, zone=BERLIN, warn_days=14, require=False).block
    assert block is not None
    assert block.cause == "calibration_expired"
    first = decide_block_alarm(state, block, job_id="j", job_name="J", execution_id="e", at=NOW)
    assert alarm_ids(first) == ["alarm_calibration_blocked_psu_1"]
    state = evolve(state, first[0])
    assert (
        decide_block_alarm(state, block, job_id="j", job_name="J", execution_id="f", at=NOW) == []
    )
    state = evolve(
        state,
        CalibrationOverridden(equipment_id="psu", reason="r", expires_at=NOW, by="a"),
    )
    again = decide_block_alarm(state, block, job_id="j", job_name="J", execution_id="g", at=NOW)
    assert alarm_ids(again) == ["alarm_calibration_blocked_psu_2"]


def test_one_due_warning_per_certificate_and_due_date() -> None:
    state = given(cert("C1", date(2025, 3, 10), date(2026, 3, 10)))
    (warning,) = decide_due_alarm(state, now=NOW, zone=BERLIN, warn_days=14)
    state = evolve(state, warning)
    assert decide_due_alarm(state, now=NOW, zone=BERLIN, warn_days=14) == []
    assert [state.due_alarm] == alarm_ids([warning])
    # A new certificate in force ends the warning; its own comes in its own time.
    state = evolve(state, cert("C2", date(2026, 3, 1), date(2027, 3, 1)))
    assert state.due_alarm == ""
    assert decide_due_alarm(state, now=NOW, zone=BERLIN, warn_days=14) == []
