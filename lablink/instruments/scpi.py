"""The vocabulary of the declarative driver tables: measurements, settings, models.

A driver for an instrument kind is data (an ``InstrumentModel``): which SCPI query gives which
measurement in which unit, which header sets and reads which setting within which limits. The
generic ``Instrument`` in ``instrument.py`` turns such a table into commands. Nothing here does
I/O, so the tables can be checked against a device file without opening anything.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeGuard

from lablink.instruments.context import RunContext
from lablink.instruments.errors import InvalidParameter

SettingValue = float | int | bool | str
ValueType = Literal["float", "int", "bool", "choice"]
# A multi-step routine a kind offers as a command (e.g. the load's run_load_test), called
# with the generic ``instrument.Instrument``: typed Any here because that module is built on
# this vocabulary, and the vocabulary does not import back.
Procedure = Callable[[Any, Mapping[str, Any], RunContext], dict[str, Any]]
# What a procedure refuses in its parameters, decided without the instrument (raises
# InvalidParameter): run before the procedure, and when a job naming it is saved.
ProcedureCheck = Callable[["InstrumentModel", str, Mapping[str, Any]], object]


class MessagePort(Protocol):
    """The part of ``pyvisa.resources.MessageBasedResource`` a driver uses.

    A real resource satisfies it as is; naming the subset lets a SCPI trace wrap a resource.
    """

    def write(self, message: str) -> int: ...

    def query(self, message: str) -> str: ...


def parse_number(text: str) -> float:
    return float(text.strip())


def finite_number(value: Any) -> TypeGuard[int | float]:
    """A number a limit can be compared with: not a bool, not NaN or infinite. An integer of
    any size counts, and is compared exactly (``math.isfinite`` would convert it to a float,
    which overflows beyond 1.8e308)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, float) and math.isfinite(value)


def whole_number(value: int | float) -> bool:
    return isinstance(value, int) or value.is_integer()


@dataclass(frozen=True, kw_only=True)
class Measurement:
    """A reading: ``query`` may contain ``{channel}`` for instruments with several inputs."""

    name: str
    query: str
    unit: str
    channels: tuple[int, ...] = ()
    parse: Callable[[str], float] = parse_number

    def command(self, channel: int | None) -> str:
        return self.query.format(channel=channel) if self.channels else self.query


@dataclass(frozen=True, kw_only=True)
class Setting:
    """A value the instrument holds: written as ``HEADER value``, read back with ``HEADER?``.

    The limits are the instrument's own (the device file's specs say the same), checked before
    anything is sent so a bad job parameter fails with the limit named rather than with the
    instrument's terse error code.
    """

    name: str
    header: str
    unit: str = ""
    type: ValueType = "float"
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    # Other words for a choice, as other tools write them (an electronic load's ``CC`` for
    # ``CURR``): accepted, kept as written, sent as the choice they stand for.
    value_aliases: Mapping[str, str] = field(default_factory=dict)
    writable: bool = True
    format: str = "{:.3f}"

    @property
    def query(self) -> str:
        return f"{self.header}?"

    def set_command(self, value: SettingValue) -> str:
        return f"{self.header} {self.encode(value)}"

    def encode(self, value: SettingValue) -> str:
        if self.type == "bool":
            return "1" if value else "0"
        if self.type == "choice":
            word = str(value).upper()
            return self.value_aliases.get(word, word)
        if self.type == "int":
            return str(value)
        return self.format.format(value)

    def decode(self, text: str) -> SettingValue:
        text = text.strip()
        if self.type == "bool":
            return text.upper() in ("1", "ON")
        if self.type == "int":
            return int(float(text))
        if self.type == "choice":
            return text.upper()
        return float(text)

    def limits(self) -> dict[str, Any]:
        if self.type == "choice":
            return {"choices": list(self.choices)}
        if self.type == "bool":
            return {"choices": [False, True]}
        return {"min": self.minimum, "max": self.maximum, "unit": self.unit}

    def validate(
        self, equipment_id: str, value: Any, *, parameter: str = "value", context: str = ""
    ) -> SettingValue:
        """Return ``value`` in the setting's type, or raise naming the parameter and limit."""

        def refuse(reason: str, limit: Any = None) -> InvalidParameter:
            return InvalidParameter(
                equipment_id, parameter, value, reason, limit=limit, context=context
            )

        if self.type == "bool":
            if isinstance(value, bool) or value in (0, 1):
                return bool(value)
            raise refuse("is not on/off (true, false, 1 or 0)")
        if self.type == "choice":
            if isinstance(value, str) and (
                value.upper() in self.choices or value.upper() in self.value_aliases
            ):
                return value.upper()
            also = f" (or {', '.join(self.value_aliases)})" if self.value_aliases else ""
            raise refuse(f"is not one of {', '.join(self.choices)}{also}", list(self.choices))
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise refuse("is not a number")
        if not finite_number(value):
            raise refuse("is not a finite number")
        number: float | int = value
        if self.type == "int":
            if not whole_number(value):
                raise refuse("is not a whole number")
            number = int(value)
        unit = f" {self.unit}" if self.unit else ""
        if self.minimum is not None and number < self.minimum:
            raise refuse(f"is below the minimum {self.minimum:g}{unit}", self.minimum)
        if self.maximum is not None and number > self.maximum:
            raise refuse(f"is above the maximum {self.maximum:g}{unit}", self.maximum)
        return number


