"""API keys: Bearer or X-API-Key, roles that nest, 401 without a key, 403 naming the role,
hashed storage, and the key's name as every event's actor."""

from __future__ import annotations

import sqlite3
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from lablink.cli import app
from lablink.keys import create_key, hash_key
from tests.support.harness import Harness, api_client
from tests.support.views import open_views, views_db

BODY: dict[str, Any] = {
    "name": "Hourly Voltage Check",
    "schedule_type": "measurement",
    "equipment_id": "power_supply_1",
    "trigger_type": "interval",
    "interval_hours": 1,
    "parameters": {"command": "get_voltage"},
}


@pytest.fixture
async def secured(harness: Harness) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(harness, auth=True) as client:
        yield client


def key(harness: Harness, name: str, role: str) -> dict[str, str]:
    _, secret = create_key(
        harness.store, name=name, role=role, actor="test", now=harness.clock.now()
    )
    return {"Authorization": f"Bearer {secret}"}


async def test_no_key_is_401_and_health_needs_none(secured: httpx.AsyncClient) -> None:
    response = await secured.get("/api/scheduler/jobs")
    assert response.status_code == 401
    assert "Authorization: Bearer" in response.json()["detail"]
    assert (await secured.get("/health")).status_code == 200
    wrong = await secured.get("/api/scheduler/jobs", headers={"X-API-Key": "llk_nope"})
    assert wrong.status_code == 401


async def test_roles_nest_and_403_names_the_missing_role(
    secured: httpx.AsyncClient, harness: Harness
) -> None:
    viewer = key(harness, "dashboard", "viewer")
    operator = key(harness, "alice", "operator")
    assert (await secured.get("/api/scheduler/jobs", headers=viewer)).status_code == 200
    refused = await secured.post("/api/scheduler/jobs/create", json=BODY, headers=viewer)
    assert refused.status_code == 403
    assert "'operator'" in refused.json()["detail"]
    assert "'viewer'" in refused.json()["detail"]
    assert (await secured.get("/api/scheduler/jobs", headers=viewer)).json()["count"] == 0
    created = await secured.post("/api/scheduler/jobs/create", json=BODY, headers=operator)
    assert created.status_code == 200
    assert (await secured.get("/api/scheduler/jobs", headers=operator)).status_code == 200


async def test_x_api_key_header_and_actor_is_the_key_name(
    secured: httpx.AsyncClient, harness: Harness
) -> None:
    secret = key(harness, "bob", "admin")["Authorization"].split()[1]
    headers = {"X-API-Key": secret}
    job_id = (await secured.post("/api/scheduler/jobs/create", json=BODY, headers=headers)).json()[
        "job_id"
    ]
    await secured.post(f"/api/scheduler/jobs/{job_id}/pause", headers=headers)
    await secured.post(f"/api/scheduler/jobs/{job_id}/run", headers=headers)
    await harness.settle()
    trail = (await secured.get(f"/api/scheduler/jobs/{job_id}/events", headers=headers)).json()
    by_type = {e["type"]: e["actor"] for e in trail["events"]}
    assert by_type["job.created"] == "bob"
    assert by_type["job.paused"] == "bob"
    assert by_type["execution.pending"] == "bob"  # run-now is the key holder's act
    assert by_type["execution.completed"] == "scheduler"  # the outcome is the scheduler's
    job = (await secured.get(f"/api/scheduler/jobs/{job_id}", headers=headers)).json()["job"]
    assert job["created_by"] == "bob"


async def test_keys_are_stored_hashed(harness: Harness) -> None:
    _, secret = create_key(
        harness.store, name="carol", role="viewer", actor="t", now=harness.clock.now()
    )
    conn = open_views(harness.path)  # the views, the log attached
    try:
        log = "\n".join(r[0] for r in conn.execute("SELECT payload FROM events"))
        stored = conn.execute("SELECT key_hash FROM api_keys WHERE name = 'carol'").fetchone()[0]
    finally:
        conn.close()
    assert secret not in log
    assert stored == hash_key(secret)


def test_keys_create_cli_prints_the_key_once(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["keys", "create", "--role", "operator", "--name", "alice", "--data-dir", str(tmp_path)],
    )
    assert result.exit_code == 0, result.output
    secret = result.stdout.strip().splitlines()[0]
    assert secret.startswith("llk_")
    conn = sqlite3.connect(views_db(tmp_path / "scheduler.db"))
    try:
        row = conn.execute("SELECT name, role, key_hash FROM api_keys").fetchone()
    finally:
        conn.close()
    assert row == ("alice", "operator", hash_key(secret))
    bad = CliRunner().invoke(
        app, ["keys", "create", "--role", "root", "--name", "x", "--data-dir", str(tmp_path)]
    )
    assert bad.exit_code != 0
    assert "viewer, operator, admin" in bad.output


@pytest.mark.nats
def test_admin_key_file_mode(tmp_path: Path) -> None:
    import asyncio

    from lablink.runtime import Runtime, ensure_admin_key
    from lablink.settings import Settings

    async def first_start() -> tuple[str | None, str | None]:
        settings = Settings(data_dir=tmp_path, timezone="UTC", executor="noop")
        async with Runtime(settings) as runtime:
            created = ensure_admin_key(runtime)
            again = ensure_admin_key(runtime)
        return created, again

    created, again = asyncio.run(first_start())
    assert created is not None
    assert again is None
    path = tmp_path / "admin.key"
    assert path.read_text().strip() == created
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
