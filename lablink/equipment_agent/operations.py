"""The guide's five job types as blocking operations on one instrument.

``run_operation`` is what an instrument's worker thread runs for an execution, whether the job
came from the in-process executor or over NATS to an agent: apply the job's profile,
then measure, command, capture state, test or acquire. Results are JSON-ready dicts; anything
that goes wrong is an ``EquipmentError``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lablink.equipment_agent.acquisition import (
    DEFAULT_MAX_SAMPLES_PER_CHANNEL,
    CaptureLimits,
    acquire,
)
from lablink.instruments.checks import check_job
from lablink.instruments.context import Job, RunContext
from lablink.instruments.errors import (
    CommunicationError,
    EquipmentTestFailed,
    InstrumentError,
    InvalidParameter,
    ProfileError,
)
from lablink.instruments.instrument import Instrument
from lablink.instruments.scpi import Setting


@dataclass(frozen=True, kw_only=True)
class OperationOptions:
    data_dir: Path
    max_samples_per_channel: int = DEFAULT_MAX_SAMPLES_PER_CHANNEL
    limits: CaptureLimits = field(default_factory=CaptureLimits)
    # Provenance of captures: the agent running them and the instrument's VISA resource.
    agent_id: str = ""
    resource: str = ""


Operation = Callable[
    [Instrument, Job, RunContext, OperationOptions, "dict[str, Any] | None"], dict[str, Any]
]
# (passed, details, instrument code to report when it did not pass)
TestOutcome = tuple[bool, dict[str, Any], int | None]


def run_operation(
    inst: Instrument, job: Job, ctx: RunContext, options: OperationOptions
) -> dict[str, Any]:
    operation = OPERATIONS.get(job.schedule_type)
    if operation is None:
        raise InvalidParameter(
            inst.equipment_id,
            "schedule_type",
            job.schedule_type,
            f"is not one of {', '.join(OPERATIONS)}",
        )
    # A job the table alone can refuse changes nothing on the instrument, its profile
    # included (the job service ran the same checks when it was saved, if it knew the kind).
    check_job(inst.model, inst.equipment_id, job.schedule_type, job.parameters)
    # The instrument's own times, taken on its worker right around its I/O (the profile's
    # included): what the record shows as instrument_started_at and instrument_ended_at.
    ctx.started_at = ctx.now()
    try:
        profile = apply_profile(inst, job)
        result = operation(inst, job, ctx, options, profile)
    finally:
        ctx.ended_at = ctx.now()
    if profile is not None:
        result["profile"] = profile
    return result


def apply_profile(inst: Instrument, job: Job) -> dict[str, Any] | None:
    """Apply and read back the job's profile before the operation; a refusal fails the job."""
    if job.profile_id is None:
        return None
    pid, eid = job.profile_id, inst.equipment_id
    if job.profile_settings is None:
        return {"id": pid, "applied": False, "reason": "no profile settings were provided"}
    settable = {s.name: s for s in inst.model.settings if s.writable}
    # name as the profile wrote it -> (the table's setting, the value in its terms)
    checked: dict[str, tuple[Setting, Any]] = {}
    aliases: dict[str, str] = {}
    # Every value is checked before any is sent, so a refused profile changes nothing. A name
    # of the original LabLink's profiles is set through the setting it stands for.
    for name, value in job.profile_settings.items():
        resolved = inst.model.resolve(name, value)
        if resolved is None or resolved[0].name not in settable:
            raise ProfileError(
                eid,
                f"profile {pid!r} sets {name!r}, which {eid} ({inst.kind}) does not have; "
                f"settable: {', '.join(settable)}",
                details={"profile_id": pid, "setting": name, "settable": list(settable)},
            )
        setting, meant = resolved
        if setting.name != name:
            aliases[name] = setting.name
        try:
            checked[name] = (
                setting,
                setting.validate(eid, meant, parameter=name, context="profile"),
            )
        except InvalidParameter as exc:
            raise ProfileError(
                eid,
                f"profile {pid!r} could not be applied: {exc}",
                details={**exc.details, "profile_id": pid},
            ) from exc
    applied: dict[str, Any] = {}
    for name, (setting, value) in checked.items():
        try:
            applied[name] = inst.apply(setting.name, value, parameter=name)
        except InstrumentError as exc:
            raise ProfileError(
                eid,
                f"profile {pid!r} could not be applied: {exc}",
                code=exc.code,
                details={**exc.details, "profile_id": pid, "applied_before_error": applied},
            ) from exc
        # Compared with the value as it went over the wire (the driver's resolution, a load's
        # CC sent as CURR), not as the profile wrote it.
        sent = setting.decode(setting.encode(value))
        if not _same(applied[name], sent):
            # Accepted without an error but not taken as sent: the instrument ignored or
            # coerced it, and the operation would run on settings nobody asked for.
            raise ProfileError(
                eid,
                f"profile {pid!r} could not be applied: {name} read back as "
                f"{applied[name]!r} after setting {sent!r}",
                details={
                    "profile_id": pid,
                    "setting": name,
                    "sent": sent,
                    "read_back": applied[name],
                    "applied_before_error": {k: v for k, v in applied.items() if k != name},
                },
            )
    result: dict[str, Any] = {"id": pid, "applied": True, "settings": applied}
    if aliases:
        result["aliases"] = aliases  # the names written -> the settings they set
    return result


def _same(read_back: Any, sent: Any) -> bool:
    if isinstance(sent, bool) or isinstance(read_back, bool):
        return bool(read_back) == bool(sent)
    if isinstance(sent, int | float) and isinstance(read_back, int | float):
        return math.isclose(float(read_back), float(sent), rel_tol=1e-4, abs_tol=1e-9)
    return str(read_back).strip().upper() == str(sent).strip().upper()


