"""/api/profiles through the real app: list, get, create, update, delete; admins write, viewers
read; every refusal names the field, the value and why."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from lablink.keys import create_key
from tests.support.harness import Harness, api_client

Client = httpx.AsyncClient
PSU: dict[str, Any] = {
    "name": "psu_5v",
    "description": "5 V rail",
    "equipment_type": "power_supply",
    "model": "PSU-3005",
    "settings": {"current": 1.0, "ovp_level": 5.5, "voltage": 5.0},
    "tags": ["logic"],
}


async def create(client: Client, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post("/api/profiles", json=body)
    assert response.status_code == 200, response.text
    payload: dict[str, Any] = response.json()
    assert payload["success"] is True
    return payload


async def test_create_get_list_update_delete(client: Client, harness: Harness) -> None:
    created = await create(client, PSU)
    assert created["profile_id"] == "psu_5v"
    profile = created["profile"]
    assert profile["settings"] == PSU["settings"]
    assert list(profile["settings"]) == ["current", "ovp_level", "voltage"]
    assert profile["version"] == 1
    assert profile["created_by"] == "local"
    assert profile["created_at"] == "2026-03-02T09:00:00+00:00"

    got = (await client.get("/api/profiles/psu_5v")).json()
    assert got == {"success": True, "profile": profile}

    await create(
        client,
        {
            **PSU,
            "name": "Scope view",
            "profile_id": "scope_view",
            "equipment_type": "scope",
            "settings": {"sample_rate": 1e6},
        },
    )
    listed = (await client.get("/api/profiles")).json()
    assert listed["count"] == 2
    assert [p["profile_id"] for p in listed["profiles"]] == ["psu_5v", "scope_view"]
    scopes = (await client.get("/api/profiles", params={"equipment_type": "oscilloscope"})).json()
    assert [p["profile_id"] for p in scopes["profiles"]] == ["scope_view"]
    tagged = (await client.get("/api/profiles", params={"tag": "logic"})).json()
    assert tagged["count"] == 2

    updated = await client.put(
        "/api/profiles/psu_5v", json={"settings": {"voltage": 5.1}, "version": 1}
    )
    assert updated.status_code == 200, updated.text
    assert updated.json()["message"] == "profile updated"
    assert updated.json()["profile"]["settings"] == {"voltage": 5.1}
    assert updated.json()["profile"]["version"] == 2
    assert updated.json()["profile"]["description"] == "5 V rail"
    same = await client.put("/api/profiles/psu_5v", json={"settings": {"voltage": 5.1}})
    assert same.json()["message"] == "nothing changed"

    deleted = await client.delete("/api/profiles/psu_5v")
    assert deleted.status_code == 200
    assert (await client.get("/api/profiles/psu_5v")).status_code == 404
    types = [
        r["type"]
        for r in harness.rows(
            "SELECT type FROM events WHERE stream_id = 'profile:psu_5v' ORDER BY version"
        )
    ]
    assert types == ["profile.created", "profile.updated", "profile.deleted"]


async def test_settings_beyond_limits_are_a_422_naming_each(client: Client) -> None:
    body = {**PSU, "settings": {"voltage": 31, "current": -1, "frequency": 50}}
    response = await client.post("/api/profiles", json=body)
    assert response.status_code == 422
    errors = response.json()["errors"]
    assert [(e["field"], e["value"]) for e in errors] == [
        ("settings.voltage", 31),
        ("settings.current", -1),
        ("settings.frequency", 50),
    ]
    assert errors[0]["reason"] == "is above the maximum 30 V of the power_supply driver"
    assert errors[1]["reason"] == "is below the minimum 0 A of the power_supply driver"
    assert "settings.voltage=31" in response.json()["detail"]
    assert (await client.get("/api/profiles")).json()["count"] == 0


async def test_an_update_is_checked_against_the_limits_too(client: Client) -> None:
    await create(client, PSU)
    response = await client.put("/api/profiles/psu_5v", json={"settings": {"ovp_level": 40}})
    assert response.status_code == 422
    (error,) = response.json()["errors"]
    assert error == {
        "field": "settings.ovp_level",
        "value": 40,
        "reason": "is above the maximum 33 V of the power_supply driver",
    }


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**PSU, "colour": "red"}, "colour"),
        ({**PSU, "settings": [1, 2]}, "settings"),
        ({**PSU, "name": "has space"}, "name"),
        ({**PSU, "profile_id": "a.b"}, "profile_id"),
        ({**PSU, "equipment_type": "toaster"}, "equipment_type"),
        ({k: v for k, v in PSU.items() if k != "equipment_type"}, "equipment_type"),
    ],
)
async def test_bad_bodies_are_422_naming_the_field(
    client: Client, body: dict[str, Any], field: str
) -> None:
    response = await client.post("/api/profiles", json=body)
    assert response.status_code == 422, response.text
    assert [e["field"] for e in response.json()["errors"]] == [field]


async def test_unknown_ids_are_404_and_duplicates_and_stale_versions_409(client: Client) -> None:
    for response in (
        await client.get("/api/profiles/nope"),
        await client.put("/api/profiles/nope", json={"name": "x"}),
        await client.delete("/api/profiles/nope"),
    ):
        assert response.status_code == 404
        assert response.json()["errors"] == [
            {"field": "profile_id", "value": "nope", "reason": "not found"}
        ]
    await create(client, PSU)
    again = await client.post("/api/profiles", json=PSU)
    assert again.status_code == 409
    assert again.json()["detail"] == "profile 'psu_5v' already exists"
    assert again.json()["errors"] == [
        {"field": "profile_id", "value": "psu_5v", "reason": "already exists"}
    ]
    stale = await client.put("/api/profiles/psu_5v", json={"name": "psu_5v", "version": 7})
    assert stale.status_code == 409
    assert "at version 1" in stale.json()["detail"]
    assert "names 7" in stale.json()["detail"]
    assert stale.json()["errors"][0]["field"] == "version"
    assert (stale.json()["expected_version"], stale.json()["current_version"]) == (7, 1)


@pytest.fixture
async def secured(harness: Harness) -> AsyncIterator[Client]:
    async with api_client(harness, auth=True) as client:
        yield client


def key(harness: Harness, role: str) -> dict[str, str]:
    _, secret = create_key(
        harness.store, name=f"a {role}", role=role, actor="test", now=harness.clock.now()
    )
    return {"Authorization": f"Bearer {secret}"}


async def test_viewers_read_only_admins_write(secured: Client, harness: Harness) -> None:
    viewer, operator, admin = (key(harness, r) for r in ("viewer", "operator", "admin"))
    assert (await secured.get("/api/profiles")).status_code == 401
    for headers in (viewer, operator):
        refused = await secured.post("/api/profiles", json=PSU, headers=headers)
        assert refused.status_code == 403
        assert "'admin'" in refused.json()["detail"]
    made = await secured.post("/api/profiles", json=PSU, headers=admin)
    assert made.status_code == 200
    assert made.json()["profile"]["created_by"] == "a admin"
    assert (await secured.get("/api/profiles/psu_5v", headers=viewer)).status_code == 200
    assert (await secured.get("/api/profiles", headers=viewer)).json()["count"] == 1
    put = await secured.put("/api/profiles/psu_5v", json={"name": "x"}, headers=operator)
    assert put.status_code == 403
    gone = await secured.delete("/api/profiles/psu_5v", headers=viewer)
    assert gone.status_code == 403
    assert (await secured.delete("/api/profiles/psu_5v", headers=admin)).status_code == 200


async def test_the_list_filter_takes_kinds_and_their_aliases_and_refuses_others(
    client: Client,
) -> None:
    await create(client, PSU)
    supplies = (await client.get("/api/profiles", params={"equipment_type": "psu"})).json()
    assert [p["profile_id"] for p in supplies["profiles"]] == ["psu_5v"]
    scopes = (await client.get("/api/profiles", params={"equipment_type": "scope"})).json()
    assert scopes["count"] == 0
    bad = await client.get("/api/profiles", params={"equipment_type": "toaster"})
    assert bad.status_code == 400
    (error,) = bad.json()["errors"]
    assert (error["field"], error["value"]) == ("equipment_type", "toaster")
