"""What a client may send to create or change a job: every field of the guide, nothing else.

Decoding forbids unknown fields and checks types; ``validation`` checks meaning. Both report
errors naming the field, the value and the reason.

A job's fields are defined once, by ``JobSpec`` (what events store). ``JobRequest`` is the
spec as a client writes it (time zone and timeout optional, ``enabled`` besides), written
out for the type checker and held to the spec by tests/domain/test_job_fields.py; the
update shapes (``JobChanges`` here, the API's ``JobUpdate``) are made from it, and the jobs
view's columns from the spec.
"""

from __future__ import annotations

import re
import sys
from datetime import datetime
from decimal import Decimal
from types import UnionType
from typing import Any, Union, get_args, get_origin

import msgspec
from msgspec import UNSET, UnsetType

from lablink.errors import FieldError, InvalidRequest
from lablink.events.jobs import ConflictPolicy, JobSpec, ScheduleType, TriggerType


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
# The guide's order of a job's fields (JobRequest lists its required ones first): the order
# of the update bodies' properties and of the jobs view's columns.
FIELD_ORDER: tuple[str, ...] = (
    "name",
    "description",
    *(f for f in JobRequest.__struct_fields__ if f not in ("name", "description")),
)


def optional_fields() -> list[tuple[str, Any, Any]]:
    """JobRequest's fields in the guide's order, each optional (``UNSET``: not given), for
    ``msgspec.defstruct``: ``T`` becomes ``T | UnsetType``, ``T | None`` becomes
    ``T | UnsetType | None``."""
    types = {field.name: field.type for field in msgspec.structs.fields(JobRequest)}
    made: list[tuple[str, Any, Any]] = []
    for name in FIELD_ORDER:
        kind = types[name]
        kinds = get_args(kind) if get_origin(kind) in (Union, UnionType) else (kind,)
        nullable = type(None) in kinds
        given = tuple(k for k in kinds if k is not type(None))
        made.append((name, Union[(*given, UnsetType, *((None,) if nullable else ()))], UNSET))
    return made


# The changes of an update, as the command carries them: every field optional, types as in
# JobRequest (so that a bad value is refused naming its field, as at creation).
JobChanges = msgspec.defstruct(
    "JobChanges", optional_fields(), kw_only=True, forbid_unknown_fields=True, module=__name__
)

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


# The largest number a body may carry anywhere: what a float holds. JSON allows any length,
# and Python would carry a longer integer along until a float conversion overflowed deep
# inside some check (a 500); each field's own limits then apply to what is left.
MAX_NUMBER = sys.float_info.max
_MAX_INTEGER = int(MAX_NUMBER)
_MAX_DECIMAL = Decimal(MAX_NUMBER)
# Numbers as Decimal: how a number JSON can write but no float holds (1e400) is read, so
# that the field holding it can be named.
_DECIMALS = msgspec.json.Decoder(float_hook=Decimal)
MAX_NUMBER_PROBLEMS = 10


def decode_json(body: bytes | str) -> Any:
    """JSON as Python values; raises msgspec.DecodeError when it is not JSON.

    msgspec refuses a number beyond a float's range with no useful path; such a number is
    read as a Decimal instead, for ``check_numbers`` to name."""
    try:
        return msgspec.json.decode(body)
    except msgspec.ValidationError:
        return _DECIMALS.decode(body)


def _describe_number(value: int | Decimal) -> str:
    """A short text for a number that may be too long to print (Python refuses to turn an
    integer of more than 4300 digits into text)."""
    if isinstance(value, int):
        digits = int(value.bit_length() * 0.30103) + 1
        return f"{'-' if value < 0 else ''}an integer of about {digits} digits"
    return f"{value:.6e}"


def number_problems(value: Any, field: str = "") -> list[FieldError]:
    """Every number in ``value`` (at any depth) that no check could compare safely, each
    naming its field (``parameters.parameters.value``, ``channels[2]``)."""
    problems: list[FieldError] = []

    def walk(item: Any, path: str) -> None:
        if len(problems) >= MAX_NUMBER_PROBLEMS:
            return
        if isinstance(item, dict):
            for key, child in item.items():
                walk(child, f"{path}.{key}" if path else str(key))
        elif isinstance(item, list | tuple):
            for index, child in enumerate(item):
                walk(child, f"{path}[{index}]")
        elif (isinstance(item, int) and not isinstance(item, bool)) or isinstance(item, Decimal):
            if isinstance(item, int):
                fits = -_MAX_INTEGER <= item <= _MAX_INTEGER
            else:
                fits = item.is_finite() and abs(item) <= _MAX_DECIMAL
            if not fits:
                problems.append(
                    FieldError(
                        field=path or "body",
                        value=_describe_number(item),
                        reason=f"is out of range: numbers must be within ±{MAX_NUMBER:.6e}",
                    )
                )

    walk(value, field)
    return problems


def check_numbers(value: Any) -> None:
    """Refuse (InvalidRequest, HTTP 422) a body holding a number no check can compare."""
    problems = number_problems(value)
    if problems:
        raise InvalidRequest(problems)


def parse_object(body: bytes | str | dict[str, Any]) -> dict[str, Any]:
    if isinstance(body, dict):
        raw = body
    else:
        try:
            raw = decode_json(body)
        except msgspec.DecodeError as exc:
            raise InvalidRequest.one("body", None, f"not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise InvalidRequest.one("body", raw, "expected a JSON object")
    check_numbers(raw)
    return raw


def parse_job_request(body: bytes | str | dict[str, Any]) -> JobRequest:
    raw = parse_object(body)
    try:
        return msgspec.convert(raw, JobRequest)
    except msgspec.ValidationError as exc:
        raise InvalidRequest([field_error_from_msgspec(exc, raw)]) from exc


def parse_job_changes(body: dict[str, Any]) -> dict[str, Any]:
    """An update's changes with JobRequest's types (datetimes from text), only those given."""
    raw = parse_object(body)
    try:
        changes = msgspec.convert(raw, JobChanges)
    except msgspec.ValidationError as exc:
        raise InvalidRequest([field_error_from_msgspec(exc, raw)]) from exc
    return {
        name: value
        for name in changes.__struct_fields__
        if (value := getattr(changes, name)) is not UNSET
    }


def request_of(spec: JobSpec, *, enabled: bool) -> JobRequest:
    """The request that gives ``spec`` back (the base an update's changes are laid on)."""
    fields = {name: getattr(spec, name) for name in spec.__struct_fields__}
    fields["tags"] = list(spec.tags)
    return JobRequest(**fields, enabled=enabled)
