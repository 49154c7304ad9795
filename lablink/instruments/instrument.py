"""The generic SCPI driver: one ``InstrumentModel`` table driving one message-based resource.

Plain blocking PyVISA code with no locking of its own: the session that owns it
(``equipment_agent.bench.InstrumentSession``) runs every call on the instrument's single worker
thread. VISA errors are translated here, at the boundary, into ``EquipmentError`` subclasses.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import pyvisa
import structlog

from lablink.instruments.checks import check_command
from lablink.instruments.context import RunContext
from lablink.instruments.errors import (
    CommunicationError,
    InstrumentError,
    InvalidParameter,
    UnknownCommand,
)
from lablink.instruments.scpi import (
    Identity,
    InstrumentModel,
    Measurement,
    MessagePort,
    Setting,
    SettingValue,
)

log = structlog.get_logger(tag="equipment")

T = TypeVar("T")

ERROR_QUERY = "SYST:ERR?"
# An instrument that keeps answering errors must not keep the drain loop going forever.
MAX_ERRORS_DRAINED = 32

CommandHandler = Callable[["Instrument", Mapping[str, Any], RunContext], dict[str, Any]]


@dataclass(frozen=True)
class Reading:
    name: str
    value: float
    unit: str
    channel: int | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"measurement": self.name, "value": self.value, "unit": self.unit}
        if self.channel is not None:
            out["channel"] = self.channel
        return out


class Instrument:
    def __init__(self, equipment_id: str, model: InstrumentModel, port: MessagePort) -> None:
        self.equipment_id = equipment_id
        self.model = model
        self.port = port
        self._commands = _command_table(model)

    @property
    def kind(self) -> str:
        return self.model.kind

    # -- the wire -------------------------------------------------------------------------------

    def write(self, command: str) -> None:
        try:
            self.port.write(command)
        except pyvisa.errors.Error as exc:
            raise CommunicationError(self.equipment_id, command, str(exc)) from exc

    def query(self, command: str) -> str:
        try:
            return self.port.query(command).strip()
        except pyvisa.errors.VisaIOError as exc:
            # An instrument that does not understand a query queues an error and stays silent;
            # its error queue explains the timeout better than the timeout does.
            if command != ERROR_QUERY:
                self._raise_queued(command, exc)
            raise CommunicationError(self.equipment_id, command, str(exc)) from exc
        except pyvisa.errors.Error as exc:
            raise CommunicationError(self.equipment_id, command, str(exc)) from exc

    def _parse(self, command: str, text: str, parse: Callable[[str], T]) -> T:
        try:
            return parse(text)
        except ValueError as exc:
            raise CommunicationError(
                self.equipment_id, command, f"unexpected answer {text!r}"
            ) from exc

    # -- IEEE 488.2 and the error queue --------------------------------------------------------

    def identity(self) -> Identity:
        return Identity.parse(self.query("*IDN?"))

    def reset(self) -> None:
        self.write("*RST")
        self.check_errors("*RST")

    def self_test(self) -> int:
        return self._parse("*TST?", self.query("*TST?"), lambda t: int(float(t)))

    def read_errors(self) -> list[tuple[int, str]]:
        """Drain the error queue (oldest first); empty when the instrument reports none."""
        errors: list[tuple[int, str]] = []
        for _ in range(MAX_ERRORS_DRAINED):
            code, text = self._parse(ERROR_QUERY, self.query(ERROR_QUERY), _parse_error)
            if code == 0:
                break
            errors.append((code, text))
        return errors

    def check_errors(self, after: str) -> None:
        errors = self.read_errors()
        if errors:
            (code, text), *more = errors
            raise InstrumentError(self.equipment_id, code, text, command=after, more=more)

    def _raise_queued(self, command: str, cause: Exception) -> None:
        try:
            errors = self.read_errors()
        except CommunicationError:
            return
        if errors:
            (code, text), *more = errors
            raise InstrumentError(
                self.equipment_id, code, text, command=command, more=more
            ) from cause

    # -- the table ------------------------------------------------------------------------------

    def measure(self, name: str, channel: int | None = None) -> Reading:
        m = self._measurement(name)
        if m.channels:
            channel = m.channels[0] if channel is None else channel
            if isinstance(channel, bool) or channel not in m.channels:
                raise InvalidParameter(
                    self.equipment_id,
                    "channel",
                    channel,
                    f"is not one of {list(m.channels)}",
                    limit=list(m.channels),
                    context=f"get_{name}",
                )
        else:
            channel = None
        command = m.command(channel)
        value = self._parse(command, self.query(command), m.parse)
        return Reading(m.name, value, m.unit, channel)

    def read(self, name: str) -> SettingValue:
        s = self._setting(name)
        return self._parse(s.query, self.query(s.query), s.decode)

    def apply(self, name: str, value: Any, *, parameter: str = "value") -> SettingValue:
        """Validate, write, check the error queue, and return the value read back."""
        s = self._setting(name)
        context = f"set_{name}"
        if not s.writable:
            raise InvalidParameter(self.equipment_id, name, value, "is read-only", context=context)
        checked = s.validate(self.equipment_id, value, parameter=parameter, context=context)
        stale = self.read_errors()
        if stale:
            # Not this command's doing; drained so what follows is attributed correctly.
            log.warning("stale instrument errors", equipment_id=self.equipment_id, errors=stale)
        command = s.set_command(checked)
        self.write(command)
        self.check_errors(command)
        return self.read(name)

    def set_output(self, on: bool) -> bool:
        if self.model.output is None:
            raise UnknownCommand(
                self.equipment_id, self.kind, "output_on" if on else "output_off", self._commands
            )
        return bool(self.apply(self.model.output, on))

    def safe_state(self) -> dict[str, Any]:
        """Outputs off; instruments without an output have nothing to switch."""
        if self.model.output is None:
            return {"outputs": {}}
        return {"outputs": {self.model.output: self.set_output(False)}}

    def _measurement(self, name: str) -> Measurement:
        m = self.model.measurement(name)
        if m is None:
            raise UnknownCommand(self.equipment_id, self.kind, f"get_{name}", self._commands)
        return m

    def _setting(self, name: str) -> Setting:
        s = self.model.setting(name)
        if s is None:
            raise UnknownCommand(self.equipment_id, self.kind, f"set_{name}", self._commands)
        return s

    # -- commands -------------------------------------------------------------------------------

    @property
    def commands(self) -> tuple[str, ...]:
        return tuple(sorted(self._commands))

    def run_command(
        self, name: str, parameters: Mapping[str, Any], ctx: RunContext
    ) -> dict[str, Any]:
        # Everything the table alone can refuse is refused before anything is sent (the same
        # checks the job service runs when a job is saved).
        check_command(self.model, self.equipment_id, name, parameters)
        handler = self._commands.get(name)
        if handler is None:
            raise UnknownCommand(self.equipment_id, self.kind, name, self._commands)
        return {"command": name, **handler(self, parameters, ctx)}

    def expect_only(self, command: str, parameters: Mapping[str, Any], *allowed: str) -> None:
        for key in parameters:
            if key not in allowed:
                valid = ", ".join(allowed) if allowed else "none"
                raise InvalidParameter(
                    self.equipment_id,
                    key,
                    parameters[key],
                    f"is not accepted (valid: {valid})",
                    context=command,
                )


def _parse_error(text: str) -> tuple[int, str]:
    code, _, message = text.partition(",")
    return int(code.strip()), message.strip().strip('"')


def _command_table(model: InstrumentModel) -> dict[str, CommandHandler]:
    """Every command a kind offers, derived from its table."""
    table: dict[str, CommandHandler] = {}
    for s in model.settings:
        table[f"get_{s.name}"] = _get_setting(s)
        if s.writable:
            table[f"set_{s.name}"] = _set_setting(s)
    # A measurement and a setting may share a name (a supply's voltage): get_ reads the output.
    for m in model.measurements:
        table[f"get_{m.name}"] = _get_measurement(m)
    if model.output is not None:
        table["output_on"] = _switch_output(True)
        table["output_off"] = _switch_output(False)
    table["reset"] = _reset
    table.update(model.procedures)
    return table


def _get_measurement(m: Measurement) -> CommandHandler:
    def handler(inst: Instrument, params: Mapping[str, Any], ctx: RunContext) -> dict[str, Any]:
        if m.channels:
            inst.expect_only(f"get_{m.name}", params, "channel")
        else:
            inst.expect_only(f"get_{m.name}", params)
        return inst.measure(m.name, params.get("channel")).as_dict()

    return handler


def _get_setting(s: Setting) -> CommandHandler:
    def handler(inst: Instrument, params: Mapping[str, Any], ctx: RunContext) -> dict[str, Any]:
        inst.expect_only(f"get_{s.name}", params)
        return {"setting": s.name, "value": inst.read(s.name), "unit": s.unit}

    return handler


def _set_setting(s: Setting) -> CommandHandler:
    def handler(inst: Instrument, params: Mapping[str, Any], ctx: RunContext) -> dict[str, Any]:
        command = f"set_{s.name}"
        inst.expect_only(command, params, "value")
        if "value" not in params:
            raise InvalidParameter(inst.equipment_id, "value", None, "is required", context=command)
        readback = inst.apply(s.name, params["value"])
        return {"setting": s.name, "requested": params["value"], "value": readback, "unit": s.unit}

    return handler


def _switch_output(on: bool) -> CommandHandler:
    def handler(inst: Instrument, params: Mapping[str, Any], ctx: RunContext) -> dict[str, Any]:
        inst.expect_only("output_on" if on else "output_off", params)
        assert inst.model.output is not None
        return {"setting": inst.model.output, "value": inst.set_output(on)}

    return handler


def _reset(inst: Instrument, params: Mapping[str, Any], ctx: RunContext) -> dict[str, Any]:
    inst.expect_only("reset", params)
    inst.reset()
    return {"reset": True}
