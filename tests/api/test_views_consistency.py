"""Read-your-writes over views that fold behind the log (issue 14), through the real app.

The store is opened as `lablink serve` opens it: the follower folds the views in a thread of
its own, behind the log (``Harness(background=True)``). A client that writes and then reads
must see its write; when the views cannot show it in time, the answer is a 503 that names the
lag (``lablink/api/consistency.py``), never a stale read.
"""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlite_utils

from lablink.clock import ManualClock
from lablink.events import AlarmRaised, RecordedEvent
from lablink.health import Health
from lablink.instruments.execution import Outcome
from lablink.keys import create_key
from lablink.projections import follower
from lablink.projections.base import Projection
from lablink.projections.runner import Projector, default_projections
from tests.support.eventually import eventually
from tests.support.harness import Harness, api_client

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
ROUNDS = 12
JOB: dict[str, Any] = {
    "name": "Hourly Voltage Check",
    "schedule_type": "measurement",
    "equipment_id": "power_supply_1",
    "trigger_type": "interval",
    "interval_hours": 1,
    "parameters": {"command": "get_voltage"},
}
FAILING: dict[str, Any] = {
    "name": "Load test",
    "schedule_type": "command",
    "equipment_id": "load_1",
    "parameters": {"command": "run_load_test"},
    "trigger_type": "interval",
    "interval_minutes": 10,
    "on_failure_alarm": True,
}
PSU: dict[str, Any] = {
    "name": "psu",
    "equipment_type": "power_supply",
    "model": "PSU-3005",
    "settings": {"current": 1.0, "voltage": 5.0},
}
LAG = re.compile(r"the views are (\d+) events \((\d+\.\d) s\) behind the log")


async def behind_log(harness: Harness) -> None:
    """Until the follower has folded every commit (it runs in its own thread)."""
    views = harness.store.views
    await eventually(lambda: views.position >= views.head and views.error is None)


def projector_health(harness: Harness) -> Health:
    """A registry holding the projector's probe, as the runtime registers it."""
    health = Health(harness.clock)
    health.probe("projector", harness.store.views.probe)
    return health


async def create_folded(client: httpx.AsyncClient, harness: Harness) -> tuple[str, int]:
    """A job created over HTTP, once the views show it: its id and the log position."""
    created = await client.post("/api/scheduler/jobs/create", json=JOB)
    assert created.status_code == 200, created.text
    await behind_log(harness)
    return created.json()["job_id"], log_position(harness)


def log_position(harness: Harness) -> int:
    return int(harness.rows("SELECT MAX(position) AS p FROM events")[0]["p"])


def assert_views_behind(response: httpx.Response, position: int, lag_events: int) -> float:
    """The 503 of a request the views cannot serve: it names the field ``views``, the log
    position the request needed, and the lag; returns the lag in seconds it states."""
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"] == "1"
    body = response.json()
    assert body["success"] is False
    assert body["status_code"] == 503
    assert body["detail"].startswith("views behind: "), body
    assert f"not yet {position}" in body["detail"], body
    (error,) = body["errors"]
    assert (error["field"], error["value"]) == ("views", position), body
    found = LAG.fullmatch(error["reason"])
    assert found is not None, error["reason"]
    assert int(found[1]) == lag_events, error["reason"]
    return float(found[2])


@pytest.fixture
async def behind(tmp_path: Path, clock: ManualClock) -> AsyncIterator[Harness]:
    """A harness whose views fold in the follower's own thread, as under `lablink serve`,
    each fold taking a few ms more: a read that did not wait for them would see them stale
    nearly every time, not only when the thread happens to be late."""
    projector = Projector([Slowed(p) for p in default_projections()])
    started = await Harness(
        tmp_path / "data" / "scheduler.db", clock, background=True, projector=projector
    ).start()
    yield started
    await started.close()


class Slowed:
    """A real projection whose every fold first waits 2 ms (a slower machine's fold)."""

    def __init__(self, inner: Projection) -> None:
        self.inner = inner
        self.name = inner.name
        self.tables = inner.tables

    def create(self, db: sqlite_utils.Database) -> None:
        self.inner.create(db)

    def forget(self) -> None:
        self.inner.forget()

    def apply(self, conn: sqlite3.Connection, events: Sequence[RecordedEvent]) -> None:
        time.sleep(0.002)
        self.inner.apply(conn, events)


async def raise_alarms(h: Harness, count: int) -> list[str]:
    """``count`` failure alarms, raised the real way: jobs that fail when they fire."""
    h.executor.hold = True
    jobs = [h.service.create_job({**FAILING, "name": f"load {n}"}, "alice") for n in range(count)]
    await h.at(T0 + timedelta(minutes=10))
    for execution_id in h.executor.held():
        h.executor.release(execution_id, Outcome.failed("instrument_error", "-222,out of range"))
    await h.settle()
    h.executor.hold = False
    raised = [
        r.event.alarm_id
        for job_id in jobs
        for r in h.store.read_stream(job_id)
        if isinstance(r.event, AlarmRaised)
    ]
    assert len(raised) == count
    return raised


