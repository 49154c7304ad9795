"""The job form's values: what a user typed, turned into the JSON body a client would send,
and back from a job's view; and where each refusal of it goes in the form.

Pure (no request, no I/O): the form controller (job_form.py) feeds it the form's fields and
converts the body exactly as the API converts a JSON one."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from lablink.api.bodies import convert_body
from lablink.dashboard.requests import whole_number
from lablink.domain.requests import JobRequest, decode_json
from lablink.domain.validation import ALL_TRIGGER_FIELDS, INTERVAL_FIELDS, TRIGGER_FIELDS
from lablink.errors import FieldError, InvalidRequest

# Where a form field's text goes in the JSON body, and as what.
TEXT_FIELDS = ("name", "description")
CHOICE_FIELDS = ("schedule_type", "trigger_type", "conflict_policy")
OPTIONAL_TEXT_FIELDS = ("profile_id", "timezone", "cron_expression", "time_of_day")
NUMBER_FIELDS = (
    *INTERVAL_FIELDS,
    "day_of_week",
    "day_of_month",
    "max_instances",
    "misfire_grace_time",
    "timeout_seconds",
    "max_executions",
    "alarm_after_missed",
)
INSTANT_FIELDS = ("run_date", "start_date", "end_date")
BOOL_FIELDS = ("enabled", "coalesce", "on_failure_alarm")
# Fields JobUpdate cannot set to null: left out of an edit when blank (unchanged).
NOT_NULLABLE = frozenset({"max_instances", "misfire_grace_time", "conflict_policy"})

# The common parameters of each type of job (the guide's "Job Types"), as plain fields; any
# other parameter goes in the JSON of "more parameters".
PARAMETER_FIELDS: dict[str, tuple[str, ...]] = {
    "acquisition": ("duration", "sample_rate", "channels"),
    "state_capture": (),
    "measurement": ("command", "parameters"),
    "command": ("command", "parameters"),
    "equipment_test": ("test_name",),
}
NUMBER_PARAMETERS = frozenset({"duration", "sample_rate"})
EXTRA = "parameters_extra"

LABELS = {
    "name": "Name",
    "description": "Description",
    "schedule_type": "Type of job",
    "equipment_id": "Instrument",
    "tags": "Tags",
    "enabled": "Enabled",
    "trigger_type": "Trigger",
    "cron_expression": "Cron expression",
    "interval_seconds": "Seconds",
    "interval_minutes": "Minutes",
    "interval_hours": "Hours",
    "interval_days": "Days",
    "time_of_day": "Time of day",
    "day_of_week": "Day of the week",
    "day_of_month": "Day of the month",
    "run_date": "Run at",
    "timezone": "Time zone",
    "max_instances": "Max instances",
    "conflict_policy": "If still running",
    "coalesce": "Coalesce missed runs",
    "misfire_grace_time": "Misfire grace time (s)",
    "timeout_seconds": "Timeout (s)",
    "max_executions": "Stop after (runs)",
    "start_date": "Start",
    "end_date": "End",
    "profile_id": "Equipment profile",
    "on_failure_alarm": "Raise an alarm on failure",
    "alarm_after_missed": "Alarm after missed runs",
    "parameters.command": "Command",
    "parameters.parameters": "Command parameters (JSON object)",
    "parameters.test_name": "Test name",
    "parameters.duration": "Duration (s)",
    "parameters.sample_rate": "Sample rate (samples/s)",
    "parameters.channels": "Channels",
    EXTRA: "More parameters (JSON object)",
    "version": "Version",
}
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
TRIGGER_WORDS = {
    "interval": "Every fixed interval",
    "cron": "Cron expression",
    "daily": "Daily at a time",
    "weekly": "Weekly on a day",
    "monthly": "Monthly on a day",
    "date": "Once, at a date",
}
SCHEDULE_WORDS = {
    "measurement": "Measurement",
    "acquisition": "Acquisition",
    "state_capture": "State capture",
    "command": "Command",
    "equipment_test": "Equipment test",
}

DEFAULTS: dict[str, Any] = {
    "schedule_type": "measurement",
    "trigger_type": "interval",
    "conflict_policy": "skip",
    "max_instances": "1",
    "misfire_grace_time": "300",
    "enabled": True,
    "coalesce": True,
    "on_failure_alarm": False,
}

_JSON_NUMBER = re.compile(r"^-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?$")
# What <input type="datetime-local"> sends when the seconds are zero.
_NO_SECONDS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}$")
_INDEX = re.compile(r"\[\d+\]$")


# -- the form's values ---------------------------------------------------------------------


def form_keys(values: Mapping[str, Any]) -> list[str]:
    """The fields the form shows for these values: the chosen trigger's and type's only."""
    trigger = str(values.get("trigger_type") or "")
    kind = str(values.get("schedule_type") or "")
    return [
        *TEXT_FIELDS,
        "schedule_type",
        "equipment_id",
        "tags",
        "enabled",
        *(f"parameters.{p}" for p in PARAMETER_FIELDS.get(kind, ())),
        EXTRA,
        "trigger_type",
        *sorted(TRIGGER_FIELDS.get(trigger, ()), key=_trigger_order),
        "timezone",
        "max_instances",
        "conflict_policy",
        "coalesce",
        "misfire_grace_time",
        "timeout_seconds",
        "max_executions",
        "start_date",
        "end_date",
        "profile_id",
        "on_failure_alarm",
        "alarm_after_missed",
    ]


def _trigger_order(field: str) -> int:
    order = ("cron_expression", *INTERVAL_FIELDS[::-1], "day_of_week", "day_of_month")
    return order.index(field) if field in order else len(order)


def values_from_form(form: Mapping[str, Any]) -> dict[str, Any]:
    """What the user typed, as text (checkboxes as booleans), to build the body from and to
    show again."""
    values: dict[str, Any] = {}
    for key, value in form.items():
        if key.startswith("_") or not isinstance(value, str):
            continue
        values[key] = value
    other = str(values.pop("equipment_id_other", "")).strip()
    if other:
        values["equipment_id"] = other
    for field in BOOL_FIELDS:
        values[field] = field in form
    return values


def _number_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _local_text(value: str | None) -> str:
    """An instant of the job's view (written in the job's zone) as <input
    type="datetime-local"> wants it: the wall-clock time in that zone."""
    if not value:
        return ""
    return datetime.fromisoformat(value).replace(tzinfo=None).isoformat(timespec="seconds")


def values_from_job(job: Mapping[str, Any]) -> dict[str, Any]:
    """The form's values for a job as its view shows it."""
    values: dict[str, Any] = {
        "name": job["name"],
        "description": job.get("description") or "",
        "schedule_type": job["schedule_type"],
        "equipment_id": job["equipment_id"],
        "trigger_type": job["trigger_type"],
        "conflict_policy": job.get("conflict_policy") or "skip",
        "tags": ", ".join(job.get("tags") or ()),
        "version": str(job["version"]),
    }
    for field in OPTIONAL_TEXT_FIELDS:
        values[field] = job.get(field) or ""
    for field in NUMBER_FIELDS:
        values[field] = _number_text(job.get(field))
    for field in INSTANT_FIELDS:
        values[field] = _local_text(job.get(field))
    for field in BOOL_FIELDS:
        values[field] = bool(job.get(field))
    parameters = dict(job.get("parameters") or {})
    for name in PARAMETER_FIELDS.get(job["schedule_type"], ()):
        if name not in parameters:
            continue
        value = parameters.pop(name)
        if name == "channels" and isinstance(value, list):
            values["parameters.channels"] = ", ".join(str(c) for c in value)
        elif name == "parameters" or not isinstance(value, str | int | float):
            values[f"parameters.{name}"] = json.dumps(value)
        else:
            values[f"parameters.{name}"] = _number_text(value)
    values[EXTRA] = json.dumps(parameters) if parameters else ""
    return values