def check_number(
    equipment_id: str,
    params: Mapping[str, Any],
    name: str,
    minimum: float,
    maximum: float,
    *,
    context: str,
    default: float | None = None,
    whole: bool = False,
) -> float:
    """A numeric job parameter (not an instrument setting), checked the same way."""
    value = params.get(name, default)

    def refuse(reason: str, limit: Any = None) -> InvalidParameter:
        return InvalidParameter(equipment_id, name, value, reason, limit=limit, context=context)

    if value is None:
        raise refuse("is required")
    if not finite_number(value):
        raise refuse("is not a finite number")
    if whole and not whole_number(value):
        raise refuse("is not a whole number")
    if value < minimum:
        raise refuse(f"is below the minimum {minimum:g}", minimum)
    if value > maximum:
        raise refuse(f"is above the maximum {maximum:g}", maximum)
    return float(value)


def number(
    name: str, header: str, unit: str, minimum: float, maximum: float, fmt: str = "{:.3f}"
) -> Setting:
    return Setting(
        name=name, header=header, unit=unit, minimum=minimum, maximum=maximum, format=fmt
    )


def integer(name: str, header: str, minimum: int, maximum: int, unit: str = "") -> Setting:
    return Setting(
        name=name, header=header, unit=unit, type="int", minimum=minimum, maximum=maximum
    )


def switch(name: str, header: str) -> Setting:
    return Setting(name=name, header=header, type="bool")


def choice(
    name: str, header: str, choices: tuple[str, ...], aliases: Mapping[str, str] | None = None
) -> Setting:
    aliases = dict(aliases or {})
    assert set(aliases.values()) <= set(choices), f"{name}: an alias for no choice"
    return Setting(name=name, header=header, type="choice", choices=choices, value_aliases=aliases)


def readonly(name: str, header: str, unit: str = "", type: ValueType = "float") -> Setting:
    return Setting(name=name, header=header, unit=unit, type=type, writable=False)


@dataclass(frozen=True, kw_only=True)
class WaveformCapture:
    """How a digitising instrument hands over records: arm, wait, then one query per channel.

    Samples arrive as integer codes; volts = code * y_increment + y_origin (settings named here).
    """

    channels: tuple[int, ...]
    arm: str = "DIG"
    data_query: str = "WAV:DATA? CH{channel}"
    sample_rate: str = "sample_rate"
    record_length: str = "record_length"
    y_increment: str = "y_increment"
    y_origin: str = "y_origin"
    unit: str = "V"


