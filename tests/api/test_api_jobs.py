"""The guide's job endpoints through the real Litestar app, with the DESIGN.md envelopes."""

from __future__ import annotations

from datetime import UTC, timedelta
from typing import Any

import httpx

from tests.support.harness import Harness

Client = httpx.AsyncClient
HOURLY: dict[str, Any] = {
    "name": "Hourly Voltage Check",
    "description": "Measure output voltage every hour",
    "schedule_type": "measurement",
    "equipment_id": "power_supply_1",
    "trigger_type": "interval",
    "interval_hours": 1,
    "parameters": {"command": "get_voltage"},
    "enabled": True,
}


async def create(client: Client, body: dict[str, Any]) -> str:
    response = await client.post("/api/scheduler/jobs/create", json=body)
    assert response.status_code == 200, response.text
    payload = response.json()
    assert payload["success"] is True
    assert payload["job_id"].startswith("job_")
    return str(payload["job_id"])


async def test_create_get_list(client: Client) -> None:
    job_id = await create(client, HOURLY)
    got = (await client.get(f"/api/scheduler/jobs/{job_id}")).json()
    assert got["success"] is True
    job = got["job"]
    assert job["name"] == "Hourly Voltage Check"
    assert job["enabled"] is True
    assert job["parameters"] == {"command": "get_voltage"}
    assert job["next_run_time"] == "2026-03-02T11:00:00+01:00"  # Berlin, with its offset
    assert job["version"] == 1
    assert job["status"] == "active"
    listed = (await client.get("/api/scheduler/jobs", params={"enabled": "true"})).json()
    assert listed["count"] == 1
    assert listed["jobs"][0]["job_id"] == job_id
    none = (await client.get("/api/scheduler/jobs", params={"enabled": "false"})).json()
    assert none["count"] == 0


async def test_list_filters(client: Client) -> None:
    a = await create(client, {**HOURLY, "tags": ["backup", "critical"]})
    b = await create(
        client,
        {
            **HOURLY,
            "name": "Scope check",
            "equipment_id": "scope_1",
            "schedule_type": "state_capture",
            "parameters": {},
        },
    )

    async def ids(**params: str) -> list[str]:
        body = (await client.get("/api/scheduler/jobs", params=params)).json()
        return [j["job_id"] for j in body["jobs"]]

    assert await ids(tag="critical") == [a]
    assert await ids(equipment_id="scope_1") == [b]
    assert await ids(schedule_type="measurement") == [a]
    assert await ids(search="scope") == [b]
    assert await ids(search="%") == []


async def test_pause_resume_delete(client: Client, harness: Harness) -> None:
    job_id = await create(client, HOURLY)
    paused = await client.post(f"/api/scheduler/jobs/{job_id}/pause")
    assert paused.json() == {"success": True, "message": f"job {job_id} paused"}
    job = (await client.get(f"/api/scheduler/jobs/{job_id}")).json()["job"]
    assert (job["enabled"], job["next_run_time"]) == (False, None)
    assert harness.engine.timers.planned(job_id) is None
    await client.post(f"/api/scheduler/jobs/{job_id}/resume")
    assert harness.engine.timers.planned(job_id) is not None
    deleted = await client.delete(f"/api/scheduler/jobs/{job_id}")
    assert deleted.json()["success"] is True
    missing = await client.get(f"/api/scheduler/jobs/{job_id}")
    assert missing.status_code == 404
    assert missing.json()["errors"] == [{"field": "job_id", "value": job_id, "reason": "not found"}]


async def test_update_with_version_guard(client: Client) -> None:
    job_id = await create(client, HOURLY)
    ok = await client.put(f"/api/scheduler/jobs/{job_id}", json={"version": 1, "name": "Renamed"})
    assert ok.status_code == 200, ok.text
    assert ok.json()["job"]["name"] == "Renamed"
    assert ok.json()["job"]["version"] == 2
    stale = await client.put(f"/api/scheduler/jobs/{job_id}", json={"version": 1, "name": "Again"})
    assert stale.status_code == 409
    body = stale.json()
    assert (body["expected_version"], body["current_version"]) == (1, 2)
    assert "version 2" in body["detail"]
    assert "1" in body["detail"]


