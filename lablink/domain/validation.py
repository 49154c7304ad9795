"""Meaning checks that turn a JobRequest into a normalised JobSpec, or refuse it whole.

Every problem found is reported (not only the first), each naming the field, the value and
the reason. Pure: the instant "now" and the default time zone are passed in.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from lablink.domain import triggers
from lablink.domain.requests import JobRequest
from lablink.domain.schedule import Schedule
from lablink.errors import FieldError, InvalidRequest
from lablink.events.jobs import JobSpec
from lablink.instruments.scpi import finite_number

# Identifiers that become NATS subject tokens must not contain '.', '*', '>' or spaces.
ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
ID_RULE = "must match ^[A-Za-z0-9_-]{1,64}$ (it becomes a NATS subject token)"

INTERVAL_FIELDS = ("interval_seconds", "interval_minutes", "interval_hours", "interval_days")
TRIGGER_FIELDS: dict[str, frozenset[str]] = {
    "cron": frozenset({"cron_expression"}),
    "interval": frozenset(INTERVAL_FIELDS),
    "daily": frozenset({"time_of_day"}),
    "weekly": frozenset({"day_of_week", "time_of_day"}),
    "monthly": frozenset({"day_of_month", "time_of_day"}),
    "date": frozenset({"run_date"}),
}
ALL_TRIGGER_FIELDS = frozenset().union(*TRIGGER_FIELDS.values())

MAX_INSTANCES = 100
MAX_EXECUTIONS = 1_000_000_000
MAX_INTERVAL_SECONDS = 366 * 86400.0
# Far enough for any lab; near enough that time-zone arithmetic never overflows.
MIN_YEAR, MAX_YEAR = 1970, 2200
MAX_GRACE_SECONDS = 7 * 86400.0
MAX_TIMEOUT_SECONDS = 7 * 86400.0
DEFAULT_TIMEOUTS = {
    "measurement": 60.0,
    "state_capture": 120.0,
    "command": 120.0,
    "equipment_test": 300.0,
}
_TIME_OF_DAY = re.compile(r"^(\d{2}):(\d{2})(?::(\d{2}))?$")


def default_timeout(schedule_type: str, parameters: dict[str, Any]) -> float:
    """Acquisition: its duration plus a margin (10 %, at least 60 s); others: per type."""
    if schedule_type == "acquisition":
        duration = parameters.get("duration")
        if finite_number(duration) and 0 < duration <= MAX_ACQUISITION_SECONDS:
            return float(duration) + max(60.0, 0.1 * float(duration))
        return 120.0
    return DEFAULT_TIMEOUTS[schedule_type]


def zone_problem(name: str) -> str | None:
    if not name or len(name) > 64 or name.startswith("/") or ".." in name or "\0" in name:
        return "not an IANA time zone name"
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return "unknown IANA time zone"
    return None


def resolve_instant(value: datetime, zone: ZoneInfo) -> datetime:
    """Naive values are wall-clock times in the job's zone; aware ones are absolute."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=zone)
    return value.astimezone(UTC)


# Bidirectional overrides and isolates make a name display differently from what it is.
_BIDI = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def text_problem(value: str, *, multiline: bool = False) -> str | None:
    allowed = "\n\t\r" if multiline else ""
    for char in value:
        if (unicodedata.category(char) == "Cc" and char not in allowed) or char in _BIDI:
            return f"contains the control character U+{ord(char):04X}"
    return None


def parse_time_of_day(value: str) -> time | None:
    match = _TIME_OF_DAY.match(value)
    if not match:
        return None
    hour, minute, second = int(match[1]), int(match[2]), int(match[3] or 0)
    if hour > 23 or minute > 59 or second > 59:
        return None
    return time(hour, minute, second)


# What one job may hold (docs/api.md, "Limits"): a job is read whole on every list page and
# written whole into every update's event, so none of it may grow without bound.
MAX_NAME = 200  # characters
MAX_DESCRIPTION_BYTES = 4096  # UTF-8
MAX_TAGS = 32
MAX_TAG = 64  # characters
MAX_PARAMETERS_BYTES = 65536  # as JSON (UTF-8)


