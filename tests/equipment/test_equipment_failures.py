"""What a failed execution says: the error type, the instrument's code, a message naming the
offending id, parameter, value and limit, and never a traceback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from lablink.equipment_agent.bench import open_simulated_bench
from lablink.equipment_agent.inprocess import InProcessExecutor
from lablink.events import ExecutionError, ScheduleType
from lablink.instruments.execution import Outcome
from tests.support.bench import (
    ProgressLog,
    bench_variant,
    copy_bench,
    execution_request,
)


@asynccontextmanager
async def running(
    bench_yaml: Path, data_dir: Path, timeout_ms: int = 2_000
) -> AsyncIterator[InProcessExecutor]:
    executor = InProcessExecutor(open_simulated_bench(bench_yaml, timeout_ms=timeout_ms), data_dir)
    try:
        yield executor
    finally:
        await executor.aclose()


@pytest.fixture
async def executor(tmp_path: Path) -> AsyncIterator[InProcessExecutor]:
    async with running(copy_bench(tmp_path / "bench"), tmp_path / "data") as ex:
        yield ex


async def run(
    executor: InProcessExecutor,
    equipment_id: str,
    schedule_type: ScheduleType,
    parameters: dict[str, Any] | None = None,
) -> Outcome:
    return await executor.execute(
        execution_request(equipment_id, schedule_type, parameters), ProgressLog()
    )


def failed(outcome: Outcome, error_type: str) -> ExecutionError:
    assert outcome.status == "failed"
    assert outcome.error is not None
    assert outcome.error.type == error_type, outcome.error
    assert "Traceback" not in outcome.error.message
    return outcome.error


async def test_unknown_equipment_is_offline(executor: InProcessExecutor) -> None:
    outcome = await run(executor, "power_supply_9", "measurement", {"command": "get_voltage"})

    error = failed(outcome, "equipment_offline")
    assert error.message == "equipment 'power_supply_9' is not connected"
    assert error.details == {"equipment_id": "power_supply_9"}


async def test_unknown_command_names_the_valid_ones(executor: InProcessExecutor) -> None:
    outcome = await run(executor, "load_1", "command", {"command": "set_frequency"})

    error = failed(outcome, "unknown_command")
    assert "'set_frequency'" in error.message
    assert "load_1" in error.message
    assert "set_current" in error.details["valid_commands"]
    assert "run_load_test" in error.details["valid_commands"]


async def test_set_current_above_the_limit_names_parameter_value_and_limit(
    executor: InProcessExecutor,
) -> None:
    params = {"command": "set_current", "parameters": {"value": 40.0}}
    outcome = await run(executor, "load_1", "command", params)

    error = failed(outcome, "invalid_parameter")
    assert error.message == (
        "invalid parameter 'value' of set_current on load_1: 40.0 is above the maximum 30 A"
    )
    assert error.details["parameter"] == "value"
    assert error.details["value"] == 40.0
    assert error.details["limit"] == 30.0
    assert error.code is None
    # Refused before anything was sent: the load still holds its previous setpoint.
    state = await run(executor, "load_1", "state_capture")
    assert state.result["settings"]["current"]["value"] == 0.0


@pytest.mark.parametrize(
    ("parameters", "parameter", "fragment"),
    [
        ({"command": "set_voltage", "parameters": {}}, "value", "is required"),
        ({"command": "set_voltage", "parameters": {"value": "high"}}, "value", "not a number"),
        ({"command": "set_voltage", "parameters": {"value": -1}}, "value", "below the minimum 0"),
        ({"command": "set_voltage", "parameters": {"value": 5, "ramp": 1}}, "ramp", "not accepted"),
        ({"command": "output_on", "parameters": {"value": 1}}, "value", "not accepted"),
        ({"command": "set_voltage", "parameters": [5]}, "parameters", "is not an object"),
        ({"parameters": {"value": 5}}, "command", "is required"),
        ({"command": "set_voltage", "when": "now"}, "when", "not accepted"),
    ],
)
async def test_bad_command_parameters(
    executor: InProcessExecutor, parameters: dict[str, Any], parameter: str, fragment: str
) -> None:
    error = failed(
        await run(executor, "power_supply_1", "command", parameters), "invalid_parameter"
    )
    assert error.details["parameter"] == parameter
    assert fragment in error.message


async def test_load_test_current_is_checked_against_the_load(executor: InProcessExecutor) -> None:
    params = {"command": "run_load_test", "parameters": {"duration": 1, "current": 31.0}}
    error = failed(await run(executor, "load_1", "command", params), "invalid_parameter")
    assert error.details["parameter"] == "current"
    assert "above the maximum 30 A" in error.message


async def test_a_measurement_job_does_not_change_the_instrument(
    executor: InProcessExecutor,
) -> None:
    error = failed(
        await run(executor, "power_supply_1", "measurement", {"command": "set_voltage"}),
        "invalid_parameter",
    )
    assert error.details["parameter"] == "command"
    assert "use a command job" in error.message


async def test_unknown_measurement(executor: InProcessExecutor) -> None:
    outcome = await run(executor, "sensor_1", "measurement", {"command": "get_humidity"})
    error = failed(outcome, "unknown_command")
    assert "get_temperature" in error.details["valid_commands"]


async def test_scope_channel_out_of_range(executor: InProcessExecutor) -> None:
    params = {"command": "get_vpp", "parameters": {"channel": 5}}
    error = failed(await run(executor, "scope_1", "measurement", params), "invalid_parameter")
    assert error.details["parameter"] == "channel"
    assert error.details["limit"] == [1, 2, 3, 4]


@pytest.mark.parametrize("test_name", ["warp_core", None])
async def test_unknown_test_name_names_the_valid_tests(
    executor: InProcessExecutor, test_name: str | None
) -> None:
    params = {} if test_name is None else {"test_name": test_name}
    error = failed(
        await run(executor, "oscilloscope_1", "equipment_test", params), "invalid_parameter"
    )
    assert error.details["parameter"] == "test_name"
    assert "valid tests: connection, error_queue, measurement, self_test" in error.message


async def test_instrument_error_code_reaches_the_outcome(tmp_path: Path) -> None:
    # A smaller model of load: its driver table allows 30 A, the instrument refuses above 3 A.
    small_load = bench_variant(tmp_path / "small", "electronic load", "max: 30", "max: 3")
    async with running(small_load, tmp_path / "data") as executor:
        params = {"command": "set_current", "parameters": {"value": 5.0}}
        outcome = await run(executor, "load_1", "command", params)

    error = failed(outcome, "instrument_error")
    assert error.code == -100
    assert error.details["instrument_message"] == "Command error"
    assert error.details["command"] == "CURR 5.000"
    assert error.message == "load_1 reported error -100 'Command error' after 'CURR 5.000'"


async def test_unanswered_query_is_explained_by_the_error_queue(tmp_path: Path) -> None:
    # Firmware that no longer knows MEAS:VOLT?: it stays silent and queues an error.
    old_firmware = bench_variant(
        tmp_path / "old", "power supply", '"MEAS:VOLT?"', '"MEAS:VOLT:DC?"'
    )
    async with running(old_firmware, tmp_path / "data", timeout_ms=50) as executor:
        outcome = await run(executor, "power_supply_1", "measurement", {"command": "get_voltage"})

    error = failed(outcome, "instrument_error")
    assert error.code == -100
    assert error.details["command"] == "MEAS:VOLT?"


@pytest.mark.filterwarnings("ignore:read string doesn't end with termination characters")
async def test_unopenable_instrument_is_offline_with_the_reason(tmp_path: Path) -> None:
    bench = open_simulated_bench(
        copy_bench(tmp_path / "bench"),
        instruments={"psu_x": ("power_supply", "TCPIP0::10.99.0.1::inst0::INSTR")},
    )
    executor = InProcessExecutor(bench, tmp_path / "data")
    try:
        outcome = await run(executor, "psu_x", "measurement")
    finally:
        await executor.aclose()

    error = failed(outcome, "equipment_offline")
    assert error.message.startswith("equipment 'psu_x' is not connected: ")
    assert "*IDN?" in error.message


async def test_an_instrument_that_cannot_report_errors_fails_the_setting(tmp_path: Path) -> None:
    # Its error queue answers to another header: the driver's SYST:ERR? goes unanswered.
    no_queue = bench_variant(tmp_path / "noq", "power supply", 'q: "SYST:ERR?"', 'q: "ERR?"')
    async with running(no_queue, tmp_path / "data", timeout_ms=50) as executor:
        params = {"command": "set_voltage", "parameters": {"value": 3.3}}
        outcome = await run(executor, "power_supply_1", "command", params)

    error = failed(outcome, "communication_error")
    assert error.details["command"] == "SYST:ERR?"
    assert "VI_ERROR_TMO" in error.message
