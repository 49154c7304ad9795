"""GET /metrics on the real app over a real SQLite data dir and engine, driven by a manual
clock: the log's counters and histograms, the views' gauges, /health's components, the
HTTP metrics with grouped paths, and who may read it."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx

from lablink.alarm_service import AlarmService
from lablink.clock import ManualClock
from lablink.equipment_service import EquipmentService
from lablink.events import AlarmRaised, NotificationAbandoned, NotificationFailed, NotificationSent
from lablink.eventstore.sqlite import LogReader
from lablink.handler import CommandHandler
from lablink.health import Health
from lablink.instruments.execution import Outcome
from lablink.instruments.protocol import Presence
from lablink.keys import create_key
from tests.metrics.scraping import Samples, parse, total, value
from tests.support.eventually import eventually
from tests.support.harness import Harness, api_client

EVERY_MINUTE: dict[str, Any] = {
    "name": "Voltage every minute",
    "schedule_type": "measurement",
    "equipment_id": "power_supply_1",
    "trigger_type": "interval",
    "interval_minutes": 1,
    "parameters": {"command": "get_voltage"},
}


async def scrape(client: httpx.AsyncClient, **headers: str) -> Samples:
    response = await client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return parse(response.text)[1]


async def create(client: httpx.AsyncClient, body: dict[str, Any]) -> str:
    response = await client.post("/api/scheduler/jobs/create", json=body)
    assert response.status_code == 200, response.text
    return str(response.json()["job_id"])


async def test_fires_executions_lateness_and_durations(
    client: httpx.AsyncClient, harness: Harness
) -> None:
    job_id = await create(client, EVERY_MINUTE)
    start = harness.clock.now()
    # Each fire is decided 2 s after it was due: lateness 2 s each.
    for n in range(1, 4):
        await harness.at(start + timedelta(minutes=n, seconds=2))
    samples = await scrape(client)
    labels = {"status": "completed", "schedule_type": "measurement"}
    assert value(samples, "lablink_executions_total", **labels) == 3
    assert value(samples, "lablink_fire_lateness_seconds_count") == 3
    assert value(samples, "lablink_fire_lateness_seconds_sum") == 6.0
    assert value(samples, "lablink_fire_lateness_seconds_bucket", le="1.0") == 0
    assert value(samples, "lablink_fire_lateness_seconds_bucket", le="2.5") == 3
    duration = "lablink_execution_duration_seconds_count"
    assert value(samples, duration, schedule_type="measurement") == 3
    assert (
        value(samples, "lablink_event_log_position")
        == LogReader(harness.store.conn).last_position()
    )

    # A manual run is counted as an execution, but has no schedule to be late for.
    assert (await client.post(f"/api/scheduler/jobs/{job_id}/run")).status_code == 200
    await harness.settle()
    again = await scrape(client)
    assert value(again, "lablink_executions_total", **labels) == 4
    assert value(again, "lablink_fire_lateness_seconds_count") == 3


async def test_a_running_execution_its_duration_and_a_failure(
    client: httpx.AsyncClient, harness: Harness
) -> None:
    await create(client, EVERY_MINUTE)
    harness.executor.hold = True
    start = harness.clock.now()
    await harness.at(start + timedelta(minutes=1))
    assert value(await scrape(client), "lablink_running_executions") == 1
    (held,) = harness.executor.held()
    harness.clock.set(start + timedelta(minutes=1, seconds=40))
    harness.executor.release(held, Outcome.failed("instrument_error", "overvoltage", code=-222))
    await harness.settle()
    samples = await scrape(client)
    assert value(samples, "lablink_running_executions") == 0
    failed = {"status": "failed", "schedule_type": "measurement"}
    assert value(samples, "lablink_executions_total", **failed) == 1
    name = "lablink_execution_duration_seconds"
    assert value(samples, f"{name}_sum", schedule_type="measurement") == 40.0
    assert value(samples, f"{name}_bucket", schedule_type="measurement", le="30.0") == 0
    assert value(samples, f"{name}_bucket", schedule_type="measurement", le="60.0") == 1


async def test_misfires_count_the_fires_the_records_stand_for(
    client: httpx.AsyncClient, harness: Harness
) -> None:
    job_id = await create(client, {**EVERY_MINUTE, "misfire_grace_time": 5, "coalesce": False})
    start = harness.clock.now()
    # Ten fires due while the scheduler was away: far past their grace time.
    await harness.at(start + timedelta(minutes=10, seconds=30))
    rows = harness.executions(job_id)
    missed = sum(r["missed_count"] for r in rows if r["status"] == "missed")
    assert missed > 0
    samples = await scrape(client)
    assert value(samples, "lablink_misfires_total", reason="missed") == missed
    assert value(samples, "lablink_misfires_total", reason="coalesced") == 0
    assert value(samples, "lablink_misfires_total", reason="skipped") == 0
    assert total(samples, "lablink_executions_total", status="missed") == len(
        [r for r in rows if r["status"] == "missed"]
    )


async def test_jobs_by_state_next_fire_and_alarms_by_severity(
    client: httpx.AsyncClient, harness: Harness
) -> None:
    samples = await scrape(client)
    assert [value(samples, "lablink_jobs", state=s) for s in ("active", "paused")] == [0, 0]
    assert value(samples, "lablink_next_fire_timestamp_seconds") is None
    first = await create(client, EVERY_MINUTE)
    await create(client, {**EVERY_MINUTE, "name": "Hourly", "interval_minutes": 60})
    assert (await client.post(f"/api/scheduler/jobs/{first}/pause")).status_code == 200
    alarms = AlarmService.on_store(harness.store, harness.clock)
    alarms.raise_alarm(
        "alarm:test",
        AlarmRaised(alarm_id="a-1", kind="scheduler_fault", severity="critical", message="x"),
        "test",
    )
    await harness.store.views.caught_up(30)
    samples = await scrape(client)
    assert value(samples, "lablink_jobs", state="active") == 1
    assert value(samples, "lablink_jobs", state="paused") == 1
    assert value(samples, "lablink_jobs", state="completed") == 0
    due = harness.clock.now() + timedelta(minutes=60)
    assert value(samples, "lablink_next_fire_timestamp_seconds") == due.timestamp()
    assert value(samples, "lablink_alarms_active", severity="critical") == 1
    assert value(samples, "lablink_alarms_active", severity="warning") == 0


async def test_notifications_by_channel_and_outcome(
    client: httpx.AsyncClient, harness: Harness
) -> None:
    handler = CommandHandler(harness.store, harness.clock)
    now = harness.clock.now()
    handler.record(
        "notification:a-1:ops",
        [
            NotificationFailed(alarm_id="a-1", channel="ops", attempt=1, error="HTTP 503"),
            NotificationSent(alarm_id="a-1", channel="ops", attempt=2, idempotency_key="k"),
        ],
        "notifier",
    )
    handler.record(
        "notification:a-1:mail",
        [
            NotificationAbandoned(
                alarm_id="a-1", channel="mail", attempts=9, first_attempt_at=now, error="refused"
            )
        ],
        "notifier",
    )
    samples = await scrape(client)
    name = "lablink_notifications_total"
    assert value(samples, name, channel="ops", outcome="failed") == 1
    assert value(samples, name, channel="ops", outcome="sent") == 1
    assert value(samples, name, channel="mail", outcome="abandoned") == 1
    # Folded once: a second scrape reads only what is new.
    assert value(await scrape(client), name, channel="ops", outcome="sent") == 1


async def test_component_health_and_grouped_http_paths(harness: Harness) -> None:
    health = Health(harness.clock)
    health.set("event_log", "ok")
    health.set("relay", "failing", "nothing published for 90 s")
    health.set("nats", "degraded", "disconnected")
    async with api_client(harness, auth=False, health=health) as client:
        job_id = await create(client, EVERY_MINUTE)
        assert (await client.get(f"/api/scheduler/jobs/{job_id}")).status_code == 200
        response = await client.get("/metrics")
    _, samples = parse(response.text)
    assert value(samples, "lablink_component_up", component="event_log") == 1
    assert value(samples, "lablink_component_up", component="nats") == 1
    assert value(samples, "lablink_component_up", component="relay") == 0
    assert value(samples, "lablink_component_state", component="relay", state="failing") == 1
    assert value(samples, "lablink_component_state", component="nats", state="degraded") == 1
    assert value(samples, "lablink_component_state", component="nats", state="ok") == 0
    # Route templates, never the raw path: the job id is nowhere in the output.
    assert job_id not in response.text
    requests = "lablink_requests_total"
    template = "/api/scheduler/jobs/{job_id}"
    assert total(samples, requests, path=template, method="GET", status_code=200) == 1
    assert total(samples, requests, path="/api/scheduler/jobs/create", method="POST") == 1
    assert total(samples, "lablink_request_duration_seconds_count", path=template) == 1


async def test_a_viewer_key_reads_it_and_no_key_is_401(harness: Harness) -> None:
    _, secret = create_key(
        harness.store, name="prometheus", role="viewer", actor="test", now=harness.clock.now()
    )
    async with api_client(harness, auth=True) as client:
        missing = await client.get("/metrics")
        assert missing.status_code == 401
        assert "Authorization: Bearer" in missing.json()["detail"]
        wrong = await client.get("/metrics", headers={"Authorization": "Bearer llk_nope"})
        assert wrong.status_code == 401
        assert "unknown or revoked" in wrong.json()["detail"]
        samples = await scrape(client, Authorization=f"Bearer {secret}")
        assert value(samples, "lablink_jobs", state="active") == 0
        schema = (await client.get("/schema/openapi.json", headers={"X-API-Key": secret})).json()
        assert "/metrics" not in schema["paths"]


async def test_skips_and_coalesced_fires(client: httpx.AsyncClient, harness: Harness) -> None:
    job_id = await create(client, {**EVERY_MINUTE, "timeout_seconds": 600})
    harness.executor.hold = True
    start = harness.clock.now()
    await harness.at(start + timedelta(minutes=1))
    # The first run is still running when the second fire comes: skipped (conflict policy).
    await harness.at(start + timedelta(minutes=2))
    (held,) = harness.executor.held()
    harness.executor.release(held)
    harness.executor.hold = False
    # Three fires due within the grace time, 10 s after the last: one run (the latest, 10 s
    # late) and one record for the two coalesced into it.
    await harness.at(start + timedelta(minutes=5, seconds=10))
    statuses = [r["status"] for r in harness.executions(job_id)]
    assert statuses == ["completed", "skipped", "coalesced", "completed"]
    samples = await scrape(client)
    assert value(samples, "lablink_misfires_total", reason="skipped") == 1
    assert value(samples, "lablink_misfires_total", reason="coalesced") == 2
    assert value(samples, "lablink_misfires_total", reason="missed") == 0
    measurement = {"schedule_type": "measurement"}
    assert value(samples, "lablink_executions_total", status="skipped", **measurement) == 1
    assert value(samples, "lablink_executions_total", status="coalesced", **measurement) == 1
    assert value(samples, "lablink_executions_total", status="completed", **measurement) == 2
    # Lateness is observed for the runs only: on time, and the catch-up 10 s late.
    assert value(samples, "lablink_fire_lateness_seconds_count") == 2
    assert value(samples, "lablink_fire_lateness_seconds_sum") == 10.0


async def test_agents_up_and_last_seen_from_their_reports(
    client: httpx.AsyncClient, harness: Harness
) -> None:
    equipment = EquipmentService(harness.store, harness.clock)
    seen = harness.clock.now()
    for equipment_id, kind in (("power_supply_1", "power_supply"), ("load_1", "load")):
        equipment.record(
            Presence(equipment_id=equipment_id, agent_id="bench", kind=kind, state="online")
        )
    harness.clock.set(seen + timedelta(minutes=3))
    equipment.record(
        Presence(equipment_id="load_1", agent_id="bench", kind="load", state="offline")
    )
    await harness.store.views.caught_up(30)
    samples = await scrape(client)
    assert value(samples, "lablink_agent_up", equipment="power_supply_1") == 1
    assert value(samples, "lablink_agent_up", equipment="load_1") == 0
    # Gone offline, it was last heard from when it was last online.
    for equipment_id in ("power_supply_1", "load_1"):
        last = value(samples, "lablink_agent_last_seen_timestamp_seconds", equipment=equipment_id)
        assert last == seen.timestamp()


async def test_it_answers_when_the_views_cannot_fold(tmp_path: Path, clock: ManualClock) -> None:
    """/metrics never waits for the views: it says how far behind they are, and the log's
    counters (folded from the log, not the views) still count."""
    h = await Harness(tmp_path / "data" / "scheduler.db", clock, background=True).start()
    views = h.store.views
    health = Health(clock)
    health.probe("projector", views.probe)
    try:
        async with api_client(h, auth=False, health=health, views_wait=0.5) as client:
            await create(client, EVERY_MINUTE)
            await eventually(lambda: views.position >= views.head)
            # Every fold fails from here on (and is rolled back); the log takes the fires.
            with views.write_lock:
                views.conn.execute("PRAGMA query_only = ON")
            await h.at(clock.now() + timedelta(minutes=1))
            assert (await client.get("/api/scheduler/jobs")).status_code == 503
            samples = await scrape(client)
            head = LogReader(h.store.conn).last_position()
            assert value(samples, "lablink_event_log_position") == head
            assert value(samples, "lablink_projection_lag_events") == head - views.position > 0
            assert value(samples, "lablink_component_up", component="projector") == 0
            completed = {"status": "completed", "schedule_type": "measurement"}
            assert value(samples, "lablink_executions_total", **completed) == 1
            with views.write_lock:
                views.conn.execute("PRAGMA query_only = OFF")
            await eventually(lambda: views.position >= views.head)
            assert value(await scrape(client), "lablink_projection_lag_events") == 0
    finally:
        await h.close()


async def test_unknown_ids_and_paths_add_no_series(client: httpx.AsyncClient) -> None:
    """Bounded labels: a 404 for an unknown id is counted under its route's template, and a
    path no route matches is not counted at all; neither raw path is in the output."""
    assert (await client.get("/api/scheduler/jobs/job_nosuchjob1")).status_code == 404
    assert (await client.get("/no/such/path/nosuchpath2")).status_code == 404
    assert (await client.get("/metrics", params={"name[]": "x"})).status_code == 200
    response = await client.get("/metrics")
    assert "nosuchjob1" not in response.text
    assert "nosuchpath2" not in response.text
    _, samples = parse(response.text)
    requests = "lablink_requests_total"
    template = "/api/scheduler/jobs/{job_id}"
    assert total(samples, requests, path=template, status_code=404) == 1
    assert total(samples, "lablink_requests_error_total") == 0