class _Collector:
    def __init__(self) -> None:
        self.errors: list[FieldError] = []

    def add(self, field: str, value: Any, reason: str) -> None:
        # Report a date as the text the client sent, not as a Python object.
        shown = value.isoformat() if isinstance(value, datetime | time) else value
        self.errors.append(FieldError(field=field, value=shown, reason=reason))


def _check_sizes(errors: _Collector, request: JobRequest) -> None:
    """The limits on what a job holds, each refusal naming the limit."""
    name = request.name.strip()
    if not name or len(request.name) > MAX_NAME:
        shown = request.name if len(request.name) <= MAX_NAME else request.name[:40] + "…"
        errors.add("name", shown, f"must be 1 to {MAX_NAME} characters (got {len(request.name)})")
    size = len(request.description.encode())
    if size > MAX_DESCRIPTION_BYTES:
        errors.add(
            "description",
            request.description[:40] + "…",
            f"must be at most {MAX_DESCRIPTION_BYTES} bytes (4 KiB) as UTF-8 (got {size})",
        )
    if len(request.tags) > MAX_TAGS:
        errors.add("tags", f"{len(request.tags)} tags", f"at most {MAX_TAGS} tags")
    for index, tag in enumerate(request.tags[:MAX_TAGS]):
        if not tag or len(tag) > MAX_TAG:
            shown = tag if len(tag) <= MAX_TAG else tag[:40] + "…"
            errors.add(f"tags[{index}]", shown, f"must be 1 to {MAX_TAG} characters")
    size = len(msgspec.json.encode(request.parameters))
    if size > MAX_PARAMETERS_BYTES:
        errors.add(
            "parameters",
            f"{size} bytes of JSON",
            f"must be at most {MAX_PARAMETERS_BYTES} bytes (64 KiB) encoded as JSON",
        )


def _check_number(
    errors: _Collector, field: str, value: float | None, low: float, high: float
) -> None:
    if value is None:
        return
    if not finite_number(value) or value < low or value > high:
        errors.add(field, value, f"must be between {low:g} and {high:g}")


# What any instrument LabLink drives can do, checked when a job is saved: the fastest is an
# oscilloscope at 1 GS/s with 4 channels, and an agent runs one acquisition for at most a
# week. Longer or faster captures are decimated on the instrument, so what is stored stays
# bounded (100,000 samples per channel by default) whatever the job asks.
MAX_ACQUISITION_SECONDS = 7 * 86_400.0
MAX_SAMPLE_RATE = 1e9
MAX_CHANNELS = 4
ACQUISITION_FORMATS = ("csv",)


def _check_acquisition_size(errors: _Collector, params: dict[str, Any], duration: float) -> None:
    if duration > MAX_ACQUISITION_SECONDS:
        errors.add(
            "parameters.duration",
            duration,
            f"longer than an acquisition may run ({MAX_ACQUISITION_SECONDS:g} s, 7 days)",
        )
    rate = params.get("sample_rate")
    if rate is not None:
        if not finite_number(rate):
            errors.add("parameters.sample_rate", rate, "must be a number of samples per second")
        elif rate <= 0 or rate > MAX_SAMPLE_RATE:
            errors.add(
                "parameters.sample_rate",
                rate,
                f"must be above 0 and at most {MAX_SAMPLE_RATE:g} samples/s, the fastest "
                "instrument LabLink drives",
            )
        elif rate * duration < 1:
            errors.add(
                "parameters.sample_rate",
                rate,
                f"takes no sample in {duration:g} s: sample_rate x duration must be at least 1",
            )
    channels = params.get("channels")
    if channels is not None and (
        not isinstance(channels, list)
        or not channels
        or len(channels) > MAX_CHANNELS
        or len(set(map(repr, channels))) != len(channels)
        or not all(
            isinstance(c, int) and not isinstance(c, bool) and 1 <= c <= MAX_CHANNELS
            for c in channels
        )
    ):
        errors.add(
            "parameters.channels",
            channels,
            f"must list 1 to {MAX_CHANNELS} distinct channel numbers from 1 to {MAX_CHANNELS}",
        )
    fmt = params.get("format")
    if fmt is not None and fmt not in ACQUISITION_FORMATS:
        errors.add("parameters.format", fmt, f"must be one of {', '.join(ACQUISITION_FORMATS)}")