@dataclass(frozen=True, kw_only=True)
class SettingAlias:
    """A setting name another tool writes (the original LabLink server's profiles use
    ``current_limit`` for a supply's ``current``), set through one of the table's own.

    ``keywords`` are words written as the value that stand for another setting of the table
    and a value of it (a multimeter's ``range: "AUTO"`` is ``autorange: true``; its
    ``rate: "SLOW"`` is ``nplc: 10``)."""

    name: str
    setting: str
    keywords: Mapping[str, tuple[str, SettingValue]] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class InstrumentModel:
    """The driver table of one instrument kind."""

    kind: str
    measurements: tuple[Measurement, ...]
    settings: tuple[Setting, ...]
    # The measurement a job without a command takes (the sensor's temperature, ...).
    primary: str
    # The on/off setting output_on/output_off switch and the safe state turns off.
    output: str | None = None
    capture: WaveformCapture | None = None
    procedures: Mapping[str, Procedure] = field(default_factory=dict)
    # One per procedure: its parameters checked from the table alone (checks.py).
    checks: Mapping[str, ProcedureCheck] = field(default_factory=dict)
    # Setting names other tools write, accepted in profiles (docs/api.md, "Profiles").
    aliases: tuple[SettingAlias, ...] = ()

    def __post_init__(self) -> None:
        names = [m.name for m in self.measurements]
        if self.primary not in names:
            raise ValueError(f"{self.kind}: primary {self.primary!r} is not a measurement")
        if self.output is not None and self.output not in self.setting_names:
            raise ValueError(f"{self.kind}: output {self.output!r} is not a setting")
        if set(self.checks) != set(self.procedures):
            raise ValueError(f"{self.kind}: every procedure needs a parameter check, and only they")
        for alias in self.aliases:
            targets = {alias.setting, *(t for t, _ in alias.keywords.values())}
            if alias.name in self.setting_names:
                raise ValueError(f"{self.kind}: alias {alias.name!r} is already a name")
            if not targets <= set(self.setting_names):
                raise ValueError(f"{self.kind}: alias {alias.name!r} names no setting")

    @property
    def setting_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.settings)

    def measurement(self, name: str) -> Measurement | None:
        return next((m for m in self.measurements if m.name == name), None)

    def setting(self, name: str) -> Setting | None:
        return next((s for s in self.settings if s.name == name), None)

    def alias(self, name: str) -> SettingAlias | None:
        return next((a for a in self.aliases if a.name == name), None)

    def resolve(self, name: str, value: Any) -> tuple[Setting, Any] | None:
        """The setting a name sets (its own, or the one an alias stands for) and the value in
        that setting's terms; None if the table knows the name neither way."""
        own = self.setting(name)
        if own is not None:
            return own, value
        alias = self.alias(name)
        if alias is None:
            return None
        if isinstance(value, str) and value.strip().upper() in alias.keywords:
            target, meant = alias.keywords[value.strip().upper()]
        else:
            target, meant = alias.setting, value
        setting = self.setting(target)
        assert setting is not None  # checked when the table was built
        return setting, meant


@dataclass(frozen=True)
class Identity:
    """An ``*IDN?`` answer: manufacturer, model, serial number, firmware."""

    manufacturer: str
    model: str
    serial: str
    firmware: str
    raw: str

    @classmethod
    def parse(cls, raw: str) -> Identity:
        fields = [f.strip() for f in raw.strip().split(",")]
        fields += [""] * (4 - len(fields))
        return cls(fields[0], fields[1], fields[2], ",".join(fields[3:]), raw.strip())

    def as_dict(self) -> dict[str, str]:
        return {
            "manufacturer": self.manufacturer,
            "model": self.model,
            "serial": self.serial,
            "firmware": self.firmware,
            "idn": self.raw,
        }
