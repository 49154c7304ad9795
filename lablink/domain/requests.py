"""What a client may send to create or change a job: every field of the guide, nothing else.

Decoding forbids unknown fields and checks types; ``validation`` checks meaning. Both report
errors naming the field, the value and the reason.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import msgspec

from lablink.errors import FieldError, InvalidRequest
from lablink.events.jobs import ConflictPolicy, ScheduleType, TriggerType


class JobRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: str
    schedule_type: ScheduleType
    equipment_id: str
    trigger_type: TriggerType
    description: str = ""
    cron_expression: str | None = None
    interval_seconds: float | None = None
    interval_minutes: float | None = None
    interval_hours: float | None = None
    interval_days: float | None = None
    run_date: datetime | None = None
    time_of_day: str | None = None
    day_of_week: int | None = None
    day_of_month: int | None = None
    parameters: dict[str, Any] = msgspec.field(default_factory=dict)
    enabled: bool = True
    max_instances: int = 1
    misfire_grace_time: float = 300.0
    coalesce: bool = True
    start_date: datetime | None = None
    end_date: datetime | None = None
    max_executions: int | None = None
    tags: list[str] = msgspec.field(default_factory=list)
    profile_id: str | None = None
    on_failure_alarm: bool = False
    conflict_policy: ConflictPolicy = "skip"
    timezone: str | None = None
    timeout_seconds: float | None = None
    alarm_after_missed: int | None = None


JOB_REQUEST_FIELDS: frozenset[str] = frozenset(JobRequest.__struct_fields__)

_PATH = re.compile(r"at `\$\.([A-Za-z0-9_]+)")
_UNKNOWN = re.compile(r"unknown field `([^`]+)`")
_MISSING = re.compile(r"missing required field `([^`]+)`")


def field_error_from_msgspec(exc: msgspec.ValidationError, raw: dict[str, Any]) -> FieldError:
    """Turn msgspec's message into a FieldError naming the field and the value sent."""
    text = str(exc)
    if match := _UNKNOWN.search(text):
        name = match.group(1)
        return FieldError(field=name, value=raw.get(name), reason="unknown field")
    if match := _MISSING.search(text):
        return FieldError(field=match.group(1), value=None, reason="field required")
    if match := _PATH.search(text):
        name = match.group(1)
        reason = text.split(" - at ")[0]
        return FieldError(field=name, value=raw.get(name), reason=reason)
    return FieldError(field="body", value=None, reason=text)


def parse_object(body: bytes | str | dict[str, Any]) -> dict[str, Any]:
    if isinstance(body, dict):
        return body
    try:
        raw = msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise InvalidRequest.one("body", None, f"not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise InvalidRequest.one("body", raw, "expected a JSON object")
    return raw


def parse_job_request(body: bytes | str | dict[str, Any]) -> JobRequest:
    raw = parse_object(body)
    try:
        return msgspec.convert(raw, JobRequest)
    except msgspec.ValidationError as exc:
        raise InvalidRequest([field_error_from_msgspec(exc, raw)]) from exc