async def test_a_client_always_reads_its_own_writes(behind: Harness) -> None:
    h = behind
    alarm_ids = await raise_alarms(h, ROUNDS)
    keys = [
        create_key(h.store, name=f"k{n}", role="viewer", actor="test", now=h.clock.now())[0]
        for n in range(ROUNDS)
    ]
    async with api_client(h, auth=False) as client:

        async def read(path: str) -> dict[str, Any]:
            response = await client.get(path)
            assert response.status_code == 200, (path, response.text)
            body: dict[str, Any] = response.json()
            return body

        async def write(method: str, path: str, body: Any = None) -> dict[str, Any]:
            response = await client.request(method, path, json=body)
            assert response.status_code == 200, (method, path, response.text)
            answer: dict[str, Any] = response.json()
            return answer

        kept: list[str] = []
        for n in range(ROUNDS):
            created = await write("POST", "/api/scheduler/jobs/create", {**JOB, "name": f"j{n}"})
            job_id = created["job_id"]
            assert (await read(f"/api/scheduler/jobs/{job_id}"))["job"]["name"] == f"j{n}"
            listed = await read("/api/scheduler/jobs")
            assert job_id in {j["job_id"] for j in listed["jobs"]}

            await write("PUT", f"/api/scheduler/jobs/{job_id}", {"description": f"round {n}"})
            job = (await read(f"/api/scheduler/jobs/{job_id}"))["job"]
            assert job["description"] == f"round {n}"

            await write("POST", f"/api/scheduler/jobs/{job_id}/pause")
            job = (await read(f"/api/scheduler/jobs/{job_id}"))["job"]
            assert (job["enabled"], job["next_run_time"]) == (False, None)

            if n % 2:
                await write("DELETE", f"/api/scheduler/jobs/{job_id}")
                gone = await client.get(f"/api/scheduler/jobs/{job_id}")
                assert gone.status_code == 404, gone.text
            else:
                kept.append(job_id)

            await write("POST", f"/api/alarms/{alarm_ids[n]}/acknowledge", {"by": f"shift {n}"})
            alarm = (await read(f"/api/alarms/{alarm_ids[n]}"))["alarm"]
            assert (alarm["state"], alarm["acknowledged"]["by"]) == ("acknowledged", f"shift {n}")

            profile = f"psu_{n}"
            await write("POST", "/api/profiles", {**PSU, "profile_id": profile})
            assert (await read(f"/api/profiles/{profile}"))["profile"]["version"] == 1
            await write("PUT", f"/api/profiles/{profile}", {"settings": {"voltage": n + 0.5}})
            got = (await read(f"/api/profiles/{profile}"))["profile"]
            assert (got["settings"], got["version"]) == ({"voltage": n + 0.5}, 2)

            await write("DELETE", f"/api/keys/{keys[n]}")
            assert (await read(f"/api/keys/{keys[n]}"))["key"]["revoked"] is True

            stats = (await read("/api/scheduler/statistics"))["statistics"]
            assert stats["unacknowledged_alarms"] == ROUNDS - n - 1, stats

        listed = await read("/api/scheduler/jobs")
        names = {j["job_id"] for j in listed["jobs"]}
        assert set(kept) <= names
        assert len(names) == ROUNDS + len(kept)  # the alarm jobs and the kept ones


