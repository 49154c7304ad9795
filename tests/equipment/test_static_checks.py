"""The checks made when a job is saved (instruments/checks.py) are the agent's own: they
know every command the tables offer, accept every valid command, and what they refuse the
instrument never sees."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lablink.equipment_agent.inprocess import InProcessExecutor
from lablink.equipment_agent.operations import EQUIPMENT_TESTS
from lablink.instruments.checks import EQUIPMENT_TEST_NAMES, check_job, command_names
from lablink.instruments.drivers import MODELS
from lablink.instruments.errors import InvalidParameter, UnknownCommand
from lablink.instruments.instrument import Instrument
from lablink.instruments.scpi import InstrumentModel, Setting
from lablink.instruments.simulated import SIMULATED_BENCH
from tests.support.bench import ProgressLog, copy_bench, execution_request

KIND_OF = {eid: kind for eid, (kind, _) in SIMULATED_BENCH.items()}


class _NoPort:
    def write(self, message: str) -> int:
        raise AssertionError("no I/O expected")

    def query(self, message: str) -> str:
        raise AssertionError("no I/O expected")


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_the_checks_know_every_command_of_the_table(kind: str) -> None:
    assert command_names(MODELS[kind]) == Instrument("x", MODELS[kind], _NoPort()).commands


def test_the_equipment_tests_are_the_ones_the_checks_accept() -> None:
    assert set(EQUIPMENT_TESTS) == set(EQUIPMENT_TEST_NAMES)


def valid_value(setting: Setting) -> Any:
    if setting.type == "bool":
        return True
    if setting.type == "choice":
        return setting.choices[-1]
    assert setting.minimum is not None
    return int(setting.minimum) if setting.type == "int" else setting.minimum


def every_command(model: InstrumentModel) -> list[tuple[str, dict[str, Any]]]:
    """Each command of a table with arguments it takes."""
    jobs: list[tuple[str, dict[str, Any]]] = []
    for name in command_names(model):
        target = name.partition("_")[2]
        measurement = model.measurement(target) if name.startswith("get_") else None
        setting = model.setting(target)
        if measurement is not None and measurement.channels:
            jobs.append((name, {"channel": measurement.channels[-1]}))
        elif name.startswith("set_") and setting is not None:
            jobs.append((name, {"value": valid_value(setting)}))
        elif name == "run_load_test":
            jobs.append((name, {"duration": 1, "current": 0.5, "samples": 2}))
        else:
            jobs.append((name, {}))
    return jobs


@pytest.mark.parametrize("equipment_id", sorted(SIMULATED_BENCH))
async def test_every_valid_command_passes_the_check_and_runs_on_the_bench(
    tmp_path: Path, equipment_id: str
) -> None:
    model = MODELS[KIND_OF[equipment_id]]
    executor = InProcessExecutor.simulated(tmp_path / "data", bench_yaml=copy_bench(tmp_path))
    try:
        for command, arguments in every_command(model):
            parameters = {"command": command, "parameters": arguments}
            check_job(model, equipment_id, "command", parameters)
            request = execution_request(equipment_id, "command", parameters)
            outcome = await executor.execute(request, ProgressLog())
            assert outcome.status == "completed", (command, outcome.error)
    finally:
        await executor.aclose()


@pytest.mark.parametrize(
    ("equipment_id", "schedule_type", "parameters"),
    [
        ("power_supply_1", "command", {"command": "set_voltage", "parameters": {"value": 31}}),
        ("power_supply_1", "command", {"command": "set_volts"}),
        ("load_1", "command", {"command": "run_load_test", "parameters": {"duration": 5}}),
        ("scope_1", "measurement", {"command": "get_vpp", "parameters": {"channel": 9}}),
        ("multimeter_1", "equipment_test", {"test_name": "calibrate"}),
        ("scope_1", "acquisition", {"duration": 1, "sample_rate": 0.5}),
    ],
)
async def test_what_the_checks_refuse_the_agent_refuses_before_sending_anything(
    tmp_path: Path, equipment_id: str, schedule_type: Any, parameters: dict[str, Any]
) -> None:
    model = MODELS[KIND_OF[equipment_id]]
    with pytest.raises((InvalidParameter, UnknownCommand)) as refused:
        check_job(model, equipment_id, schedule_type, parameters)
    sent: list[str] = []

    def recording(eid: str, port: Any) -> Any:
        class Port:
            def write(self, message: str) -> int:
                if eid == equipment_id:
                    sent.append(message)
                return int(port.write(message))

            def query(self, message: str) -> str:
                if eid == equipment_id:
                    sent.append(message)
                return str(port.query(message))

        return Port()

    executor = InProcessExecutor.simulated(
        tmp_path / "data", bench_yaml=copy_bench(tmp_path), wrap=recording
    )
    try:
        outcome = await executor.execute(
            execution_request(equipment_id, schedule_type, parameters), ProgressLog()
        )
    finally:
        await executor.aclose()
    assert outcome.status == "failed"
    assert outcome.error is not None
    assert outcome.error.type == refused.value.error_type
    assert outcome.error.message == str(refused.value)
    assert [m for m in sent if m != "*IDN?"] == []
