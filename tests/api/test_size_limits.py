"""What one job may hold is bounded, and a refusal names the limit.

A 100,000-item ``tags`` list or a 50,000-key ``parameters`` object used to be accepted, and
one jobs page reached 2.1 MB. The limits (docs/api.md, "Limits"): name <= 200 characters,
description <= 4 KiB, tags <= 32 of <= 64 characters, parameters <= 64 KiB as JSON.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

Client = httpx.AsyncClient
JOB: dict[str, Any] = {
    "name": "Sized",
    "schedule_type": "measurement",
    "equipment_id": "power_supply_1",
    "trigger_type": "interval",
    "interval_hours": 1,
    "parameters": {"command": "get_voltage"},
}


def refused(response: httpx.Response, field: str, limit: str) -> dict[str, Any]:
    assert response.status_code == 422, response.text[:500]
    errors = response.json()["errors"]
    matching = [e for e in errors if e["field"] == field]
    assert matching, errors
    assert limit in matching[0]["reason"], matching[0]
    # The answer stays small whatever was sent.
    assert len(response.content) < 4096
    return dict(matching[0])


@pytest.mark.parametrize(
    ("fields", "field", "limit"),
    [
        ({"tags": ["t"] * 100_000}, "tags", "at most 32 tags"),
        ({"tags": ["t"] * 33}, "tags", "at most 32 tags"),
        ({"tags": ["x" * 65]}, "tags[0]", "1 to 64 characters"),
        (
            {"parameters": {f"k{i}": i for i in range(50_000)}},
            "parameters",
            "at most 65536 bytes (64 KiB)",
        ),
        (
            {"parameters": {"command": "get_voltage", "note": "x" * 65_536}},
            "parameters",
            "at most 65536 bytes (64 KiB)",
        ),
        ({"description": "d" * 4097}, "description", "at most 4096 bytes (4 KiB)"),
        # 1,366 three-byte characters: under 4,096 characters, over 4 KiB.
        ({"description": "€" * 1366}, "description", "at most 4096 bytes (4 KiB)"),
        ({"name": "n" * 201}, "name", "1 to 200 characters"),
    ],
    ids=[
        "100k tags",
        "33 tags",
        "a 65-char tag",
        "50k parameter keys",
        "parameters over 64 KiB",
        "description 4097 bytes",
        "description 4098 bytes of 1366 chars",
        "name 201 chars",
    ],
)
async def test_over_a_limit_is_a_422_naming_it(
    client: Client, fields: dict[str, Any], field: str, limit: str
) -> None:
    for path in ("/api/scheduler/jobs/create", "/api/scheduler/preview"):
        refused(await client.post(path, json={**JOB, **fields}), field, limit)
    assert (await client.get("/api/scheduler/jobs")).json()["count"] == 0


async def test_at_the_limits_is_accepted(client: Client) -> None:
    body = {
        **JOB,
        "name": "n" * 200,
        "description": "d" * 4096,
        "tags": [f"{i:02d}" + "t" * 62 for i in range(32)],
        "parameters": {"command": "get_voltage"},
    }
    created = await client.post("/api/scheduler/jobs/create", json=body)
    assert created.status_code == 200, created.text[:500]


async def test_an_update_over_a_limit_changes_nothing(client: Client) -> None:
    job_id = (await client.post("/api/scheduler/jobs/create", json=JOB)).json()["job_id"]
    response = await client.put(
        f"/api/scheduler/jobs/{job_id}", json={"tags": [str(i) for i in range(33)]}
    )
    refused(response, "tags", "at most 32 tags")
    job = (await client.get(f"/api/scheduler/jobs/{job_id}")).json()["job"]
    assert (job["tags"], job["version"]) == ([], 1)
