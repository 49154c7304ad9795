"""Finding 3: a full disk or a read-only database is a 503 naming the cause, never a 500, and
nothing is half-written.

The fault is real: the store's own SQLite connection is capped with ``PRAGMA max_page_count``
at the size the file has (the cap is per connection, so only the store's writes hit it), or
set ``PRAGMA query_only``. Requests go through the real Litestar app.
"""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from lablink.errors import StorageError, StorageFull, StorageReadOnly
from lablink.events import JobPaused, NewEvent
from lablink.eventstore.group_commit import GroupCommitter
from lablink.eventstore.probe import EventLogProbe
from lablink.eventstore.sqlite import SQLiteEventStore
from lablink.health import Health
from tests.support.harness import Harness, api_client

T0 = datetime(2026, 1, 1, tzinfo=UTC)
UNCAPPED = 1_073_741_823  # SQLite's largest max_page_count
# An event longer than a 4 KiB page: its row needs fresh (overflow) pages.
JOB: dict[str, Any] = {
    "name": "Hourly Voltage Check",
    "description": "x" * 4_000,
    "schedule_type": "measurement",
    "equipment_id": "power_supply_1",
    "trigger_type": "interval",
    "interval_hours": 1,
    "parameters": {"command": "get_voltage"},
}


def cap(conn: sqlite3.Connection) -> None:
    """No page beyond those the file has: the next append that needs one fails (a row over
    one page long always does, since the file has no free page to reuse)."""
    (pages,) = conn.execute("PRAGMA page_count").fetchone()
    (free,) = conn.execute("PRAGMA freelist_count").fetchone()
    assert free == 0, f"{free} free pages would absorb the next write"
    conn.execute(f"PRAGMA max_page_count = {pages}")


def uncap(conn: sqlite3.Connection) -> None:
    conn.execute(f"PRAGMA max_page_count = {UNCAPPED}")


def paused(job_id: str) -> NewEvent:
    return NewEvent(event=JobPaused(job_id=job_id), actor="t", occurred_at=T0, event_id=None)


def log_size(harness: Harness) -> int:
    return int(harness.rows("SELECT COUNT(*) AS n FROM events")[0]["n"])


async def test_disk_full_create_is_a_503_naming_the_cause_and_writes_nothing(
    harness: Harness, invariants: Any
) -> None:
    health = Health(harness.clock)
    health.probe("event_log", EventLogProbe(harness.store))
    async with api_client(harness, auth=False, health=health) as client:
        before = log_size(harness)
        cap(harness.store.conn)
        full = await client.post("/api/scheduler/jobs/create", json=JOB)
        assert full.status_code == 503, full.text
        body = full.json()
        assert body["success"] is False
        assert "database or disk is full" in body["detail"]
        assert body["detail"].startswith("storage full")
        assert body["errors"] == [
            {
                "field": "storage",
                "value": str(harness.path),
                "reason": "database or disk is full",
            }
        ]
        assert int(full.headers["Retry-After"]) > 0
        # Nothing half-written: no event, no job in the views, the connection usable.
        assert log_size(harness) == before
        assert (await client.get("/api/scheduler/jobs")).json()["count"] == 0
        assert not harness.store.conn.in_transaction

        # /health tells: the event log is failing for lack of space, and that is a 503.
        sick = await client.get("/health")
        assert sick.status_code == 503, sick.text
        event_log = sick.json()["components"]["event_log"]
        assert event_log["state"] == "failing"
        assert "disk full" in event_log["reason"]
        assert event_log["details"]["writable"] is False
        assert event_log["details"]["failed_appends"] == 1
        assert (await client.get("/health/ready")).status_code == 503

        # Space is back: the very same request works, once.
        uncap(harness.store.conn)
        created = await client.post("/api/scheduler/jobs/create", json=JOB)
        assert created.status_code == 200, created.text
        job_id = created.json()["job_id"]
        listed = (await client.get("/api/scheduler/jobs")).json()
        assert [job["job_id"] for job in listed["jobs"]] == [job_id]
        healthy = await client.get("/health")
        assert healthy.status_code == 200, healthy.text
        assert healthy.json()["components"]["event_log"]["state"] in ("ok", "degraded")
    await invariants(harness.path, acknowledged_jobs=[job_id])


async def fill_the_slack(client: httpx.AsyncClient, harness: Harness, job_id: str) -> int:
    """With the store capped, pause and resume ``job_id`` over HTTP until a write cannot be
    recorded: the log's last pages then have no room left for an event of that size.

    The views fold behind the log on a connection of their own (uncapped): an append holds
    only its events, which often fit in the room left on the last pages, so a capped write
    is not refused for certain until that room is used up. Every write recorded on the way
    is visible at once; the one that is refused answers 503 and writes nothing. Returns the
    number of writes recorded."""
    for recorded in range(500):
        action = "resume" if recorded % 2 == 0 else "pause"
        before = log_size(harness)
        response = await client.post(f"/api/scheduler/jobs/{job_id}/{action}")
        if response.status_code == 503:
            assert response.json()["detail"].startswith("storage full"), response.text
            assert log_size(harness) == before
            return recorded
        assert response.status_code == 200, response.text
        job = (await client.get(f"/api/scheduler/jobs/{job_id}")).json()["job"]
        assert job["enabled"] is (action == "resume"), (action, job)
    raise AssertionError("500 writes fitted under the cap: the file is not capped")