async def test_run_now_then_history_and_statistics(client: Client, harness: Harness) -> None:
    job_id = await create(client, {**HOURLY, "enabled": False})
    run = await client.post(f"/api/scheduler/jobs/{job_id}/run")
    assert run.status_code == 200, run.text
    execution_id = run.json()["execution_id"]
    assert execution_id.startswith("exec_")
    await harness.settle()
    execution = (await client.get(f"/api/scheduler/executions/{execution_id}")).json()["execution"]
    assert execution["status"] == "completed"
    assert execution["trigger_info"] == "manual"
    assert execution["result"] == {"value": 1.0, "unit": "V"}
    listed = (await client.get("/api/scheduler/executions", params={"job_id": job_id})).json()
    assert [e["execution_id"] for e in listed["executions"]] == [execution_id]
    history = (await client.get(f"/api/scheduler/jobs/{job_id}/history")).json()["history"]
    assert history["total_executions"] == 1
    assert history["successful"] == 1
    assert history["last_status"] == "completed"
    assert history["next_run"] is None  # disabled
    stats = (await client.get("/api/scheduler/statistics")).json()["statistics"]
    assert stats["total_jobs"] == 1
    assert stats["disabled_jobs"] == 1
    assert stats["total_executions_today"] == 1
    assert stats["successful_today"] == 1
    assert stats["by_type"] == {"measurement": 1}
    running = (await client.get("/api/scheduler/running")).json()
    assert running == {"success": True, "count": 0, "running_jobs": []}


async def test_run_now_conflict_is_409_naming_the_running_execution(
    client: Client, harness: Harness
) -> None:
    harness.executor.hold = True
    job_id = await create(client, HOURLY)
    first = (await client.post(f"/api/scheduler/jobs/{job_id}/run")).json()["execution_id"]
    assert (await client.get("/api/scheduler/running")).json()["running_jobs"] == [job_id]
    second = await client.post(f"/api/scheduler/jobs/{job_id}/run")
    assert second.status_code == 409
    assert second.json()["running"] == [first]
    assert first in second.json()["detail"]


async def test_next_runs_and_preview(client: Client) -> None:
    job_id = await create(
        client,
        {
            **HOURLY,
            "trigger_type": "weekly",
            "interval_hours": None,
            "day_of_week": 1,
            "time_of_day": "09:00:00",
            "enabled": False,
        },
    )
    runs = (await client.get(f"/api/scheduler/jobs/{job_id}/next-runs", params={"count": 3})).json()
    assert runs["next_runs"] == [
        "2026-03-03T09:00:00+01:00",
        "2026-03-10T09:00:00+01:00",
        "2026-03-17T09:00:00+01:00",
    ]
    preview = await client.post(
        "/api/scheduler/preview",
        params={"count": 2},
        json={
            **HOURLY,
            "trigger_type": "cron",
            "interval_hours": None,
            "cron_expression": "0 9-17 * * 1-5",
            "timezone": "UTC",
        },
    )
    assert preview.status_code == 200, preview.text
    assert preview.json()["next_runs"] == ["2026-03-02T10:00:00+00:00", "2026-03-02T11:00:00+00:00"]
    assert (await client.get("/api/scheduler/jobs")).json()["count"] == 1


async def test_audit_trail(client: Client) -> None:
    job_id = await create(client, HOURLY)
    await client.post(f"/api/scheduler/jobs/{job_id}/pause")
    events = (await client.get(f"/api/scheduler/jobs/{job_id}/events")).json()
    assert [e["type"] for e in events["events"]] == ["job.created", "job.paused"]
    assert {e["actor"] for e in events["events"]} == {"local"}


async def test_executions_filters_and_cursor(client: Client, harness: Harness) -> None:
    job_id = await create(client, {**HOURLY, "interval_hours": None, "interval_minutes": 1})
    start = harness.clock.now()
    for n in range(1, 6):
        await harness.at(start + timedelta(minutes=n))
    page = (await client.get("/api/scheduler/executions", params={"limit": 2})).json()
    assert page["count"] == 2
    seen = [e["scheduled_time"] for e in page["executions"]]
    while page["next_cursor"] is not None:
        page = (
            await client.get(
                "/api/scheduler/executions", params={"limit": 2, "cursor": page["next_cursor"]}
            )
        ).json()
        seen += [e["scheduled_time"] for e in page["executions"]]
    assert len(seen) == 5
    assert seen == sorted(seen, reverse=True)
    since = (start + timedelta(minutes=3)).astimezone(UTC).isoformat()
    recent = (await client.get("/api/scheduler/executions", params={"since": since})).json()
    assert recent["count"] == 3
    failed = (await client.get("/api/scheduler/executions", params={"status": "failed"})).json()
    assert failed["count"] == 0
    assert job_id


