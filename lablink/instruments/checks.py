"""What an agent refuses in a job's parameters, decided from the driver table alone.

The agent runs these checks before it sends anything to the instrument, and the job service
runs the same ones when a job is saved for an instrument whose kind is known, so a job that
would fail with ``invalid_parameter`` or ``unknown_command`` at 3 a.m. is refused at creation
instead (docs/api.md, "Parameters"). Only what needs the instrument itself (its record
length, its identity) is left for the run. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lablink.instruments.errors import InvalidParameter, UnknownCommand
from lablink.instruments.scpi import InstrumentModel, check_number

# Acquisitions (equipment_agent/acquisition.py): how long one may run, the point-by-point
# sampling rates (one query per sample: a few hundred per second at best) and the file formats.
MAX_DURATION_S = 7 * 86_400.0
POINT_RATE_LIMITS = (0.001, 1_000.0)
FORMATS = ("csv",)
# The diagnostics an equipment_test job may name (equipment_agent.operations.EQUIPMENT_TESTS).
EQUIPMENT_TEST_NAMES = ("connection", "error_queue", "measurement", "self_test")
# What each job type accepts in ``parameters`` (equipment_agent/operations.py).
ACCEPTED = {
    "measurement": ("command", "parameters"),
    "command": ("command", "parameters"),
    "state_capture": (),
    "equipment_test": ("test_name",),
    "acquisition": ("duration", "sample_rate", "channels", "format", "decimate"),
}


def command_names(model: InstrumentModel) -> tuple[str, ...]:
    """Every command a kind offers (``Instrument.commands``), sorted."""
    names = {f"get_{s.name}" for s in model.settings}
    names |= {f"set_{s.name}" for s in model.settings if s.writable}
    names |= {f"get_{m.name}" for m in model.measurements}
    if model.output is not None:
        names |= {"output_on", "output_off"}
    names.add("reset")
    names |= set(model.procedures)
    return tuple(sorted(names))


def expect_only(
    equipment_id: str, command: str, parameters: Mapping[str, Any], *allowed: str
) -> None:
    for key in parameters:
        if key not in allowed:
            valid = ", ".join(allowed) if allowed else "none"
            raise InvalidParameter(
                equipment_id,
                key,
                parameters[key],
                f"is not accepted (valid: {valid})",
                context=command,
            )


def check_command(model: InstrumentModel, equipment_id: str, name: str, parameters: Any) -> None:
    """Raise what ``Instrument.run_command`` would raise before any I/O: an unknown command,
    a parameter it does not take, a value beyond the driver's limits."""
    if name not in command_names(model):
        raise UnknownCommand(equipment_id, model.kind, name, command_names(model))
    if not isinstance(parameters, Mapping):
        raise InvalidParameter(
            equipment_id, "parameters", parameters, "is not an object", context=name
        )
    check = model.checks.get(name)
    if check is not None:  # a procedure checks its own parameters
        check(model, equipment_id, parameters)
        return
    target = name.partition("_")[2]
    measurement = model.measurement(target) if name.startswith("get_") else None
    if measurement is not None:
        if not measurement.channels:
            expect_only(equipment_id, name, parameters)
            return
        expect_only(equipment_id, name, parameters, "channel")
        channel = parameters.get("channel")
        if channel is not None and (
            isinstance(channel, bool) or channel not in measurement.channels
        ):
            raise InvalidParameter(
                equipment_id,
                "channel",
                channel,
                f"is not one of {list(measurement.channels)}",
                limit=list(measurement.channels),
                context=name,
            )
        return
    setting = model.setting(target)
    if name.startswith("set_") and setting is not None:
        expect_only(equipment_id, name, parameters, "value")
        if "value" not in parameters:
            raise InvalidParameter(equipment_id, "value", None, "is required", context=name)
        setting.validate(equipment_id, parameters["value"], context=name)
        return
    expect_only(equipment_id, name, parameters)  # get_<setting>, output_on/off, reset


