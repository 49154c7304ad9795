"""Request bodies the API accepts beyond JobRequest (which lives with the domain)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
from msgspec import UNSET, UnsetType

from lablink.events.jobs import ConflictPolicy, ScheduleType, TriggerType


class JobUpdate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """PUT body: only the fields given change. ``version`` (from GET) guards against
    overwriting someone else's edit: a stale one is a 409 naming both versions."""

    version: int | UnsetType = UNSET
    name: str | UnsetType = UNSET
    description: str | UnsetType = UNSET
    schedule_type: ScheduleType | UnsetType = UNSET
    equipment_id: str | UnsetType = UNSET
    trigger_type: TriggerType | UnsetType = UNSET
    cron_expression: str | UnsetType | None = UNSET
    interval_seconds: float | UnsetType | None = UNSET
    interval_minutes: float | UnsetType | None = UNSET
    interval_hours: float | UnsetType | None = UNSET
    interval_days: float | UnsetType | None = UNSET
    run_date: datetime | UnsetType | None = UNSET
    time_of_day: str | UnsetType | None = UNSET
    day_of_week: int | UnsetType | None = UNSET
    day_of_month: int | UnsetType | None = UNSET
    parameters: dict[str, Any] | UnsetType = UNSET
    enabled: bool | UnsetType = UNSET
    max_instances: int | UnsetType = UNSET
    misfire_grace_time: float | UnsetType = UNSET
    coalesce: bool | UnsetType = UNSET
    start_date: datetime | UnsetType | None = UNSET
    end_date: datetime | UnsetType | None = UNSET
    max_executions: int | UnsetType | None = UNSET
    tags: list[str] | UnsetType = UNSET
    profile_id: str | UnsetType | None = UNSET
    on_failure_alarm: bool | UnsetType = UNSET
    conflict_policy: ConflictPolicy | UnsetType = UNSET
    timezone: str | UnsetType | None = UNSET
    timeout_seconds: float | UnsetType | None = UNSET
    alarm_after_missed: int | UnsetType | None = UNSET

    def changes(self) -> dict[str, Any]:
        return {
            name: msgspec.to_builtins(value)
            for name in self.__struct_fields__
            if name != "version" and (value := getattr(self, name)) is not UNSET
        }
