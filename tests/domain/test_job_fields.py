"""A job's fields are defined once, by JobSpec: the request, the update body, the update
command's changes and the jobs view's columns follow it. A field added to one and not the
others fails here."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Union, get_args

import msgspec
from msgspec import NODEFAULT, UnsetType

from lablink.api.schemas import JobUpdate
from lablink.domain.job import CreateJob, JobState, UpdateJob, decide, evolve
from lablink.domain.requests import FIELD_ORDER, JobChanges, JobRequest, parse_job_request
from lablink.events import JobCreated, JobSpec, JobUpdated
from lablink.projections.jobs import COLUMNS, SPEC_COLUMNS

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
# Where the request differs from the spec, and why: the time zone and the timeout have
# defaults the server fills in, and JSON has no tuples.
REQUEST_TYPES: dict[str, Any] = {
    "timezone": str | None,
    "timeout_seconds": float | None,
    "tags": list[str],
}
REQUEST_ONLY = {"enabled": bool}


def fields(struct: type[Any]) -> dict[str, msgspec.structs.FieldInfo]:
    return {field.name: field for field in msgspec.structs.fields(struct)}


def default(field: msgspec.structs.FieldInfo) -> Any:
    if field.default is not NODEFAULT:
        return field.default
    if field.default_factory is not NODEFAULT:
        return field.default_factory()
    return NODEFAULT


def test_the_request_has_every_field_of_the_spec_and_enabled() -> None:
    spec, request = fields(JobSpec), fields(JobRequest)
    assert set(request) == set(spec) | set(REQUEST_ONLY)
    for name, field in spec.items():
        assert request[name].type == REQUEST_TYPES.get(name, field.type), name
        if name not in REQUEST_TYPES:
            assert default(request[name]) == default(field), name
    assert request["enabled"].type is bool


def test_the_update_shapes_are_the_request_with_every_field_optional() -> None:
    request = fields(JobRequest)
    update = fields(JobUpdate)
    assert tuple(update) == ("version", "reason", *FIELD_ORDER)
    assert set(FIELD_ORDER) == set(request)
    assert tuple(fields(JobChanges)) == FIELD_ORDER
    for changes in (update, fields(JobChanges)):
        for name, field in request.items():
            given: Any = Union[field.type, UnsetType]  # noqa: UP007
            assert set(get_args(given)) == set(get_args(changes[name].type)), name
            assert changes[name].default is msgspec.UNSET


def test_the_jobs_view_has_a_column_for_every_field_of_the_spec() -> None:
    assert set(SPEC_COLUMNS) == set(JobSpec.__struct_fields__)
    assert COLUMNS[1 : 1 + len(SPEC_COLUMNS)] == SPEC_COLUMNS


# A job with every field away from its default (and its trigger's fields given).
EVERY_FIELD: dict[str, Any] = {
    "name": "Every field",
    "description": "set",
    "schedule_type": "measurement",
    "equipment_id": "power_supply_1",
    "trigger_type": "weekly",
    "day_of_week": 2,
    "time_of_day": "07:30:00",
    "parameters": {"command": "get_voltage"},
    "enabled": False,
    "max_instances": 3,
    "misfire_grace_time": 60.0,
    "coalesce": False,
    "start_date": "2026-04-01T00:00:00+00:00",
    "end_date": "2027-04-01T00:00:00+00:00",
    "max_executions": 9,
    "tags": ["a", "b"],
    "profile_id": "psu_safe",
    "on_failure_alarm": True,
    "conflict_policy": "queue",
    "timezone": "Europe/Berlin",
    "timeout_seconds": 42.0,
    "alarm_after_missed": 4,
}


def created() -> tuple[JobState, JobSpec]:
    command = CreateJob(
        job_id="job_1",
        request=parse_job_request(EVERY_FIELD),
        default_timezone="UTC",
        created_by="alice",
    )
    [event] = decide(JobState(job_id="job_1"), command, NOW)
    assert isinstance(event, JobCreated)
    return evolve(JobState(job_id="job_1"), event), event.spec


def test_the_spec_takes_every_field_of_the_request() -> None:
    _, spec = created()
    for name in JobSpec.__struct_fields__:
        sent = EVERY_FIELD.get(name)  # None: another trigger's field
        kept = getattr(spec, name)
        if isinstance(kept, datetime):
            kept = kept.isoformat()
        assert kept == (tuple(sent or ()) if name == "tags" else sent), name


def test_an_update_changes_the_field_given_and_keeps_every_other() -> None:
    state, spec = created()
    for name, value in (("name", "Renamed"), ("description", "changed"), ("max_instances", 5)):
        update = UpdateJob(job_id="job_1", changes={name: value}, default_timezone="UTC")
        [event] = decide(state, update, NOW)
        assert isinstance(event, JobUpdated)
        assert event.changed_fields == (name,)
        assert event.spec == msgspec.structs.replace(spec, **{name: value})