async def test_views_that_cannot_fold_answer_503_naming_the_lag_until_they_can(
    behind: Harness,
) -> None:
    h = behind
    views = h.store.views
    health = projector_health(h)
    async with api_client(h, auth=False, health=health, views_wait=1.0) as client:
        job_id, folded = await create_folded(client, h)

        # The views' connection refuses writes: every fold fails (and is rolled back), the
        # log itself is untouched.
        with views.write_lock:
            views.conn.execute("PRAGMA query_only = ON")
        paused = await client.post(f"/api/scheduler/jobs/{job_id}/pause")
        # The pause WAS recorded (the log has it, and the scheduler goes by the log); the
        # views cannot show it, so the client is told so instead of being told "done" and
        # then shown the job still enabled. It need not send the pause again: a read shows
        # it once the views fold again.
        position = log_position(h)
        assert position > folded
        assert h.rows("SELECT type FROM events WHERE position = ?", position) == [
            {"type": "job.paused"}
        ]
        assert_views_behind(paused, position, position - folded)
        assert paused.json()["detail"].endswith(
            "; the write was recorded, the views cannot show it yet"
        )

        # A write that arrives while the views cannot fold is not attempted: its 503 says
        # so (it may be sent again), and the log is as it was.
        refused = await client.post(f"/api/scheduler/jobs/{job_id}/resume")
        assert_views_behind(refused, position, position - folded)
        assert refused.json()["detail"].endswith("; nothing was written")
        assert log_position(h) == position

        read = await client.get(f"/api/scheduler/jobs/{job_id}")
        assert_views_behind(read, position, position - folded)
        assert read.json()["detail"].endswith("behind)")  # a read: nothing to say of writes
        listing = await client.get("/api/scheduler/jobs")
        assert_views_behind(listing, position, position - folded)

        sick = await client.get("/health")
        assert sick.status_code == 503, sick.text
        projector = sick.json()["components"]["projector"]
        assert projector["state"] == "failing"
        assert projector["reason"].startswith("the views cannot be folded (OperationalError:")
        assert "readonly database" in projector["reason"]
        details = projector["details"]
        assert (details["position"], details["head"]) == (folded, position)
        assert details["lag_events"] == position - folded
        assert details["lag_seconds"] > 0
        assert details["failed_folds"] >= 1
        assert "readonly database" in details["last_error"]
        ready = (await client.get("/health/ready")).json()
        assert ready["ready"] is False
        assert any(r.startswith("projector: the views cannot be folded") for r in ready["reasons"])
        live = await client.get("/health/live")
        assert (live.status_code, live.json()) == (200, {"status": "ok"})

        # The fault lifts: the follower, retrying on its own, folds the pause.
        with views.write_lock:
            views.conn.execute("PRAGMA query_only = OFF")
        shown = await eventually(
            lambda: client.get(f"/api/scheduler/jobs/{job_id}"),
            until=lambda r: r.status_code == 200,
        )
        assert shown.json()["job"]["enabled"] is False
        healthy = await client.get("/health")
        assert healthy.status_code == 200, healthy.text
        projector = healthy.json()["components"]["projector"]
        assert projector["state"] == "ok"
        assert (projector["details"]["position"], projector["details"]["lag_events"]) == (
            position,
            0,
        )
        assert log_position(h) == position  # nothing was appended twice


class Gated:
    """A projection whose fold waits for the test to open its gate: views that are slow
    rather than broken (a fold that takes long: a large batch, a slow disk)."""

    def __init__(self, inner: Projection) -> None:
        self.inner = inner
        self.name = inner.name
        self.tables = inner.tables
        self.gate = threading.Event()
        self.gate.set()
        self.waiting = threading.Event()

    def create(self, db: sqlite_utils.Database) -> None:
        self.inner.create(db)

    def apply(self, conn: sqlite3.Connection, events: Sequence[RecordedEvent]) -> None:
        if not self.gate.is_set():
            self.waiting.set()
            self.gate.wait(timeout=90)
        self.inner.apply(conn, events)

    def forget(self) -> None:
        self.inner.forget()


async def test_slow_views_bound_the_wait_and_the_503_names_the_lag(
    tmp_path: Path, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    projections = default_projections()
    gated = Gated(projections[0])
    assert gated.name == "jobs"
    projector = Projector([gated, *projections[1:]])
    h = Harness(tmp_path / "data" / "scheduler.db", clock, background=True, projector=projector)
    await h.start()
    views = h.store.views
    # /health calls views this far behind "degraded" (5 s by default; not waited out here).
    monkeypatch.setattr(follower, "DEGRADED_LAG_SECONDS", 0.2)
    health = projector_health(h)
    try:
        async with api_client(h, auth=False, health=health, views_wait=0.5) as client:
            job_id, folded = await create_folded(client, h)

            gated.gate.clear()
            paused = await client.post(f"/api/scheduler/jobs/{job_id}/pause")
            # The answer came while the fold was still held: the wait is bounded by
            # views_wait, not by the views.
            assert not gated.gate.is_set()
            assert gated.waiting.is_set()
            position = folded + 1
            assert views.head == position
            assert views.position == folded
            assert assert_views_behind(paused, position, 1) > 0
            assert paused.json()["detail"].endswith(
                "; the write was recorded, the views cannot show it yet"
            )

            read = await client.get(f"/api/scheduler/jobs/{job_id}")
            assert assert_views_behind(read, position, 1) > 0

            slow = await client.get("/health")
            assert slow.status_code == 200, slow.text  # degraded is still a 200
            slow_entry = slow.json()["components"]["projector"]
            assert slow_entry["state"] == "degraded"
            assert LAG.fullmatch(slow_entry["reason"]), slow_entry["reason"]
            assert slow_entry["details"]["lag_events"] == 1
            assert slow_entry["details"]["lag_seconds"] > 0

            gated.gate.set()
            shown = await client.get(f"/api/scheduler/jobs/{job_id}")
            assert shown.status_code == 200, shown.text
            assert shown.json()["job"]["enabled"] is False
            after = (await client.get("/health")).json()["components"]["projector"]
            assert (after["state"], after["details"]["lag_events"]) == ("ok", 0)
    finally:
        gated.gate.set()
        await h.close()