# -- the form's values as the JSON a client would send ---------------------------------------


def _number(text: str) -> Any:
    """A number typed in a field as JSON reads it (1 an integer, 1.5 a float, 1e400 the
    Decimal the API names as out of range); anything else stays text, refused as the API
    refuses text where a number belongs."""
    text = text.strip()
    return decode_json(text) if _JSON_NUMBER.match(text) else text


def _instant(text: str) -> str:
    text = text.strip()
    return f"{text}:00" if _NO_SECONDS.match(text) else text


def _json_object(field: str, text: str, errors: list[FieldError]) -> dict[str, Any] | None:
    if not text.strip():
        return None
    try:
        value = decode_json(text)
    except Exception as exc:  # msgspec.DecodeError, or a number no float holds
        errors.append(FieldError(field=field, value=text, reason=f"is not valid JSON ({exc})"))
        return None
    if not isinstance(value, dict):
        errors.append(
            FieldError(field=field, value=text, reason='must be a JSON object, e.g. {"a": 1}')
        )
        return None
    return value


def _parameters(values: Mapping[str, Any], errors: list[FieldError]) -> dict[str, Any]:
    kind = str(values.get("schedule_type") or "")
    parameters = _json_object(EXTRA, str(values.get(EXTRA) or ""), errors) or {}
    for name in PARAMETER_FIELDS.get(kind, ()):
        text = str(values.get(f"parameters.{name}") or "").strip()
        if not text:
            continue
        if name == "parameters":
            inner = _json_object("parameters.parameters", text, errors)
            if inner is not None:
                parameters[name] = inner
        elif name == "channels":
            parameters[name] = [_number(c) for c in re.split(r"[,\s]+", text) if c]
        elif name in NUMBER_PARAMETERS:
            parameters[name] = _number(text)
        else:
            parameters[name] = text
    return parameters


