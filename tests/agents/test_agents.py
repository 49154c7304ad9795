"""The five job types from the scheduler through a real nats-server to an equipment agent and
back into the log; profiles applied by the agent; the equipment view and API."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from lablink.bus.server import NatsServer
from lablink.clock import ManualClock
from lablink.equipment_agent.config import load_config
from lablink.events import EquipmentOnline, ExecutionProgressed
from tests.support.agent_lab import AgentLab, bench_config
from tests.support.bench import copy_bench
from tests.support.objects import fetch_object

PROFILES: dict[str, dict[str, Any]] = {
    "precise": {"nplc": 10.0, "autorange": False},
    "too_slow": {"nplc": 500.0},  # the multimeter's limit is 100 PLC
}


@pytest.fixture
async def lab(
    tmp_path: Path, nats_server: NatsServer, clock: ManualClock
) -> AsyncIterator[AgentLab]:
    lab = await AgentLab(
        tmp_path / "scheduler.db", nats_server.url, clock, profiles=PROFILES.get
    ).start()
    await lab.start_agent(bench_config(copy_bench(tmp_path / "bench"), tmp_path / "data"))
    try:
        yield lab
    finally:
        await lab.close()


def result(row: dict[str, Any]) -> dict[str, Any]:
    assert row["status"] == "completed", row
    value: dict[str, Any] = json.loads(row["result"])
    return value


def error(row: dict[str, Any], status: str = "failed") -> dict[str, Any]:
    assert row["status"] == status, row
    value: dict[str, Any] = json.loads(row["error"])
    return value


async def test_measurement_returns_value_and_unit(lab: AgentLab) -> None:
    row = await lab.run(
        {
            "schedule_type": "measurement",
            "equipment_id": "power_supply_1",
            "parameters": {"command": "get_voltage"},
        }
    )
    measured = result(row)
    assert measured["measurement"] == "voltage"
    assert measured["unit"] == "V"
    assert isinstance(measured["value"], float)


async def test_measurement_without_a_command_takes_the_primary_reading(lab: AgentLab) -> None:
    row = await lab.run({"schedule_type": "measurement", "equipment_id": "sensor_1"})
    measured = result(row)
    assert measured["measurement"] == "temperature"
    assert measured["unit"] == "degC"


async def test_command_sets_and_reads_back(lab: AgentLab) -> None:
    row = await lab.run(
        {
            "schedule_type": "command",
            "equipment_id": "power_supply_1",
            "parameters": {"command": "set_current", "parameters": {"value": 1.25}},
        }
    )
    assert result(row)["value"] == pytest.approx(1.25)
    state = result(
        await lab.run({"schedule_type": "state_capture", "equipment_id": "power_supply_1"})
    )
    assert state["settings"]["current"]["value"] == pytest.approx(1.25)


async def test_state_capture_reads_every_setting(lab: AgentLab) -> None:
    state = result(await lab.run({"schedule_type": "state_capture", "equipment_id": "scope_1"}))
    assert set(state["settings"]) >= {"sample_rate", "trigger_level", "record_length"}
    assert state["identity"]["model"] == "DSO-1104"


@pytest.mark.parametrize("test_name", ["connection", "self_test"])
async def test_equipment_tests_pass_with_details(lab: AgentLab, test_name: str) -> None:
    row = await lab.run(
        {
            "schedule_type": "equipment_test",
            "equipment_id": "multimeter_1",
            "parameters": {"test_name": test_name},
        }
    )
    outcome = result(row)
    assert outcome["test_name"] == test_name
    assert outcome["passed"] is True


async def test_acquisition_streams_to_a_file_with_progress(
    lab: AgentLab, tmp_path: Path, nats_server: NatsServer
) -> None:
    job_id = lab.create(
        {
            "name": "Line check",
            "schedule_type": "acquisition",
            "equipment_id": "oscilloscope_1",
            "parameters": {"duration": 2, "sample_rate": 1000, "channels": [1, 2]},
        }
    )
    execution_id = await lab.engine.run_now(job_id)
    row = await lab.finished(execution_id)

    outcome = result(row)
    path = tmp_path / "data" / "acquisitions" / f"{execution_id}.csv"
    assert outcome["file"] == str(path)  # where the agent wrote it, before the upload
    assert not path.exists()
    assert outcome["sample_count"] == 4_000
    content, _ = await fetch_object(nats_server.url, outcome["data"]["object"])
    lines = list(csv.reader(io.StringIO(content.decode())))
    assert ["# job_name: Line check"] in lines
    assert ["# equipment_id: oscilloscope_1"] in lines
    data = [line for line in lines if line and not line[0].startswith("#")]
    assert data[0] == ["time_s", "ch1_V", "ch2_V"]
    assert len(data) == 1 + 2_000
    progressed = [e for e in lab.events(job_id) if isinstance(e, ExecutionProgressed)]
    assert progressed, "the agent's progress reports reach the log"
    assert [p.progress for p in progressed] == sorted(p.progress for p in progressed)


async def test_unknown_command_fails_with_a_clear_error(lab: AgentLab) -> None:
    row = await lab.run(
        {
            "schedule_type": "command",
            "equipment_id": "power_supply_1",
            "parameters": {"command": "make_coffee"},
        }
    )
    problem = error(row)
    assert problem["type"] == "unknown_command"
    assert "make_coffee" in problem["message"]
    assert "set_voltage" in problem["message"]  # names the valid ones
    assert "Traceback" not in row["error"]


async def test_a_bad_parameter_fails_naming_it(lab: AgentLab) -> None:
    row = await lab.run(
        {
            "schedule_type": "command",
            "equipment_id": "power_supply_1",
            "parameters": {"command": "set_voltage", "parameters": {"value": 99}},
        }
    )
    problem = error(row)
    assert problem["type"] == "invalid_parameter"
    assert "99" in problem["message"]


async def test_profile_is_applied_and_read_back_before_the_operation(lab: AgentLab) -> None:
    row = await lab.run(
        {
            "schedule_type": "measurement",
            "equipment_id": "multimeter_1",
            "parameters": {"command": "get_voltage"},
            "profile_id": "precise",
        }
    )
    profile = result(row)["profile"]
    assert profile["id"] == "precise"
    assert profile["applied"] is True
    assert profile["settings"]["nplc"] == pytest.approx(10.0)


async def test_a_profile_that_fails_to_apply_fails_before_the_operation(lab: AgentLab) -> None:
    row = await lab.run(
        {
            "schedule_type": "measurement",
            "equipment_id": "multimeter_1",
            "parameters": {"command": "get_voltage"},
            "profile_id": "too_slow",
        }
    )
    problem = error(row)
    assert problem["type"] == "profile_error"
    assert "too_slow" in problem["message"]
    assert row["result"] in (None, "{}", "null")  # the measurement never ran


async def test_an_unknown_profile_fails_the_execution(lab: AgentLab) -> None:
    row = await lab.run(
        {
            "schedule_type": "measurement",
            "equipment_id": "multimeter_1",
            "profile_id": "profile_name",
        }
    )
    problem = error(row)
    assert problem["type"] == "profile_error"
    assert "profile_name" in problem["message"]


async def test_equipment_is_recorded_online_with_its_identity(lab: AgentLab) -> None:
    events = lab.events("equipment:scope_1")
    assert len(events) == 1  # heartbeats since then changed nothing
    (online,) = events
    assert isinstance(online, EquipmentOnline)
    assert online.kind == "oscilloscope"
    assert online.identity.startswith("LabLink Sim,DSO-1104")
    assert online.agent_id == "bench-agent"


async def test_equipment_api_shows_kind_identity_last_seen_and_running(
    lab: AgentLab, tmp_path: Path
) -> None:
    listed_answer, one_answer, missing, health_answer = await lab.api_get(
        tmp_path,
        "/api/equipment",
        "/api/equipment/multimeter_1",
        "/api/equipment/no_such_meter",
        "/health",
    )
    listed, one, health = listed_answer.json(), one_answer.json(), health_answer.json()

    assert listed["count"] == 6
    ids = [item["equipment_id"] for item in listed["equipment"]]
    assert ids == sorted(
        ["power_supply_1", "multimeter_1", "oscilloscope_1", "scope_1", "load_1", "sensor_1"]
    )
    meter = one["equipment"]
    assert meter["kind"] == "multimeter"
    assert meter["status"] == "online"
    assert meter["identity"]["model"] == "DMM-6500"
    assert meter["agent_id"] == "bench-agent"
    assert meter["last_seen"] is not None
    assert meter["running"] == []
    assert missing.status_code == 404
    assert missing.json()["errors"][0] == {
        "field": "equipment_id",
        "value": "no_such_meter",
        "reason": "not found",
    }
    assert health["agents"]["status"] == "ok"
    assert len(health["agents"]["online"]) == 6


async def test_the_guides_weekly_capture_runs_bounded_on_the_simulated_scope(
    lab: AgentLab, tmp_path: Path, nats_server: NatsServer
) -> None:
    row = await lab.run(
        {
            "name": "Weekly High-Resolution Waveform Capture",
            "schedule_type": "acquisition",
            "equipment_id": "scope_1",
            "parameters": {"duration": 600, "sample_rate": 1_000_000, "channels": [1, 2, 3, 4]},
        },
        within=120,
    )
    outcome = result(row)
    assert outcome["samples_covered"] == 2_400_000_000
    assert outcome["decimated"] is True
    assert outcome["samples_per_channel"] == 100_000  # the bound, not 600 million
    assert outcome["sample_count"] == 400_000
    assert outcome["records"] == 800
    path = Path(outcome["file"])
    assert path.parent == tmp_path / "data" / "acquisitions"
    content, _ = await fetch_object(nats_server.url, outcome["data"]["object"])
    assert len(content) == outcome["file_bytes"] == outcome["data"]["size"] < 100_000 * 64


def test_the_shipped_lab_toml_parses() -> None:
    config = load_config(Path(__file__).parents[2] / "deploy" / "lab.toml")
    assert config.agent_id == "lab-pc-1"
    assert [i.id for i in config.instruments] == ["power_supply_1", "multimeter_1"]
    assert all(i.backend == "@py" for i in config.instruments)
    assert config.realtime is True  # real instruments take real time
    assert config.nats.user == "agent-lab-pc-1"  # agent-<agent id>, as deploy/nats-server.conf


async def test_the_five_job_types_fire_on_schedule_through_the_agent(lab: AgentLab) -> None:
    bodies: list[dict[str, Any]] = [
        {"schedule_type": "measurement", "equipment_id": "multimeter_1"},
        {
            "schedule_type": "command",
            "equipment_id": "load_1",
            "parameters": {"command": "set_current", "parameters": {"value": 2.5}},
        },
        {"schedule_type": "state_capture", "equipment_id": "power_supply_1"},
        {
            "schedule_type": "equipment_test",
            "equipment_id": "oscilloscope_1",
            "parameters": {"test_name": "connection"},
        },
        {
            "schedule_type": "acquisition",
            "equipment_id": "oscilloscope_1",
            "parameters": {"duration": 1, "sample_rate": 1000, "channels": [1]},
        },
    ]
    jobs = [
        lab.create({**body, "interval_minutes": 5, "enabled": True, "interval_hours": None})
        for body in bodies
    ]
    fired = await lab.at(lab.clock.now() + timedelta(minutes=5))
    assert fired == len(jobs)
    for job_id in jobs:
        (row,) = lab.rows("SELECT execution_id FROM executions WHERE job_id = ?", job_id)
        done = await lab.finished(row["execution_id"])
        assert (done["status"], done["trigger_info"]) == ("completed", "scheduled"), done