def measurement(
    inst: Instrument,
    job: Job,
    ctx: RunContext,
    options: OperationOptions,
    profile: dict[str, Any] | None,
) -> dict[str, Any]:
    params = job.parameters
    inst.expect_only("measurement", params, "command", "parameters")
    command = params.get("command") or f"get_{inst.model.primary}"
    if not isinstance(command, str) or not command.startswith("get_"):
        raise InvalidParameter(
            inst.equipment_id,
            "command",
            command,
            "is not a reading (get_...); use a command job to change the instrument",
            context="measurement",
        )
    return {
        "equipment_id": inst.equipment_id,
        **inst.run_command(command, _arguments(inst, params, "measurement"), ctx),
    }


def command(
    inst: Instrument,
    job: Job,
    ctx: RunContext,
    options: OperationOptions,
    profile: dict[str, Any] | None,
) -> dict[str, Any]:
    params = job.parameters
    inst.expect_only("command", params, "command", "parameters")
    name = params.get("command")
    if not isinstance(name, str) or not name:
        raise InvalidParameter(
            inst.equipment_id,
            "command",
            name,
            f"is required (valid: {', '.join(inst.commands)})",
            context="command",
        )
    return {
        "equipment_id": inst.equipment_id,
        **inst.run_command(name, _arguments(inst, params, "command"), ctx),
    }


def state_capture(
    inst: Instrument,
    job: Job,
    ctx: RunContext,
    options: OperationOptions,
    profile: dict[str, Any] | None,
) -> dict[str, Any]:
    inst.expect_only("state_capture", job.parameters)
    identity = inst.identity()
    settings: dict[str, Any] = {}
    for s in inst.model.settings:
        ctx.check()
        settings[s.name] = {"value": inst.read(s.name), "unit": s.unit, "writable": s.writable}
    measurements: dict[str, Any] = {}
    for m in inst.model.measurements:
        for channel in m.channels or (None,):
            ctx.check()
            reading = inst.measure(m.name, channel)
            key = m.name if channel is None else f"{m.name}_ch{channel}"
            measurements[key] = {"value": reading.value, "unit": reading.unit}
    return {
        "equipment_id": inst.equipment_id,
        "kind": inst.kind,
        "identity": identity.as_dict(),
        "settings": settings,
        "measurements": measurements,
    }


def _test_connection(inst: Instrument) -> TestOutcome:
    try:
        identity = inst.identity()
    except CommunicationError as exc:
        return False, {"reason": str(exc)}, None
    return bool(identity.manufacturer and identity.model), identity.as_dict(), None


def _test_self_test(inst: Instrument) -> TestOutcome:
    code = inst.self_test()
    return code == 0, {"code": code}, code or None


def _test_error_queue(inst: Instrument) -> TestOutcome:
    errors = inst.read_errors()
    listed = [{"code": c, "message": m} for c, m in errors]
    return not errors, {"errors": listed}, errors[0][0] if errors else None


def _test_measurement(inst: Instrument) -> TestOutcome:
    reading = inst.measure(inst.model.primary)
    # SCPI reports an overload or invalid reading as 9.9E37.
    ok = math.isfinite(reading.value) and abs(reading.value) < 9.9e37
    return ok, reading.as_dict(), None


EQUIPMENT_TESTS: dict[str, Callable[[Instrument], TestOutcome]] = {
    "connection": _test_connection,  # *IDN? answers with a manufacturer and model
    "self_test": _test_self_test,  # *TST? returns 0
    "error_queue": _test_error_queue,  # SYST:ERR? holds no errors (drains them)
    "measurement": _test_measurement,  # the primary reading is a finite number
}


def equipment_test(
    inst: Instrument,
    job: Job,
    ctx: RunContext,
    options: OperationOptions,
    profile: dict[str, Any] | None,
) -> dict[str, Any]:
    params, eid = job.parameters, inst.equipment_id
    inst.expect_only("equipment_test", params, "test_name")
    name = params.get("test_name")
    test = EQUIPMENT_TESTS.get(name) if isinstance(name, str) else None
    if test is None:
        valid = sorted(EQUIPMENT_TESTS)
        raise InvalidParameter(
            eid,
            "test_name",
            name,
            f"is not a known test; valid tests: {', '.join(valid)}",
            limit=valid,
            context="equipment_test",
        )
    passed, details, code = test(inst)
    result = {"equipment_id": eid, "test_name": name, "passed": passed, "details": details}
    if not passed:
        raise EquipmentTestFailed(
            eid,
            f"{eid} did not pass the {name} test: {details}",
            code=code,
            details={"test_name": name, **details},
            result=result,
        )
    return result


def acquisition(
    inst: Instrument,
    job: Job,
    ctx: RunContext,
    options: OperationOptions,
    profile: dict[str, Any] | None,
) -> dict[str, Any]:
    return acquire(
        inst,
        job,
        ctx,
        data_dir=options.data_dir,
        max_samples_per_channel=options.max_samples_per_channel,
        profile=profile,
        limits=options.limits,
        agent_id=options.agent_id,
        resource=options.resource,
    )


OPERATIONS: dict[str, Operation] = {
    "measurement": measurement,
    "command": command,
    "state_capture": state_capture,
    "equipment_test": equipment_test,
    "acquisition": acquisition,
}


def _arguments(inst: Instrument, params: Mapping[str, Any], context: str) -> Mapping[str, Any]:
    args = params.get("parameters", {})
    if not isinstance(args, Mapping):
        raise InvalidParameter(
            inst.equipment_id, "parameters", args, "is not an object", context=context
        )
    return args