def operation_command(
    model: InstrumentModel, equipment_id: str, schedule_type: str, parameters: Mapping[str, Any]
) -> tuple[str, Any] | None:
    """Check what the job type itself takes; for a measurement or command job, return the
    instrument command and its arguments, for ``check_command``."""
    accepted = ACCEPTED.get(schedule_type)
    if accepted is None:
        raise InvalidParameter(
            equipment_id, "schedule_type", schedule_type, f"is not one of {', '.join(ACCEPTED)}"
        )
    expect_only(equipment_id, schedule_type, parameters, *accepted)
    if schedule_type in ("measurement", "command"):
        if schedule_type == "measurement":
            command = parameters.get("command") or f"get_{model.primary}"
            if not isinstance(command, str) or not command.startswith("get_"):
                raise InvalidParameter(
                    equipment_id,
                    "command",
                    command,
                    "is not a reading (get_...); use a command job to change the instrument",
                    context="measurement",
                )
        else:
            command = parameters.get("command")
            if not isinstance(command, str) or not command:
                raise InvalidParameter(
                    equipment_id,
                    "command",
                    command,
                    f"is required (valid: {', '.join(command_names(model))})",
                    context="command",
                )
        arguments = parameters.get("parameters", {})
        if not isinstance(arguments, Mapping):
            raise InvalidParameter(
                equipment_id, "parameters", arguments, "is not an object", context=schedule_type
            )
        return command, arguments
    if schedule_type == "equipment_test":
        name = parameters.get("test_name")
        if name not in EQUIPMENT_TEST_NAMES:
            valid = list(EQUIPMENT_TEST_NAMES)
            raise InvalidParameter(
                equipment_id,
                "test_name",
                name,
                f"is not a known test; valid tests: {', '.join(valid)}",
                limit=valid,
                context="equipment_test",
            )
    if schedule_type == "acquisition":
        check_acquisition(model, equipment_id, parameters)
    return None


def check_acquisition(
    model: InstrumentModel, equipment_id: str, parameters: Mapping[str, Any]
) -> None:
    fmt = parameters.get("format", "csv")
    if fmt not in FORMATS:
        raise InvalidParameter(
            equipment_id,
            "format",
            fmt,
            f"is not one of {', '.join(FORMATS)}",
            context="acquisition",
        )
    duration = check_number(
        equipment_id, parameters, "duration", 0.0, MAX_DURATION_S, context="acquisition"
    )
    if duration <= 0:
        raise InvalidParameter(
            equipment_id, "duration", duration, "must be positive", context="acquisition"
        )
    decimate_of(equipment_id, parameters)
    capture = model.capture
    channels_of(equipment_id, parameters, capture.channels if capture else (1,))
    if capture is None:
        low, high = POINT_RATE_LIMITS
        check_number(
            equipment_id, parameters, "sample_rate", low, high, context="acquisition", default=1.0
        )
        return
    rate = model.setting(capture.sample_rate)
    if rate is not None and "sample_rate" in parameters:
        rate.validate(
            equipment_id, parameters["sample_rate"], parameter="sample_rate", context="acquisition"
        )


def decimate_of(equipment_id: str, parameters: Mapping[str, Any]) -> bool:
    """``decimate`` (default true): false captures at the requested rate, however long."""
    value = parameters.get("decimate", True)
    if not isinstance(value, bool):
        raise InvalidParameter(
            equipment_id, "decimate", value, "must be true or false", context="acquisition"
        )
    return value


def channels_of(
    equipment_id: str, parameters: Mapping[str, Any], valid: tuple[int, ...]
) -> tuple[int, ...]:
    raw = parameters.get("channels", [valid[0]])
    ok = (
        isinstance(raw, list | tuple)
        and raw
        and all(isinstance(c, int) and not isinstance(c, bool) and c in valid for c in raw)
        and len(set(raw)) == len(raw)
    )
    if not ok:
        raise InvalidParameter(
            equipment_id,
            "channels",
            raw,
            f"must be a non-empty list of distinct channels from {list(valid)}",
            limit=list(valid),
            context="acquisition",
        )
    return tuple(raw)


def check_job(
    model: InstrumentModel, equipment_id: str, schedule_type: str, parameters: Mapping[str, Any]
) -> None:
    """Everything the agent checks of a job before it touches the instrument."""
    command = operation_command(model, equipment_id, schedule_type, parameters)
    if command is not None:
        check_command(model, equipment_id, *command)