async def test_bad_input_names_field_value_and_reason(client: Client) -> None:
    unknown = await client.post("/api/scheduler/jobs/create", json={**HOURLY, "interval_hour": 1})
    assert unknown.status_code == 422
    assert unknown.json()["errors"][0] == {
        "field": "interval_hour",
        "value": 1,
        "reason": "unknown field",
        "source": "body",
    }
    bad = await client.post("/api/scheduler/jobs/create", json={**HOURLY, "interval_hours": -1})
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["field"] == "interval_hours"
    assert bad.json()["errors"][0]["value"] == -1
    wrong_type = await client.post("/api/scheduler/jobs/create", json={**HOURLY, "enabled": "yes"})
    assert wrong_type.status_code == 422
    assert wrong_type.json()["errors"][0]["field"] == "enabled"
    assert wrong_type.json()["errors"][0]["value"] == "yes"
    limit = await client.get("/api/scheduler/executions", params={"limit": 5000})
    assert limit.status_code == 400
    assert limit.json()["errors"][0]["field"] == "limit"
    assert limit.json()["errors"][0]["value"] == "5000"
    status = await client.get("/api/scheduler/executions", params={"status": "exploded"})
    assert status.status_code == 400
    assert status.json()["errors"][0]["value"] == "exploded"
    malformed = await client.post(
        "/api/scheduler/jobs/create",
        content=b"{not json",
        headers={"content-type": "application/json"},
    )
    assert malformed.status_code == 400
    huge = await client.post(
        "/api/scheduler/jobs/create",
        json={**HOURLY, "description": "x" * (1024 * 1024 + 1)},
    )
    assert huge.status_code == 413
    assert (await client.get("/api/scheduler/jobs")).json()["count"] == 0


async def test_health(client: Client) -> None:
    health = (await client.get("/health")).json()
    assert health["status"] == "ok"
    assert health["database"]["status"] == "ok"
    assert "nats" in health
    assert "agents" in health


async def test_openapi_documents_every_route(client: Client) -> None:
    schema = (await client.get("/schema/openapi.json")).json()
    paths = set(schema["paths"])
    for path in (
        "/api/scheduler/jobs/create",
        "/api/scheduler/jobs/{job_id}",
        "/api/scheduler/jobs",
        "/api/scheduler/jobs/{job_id}/pause",
        "/api/scheduler/jobs/{job_id}/resume",
        "/api/scheduler/jobs/{job_id}/run",
        "/api/scheduler/executions/{execution_id}",
        "/api/scheduler/executions",
        "/api/scheduler/jobs/{job_id}/history",
        "/api/scheduler/statistics",
        "/api/scheduler/running",
        "/api/scheduler/jobs/{job_id}/next-runs",
        "/api/scheduler/preview",
        "/api/scheduler/jobs/{job_id}/events",
        "/health",
    ):
        assert path in paths, path


async def test_statistics_follow_every_new_event(client: Client, harness: Harness) -> None:
    before = (await client.get("/api/scheduler/statistics")).json()["statistics"]
    assert before["total_jobs"] == 0
    job_id = await create(client, HOURLY)
    after = (await client.get("/api/scheduler/statistics")).json()["statistics"]
    assert (after["total_jobs"], after["active_jobs"]) == (1, 1)
    await client.post(f"/api/scheduler/jobs/{job_id}/pause")
    paused = (await client.get("/api/scheduler/statistics")).json()["statistics"]
    assert (paused["active_jobs"], paused["disabled_jobs"]) == (0, 1)
    harness.clock.advance(timedelta(days=1))  # a new day with no new event: today's counts reset
    await client.post(f"/api/scheduler/jobs/{job_id}/run")
    await harness.settle()
    today = (await client.get("/api/scheduler/statistics")).json()["statistics"]
    assert today["total_executions_today"] == 1
