"""Events: one tagged union, stable tags, lossless round trips, and schemas that only grow."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest

from lablink.events import (
    EVENT_TYPES,
    AlarmAcknowledged,
    AlarmCleared,
    AlarmRaised,
    AnyEvent,
    ApiKeyCreated,
    ApiKeyRevoked,
    BackupFailed,
    BackupTaken,
    CalibrationCorrected,
    CalibrationOverridden,
    CalibrationWithdrawn,
    CheckpointSigned,
    ClockStepped,
    EquipmentCalibrated,
    EquipmentOffline,
    EquipmentOnline,
    EquipmentQuarantined,
    EquipmentReleased,
    ExecutionBlocked,
    ExecutionCancelled,
    ExecutionCoalesced,
    ExecutionDataRemoved,
    ExecutionDataStored,
    ExecutionError,
    ExecutionFailed,
    ExecutionInterrupted,
    ExecutionLateResult,
    ExecutionMissed,
    ExecutionProgressed,
    ExecutionQueued,
    ExecutionRequested,
    ExecutionSkipped,
    ExecutionsPruned,
    ExecutionStarted,
    ExecutionSucceeded,
    ExecutionTimedOut,
    FieldChange,
    JobCompleted,
    JobCreated,
    JobDeleted,
    JobPaused,
    JobReanchored,
    JobResumed,
    JobSpec,
    JobUpdated,
    NotificationAbandoned,
    NotificationFailed,
    NotificationSent,
    ProfileCreated,
    ProfileDeleted,
    ProfileUpdated,
    decode_event,
    encode_event,
    event_type,
)

FIXTURES = Path(__file__).parent / "fixtures"
T = datetime(2026, 3, 29, 0, 30, 0, 250000, tzinfo=UTC)
SPEC = JobSpec(
    name="Nightly Equipment Test",
    schedule_type="equipment_test",
    equipment_id="oscilloscope_1",
    trigger_type="daily",
    timezone="Europe/Berlin",
    timeout_seconds=300.0,
    time_of_day="03:00:00",
    parameters={"test_name": "connection"},
    on_failure_alarm=True,
    tags=("nightly",),
)
J, X = "job_1", "exec_1"

SAMPLES: list[AnyEvent] = [
    JobCreated(job_id=J, spec=SPEC, enabled=True, created_by="alice", created_at=T, anchor=T),
    JobUpdated(
        job_id=J,
        spec=SPEC,
        anchor=T,
        updated_at=T,
        changed_fields=("name", "run_date"),
        reason="renamed after the audit",
        changes=(
            FieldChange(field="name", old="Nightly test", new="Nightly Equipment Test"),
            FieldChange(field="run_date", old=None, new="2026-03-29T00:30:00.250000Z"),
        ),
    ),
    JobPaused(job_id=J, reason="maintenance"),
    JobResumed(job_id=J, resumed_at=T, reason="back from maintenance"),
    JobDeleted(job_id=J, reason="instrument retired"),
    JobCompleted(job_id=J, reason="max_executions"),
    ExecutionRequested(
        job_id=J, execution_id=X, scheduled_time=T, actual_time=T, trigger_info="scheduled"
    ),
    ExecutionQueued(
        job_id=J,
        execution_id=X,
        scheduled_time=T,
        actual_time=T,
        trigger_info="catch_up",
        behind=("exec_0",),
    ),
    ExecutionStarted(job_id=J, execution_id=X, started_at=T),
    ExecutionProgressed(job_id=J, execution_id=X, progress=0.5, message="half", data={"n": 1}),
    ExecutionSucceeded(
        job_id=J,
        execution_id=X,
        completed_at=T,
        started_at=T,
        result={"v": 1.5},
        dispatched_at=T,
        instrument_started_at=T,
        instrument_ended_at=T,
    ),
    ExecutionFailed(
        job_id=J,
        execution_id=X,
        completed_at=T,
        error=ExecutionError(type="instrument", message="-222,Data out of range", code=-222),
        dispatched_at=T,
        instrument_started_at=T,
        instrument_ended_at=T,
    ),
    ExecutionTimedOut(
        job_id=J,
        execution_id=X,
        completed_at=T,
        timeout_seconds=60.0,
        dispatched_at=T,
        instrument_started_at=T,
        instrument_ended_at=T,
    ),
    ExecutionCancelled(
        job_id=J, execution_id=X, completed_at=T, reason="operator", dispatched_at=T
    ),
    ExecutionInterrupted(job_id=J, execution_id=X, completed_at=T),
    ExecutionSkipped(
        job_id=J,
        execution_id=X,
        scheduled_time=T,
        actual_time=T,
        trigger_info="scheduled",
        reason="exec_0 is running",
        running=("exec_0",),
    ),
    ExecutionMissed(
        job_id=J,
        execution_id=X,
        scheduled_time=T,
        actual_time=T,
        missed_count=7,
        window_start=T,
        window_end=T,
        reason="down",
    ),
    ExecutionCoalesced(
        job_id=J,
        execution_id="exec_2",
        scheduled_time=T,
        actual_time=T,
        coalesced_count=3,
        window_start=T,
        window_end=T,
        into_execution_id=X,
        reason="3 fires 1 s to 3 s late",
    ),
    ExecutionLateResult(
        job_id=J,
        execution_id=X,
        received_at=T,
        status="completed",
        result={"value": 1.5},
        agent_id="lab-pc",
        equipment_id="power_supply_1",
        reported_at=T,
        instrument_started_at=T,
        instrument_ended_at=T,
    ),
    ProfileCreated(profile_id="p1", name="P", equipment_type="oscilloscope", settings={"a": 1}),
    ProfileUpdated(
        profile_id="p1",
        name="P2",
        equipment_type="oscilloscope",
        reason="new probe",
        changes=(FieldChange(field="settings", old={"a": 1}, new={}),),
    ),
    ProfileDeleted(profile_id="p1", reason="unused"),
    AlarmRaised(
        alarm_id="alarm_1",
        kind="job_failure",
        severity="critical",
        message="failed",
        equipment_id="oscilloscope_1",
        job_id=J,
        job_name="N",
        execution_id=X,
        execution_time=T,
    ),
    AlarmAcknowledged(alarm_id="alarm_1", by="bob", note="looking"),
    AlarmCleared(alarm_id="alarm_1", by="bob"),
    EquipmentOnline(equipment_id="scope_1", kind="oscilloscope", identity="SIM", agent_id="a1"),
    EquipmentOffline(equipment_id="scope_1", reason="heartbeat lost"),
    ExecutionsPruned(cutoff=T, days=30),
    ApiKeyCreated(key_id="k1", name="alice", role="operator", key_hash="ab" * 32),
    ApiKeyRevoked(key_id="k1", reason="left the lab"),
    JobReanchored(
        job_id="job_1", shift_seconds=-3600.0, anchor=T, rescheduled_at=T, last_fire_time=T
    ),
    ClockStepped(step_seconds=-3600.0, wall_before=T, wall_after=T, planned_jobs=2),
    ExecutionDataStored(
        job_id=J, execution_id=X, object="exec_1.csv", size=10, sha256="ab" * 32, stored_at=T
    ),
    ExecutionDataRemoved(
        job_id=J, execution_id=X, object="exec_1.csv", size=10, removed_at=T, reason="retention"
    ),
    NotificationSent(
        alarm_id="alarm_1", channel="lab-webhook", attempt=1, idempotency_key="alarm_1:lab-webhook"
    ),
    NotificationFailed(
        alarm_id="alarm_1", channel="lab-mail", attempt=2, error="timed out", retry_at=T
    ),
    NotificationAbandoned(
        alarm_id="alarm_1", channel="lab-mail", attempts=9, first_attempt_at=T, error="refused"
    ),
    BackupTaken(
        file="/backups/lablink-20200101T000000Z-42.db", position=42, sha256="ab" * 32, size=4096
    ),
    BackupFailed(file="/backups/lablink-20200101T000000Z-42.db", error="No space left on device"),
    CheckpointSigned(
        origin="lablink/lab-pc/0123abcd",
        size=42,
        head="ab" * 32,
        note="lablink/lab-pc/0123abcd\n42\nq6ur\n\n\u2014 lablink/lab-pc/0123abcd AAAA\n",
    ),
    ExecutionBlocked(
        job_id=J,
        execution_id=X,
        scheduled_time=T,
        actual_time=T,
        trigger_info="scheduled",
        equipment_id="power_supply_1",
        cause="calibration_expired",
        reason="the calibration of power_supply_1 expired",
        certificate="CAL-1",
        due=date(2026, 3, 1),
    ),
    EquipmentCalibrated(
        equipment_id="power_supply_1",
        certificate="CAL-1",
        performed=date(2025, 3, 1),
        due=date(2026, 3, 1),
        by="Metrology Lab",
        source="lab.toml",
    ),
    CalibrationCorrected(
        equipment_id="power_supply_1",
        certificate="CAL-1",
        performed=date(2025, 3, 1),
        due=date(2026, 4, 1),
        by="Metrology Lab",
        changes=(FieldChange(field="due", old="2026-03-01", new="2026-04-01"),),
        reason="typo in the due date",
    ),
    CalibrationWithdrawn(equipment_id="power_supply_1", certificate="CAL-1", reason="revoked"),
    CalibrationOverridden(
        equipment_id="power_supply_1", reason="recalibration booked", expires_at=T, by="admin"
    ),
    EquipmentQuarantined(equipment_id="power_supply_1", reason="dropped", by="admin"),
    EquipmentReleased(equipment_id="power_supply_1", reason="checked", by="admin"),
]

# Tags are part of the stored format: renaming one would orphan every row that carries it.
STABLE_TAGS = {
    "job.created",
    "job.updated",
    "job.paused",
    "job.resumed",
    "job.deleted",
    "job.completed",
    "execution.pending",
    "execution.queued",
    "execution.started",
    "execution.progressed",
    "execution.completed",
    "execution.failed",
    "execution.timed_out",
    "execution.cancelled",
    "execution.interrupted",
    "execution.skipped",
    "execution.missed",
    "execution.coalesced",
    "execution.late_result",
    "profile.created",
    "profile.updated",
    "profile.deleted",
    "alarm.raised",
    "alarm.acknowledged",
    "alarm.cleared",
    "equipment.online",
    "equipment.offline",
    "executions.pruned",
    "apikey.created",
    "apikey.revoked",
    "job.reanchored",
    "scheduler.clock_stepped",
    "execution.data_stored",
    "execution.data_removed",
    "notification.sent",
    "notification.failed",
    "notification.abandoned",
    "backup.taken",
    "backup.failed",
    "audit.checkpoint",
    "execution.blocked",
    "equipment.calibrated",
    "equipment.calibration_corrected",
    "equipment.calibration_withdrawn",
    "equipment.calibration_overridden",
    "equipment.quarantined",
    "equipment.released",
}


def test_every_event_type_has_a_sample_and_a_stable_tag() -> None:
    assert {event_type(e) for e in SAMPLES} == set(EVENT_TYPES) == STABLE_TAGS


@pytest.mark.parametrize("event", SAMPLES, ids=event_type)
def test_round_trip(event: AnyEvent) -> None:
    encoded = encode_event(event)
    assert json.loads(encoded)["type"] == event_type(event)
    assert decode_event(encoded) == event


@pytest.mark.parametrize("event", SAMPLES, ids=event_type)
def test_events_are_frozen(event: AnyEvent) -> None:
    first_field = type(event).__struct_fields__[0]
    with pytest.raises(AttributeError):
        setattr(event, first_field, "changed")


def test_stored_rows_of_an_older_shape_still_decode() -> None:
    """Rows written before fields were added (JobSpec.alarm_after_missed, conflict_policy,
    tags…; started_at on final execution facts) decode, with the new fields at defaults."""
    rows = [json.loads(line) for line in (FIXTURES / "events_v0.jsonl").read_text().splitlines()]
    decoded = [decode_event(row["payload"]) for row in rows]
    assert [event_type(e) for e in decoded] == [row["type"] for row in rows]
    created = decoded[0]
    assert isinstance(created, JobCreated)
    assert created.spec.alarm_after_missed is None
    assert created.spec.conflict_policy == "skip"
    assert created.spec.tags == ()
    assert created.spec.interval_total_seconds == 3600.0
    completed = decoded[3]
    assert isinstance(completed, ExecutionSucceeded)
    assert completed.started_at is None
    assert completed.result == {"value": 5.002, "unit": "V"}
    # Recorded since issue 19: absent from older logs, which still decode.
    assert completed.dispatched_at is None
    assert completed.instrument_started_at is None
    assert completed.instrument_ended_at is None
    failed = decoded[4]
    assert isinstance(failed, ExecutionFailed)
    assert failed.error.code is None
    assert (failed.dispatched_at, failed.instrument_started_at) == (None, None)


TIMES = ("dispatched_at", "instrument_started_at", "instrument_ended_at")


@pytest.mark.parametrize(
    "event", [e for e in SAMPLES if any(hasattr(e, t) for t in TIMES)], ids=event_type
)
def test_facts_written_before_the_instrument_times_decode_without_them(event: AnyEvent) -> None:
    """Final facts and late results of logs written before issue 19 have none of these keys."""
    payload: dict[str, Any] = msgspec.json.decode(encode_event(event))
    present = [t for t in TIMES if t in payload]
    assert present
    assert all(payload.pop(t) is not None for t in present)
    older = decode_event(msgspec.json.encode(payload))
    assert all(getattr(older, t) is None for t in present)
    assert msgspec.structs.replace(event, **dict.fromkeys(present)) == older


def test_a_newer_writers_unknown_fields_are_ignored_by_an_older_reader() -> None:
    payload: dict[str, Any] = msgspec.json.decode(encode_event(SAMPLES[2]))
    payload["added_in_a_later_version"] = {"anything": [1, 2]}
    assert decode_event(msgspec.json.encode(payload)) == SAMPLES[2]


def test_unknown_event_type_is_an_error_not_a_silent_skip() -> None:
    with pytest.raises(msgspec.ValidationError):
        decode_event(b'{"type":"job.exploded","job_id":"job_1"}')


# Fields added with issue 20's reasons, by the events that carry them.
REASON_FIELDS: dict[type[Any], tuple[str, ...]] = {
    JobUpdated: ("reason", "changes"),
    JobResumed: ("reason",),
    JobDeleted: ("reason",),
    ProfileUpdated: ("reason", "changes"),
    ProfileDeleted: ("reason",),
    ApiKeyRevoked: ("reason",),
}


@pytest.mark.parametrize("event", [e for e in SAMPLES if type(e) in REASON_FIELDS], ids=event_type)
def test_changes_recorded_before_reasons_decode_without_them(event: AnyEvent) -> None:
    """Updates, deletions and revocations of logs written before reasons have none of these
    keys: they decode with no reason and no changes."""
    added = REASON_FIELDS[type(event)]
    payload: dict[str, Any] = msgspec.json.decode(encode_event(event))
    assert all(payload.pop(name) for name in added)  # the samples set every one
    older = decode_event(msgspec.json.encode(payload))
    defaults = {f.name: f.default for f in msgspec.structs.fields(older) if f.name in added}
    assert defaults == {name: None if name == "reason" else () for name in added}
    assert msgspec.structs.replace(event, **defaults) == older