async def test_every_write_route_answers_503_when_the_disk_is_full(
    harness: Harness, invariants: Any
) -> None:
    async with api_client(harness, auth=False) as client:
        created = await client.post("/api/scheduler/jobs/create", json={**JOB, "enabled": False})
        job_id = created.json()["job_id"]
        # A job of modest size: its row in the views is rewritten in place when it changes
        # (a row with overflow pages frees and takes pages with each change, and the capped
        # store would live on the pages it frees).
        small = {**JOB, "description": "filler", "enabled": False}
        filler = await client.post("/api/scheduler/jobs/create", json=small)
        filler_id = filler.json()["job_id"]
        cap(harness.store.conn)
        assert await fill_the_slack(client, harness, filler_id) >= 1
        (free,) = harness.store.conn.execute("PRAGMA freelist_count").fetchone()
        assert free == 0, f"{free} free pages would absorb the next write"
        before = log_size(harness)
        for method, path, body in (
            ("PUT", f"/api/scheduler/jobs/{job_id}", {"description": "y" * 4_000}),
            ("POST", f"/api/scheduler/jobs/{job_id}/resume", None),
            ("POST", f"/api/scheduler/jobs/{job_id}/run", None),
        ):
            response = await client.request(method, path, json=body)
            assert response.status_code == 503, (method, path, response.text)
            assert "database or disk is full" in response.json()["detail"]
        assert log_size(harness) == before
        job = (await client.get(f"/api/scheduler/jobs/{job_id}")).json()["job"]
        assert (job["enabled"], job["description"]) == (False, JOB["description"])
        assert harness.engine.tasks() == {}
        uncap(harness.store.conn)
        again = await client.put(f"/api/scheduler/jobs/{job_id}", json={"description": "y" * 4_000})
        assert again.status_code == 200, again.text
        run = await client.post(f"/api/scheduler/jobs/{job_id}/run")
        assert run.status_code == 200, run.text
        await harness.settle()
    await invariants(harness.path, acknowledged_jobs=[job_id, filler_id])


async def test_a_read_only_database_is_a_503_naming_it(harness: Harness, invariants: Any) -> None:
    async with api_client(harness, auth=False) as client:
        harness.store.conn.execute("PRAGMA query_only = ON")
        refused = await client.post("/api/scheduler/jobs/create", json=JOB)
        assert refused.status_code == 503, refused.text
        assert refused.json()["detail"].startswith("storage read-only")
        assert "readonly database" in refused.json()["errors"][0]["reason"]
        assert refused.headers["Retry-After"] == "60"
        harness.store.conn.execute("PRAGMA query_only = OFF")
        created = await client.post("/api/scheduler/jobs/create", json=JOB)
        assert created.status_code == 200, created.text
    await invariants(harness.path, acknowledged_jobs=[created.json()["job_id"]])


def test_the_store_raises_the_real_cause_not_a_failed_rollback(tmp_path: Path) -> None:
    """The regression itself: SQLite rolls back a transaction that ran out of space on its own,
    and the store's ROLLBACK then failed with "cannot rollback - no transaction is active",
    hiding "database or disk is full"."""
    store = SQLiteEventStore(tmp_path / "events.db")
    store.append("job_a", 0, [paused("job_a")])
    cap(store.conn)
    big = [NewEvent(event=JobPaused(job_id="j" * 50_000), actor="t", occurred_at=T0, event_id=None)]
    with pytest.raises(StorageFull) as raised:
        store.append("job_b", 0, big)
    assert isinstance(raised.value.__cause__, sqlite3.OperationalError)
    assert raised.value.cause == "database or disk is full"
    assert raised.value.path == str(tmp_path / "events.db")
    assert isinstance(raised.value, StorageError)
    assert isinstance(raised.value, OSError)
    assert store.write_status.error is raised.value
    assert store.write_status.consecutive_failures == 1
    assert store.last_position() == 1
    uncap(store.conn)
    store.append("job_b", 0, big)
    assert store.write_status.error is None
    assert store.last_position() == 2
    store.close()


async def test_group_commit_hands_the_storage_error_to_every_caller(tmp_path: Path) -> None:
    store = SQLiteEventStore(tmp_path / "events.db")
    cap(store.conn)
    huge = "j" * 20_000
    async with GroupCommitter(store) as committer:
        outcomes = await asyncio.gather(
            *(committer.append(f"{huge}{n}", 0, [paused(f"{huge}{n}")]) for n in range(20)),
            return_exceptions=True,
        )
        assert len(outcomes) == 20
        assert all(isinstance(o, StorageFull) for o in outcomes), outcomes
        assert store.last_position() == 0
        uncap(store.conn)
        recorded = await committer.append("job_ok", 0, [paused("job_ok")])
        assert recorded[0].position == 1
    store.close()


def test_event_log_probe_states(tmp_path: Path) -> None:
    store = SQLiteEventStore(tmp_path / "events.db")
    store.append("job_a", 0, [paused("job_a")])
    probe = EventLogProbe(store, tmp_path, min_free_bytes=0, min_free_ratio=0.0)
    fine = probe()
    assert fine.state == "ok"
    assert fine.details["writable"] is True
    assert fine.details["database_bytes"] + fine.details["wal_bytes"] > 0
    assert fine.details["free_bytes"] > 0
    # Free disk under the threshold: still writable, but degraded, with the figures.
    low = EventLogProbe(store, tmp_path, min_free_bytes=fine.details["total_bytes"] + 1)()
    assert low.state == "degraded"
    assert "low disk space" in low.reason
    store.conn.execute("PRAGMA query_only = ON")
    with pytest.raises(StorageReadOnly):
        store.append("job_b", 0, [paused("job_b")])
    failing = probe()
    assert failing.state == "failing"
    assert "read-only" in failing.reason
    assert failing.details["failed_since"] is not None
    store.conn.execute("PRAGMA query_only = OFF")
    store.append("job_b", 0, [paused("job_b")])
    assert probe().state == "ok"
    store.close()
