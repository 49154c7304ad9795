"""Job parameters are checked when the job is saved, not only when it runs.

A ``set_voltage`` of 100 on a 30 V supply, a command the instrument does not have, or a
missing required parameter used to be accepted (200) and to fail at 3 a.m. For an instrument
whose kind LabLink knows (the simulated bench, or what its agent described) create and update
now refuse them with a 422 naming the field, the value and the limit; for an instrument no
agent has described, the job is accepted and its view says the check is pending.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from lablink.clock import ManualClock
from lablink.events import EquipmentOnline, NewEvent
from lablink.eventstore import ANY
from tests.support.harness import Harness, api_client

Client = httpx.AsyncClient
JOB: dict[str, Any] = {
    "name": "Set the rail",
    "schedule_type": "command",
    "equipment_id": "power_supply_1",
    "trigger_type": "interval",
    "interval_hours": 1,
    "parameters": {"command": "set_voltage", "parameters": {"value": 5.0}},
}


@pytest.fixture
async def served(tmp_path: Path, clock: ManualClock) -> AsyncIterator[tuple[Harness, Client]]:
    """The job service as `lablink serve` wires it: parameters checked against the drivers."""
    harness = await Harness(
        tmp_path / "data" / "scheduler.db", clock, profiles=True, instruments=True
    ).start()
    try:
        async with api_client(harness, auth=False) as client:
            yield harness, client
    finally:
        await harness.close()


def error(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 422, response.text
    (only,) = response.json()["errors"]
    assert only["field"] in response.json()["detail"]
    return dict(only)


async def job_count(client: Client) -> int:
    return int((await client.get("/api/scheduler/jobs")).json()["count"])


def with_parameters(parameters: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {**JOB, **fields, "parameters": parameters}


async def test_a_value_beyond_the_limit_is_refused_naming_field_value_and_limit(
    served: tuple[Harness, Client],
) -> None:
    _, client = served
    body = with_parameters({"command": "set_voltage", "parameters": {"value": 100}})
    refused = error(await client.post("/api/scheduler/jobs/create", json=body))
    assert refused["field"] == "parameters.parameters.value"
    assert refused["value"] == 100
    assert "is above the maximum 30 V of the power_supply driver" in refused["reason"]
    assert await job_count(client) == 0
    # The preview checks the same, and says whether the check was made.
    assert error(await client.post("/api/scheduler/preview", json=body)) == refused
    preview = await client.post("/api/scheduler/preview", json=JOB)
    assert preview.json()["parameters_check"] == "passed"


async def test_an_unknown_command_is_refused_with_the_valid_ones(
    served: tuple[Harness, Client],
) -> None:
    _, client = served
    body = with_parameters({"command": "set_volts", "parameters": {"value": 5}})
    refused = error(await client.post("/api/scheduler/jobs/create", json=body))
    assert (refused["field"], refused["value"]) == ("parameters.command", "set_volts")
    assert "set_voltage" in refused["reason"]


@pytest.mark.parametrize(
    ("equipment_id", "schedule_type", "parameters", "field"),
    [
        ("power_supply_1", "command", {"command": "set_voltage"}, "parameters.parameters.value"),
        (
            "load_1",
            "command",
            {"command": "run_load_test", "parameters": {"duration": 60}},
            "parameters.parameters.current",
        ),
        ("power_supply_1", "command", {}, "parameters.command"),
        ("oscilloscope_1", "equipment_test", {}, "parameters.test_name"),
    ],
)
async def test_a_missing_required_parameter_is_refused(
    served: tuple[Harness, Client],
    equipment_id: str,
    schedule_type: str,
    parameters: dict[str, Any],
    field: str,
) -> None:
    _, client = served
    body = with_parameters(parameters, equipment_id=equipment_id, schedule_type=schedule_type)
    refused = error(await client.post("/api/scheduler/jobs/create", json=body))
    assert refused["field"] == field


@pytest.mark.parametrize(
    ("equipment_id", "schedule_type", "parameters", "field", "words"),
    [
        (
            "load_1",
            "command",
            {"command": "set_current", "parameters": {"value": 31}},
            "parameters.parameters.value",
            "maximum 30 A",
        ),
        (
            "multimeter_1",
            "measurement",
            {"command": "get_frequency"},
            "parameters.command",
            "not a command",
        ),
        (
            "scope_1",
            "measurement",
            {"command": "get_vpp", "parameters": {"channel": 5}},
            "parameters.parameters.channel",
            "not one of [1, 2, 3, 4]",
        ),
        (
            "scope_1",
            "acquisition",
            {"duration": 10, "sample_rate": 0.5},
            "parameters.sample_rate",
            "below the minimum 1 Sa/s of the oscilloscope driver",
        ),
        (
            "sensor_1",
            "acquisition",
            {"duration": 60, "channels": [1, 2]},
            "parameters.channels",
            "[1]",
        ),
        ("power_supply_1", "state_capture", {"extra": 1}, "parameters.extra", "not accepted"),
        (
            "sensor_1",
            "command",
            {"command": "set_averaging", "parameters": {"value": 2.5}},
            "parameters.parameters.value",
            "whole number",
        ),
    ],
)
async def test_every_job_type_is_checked_against_its_driver(
    served: tuple[Harness, Client],
    equipment_id: str,
    schedule_type: str,
    parameters: dict[str, Any],
    field: str,
    words: str,
) -> None:
    _, client = served
    body = with_parameters(parameters, equipment_id=equipment_id, schedule_type=schedule_type)
    refused = error(await client.post("/api/scheduler/jobs/create", json=body))
    assert refused["field"] == field
    assert words in refused["reason"]


async def test_an_update_is_checked_too_and_changes_nothing_when_refused(
    served: tuple[Harness, Client],
) -> None:
    _, client = served
    created = await client.post("/api/scheduler/jobs/create", json=JOB)
    job_id = created.json()["job_id"]
    job = (await client.get(f"/api/scheduler/jobs/{job_id}")).json()["job"]
    assert job["parameters_check"] == "passed"
    response = await client.put(
        f"/api/scheduler/jobs/{job_id}",
        json={"parameters": {"command": "set_voltage", "parameters": {"value": 100}}},
    )
    assert error(response)["field"] == "parameters.parameters.value"
    # Moving the job to an instrument whose driver refuses its parameters is refused as well.
    moved = await client.put(f"/api/scheduler/jobs/{job_id}", json={"equipment_id": "sensor_1"})
    assert error(moved)["field"] == "parameters.command"
    job = (await client.get(f"/api/scheduler/jobs/{job_id}")).json()["job"]
    assert (job["version"], job["parameters"]) == (1, JOB["parameters"])


async def test_an_instrument_no_agent_described_is_accepted_with_the_check_pending(
    served: tuple[Harness, Client],
) -> None:
    harness, client = served
    body = with_parameters(
        {"command": "set_voltage", "parameters": {"value": 100}}, equipment_id="lab_psu_7"
    )
    created = await client.post("/api/scheduler/jobs/create", json=body)
    assert created.status_code == 200, created.text
    job_id = created.json()["job_id"]
    job = (await client.get(f"/api/scheduler/jobs/{job_id}")).json()["job"]
    assert job["parameters_check"] == "pending"

    # Its agent describes it: a 30 V supply. An edit that leaves the parameters alone keeps
    # the outcome; one that touches them is checked, now that the driver is known.
    harness.store.append(
        "equipment:lab_psu_7",
        ANY,
        [
            NewEvent(
                event=EquipmentOnline(
                    equipment_id="lab_psu_7",
                    kind="power_supply",
                    identity="LabLink,PSU-3005,7,1.0",
                    agent_id="lab-pc",
                ),
                actor="agents",
                occurred_at=harness.clock.now(),
            )
        ],
    )
    renamed = await client.put(f"/api/scheduler/jobs/{job_id}", json={"name": "Rail 7"})
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["job"]["parameters_check"] == "pending"
    refused = await client.put(
        f"/api/scheduler/jobs/{job_id}",
        json={"parameters": {"command": "set_voltage", "parameters": {"value": 31}}},
    )
    assert error(refused)["value"] == 31
    fixed = await client.put(
        f"/api/scheduler/jobs/{job_id}",
        json={"parameters": {"command": "set_voltage", "parameters": {"value": 12}}},
    )
    assert fixed.status_code == 200, fixed.text
    assert fixed.json()["job"]["parameters_check"] == "passed"

    # A job for a described instrument is checked at creation.
    refused = await client.post("/api/scheduler/jobs/create", json=body)
    assert error(refused)["field"] == "parameters.parameters.value"


async def test_a_valid_job_on_a_known_instrument_reads_passed(
    served: tuple[Harness, Client],
) -> None:
    _, client = served
    created = await client.post("/api/scheduler/jobs/create", json=JOB)
    job = (await client.get(f"/api/scheduler/jobs/{created.json()['job_id']}")).json()["job"]
    assert job["parameters_check"] == "passed"
    listed = (await client.get("/api/scheduler/jobs")).json()["jobs"]
    assert listed[0]["parameters_check"] == "passed"
