"""The one tagged union of every event, and the one reused encoder/decoder for it."""

from __future__ import annotations

from typing import Any

import msgspec

from lablink.events.alarms import AlarmAcknowledged, AlarmCleared, AlarmRaised
from lablink.events.audit import CheckpointSigned
from lablink.events.backups import BackupFailed, BackupTaken
from lablink.events.calibration import (
    CalibrationCorrected,
    CalibrationOverridden,
    CalibrationWithdrawn,
    EquipmentCalibrated,
    EquipmentQuarantined,
    EquipmentReleased,
)
from lablink.events.data import ExecutionDataRemoved, ExecutionDataStored
from lablink.events.equipment import EquipmentOffline, EquipmentOnline
from lablink.events.executions import (
    ExecutionBlocked,
    ExecutionCancelled,
    ExecutionCoalesced,
    ExecutionFailed,
    ExecutionInterrupted,
    ExecutionLateResult,
    ExecutionMissed,
    ExecutionProgressed,
    ExecutionQueued,
    ExecutionRequested,
    ExecutionSkipped,
    ExecutionStarted,
    ExecutionSucceeded,
    ExecutionTimedOut,
)
from lablink.events.jobs import (
    JobCompleted,
    JobCreated,
    JobDeleted,
    JobPaused,
    JobReanchored,
    JobResumed,
    JobUpdated,
)
from lablink.events.keys import ApiKeyCreated, ApiKeyRevoked
from lablink.events.notifications import (
    NotificationAbandoned,
    NotificationFailed,
    NotificationSent,
)
from lablink.events.profiles import ProfileCreated, ProfileDeleted, ProfileUpdated
from lablink.events.retention import ExecutionsPruned
from lablink.events.scheduler import ClockStepped

AnyEvent = (
    JobCreated
    | JobUpdated
    | JobPaused
    | JobResumed
    | JobDeleted
    | JobCompleted
    | ExecutionRequested
    | ExecutionQueued
    | ExecutionStarted
    | ExecutionProgressed
    | ExecutionSucceeded
    | ExecutionFailed
    | ExecutionTimedOut
    | ExecutionCancelled
    | ExecutionInterrupted
    | ExecutionSkipped
    | ExecutionMissed
    | ExecutionCoalesced
    | ExecutionLateResult
    | ProfileCreated
    | ProfileUpdated
    | ProfileDeleted
    | AlarmRaised
    | AlarmAcknowledged
    | AlarmCleared
    | EquipmentOnline
    | EquipmentOffline
    | ExecutionsPruned
    | ApiKeyCreated
    | ApiKeyRevoked
    | JobReanchored
    | ClockStepped
    | ExecutionDataStored
    | ExecutionDataRemoved
    | NotificationSent
    | NotificationFailed
    | NotificationAbandoned
    | BackupTaken
    | BackupFailed
    | CheckpointSigned
    | ExecutionBlocked
    | EquipmentCalibrated
    | CalibrationCorrected
    | CalibrationWithdrawn
    | CalibrationOverridden
    | EquipmentQuarantined
    | EquipmentReleased
)

# Facts recorded in a job's stream (they all carry job_id).
JobEvent = (
    JobCreated,
    JobUpdated,
    JobPaused,
    JobResumed,
    JobDeleted,
    JobCompleted,
    ExecutionRequested,
    ExecutionQueued,
    ExecutionStarted,
    ExecutionProgressed,
    ExecutionSucceeded,
    ExecutionFailed,
    ExecutionTimedOut,
    ExecutionCancelled,
    ExecutionInterrupted,
    ExecutionSkipped,
    ExecutionMissed,
    ExecutionCoalesced,
    ExecutionLateResult,
    JobReanchored,
    ExecutionDataStored,
    ExecutionDataRemoved,
    ExecutionBlocked,
)

EVENT_TYPES: dict[str, type[Any]] = {
    str(cls.__struct_config__.tag): cls for cls in AnyEvent.__args__
}

_encoder = msgspec.json.Encoder()
_decoder: msgspec.json.Decoder[AnyEvent] = msgspec.json.Decoder(AnyEvent)


def encode_event(event: AnyEvent) -> bytes:
    """JSON a person can read with the sqlite3 shell; includes the ``type`` tag."""
    return _encoder.encode(event)


def decode_event(payload: bytes | str) -> AnyEvent:
    return _decoder.decode(payload)


def event_type(event: AnyEvent) -> str:
    return str(type(event).__struct_config__.tag)