def _check_parameters(errors: _Collector, request: JobRequest) -> None:
    params = request.parameters
    kind = request.schedule_type
    if kind == "acquisition":
        duration = params.get("duration")
        if not finite_number(duration) or duration <= 0:
            errors.add(
                "parameters.duration", duration, "an acquisition needs a duration in seconds > 0"
            )
        else:
            _check_acquisition_size(errors, params, float(duration))
    if kind in ("measurement", "command"):
        command = params.get("command")
        if kind == "command" and not isinstance(command, str):
            errors.add("parameters.command", command, "a command job needs a command name")
        elif command is not None and not isinstance(command, str):
            errors.add("parameters.command", command, "must be a string")
        inner = params.get("parameters")
        if inner is not None and not isinstance(inner, dict):
            errors.add("parameters.parameters", inner, "must be an object")
    if kind == "equipment_test":
        test_name = params.get("test_name")
        if test_name is not None and not isinstance(test_name, str):
            errors.add("parameters.test_name", test_name, "must be a string")


def _check_trigger(errors: _Collector, request: JobRequest) -> time | None:
    trigger = request.trigger_type
    allowed = TRIGGER_FIELDS[trigger]
    for field in sorted(ALL_TRIGGER_FIELDS - allowed):
        value = getattr(request, field)
        if value is not None:
            errors.add(field, value, f"does not apply to trigger_type {trigger!r}")
    for field in sorted(allowed - {*INTERVAL_FIELDS}):
        if getattr(request, field) is None:
            errors.add(field, None, f"required for trigger_type {trigger!r}")

    if trigger == "cron" and request.cron_expression is not None:
        problem = triggers.cron_problem(request.cron_expression)
        if problem:
            errors.add("cron_expression", request.cron_expression, problem)
    if trigger == "interval":
        given = [f for f in INTERVAL_FIELDS if getattr(request, f) is not None]
        if not given:
            errors.add(
                "interval_seconds",
                None,
                "an interval job needs one of " + ", ".join(INTERVAL_FIELDS),
            )
        unit = {
            "interval_seconds": 1,
            "interval_minutes": 60,
            "interval_hours": 3600,
            "interval_days": 86400,
        }
        bad = False
        for field in given:
            value = getattr(request, field)
            if not finite_number(value) or not 0 <= value * unit[field] <= MAX_INTERVAL_SECONDS:
                errors.add(field, value, "must be a number from 0 up to 366 days")
                bad = True
        total = sum(getattr(request, f) * unit[f] for f in given)
        if given and not bad and total < 1:
            errors.add(
                given[0],
                getattr(request, given[0]),
                f"the interval sums to {total:g} s; it must be >= 1 s",
            )
        elif given and not bad and total > MAX_INTERVAL_SECONDS:
            errors.add(
                given[0], getattr(request, given[0]), "the interval must be at most 366 days"
            )
    if request.day_of_week is not None and not 0 <= request.day_of_week <= 6:
        errors.add("day_of_week", request.day_of_week, "must be 0 (Monday) to 6 (Sunday)")
    if request.day_of_month is not None and not (
        1 <= request.day_of_month <= 31 or request.day_of_month == -1
    ):
        errors.add("day_of_month", request.day_of_month, "must be 1 to 31, or -1 for the last day")
    parsed_time = None
    if request.time_of_day is not None:
        parsed_time = parse_time_of_day(request.time_of_day)
        if parsed_time is None:
            errors.add(
                "time_of_day",
                request.time_of_day,
                "must be a wall-clock time HH:MM:SS (00:00:00 to 23:59:59)",
            )
    return parsed_time


