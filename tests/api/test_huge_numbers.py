"""Numbers JSON can write but no check can compare: a 422 naming the field, never a 500.

``"max_instances": 1`` followed by 400 zeros used to raise OverflowError in
``math.isfinite`` (domain/validation.py, instruments/scpi.py): a 500. The same held for
profile settings and for job (run) parameters. Every numeric field, however deep, now
answers 422 naming it; and the drivers refuse such a value by its limit, not with a crash.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from lablink.instruments.context import RunContext
from lablink.instruments.drivers import MODELS
from lablink.instruments.errors import InvalidParameter
from lablink.instruments.instrument import Instrument
from lablink.instruments.scpi import check_number

Client = httpx.AsyncClient
HUGE = "1" + "0" * 400  # 10**400, written as JSON text
HUGE_FLOAT = "1e400"
NUMBER_IDS = ["10^400", "-10^400", "1e400"]
JOB = (
    '{"name": "n", "schedule_type": "%s", "equipment_id": "power_supply_1",'
    ' "trigger_type": "interval", "interval_hours": 1, %s}'
)


async def post(client: Client, path: str, text: str) -> httpx.Response:
    return await client.post(path, content=text, headers={"content-type": "application/json"})


def refused(response: httpx.Response, field: str) -> dict[str, Any]:
    assert response.status_code == 422, response.text
    body: dict[str, Any] = response.json()
    assert body["success"] is False
    assert field in [e["field"] for e in body["errors"]], body
    assert field in body["detail"]
    return body


@pytest.mark.parametrize("number", [HUGE, "-" + HUGE, HUGE_FLOAT], ids=NUMBER_IDS)
@pytest.mark.parametrize(
    ("schedule_type", "fields", "field"),
    [
        ("measurement", '"max_instances": %s', "max_instances"),
        ("measurement", '"max_executions": %s', "max_executions"),
        ("measurement", '"alarm_after_missed": %s', "alarm_after_missed"),
        ("measurement", '"misfire_grace_time": %s', "misfire_grace_time"),
        ("measurement", '"timeout_seconds": %s', "timeout_seconds"),
        ("acquisition", '"parameters": {"duration": %s}', "parameters.duration"),
        (
            "acquisition",
            '"parameters": {"duration": 1, "sample_rate": %s}',
            "parameters.sample_rate",
        ),
        (
            "command",
            '"parameters": {"command": "set_voltage", "parameters": {"value": %s}}',
            "parameters.parameters.value",
        ),
        (
            "acquisition",
            '"parameters": {"duration": 1, "channels": [1, %s]}',
            "parameters.channels[1]",
        ),
    ],
)
async def test_job_fields_and_run_parameters(
    client: Client, schedule_type: str, fields: str, field: str, number: str
) -> None:
    body = JOB % (schedule_type, fields % number)
    for path in ("/api/scheduler/jobs/create", "/api/scheduler/preview"):
        refused(await post(client, path, body), field)
    listed = (await client.get("/api/scheduler/jobs")).json()
    assert listed["count"] == 0


async def test_the_reported_value_is_short_and_says_what_it_was(client: Client) -> None:
    body = refused(
        await post(
            client, "/api/scheduler/jobs/create", JOB % ("measurement", f'"max_instances": {HUGE}')
        ),
        "max_instances",
    )
    (error,) = body["errors"]
    assert error["value"] == "an integer of about 401 digits"
    assert "out of range" in error["reason"]


async def test_an_update_with_a_huge_number(client: Client) -> None:
    created = await post(
        client, "/api/scheduler/jobs/create", JOB % ("measurement", '"max_instances": 1')
    )
    job_id = created.json()["job_id"]
    response = await client.put(
        f"/api/scheduler/jobs/{job_id}",
        content=f'{{"max_instances": {HUGE}}}',
        headers={"content-type": "application/json"},
    )
    refused(response, "max_instances")
    job = (await client.get(f"/api/scheduler/jobs/{job_id}")).json()["job"]
    assert (job["max_instances"], job["version"]) == (1, 1)


@pytest.mark.parametrize("number", [HUGE, "-" + HUGE, HUGE_FLOAT], ids=NUMBER_IDS)
async def test_profile_settings(client: Client, number: str) -> None:
    text = f'{{"name": "p", "equipment_type": "power_supply", "settings": {{"voltage": {number}}}}}'
    refused(await post(client, "/api/profiles", text), "settings.voltage")
    assert (await client.get("/api/profiles/p")).status_code == 404


# -- the drivers themselves (a value in an event written before the door checked it) ------------


class _NoPort:
    def write(self, message: str) -> int:
        raise AssertionError(f"nothing may be sent, got {message!r}")

    def query(self, message: str) -> str:
        raise AssertionError(f"nothing may be sent, got {message!r}")


@pytest.mark.parametrize("value", [10**400, -(10**400)], ids=NUMBER_IDS[:2])
@pytest.mark.parametrize(
    ("kind", "command", "parameters"),
    [
        ("power_supply", "set_voltage", {"value": "V"}),
        ("temperature_sensor", "set_averaging", {"value": "V"}),
        ("electronic_load", "run_load_test", {"duration": 1, "current": "V"}),
        ("electronic_load", "run_load_test", {"duration": "V", "current": 1}),
        ("electronic_load", "run_load_test", {"duration": 1, "current": 1, "samples": "V"}),
    ],
)
def test_drivers_refuse_a_huge_integer_by_its_limit(
    kind: str, command: str, parameters: dict[str, Any], value: int
) -> None:
    instrument = Instrument("x", MODELS[kind], _NoPort())
    params = {k: value if v == "V" else v for k, v in parameters.items()}
    with pytest.raises(InvalidParameter) as refused_by:
        instrument.run_command(command, params, RunContext(equipment_id="x"))
    assert "maximum" in str(refused_by.value) or "minimum" in str(refused_by.value)


def test_check_number_takes_a_huge_integer() -> None:
    with pytest.raises(InvalidParameter, match="above the maximum 10"):
        check_number("x", {"n": 10**400}, "n", 0, 10, context="t")
