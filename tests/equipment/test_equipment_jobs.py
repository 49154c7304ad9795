"""The guide's job types, with its own example parameters, against the simulated bench."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from lablink.equipment_agent.bench import open_simulated_bench
from lablink.equipment_agent.inprocess import InProcessExecutor
from lablink.events import ScheduleType
from lablink.instruments.execution import Outcome, ProfileLookup
from tests.support.bench import (
    ProgressLog,
    bench_variant,
    copy_bench,
    execution_request,
)


@asynccontextmanager
async def running(
    bench_yaml: Path,
    data_dir: Path,
    *,
    timeout_ms: int = 2_000,
    profiles: ProfileLookup | None = None,
) -> AsyncIterator[InProcessExecutor]:
    bench = open_simulated_bench(bench_yaml, timeout_ms=timeout_ms)
    executor = InProcessExecutor(bench, data_dir, profiles=profiles)
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
    **options: Any,
) -> Outcome:
    return await executor.execute(
        execution_request(equipment_id, schedule_type, parameters, **options), ProgressLog()
    )


def completed(outcome: Outcome) -> dict[str, Any]:
    assert outcome.status == "completed", outcome.error
    assert outcome.error is None
    return outcome.result


# -- measurement -------------------------------------------------------------------------------


@pytest.mark.parametrize("equipment_id", ["power_supply_1", "multimeter_1"])
async def test_get_voltage_measures_volts(executor: InProcessExecutor, equipment_id: str) -> None:
    result = completed(await run(executor, equipment_id, "measurement", {"command": "get_voltage"}))

    assert result["command"] == "get_voltage"
    assert result["unit"] == "V"
    assert 4.99 <= result["value"] <= 5.01
    assert result["equipment_id"] == equipment_id


@pytest.mark.parametrize(
    ("equipment_id", "measurement", "unit", "low", "high"),
    [
        ("sensor_1", "temperature", "degC", 22.0, 24.0),
        ("oscilloscope_1", "vpp", "V", 2.0, 2.0),
        ("load_1", "current", "A", 4.98, 5.02),
        ("power_supply_1", "voltage", "V", 4.995, 5.005),
    ],
)
async def test_measurement_without_a_command_takes_the_primary_reading(
    executor: InProcessExecutor,
    equipment_id: str,
    measurement: str,
    unit: str,
    low: float,
    high: float,
) -> None:
    result = completed(await run(executor, equipment_id, "measurement"))

    assert result["measurement"] == measurement
    assert result["unit"] == unit
    assert low <= result["value"] <= high


async def test_scope_measurement_takes_a_channel(executor: InProcessExecutor) -> None:
    params = {"command": "get_vpp", "parameters": {"channel": 3}}
    result = completed(await run(executor, "oscilloscope_1", "measurement", params))

    assert result == {
        "equipment_id": "oscilloscope_1",
        "command": "get_vpp",
        "measurement": "vpp",
        "value": pytest.approx(1.6),
        "unit": "V",
        "channel": 3,
    }


# -- command -----------------------------------------------------------------------------------


async def test_set_current_on_the_load_is_read_back_and_kept(executor: InProcessExecutor) -> None:
    params = {"command": "set_current", "parameters": {"value": 2.5}}
    result = completed(await run(executor, "load_1", "command", params))

    assert result["setting"] == "current"
    assert result["requested"] == 2.5
    assert result["value"] == 2.5
    assert result["unit"] == "A"
    state = completed(await run(executor, "load_1", "state_capture"))
    assert state["settings"]["current"]["value"] == 2.5


async def test_output_on_and_off_switch_the_supply(executor: InProcessExecutor) -> None:
    on = completed(await run(executor, "power_supply_1", "command", {"command": "output_on"}))
    assert on["value"] is True
    off = completed(await run(executor, "power_supply_1", "command", {"command": "output_off"}))
    assert off["value"] is False


async def test_set_voltage_on_the_supply(executor: InProcessExecutor) -> None:
    params = {"command": "set_voltage", "parameters": {"value": 12}}
    result = completed(await run(executor, "power_supply_1", "command", params))
    assert result["value"] == 12.0


async def test_run_load_test_with_the_guides_parameters(executor: InProcessExecutor) -> None:
    progress = ProgressLog()
    params = {"command": "run_load_test", "parameters": {"duration": 60, "current": 5.0}}
    outcome = await executor.execute(execution_request("load_1", "command", params), progress)
    result = completed(outcome)

    assert result["current_setpoint"] == 5.0
    assert result["samples"] == 5
    assert [r["t"] for r in result["readings"]] == [0.0, 15.0, 30.0, 45.0, 60.0]
    assert 4.9 <= result["summary"]["current"]["mean"] <= 5.1
    assert result["input"] is False  # the load is off again
    assert [round(f, 2) for f, _, _ in progress.reports] == [0.2, 0.4, 0.6, 0.8, 1.0]
    state = completed(await run(executor, "load_1", "state_capture"))
    assert state["settings"]["input"]["value"] is False
    assert state["settings"]["mode"]["value"] == "CURR"


# -- state capture -----------------------------------------------------------------------------


async def test_state_capture_of_the_supply(executor: InProcessExecutor) -> None:
    result = completed(await run(executor, "power_supply_1", "state_capture"))

    assert result["identity"] == {
        "manufacturer": "LabLink Sim",
        "model": "PSU-3005",
        "serial": "SN-PS1-0001",
        "firmware": "1.2.0",
        "idn": "LabLink Sim,PSU-3005,SN-PS1-0001,1.2.0",
    }
    assert result["kind"] == "power_supply"
    assert result["settings"] == {
        "voltage": {"value": 5.0, "unit": "V", "writable": True},
        "current": {"value": 1.0, "unit": "A", "writable": True},
        "ovp_level": {"value": 33.0, "unit": "V", "writable": True},
        "output": {"value": False, "unit": "", "writable": True},
    }
    assert set(result["measurements"]) == {"voltage", "current", "power"}
    assert result["measurements"]["power"]["unit"] == "W"


@pytest.mark.parametrize(
    "equipment_id",
    ["power_supply_1", "multimeter_1", "oscilloscope_1", "scope_1", "load_1", "sensor_1"],
)
async def test_every_instrument_answers_every_query_of_its_table(
    executor: InProcessExecutor, equipment_id: str
) -> None:
    result = completed(await run(executor, equipment_id, "state_capture"))
    assert result["identity"]["manufacturer"] == "LabLink Sim"
    assert result["measurements"]


# -- equipment test ----------------------------------------------------------------------------


@pytest.mark.parametrize("equipment_id", ["oscilloscope_1", "power_supply_1"])
@pytest.mark.parametrize("test_name", ["connection", "self_test", "error_queue", "measurement"])
async def test_diagnostics_pass_on_a_healthy_instrument(
    executor: InProcessExecutor, equipment_id: str, test_name: str
) -> None:
    params = {"test_name": test_name}
    result = completed(await run(executor, equipment_id, "equipment_test", params))

    assert result["passed"] is True
    assert result["test_name"] == test_name
    assert isinstance(result["details"], dict)


async def test_connection_test_reports_the_identity(executor: InProcessExecutor) -> None:
    params = {"test_name": "connection"}
    result = completed(await run(executor, "oscilloscope_1", "equipment_test", params))
    assert result["details"]["model"] == "DSO-1104"


async def test_failed_self_test_is_a_failed_execution_with_the_code(tmp_path: Path) -> None:
    faulty = bench_variant(
        tmp_path / "faulty",
        "power supply",
        '- q: "*TST?"\n        r: "0"',
        '- q: "*TST?"\n        r: "4"',
    )
    async with running(faulty, tmp_path / "data") as executor:
        outcome = await run(
            executor, "power_supply_1", "equipment_test", {"test_name": "self_test"}
        )

    assert outcome.status == "failed"
    assert outcome.error is not None
    assert outcome.error.type == "equipment_test_failed"
    assert outcome.error.code == 4
    assert outcome.result["passed"] is False
    assert outcome.result["details"] == {"code": 4}


async def test_error_queue_test_reports_queued_errors(executor: InProcessExecutor) -> None:
    # Something else on the bus sent a command the supply does not know.
    executor.bench.session("power_supply_1").call(lambda inst: inst.write("BOGUS 1"))

    outcome = await run(executor, "power_supply_1", "equipment_test", {"test_name": "error_queue"})

    assert outcome.status == "failed"
    assert outcome.error is not None
    assert outcome.error.code == -100
    assert outcome.result["details"]["errors"] == [{"code": -100, "message": "Command error"}]


# -- profiles ----------------------------------------------------------------------------------


async def test_profile_is_applied_before_the_operation(tmp_path: Path) -> None:
    profiles = {"quiet_trigger": {"trigger_level": 0.5}}
    async with running(
        copy_bench(tmp_path / "bench"), tmp_path / "data", profiles=profiles.get
    ) as executor:
        outcome = await run(executor, "scope_1", "state_capture", profile_id="quiet_trigger")

    result = completed(outcome)
    assert result["profile"] == {
        "id": "quiet_trigger",
        "applied": True,
        "settings": {"trigger_level": 0.5},
    }
    assert result["settings"]["trigger_level"]["value"] == 0.5


async def test_profile_out_of_limits_fails_before_the_operation(tmp_path: Path) -> None:
    profiles = {"hot": {"voltage": 3.0, "ovp_level": 50.0}}
    async with running(
        copy_bench(tmp_path / "bench"), tmp_path / "data", profiles=profiles.get
    ) as executor:
        outcome = await run(
            executor, "power_supply_1", "command", {"command": "output_on"}, profile_id="hot"
        )
        state = completed(await run(executor, "power_supply_1", "state_capture"))

    assert outcome.status == "failed"
    assert outcome.error is not None
    assert outcome.error.type == "profile_error"
    assert "'hot'" in outcome.error.message
    assert "ovp_level" in outcome.error.message
    assert "above the maximum 33 V" in outcome.error.message
    assert state["settings"]["output"]["value"] is False  # the operation never ran
    assert state["settings"]["voltage"]["value"] == 5.0  # nor any of the profile


async def test_unknown_profile_fails(tmp_path: Path) -> None:
    no_profiles: dict[str, dict[str, Any]] = {}
    async with running(
        copy_bench(tmp_path / "bench"), tmp_path / "data", profiles=no_profiles.get
    ) as ex:
        outcome = await run(ex, "scope_1", "state_capture", profile_id="nope")
    assert outcome.error is not None
    assert outcome.error.type == "profile_error"
    assert outcome.error.message == "profile 'nope' not found"


async def test_profile_without_a_profile_source_is_recorded_as_not_applied(
    executor: InProcessExecutor,
) -> None:
    outcome = await run(executor, "scope_1", "state_capture", profile_id="high_res_1GS")
    profile = completed(outcome)["profile"]
    assert profile["id"] == "high_res_1GS"
    assert profile["applied"] is False


async def test_a_setting_the_instrument_does_not_take_is_a_profile_failure(
    tmp_path: Path,
) -> None:
    # Firmware that answers NPLC? with a fixed value: the write raises no error, but the
    # read-back says the setting did not take.
    stuck = bench_variant(tmp_path / "stuck", "multimeter", 'r: "{:.3f}"', 'r: "1.000"')
    profiles = {"precise": {"nplc": 10.0}}
    async with running(stuck, tmp_path / "data", profiles=profiles.get) as executor:
        outcome = await run(executor, "multimeter_1", "measurement", profile_id="precise")

    assert outcome.status == "failed"
    assert outcome.error is not None
    assert outcome.error.type == "profile_error"
    assert outcome.error.message == (
        "profile 'precise' could not be applied: nplc read back as 1.0 after setting 10.0"
    )
    assert "value" not in outcome.result  # the measurement never ran