def body_from_values(values: Mapping[str, Any], *, update: bool) -> dict[str, Any]:
    """The JSON body a client would send for these values: a blank field is absent (on an
    edit, cleared where it may be), the trigger fields other than the chosen trigger's are
    left out (cleared, on an edit). Raises InvalidRequest for a JSON field that is not JSON."""
    errors: list[FieldError] = []
    body: dict[str, Any] = {}

    def text(field: str) -> str:
        return str(values.get(field) or "").strip()

    def blank(field: str) -> None:
        if update and field not in NOT_NULLABLE:
            body[field] = None

    for field in TEXT_FIELDS:
        body[field] = str(values.get(field) or "")
    body["equipment_id"] = text("equipment_id")
    for field in CHOICE_FIELDS:
        if text(field):
            body[field] = text(field)
    trigger = text("trigger_type")
    used = TRIGGER_FIELDS.get(trigger, frozenset())
    for field in (*OPTIONAL_TEXT_FIELDS, *NUMBER_FIELDS, *INSTANT_FIELDS):
        if field in ALL_TRIGGER_FIELDS and field not in used:
            blank(field)
            continue
        if not text(field):
            blank(field)
        elif field in NUMBER_FIELDS:
            body[field] = _number(text(field))
        elif field in INSTANT_FIELDS:
            body[field] = _instant(text(field))
        else:
            body[field] = text(field)
    for field in BOOL_FIELDS:
        body[field] = bool(values.get(field))
    body["tags"] = [t.strip() for t in str(values.get("tags") or "").split(",") if t.strip()]
    body["parameters"] = _parameters(values, errors)
    if errors:
        raise InvalidRequest(errors)
    return body


def request_from_values(values: Mapping[str, Any]) -> JobRequest:
    return convert_body(body_from_values(values, update=False), JobRequest)


def version_of(values: Mapping[str, Any]) -> int | None:
    text = str(values.get("version") or "").strip()
    if not text:
        return None
    version = whole_number(text)
    if version is None:
        raise InvalidRequest.one("version", text[:40], "must be the job's version, a whole number")
    return version


# -- errors beside their fields ----------------------------------------------------------------


def place_errors(
    problems: tuple[FieldError, ...], shown: list[str]
) -> tuple[dict[str, list[FieldError]], list[FieldError]]:
    """Each error under the field of the form that holds it (``tags[2]`` under tags,
    ``parameters.parameters.value`` under the command's parameters, a parameter without a
    field of its own under "more parameters"); the rest for the alert above the form."""
    placed: dict[str, list[FieldError]] = {}
    loose: list[FieldError] = []
    for problem in problems:
        slot = _slot(problem.field, shown)
        if slot is None:
            loose.append(problem)
        else:
            placed.setdefault(slot, []).append(problem)
    return placed, loose


def _slot(field: str, shown: list[str]) -> str | None:
    name = _INDEX.sub("", field)
    while name:
        if name in shown:
            return name
        if "." not in name:
            break
        name = name.rsplit(".", 1)[0]
    if field.startswith("parameters") and EXTRA in shown:
        return EXTRA
    return None


def shown(value: Any) -> str:
    """A refused value as the user typed it: 0 not 0.0, text without quotes."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str):
        return value
    return json.dumps(value, default=str)