def normalise(
    request: JobRequest, *, now: datetime, default_timezone: str, anchor: datetime | None = None
) -> tuple[JobSpec, datetime]:
    """Validate ``request`` and return the spec to store with its interval anchor.

    ``anchor`` is kept from the job's creation when an update does not set start_date.
    """
    errors = _Collector()
    _check_sizes(errors, request)
    name = request.name.strip()
    if len(request.name) <= MAX_NAME and (problem := text_problem(request.name)):
        errors.add("name", request.name, problem)
    if problem := text_problem(request.description[:MAX_DESCRIPTION_BYTES], multiline=True):
        errors.add("description", request.description[:40], problem)
    if not ID_PATTERN.match(request.equipment_id):
        errors.add("equipment_id", request.equipment_id, ID_RULE)
    if request.profile_id is not None and not ID_PATTERN.match(request.profile_id):
        errors.add("profile_id", request.profile_id, ID_RULE)
    for index, tag in enumerate(request.tags[:MAX_TAGS]):
        if tag and len(tag) <= MAX_TAG and (problem := text_problem(tag)):
            errors.add(f"tags[{index}]", tag, problem)

    zone_name = request.timezone if request.timezone is not None else default_timezone
    zone: ZoneInfo | None = None
    problem = zone_problem(zone_name)
    if problem:
        errors.add("timezone", zone_name, problem)
    else:
        zone = ZoneInfo(zone_name)

    _check_number(errors, "max_instances", request.max_instances, 1, MAX_INSTANCES)
    _check_number(errors, "misfire_grace_time", request.misfire_grace_time, 1, MAX_GRACE_SECONDS)
    _check_number(errors, "timeout_seconds", request.timeout_seconds, 0.001, MAX_TIMEOUT_SECONDS)
    if request.max_executions is not None and not 1 <= request.max_executions <= MAX_EXECUTIONS:
        errors.add(
            "max_executions", request.max_executions, f"must be between 1 and {MAX_EXECUTIONS}"
        )
    if request.alarm_after_missed is not None and not 1 <= request.alarm_after_missed <= 1000:
        errors.add("alarm_after_missed", request.alarm_after_missed, "must be between 1 and 1000")
    _check_parameters(errors, request)
    parsed_time = _check_trigger(errors, request)

    instants: dict[str, datetime] = {}
    for field in ("run_date", "start_date", "end_date"):
        value = getattr(request, field)
        if value is None:
            continue
        if not MIN_YEAR <= value.year <= MAX_YEAR:
            errors.add(field, value, f"must be between the years {MIN_YEAR} and {MAX_YEAR}")
        elif zone is not None:
            instants[field] = resolve_instant(value, zone)
    run_date = instants.get("run_date")
    start_date = instants.get("start_date")
    end_date = instants.get("end_date")
    if start_date and end_date and end_date < start_date:
        errors.add("end_date", request.end_date, f"is before start_date {request.start_date}")
    if errors.errors:
        raise InvalidRequest(errors.errors)
    assert zone is not None

    grace = timedelta(seconds=request.misfire_grace_time)
    if end_date is not None and end_date < now:
        errors.add(
            "end_date",
            request.end_date,
            f"is in the past (now {now.isoformat()}): the schedule would never fire",
        )
    if run_date is not None and run_date < now - grace:
        errors.add(
            "run_date",
            request.run_date,
            f"is in the past (now {now.isoformat()}), beyond the misfire grace time",
        )
    if errors.errors:
        raise InvalidRequest(errors.errors)

    # Every field of the spec as the request gave it, but for those normalised here.
    normalised: dict[str, Any] = {
        "name": name,
        "timezone": zone_name,
        "timeout_seconds": (
            request.timeout_seconds
            if request.timeout_seconds is not None
            else default_timeout(request.schedule_type, request.parameters)
        ),
        "cron_expression": request.cron_expression.strip() if request.cron_expression else None,
        "run_date": run_date,
        "time_of_day": parsed_time.isoformat() if parsed_time else None,
        "misfire_grace_time": float(request.misfire_grace_time),
        "start_date": start_date,
        "end_date": end_date,
        "tags": tuple(request.tags),
    }
    spec = JobSpec(
        **{
            field: normalised[field] if field in normalised else getattr(request, field)
            for field in JobSpec.__struct_fields__
        }
    )
    if start_date is not None:
        anchor = start_date
    elif anchor is None:
        anchor = now
    schedule = Schedule.from_spec(spec, anchor)
    # A schedule whose every fire lies before now (minus the grace time) is refused.
    if triggers.next_fire(schedule, now - grace) is None:
        field = {"date": "run_date"}.get(
            spec.trigger_type, "end_date" if end_date else "cron_expression"
        )
        errors.add(field, getattr(request, field), "the schedule has no fire time in the future")
        raise InvalidRequest(errors.errors)
    return spec, anchor
