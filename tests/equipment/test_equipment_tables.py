"""The driver tables agree with the device file, offer the guide's commands, and validate."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest
from pyvisa_sim.parser import parse_file

import lablink.equipment_agent
from lablink.equipment_agent.bench import BENCH_YAML
from lablink.instruments.drivers import MODELS
from lablink.instruments.errors import InvalidParameter
from lablink.instruments.instrument import Instrument
from lablink.instruments.scpi import InstrumentModel, Setting
from lablink.instruments.simulated import SIMULATED_BENCH, simulated_bench

GUIDE_IDS = {"power_supply_1", "multimeter_1", "oscilloscope_1", "scope_1", "load_1", "sensor_1"}


def devices() -> list[tuple[str, InstrumentModel, dict[str, Any]]]:
    """(equipment id, driver table, pyvisa-sim device definition) for the bench."""
    data = parse_file(BENCH_YAML)
    by_resource = {name: spec["device"] for name, spec in data["resources"].items()}
    return [
        (eid, MODELS[kind], data["devices"][by_resource[resource]])
        for eid, (kind, resource) in SIMULATED_BENCH.items()
    ]


class _NoPort:
    def write(self, message: str) -> int:
        raise AssertionError("no I/O expected")

    def query(self, message: str) -> str:
        raise AssertionError("no I/O expected")


def commands(kind: str) -> tuple[str, ...]:
    return Instrument("x", MODELS[kind], _NoPort()).commands


def test_the_bench_is_the_guides_six_instruments() -> None:
    assert set(simulated_bench()) == GUIDE_IDS
    assert simulated_bench()["sensor_1"][0] == "temperature_sensor"
    resources = set(parse_file(BENCH_YAML)["resources"])
    assert {resource for _, resource in SIMULATED_BENCH.values()} == resources


@pytest.mark.parametrize(("equipment_id", "model", "device"), devices())
def test_setting_limits_match_the_device_file(
    equipment_id: str, model: InstrumentModel, device: dict[str, Any]
) -> None:
    by_query = {p["getter"]["q"]: p for p in device["properties"].values() if "getter" in p}
    for setting in model.settings:
        prop = by_query[setting.query]
        assert ("setter" in prop) == setting.writable, setting.name
        specs = prop["specs"]
        if setting.type == "bool":
            assert specs["valid"] == ["0", "1"]
        elif setting.type == "choice":
            assert tuple(specs["valid"]) == setting.choices
        elif setting.writable:
            assert float(specs["min"]) == setting.minimum, setting.name
            assert float(specs["max"]) == setting.maximum, setting.name
        if setting.writable:
            assert prop["setter"]["q"].split(" ")[0] == setting.header


@pytest.mark.parametrize(("equipment_id", "model", "device"), devices())
def test_every_measurement_query_is_a_dialogue_of_the_device(
    equipment_id: str, model: InstrumentModel, device: dict[str, Any]
) -> None:
    dialogues = {d["q"] for d in device["dialogues"]}
    assert {"*IDN?", "*RST", "*TST?", "*OPC?"} <= dialogues
    assert device["error"]["error_queue"][0]["q"] == "SYST:ERR?"
    for m in model.measurements:
        for channel in m.channels or (None,):
            assert m.command(channel) in dialogues
    if model.capture is not None:
        for channel in model.capture.channels:
            assert model.capture.data_query.format(channel=channel) in dialogues


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("power_supply", {"get_voltage", "get_current", "set_voltage", "set_current"}),
        ("power_supply", {"output_on", "output_off", "reset"}),
        ("multimeter", {"get_voltage", "get_current", "get_resistance"}),
        ("electronic_load", {"set_current", "run_load_test", "output_on", "output_off"}),
        ("temperature_sensor", {"get_temperature"}),
        ("oscilloscope", {"get_vpp", "get_sample_rate", "set_sample_rate"}),
    ],
)
def test_the_guides_commands_exist(kind: str, expected: set[str]) -> None:
    assert expected <= set(commands(kind))


def test_read_only_settings_have_no_setter() -> None:
    assert "get_record_length" in commands("oscilloscope")
    assert "set_record_length" not in commands("oscilloscope")


def test_temperature_is_the_sensors_primary_reading() -> None:
    assert MODELS["temperature_sensor"].primary == "temperature"


def setting(kind: str, name: str) -> Setting:
    found = MODELS[kind].setting(name)
    assert found is not None
    return found


@pytest.mark.parametrize(
    ("kind", "name", "value", "expected"),
    [
        ("electronic_load", "mode", "volt", "VOLT"),
        ("power_supply", "output", True, True),
        ("power_supply", "output", 0, False),
        ("temperature_sensor", "averaging", 16.0, 16),
        ("power_supply", "voltage", 12, 12),
    ],
)
def test_values_are_coerced_to_the_settings_type(
    kind: str, name: str, value: object, expected: object
) -> None:
    assert setting(kind, name).validate("x", value) == expected


@pytest.mark.parametrize(
    ("kind", "name", "value", "reason"),
    [
        ("electronic_load", "mode", "TURBO", "is not one of CURR, VOLT, RES, POW"),
        ("power_supply", "output", "yes", "is not on/off"),
        ("temperature_sensor", "averaging", 2.5, "is not a whole number"),
        ("temperature_sensor", "averaging", 65, "is above the maximum 64"),
        ("power_supply", "voltage", float("nan"), "is not a finite number"),
        ("power_supply", "voltage", True, "is not a number"),
    ],
)
def test_values_outside_the_setting_are_refused(
    kind: str, name: str, value: object, reason: str
) -> None:
    with pytest.raises(InvalidParameter, match=reason) as refused:
        setting(kind, name).validate("bench_x", value, context=f"set_{name}")
    assert refused.value.equipment_id == "bench_x"
    assert refused.value.parameter == "value"


# The asynchronous shell around the blocking layer: the agent (NATS) and the in-process
# executor (the engine's loop) run operations on each instrument's worker thread.
ASYNC_SHELL = {"accepts.py", "agent.py", "child.py", "inprocess.py", "reports.py", "upload.py"}


def _imports(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
    return names


def test_the_equipment_layer_is_plain_blocking_code() -> None:
    """Drivers and operations are plain blocking code, the same in an agent and in-process:
    no event loop outside the agent's and the in-process executor's shell, and neither the
    instrument vocabulary nor the agent package imports the scheduler (lint-imports holds
    the whole map; this names the offender when it breaks)."""
    root = Path(lablink.equipment_agent.__file__).parent.parent
    offenders = []
    for package in ("instruments", "equipment_agent"):
        for path in (root / package).glob("*.py"):
            shell = package == "equipment_agent" and path.name in ASYNC_SHELL
            offenders += [
                f"{package}/{path.name}: {n}"
                for n in _imports(path)
                if (n.split(".")[0] == "asyncio" and not shell)
                or n.startswith(("lablink.scheduler", "lablink.api"))
                or (package == "instruments" and n.startswith("lablink.equipment_agent"))
            ]
    assert offenders == []
