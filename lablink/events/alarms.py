"""Facts about alarms (stream: ``alarm:<alarm_id>``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import msgspec

from lablink.events.base import Event

Severity = Literal["info", "warning", "critical"]
# ``data_bound``: the captures' byte bound (LABLINK_DATA_MAX_BYTES) removed captures that
# retention would have kept more than a day longer. ``notification_abandoned``: a channel gave
# up delivering an alarm (lablink/notify). ``backup_failed``: a scheduled backup did not
# complete (lablink/backup). ``calibration_blocked``: runs on an instrument were not
# dispatched (calibration expired or missing, quarantined); ``calibration_due``: a
# calibration falls due within LABLINK_CALIBRATION_WARN_DAYS (docs/calibration.md).
AlarmKind = Literal[
    "job_failure",
    "equipment_offline",
    "missed_runs",
    "scheduler_fault",
    "data_bound",
    "notification_abandoned",
    "backup_failed",
    "calibration_blocked",
    "calibration_due",
]


class AlarmRaised(Event, frozen=True, kw_only=True, tag="alarm.raised"):
    alarm_id: str
    kind: AlarmKind
    severity: Severity
    message: str
    equipment_id: str | None = None
    job_id: str | None = None
    job_name: str | None = None
    execution_id: str | None = None
    execution_time: datetime | None = None
    error: dict[str, Any] = msgspec.field(default_factory=dict)
    equipment: dict[str, Any] = msgspec.field(default_factory=dict)


class AlarmAcknowledged(Event, frozen=True, kw_only=True, tag="alarm.acknowledged"):
    alarm_id: str
    by: str
    note: str = ""


class AlarmCleared(Event, frozen=True, kw_only=True, tag="alarm.cleared"):
    alarm_id: str
    by: str
    note: str = ""
