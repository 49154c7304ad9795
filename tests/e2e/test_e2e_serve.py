"""`lablink serve` as a real process: the guide's "Testing" routine over HTTP with an API key,
then SIGKILL, a restart on the same data directory and port, and a graceful SIGTERM.

The child's stdout is JSON lines (structlog) plus the admin key it prints once; the tests wait
for log events, never for a fixed time (the only polls, of an execution's status and of a
dead server's children, have bounded deadlines).
"""

from __future__ import annotations

import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.eventually import eventually_sync
from tests.support.serve import (
    Server,
    accepts,
    admin_client,
    alive,
    free_port,
)

# Every test here runs `lablink serve`, with its private nats-server.
pytestmark = [pytest.mark.e2e, pytest.mark.nats, pytest.mark.slow]


FINAL = {"completed", "failed", "timed_out", "cancelled", "interrupted", "skipped", "missed"}
# The guide's Quick Start job, created disabled as its Best Practices "Testing" says.
QUICK_START: dict[str, Any] = {
    "name": "Hourly Voltage Check",
    "description": "Measure output voltage every hour",
    "schedule_type": "measurement",
    "equipment_id": "power_supply_1",
    "trigger_type": "interval",
    "interval_hours": 1,
    "parameters": {"command": "get_voltage"},
    "enabled": False,
}


def final_execution(client: httpx.Client, execution_id: str) -> dict[str, Any]:
    def execution() -> dict[str, Any]:
        response = client.get(f"/api/scheduler/executions/{execution_id}")
        assert response.status_code == 200, response.text
        found: dict[str, Any] = response.json()["execution"]
        return found

    return eventually_sync(
        execution, until=lambda found: found["status"] in FINAL, what=f"{execution_id} final"
    )


def snapshot(client: httpx.Client, job_id: str, execution_id: str) -> dict[str, Any]:
    """Everything the restart must keep, as the API shows it."""
    views: dict[str, Any] = {}
    for name, path in (
        ("job", f"/api/scheduler/jobs/{job_id}"),
        ("execution", f"/api/scheduler/executions/{execution_id}"),
        ("history", f"/api/scheduler/jobs/{job_id}/history"),
        ("statistics", "/api/scheduler/statistics"),
        ("events", f"/api/scheduler/jobs/{job_id}/events"),
        ("executions", f"/api/scheduler/executions?job_id={job_id}"),
        ("jobs", "/api/scheduler/jobs"),
    ):
        response = client.get(path)
        assert response.status_code == 200, f"{path}: {response.status_code} {response.text}"
        views[name] = response.json()
    return views


def test_serve_end_to_end_with_restart(tmp_path: Path, servers: list[Server]) -> None:
    data = tmp_path / "data"
    port = free_port()
    base = f"http://127.0.0.1:{port}"

    first = Server(data, port)
    servers.append(first)
    first.listening()
    key_file = data / "admin.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = key_file.read_text().strip()
    assert key.startswith("llk_")
    printed = [line.strip() for line in first.printed() if line.strip().startswith("llk_")]
    assert printed == [key], f"printed keys {printed} differ from {key_file}"

    with httpx.Client(base_url=base, timeout=30) as anonymous:
        health = anonymous.get("/health")
        assert health.status_code == 200, health.text
        assert health.json()["database"]["status"] == "ok"
        schema = anonymous.get("/schema/openapi.json")
        assert schema.status_code == 200, schema.text
        assert "/api/scheduler/jobs/create" in schema.json()["paths"]
        refused = anonymous.get("/api/scheduler/jobs")
        assert refused.status_code == 401, refused.text
        create_refused = anonymous.post("/api/scheduler/jobs/create", json=QUICK_START)
        assert create_refused.status_code == 401, create_refused.text
        wrong = anonymous.get(
            "/api/scheduler/jobs", headers={"Authorization": "Bearer llk_not-a-key"}
        )
        assert wrong.status_code == 401, wrong.text

    auth = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=base, headers=auth, timeout=30) as client:
        created = client.post("/api/scheduler/jobs/create", json=QUICK_START)
        assert created.status_code == 200, created.text
        job_id = created.json()["job_id"]
        assert job_id.startswith("job_")
        job = client.get(f"/api/scheduler/jobs/{job_id}").json()["job"]
        assert (job["enabled"], job["next_run_time"]) == (False, None)

        run = client.post(f"/api/scheduler/jobs/{job_id}/run")
        assert run.status_code == 200, run.text
        execution_id = run.json()["execution_id"]
        execution = final_execution(client, execution_id)
        assert execution["status"] == "completed", execution
        assert execution["trigger_info"] == "manual"
        assert execution["job_id"] == job_id
        assert isinstance(execution["result"]["value"], int | float), execution["result"]

        resumed = client.post(f"/api/scheduler/jobs/{job_id}/resume")
        assert resumed.status_code == 200, resumed.text
        job = client.get(f"/api/scheduler/jobs/{job_id}").json()["job"]
        assert job["enabled"] is True
        assert job["status"] == "active"
        assert job["next_run_time"] is not None
        assert datetime.fromisoformat(job["next_run_time"]) > datetime.now(UTC)

        history = client.get(f"/api/scheduler/jobs/{job_id}/history").json()["history"]
        assert (history["total_executions"], history["successful"]) == (1, 1), history
        assert history["last_status"] == "completed"
        assert history["next_run"] == job["next_run_time"]
        stats = client.get("/api/scheduler/statistics").json()["statistics"]
        assert (stats["total_jobs"], stats["active_jobs"]) == (1, 1), stats
        assert stats["total_executions_today"] >= 1, stats
        assert stats["successful_today"] >= 1, stats
        before = snapshot(client, job_id, execution_id)
    first.crash()

    second = Server(data, port)
    servers.append(second)
    second.listening()
    assert not [line for line in second.printed() if "llk_" in line or "admin" in line], (
        f"a second admin key was printed: {second.printed()}"
    )
    assert key_file.read_text().strip() == key
    with httpx.Client(base_url=base, headers=auth, timeout=30) as client:
        after = snapshot(client, job_id, execution_id)
        for view in before:
            assert after[view] == before[view], f"{view} changed across the restart"
        job = after["job"]["job"]
        assert job["enabled"] is True
        assert job["version"] == before["job"]["job"]["version"]
        trail = after["events"]["events"]
        types = [e["type"] for e in trail]
        assert types[0] == "job.created"
        assert "job.resumed" in types
        assert "execution.pending" in types
        assert "execution.completed" in types
        for event in trail:
            if event["type"].startswith("job.") or event["type"] == "execution.pending":
                assert event["actor"] == "admin", event
        assert after["statistics"]["statistics"]["total_executions_today"] >= 1

    second.terminate()
    second.wait_for("scheduler stopped", timeout=60)
    assert second.proc.wait(timeout=60) == 0
    assert not [p for p in second.spawned if alive(p)], "a graceful stop left children"


def test_api_listening_is_logged_once_the_port_accepts(
    tmp_path: Path, servers: list[Server]
) -> None:
    """A supervisor (or this suite) waits for "api listening" and then connects: the port
    must accept by then (the line was once logged ~25 ms before uvicorn bound the socket)."""
    port = free_port()
    server = Server(tmp_path / "data", port)
    servers.append(server)
    server.listening()
    assert accepts(port), (
        f"'api listening' was logged but 127.0.0.1:{port} refused the connection:"
        " lablink/runtime.py serve() must log it only once uvicorn's startup has bound"
        " the socket"
    )


def test_sigkill_leaves_no_orphan_processes(tmp_path: Path, servers: list[Server]) -> None:
    """`kill -9` of `lablink serve` (the OOM killer, a supervisor giving up) must not leave
    its helpers running: the next start runs its own nats-server on the same JetStream store
    (data/nats) while the orphan still holds it, as the restart test above shows."""
    server = Server(tmp_path / "data", free_port())
    servers.append(server)
    server.listening()
    server.crash()
    # A parent-death signal arrives at once; the deadline is slack for a loaded machine.
    eventually_sync(
        lambda: [p for p in server.spawned if alive(p)], until=lambda orphans: not orphans
    )
    orphans = [p for p in server.spawned if alive(p)]
    assert not orphans, (
        f"processes of the SIGKILLed server still run: {orphans}. lablink/bus/server.py"
        " NatsServer.start spawns nats-server with nothing tying it to lablink's life"
        " (no PR_SET_PDEATHSIG in the child, no stale-pid check on the next start)"
    )


def test_a_failure_alarm_over_http_on_a_real_server(tmp_path: Path, servers: list[Server]) -> None:
    """The guide's Alarm Integration on `lablink serve`: a job with on_failure_alarm fails
    (a week-long capture at 1 Sa/s would need the scope below its slowest rate, which only the
    instrument's record length reveals, so it passes the check at creation and fails when it
    runs), the alarm is listed with everything the guide names, then acknowledged and
    cleared; statistics count it while it is active."""
    data = tmp_path / "data"
    base, auth = admin_client(data, servers)
    with httpx.Client(base_url=base, headers=auth, timeout=30) as client:
        created = client.post(
            "/api/scheduler/jobs/create",
            json={
                "name": "Week-long capture",
                "schedule_type": "acquisition",
                "equipment_id": "scope_1",
                "trigger_type": "interval",
                "interval_hours": 1,
                "parameters": {"duration": 604_800, "sample_rate": 1, "channels": [1]},
                "enabled": False,
                "on_failure_alarm": True,
            },
        )
        assert created.status_code == 200, created.text
        job_id = created.json()["job_id"]
        execution_id = client.post(f"/api/scheduler/jobs/{job_id}/run").json()["execution_id"]
        assert final_execution(client, execution_id)["status"] == "failed"

        listed = client.get("/api/alarms", params={"job_id": job_id, "state": "active"}).json()
        assert listed["count"] == 1, listed
        alarm = listed["alarms"][0]
        assert alarm["kind"] == "job_failure"
        assert alarm["severity"] == "critical"
        assert (alarm["job_id"], alarm["job_name"]) == (job_id, "Week-long capture")
        assert alarm["execution_id"] == execution_id
        assert alarm["equipment_id"] == "scope_1"
        assert alarm["equipment"]["kind"] == "oscilloscope"
        assert alarm["equipment"]["identity"].startswith("LabLink Sim,DSO-1104")
        assert alarm["error"]["type"] == "invalid_parameter"
        assert alarm["execution_time"] is not None
        stats = client.get("/api/scheduler/statistics").json()["statistics"]
        assert (stats["active_alarms"], stats["unacknowledged_alarms"]) == (1, 1)

        alarm_id = alarm["alarm_id"]
        acked = client.post(
            f"/api/alarms/{alarm_id}/acknowledge", json={"note": "looking at the scope"}
        )
        assert acked.status_code == 200, acked.text
        assert acked.json()["alarm"]["acknowledged"]["by"] == "admin"
        again = client.post(f"/api/alarms/{alarm_id}/acknowledge")
        assert again.status_code == 409, again.text
        assert again.json()["errors"][0]["field"] == "alarm_id"
        cleared = client.post(f"/api/alarms/{alarm_id}/clear", json={"note": "capture shorter"})
        assert cleared.status_code == 200, cleared.text
        final = client.get(f"/api/alarms/{alarm_id}").json()["alarm"]
        assert final["state"] == "cleared"
        assert final["cleared"]["note"] == "capture shorter"
        stats = client.get("/api/scheduler/statistics").json()["statistics"]
        assert stats["active_alarms"] == 0


def test_manual_cleanup_beside_a_running_server(tmp_path: Path, servers: list[Server]) -> None:
    """The guide's "Manual cleanup", run in another process while `lablink serve` runs: the
    pruned executions leave the API's list, the job's totals stay, and the audit shows who."""
    from lablink.scheduler.storage import SchedulerStorage

    data = tmp_path / "data"
    base, auth = admin_client(data, servers)
    with httpx.Client(base_url=base, headers=auth, timeout=30) as client:
        job_id = client.post("/api/scheduler/jobs/create", json=QUICK_START).json()["job_id"]
        for _ in range(2):
            execution_id = client.post(f"/api/scheduler/jobs/{job_id}/run").json()["execution_id"]
            assert final_execution(client, execution_id)["status"] == "completed"
        history = client.get(f"/api/scheduler/jobs/{job_id}/history").json()["history"]

        removed = SchedulerStorage(data / "scheduler.db").cleanup_old_executions(days=0)

        assert removed == 2
        listed = client.get("/api/scheduler/executions", params={"job_id": job_id}).json()
        assert listed["count"] == 0
        gone = client.get(f"/api/scheduler/executions/{execution_id}")
        assert gone.status_code == 404
        after = client.get(f"/api/scheduler/jobs/{job_id}/history").json()["history"]
        assert (after["total_executions"], after["successful"]) == (
            history["total_executions"],
            history["successful"],
        )
        audit = client.get("/api/audit", params={"type": "executions.pruned"}).json()
        # The server's own daily pass ran at its start (actor "retention"); this is the other.
        assert [e["actor"] for e in audit["events"]] == ["retention", "cleanup_old_executions"]
        pruned = audit["events"][-1]
        assert pruned["data"]["days"] == 0


def test_the_guides_profile_example_runs_on_a_real_server(
    tmp_path: Path, servers: list[Server]
) -> None:
    """Example 3 of the guide (weekly capture on scope_1 with profile high_res_1GS) runs as
    written on `lablink serve` with no instrument attached: the shipped profile is applied and
    read back by the agent before the capture; the guide's placeholder `profile_name` is a
    422 naming it."""
    data = tmp_path / "data"
    base, auth = admin_client(data, servers)
    weekly = {
        "name": "Weekly High-Resolution Waveform Capture",
        "schedule_type": "acquisition",
        "equipment_id": "scope_1",
        "profile_id": "high_res_1GS",
        "trigger_type": "weekly",
        "day_of_week": 1,
        "time_of_day": "08:00:00",
        "parameters": {"duration": 600, "sample_rate": 1000000, "channels": [1, 2, 3, 4]},
        "on_failure_alarm": True,
        "tags": ["weekly-report", "high-priority"],
    }
    with httpx.Client(base_url=base, headers=auth, timeout=30) as client:
        shipped = client.get("/api/profiles").json()
        assert {"high_res_1GS", "high_resolution_profile"} <= {
            p["profile_id"] for p in shipped["profiles"]
        }
        created = client.post("/api/scheduler/jobs/create", json=weekly)
        assert created.status_code == 200, created.text
        job_id = created.json()["job_id"]
        execution_id = client.post(f"/api/scheduler/jobs/{job_id}/run").json()["execution_id"]
        execution = final_execution(client, execution_id)
        assert execution["status"] == "completed", execution
        profile = execution["result"]["profile"]
        assert (profile["id"], profile["applied"]) == ("high_res_1GS", True)
        assert profile["settings"]["trigger_level"] == 0.5
        # The embedded agent put the capture in the private server's object store, as its
        # own restricted NATS user, before it reported; its local copy is gone.
        captured = execution["result"]["data"]
        assert (captured["bucket"], captured["status"]) == ("LABLINK_DATA", "stored")
        assert captured["provenance"]["profile_settings"]["trigger_level"] == 0.5
        assert captured["provenance"]["agent_id"] == "embedded"
        assert not (data / "acquisitions" / f"{execution_id}.csv").exists()

        placeholder = client.post(
            "/api/scheduler/jobs/create", json={**weekly, "profile_id": "profile_name"}
        )
        assert placeholder.status_code == 422, placeholder.text
        (error,) = placeholder.json()["errors"]
        assert (error["field"], error["value"]) == ("profile_id", "profile_name")


GUIDE_RUNS: list[dict[str, Any]] = [
    # Job Types 1-5, as the guide prints them (a name and a trigger added to each).
    {
        "schedule_type": "acquisition",
        "equipment_id": "oscilloscope_1",
        "parameters": {"duration": 60, "sample_rate": 1000, "channels": [1, 2]},
    },
    {"schedule_type": "state_capture", "equipment_id": "power_supply_1"},
    {
        "schedule_type": "measurement",
        "equipment_id": "multimeter_1",
        "parameters": {"command": "get_voltage"},
    },
    {
        "schedule_type": "command",
        "equipment_id": "load_1",
        "parameters": {"command": "set_current", "parameters": {"value": 2.5}},
    },
    {
        "schedule_type": "equipment_test",
        "equipment_id": "power_supply_1",
        "parameters": {"test_name": "self_test"},
    },
    # Examples 1, 2 and 4.
    {
        "name": "Nightly Equipment State Backup",
        "schedule_type": "state_capture",
        "equipment_id": "power_supply_1",
        "trigger_type": "daily",
        "time_of_day": "02:00:00",
        "on_failure_alarm": True,
        "tags": ["backup", "critical"],
    },
    {
        "name": "4-Hour Equipment Health Check",
        "schedule_type": "equipment_test",
        "equipment_id": "oscilloscope_1",
        "trigger_type": "interval",
        "interval_hours": 4,
        "parameters": {"test_name": "connection"},
        "conflict_policy": "skip",
        "on_failure_alarm": True,
    },
    {
        "name": "Business Hours Load Testing",
        "schedule_type": "command",
        "equipment_id": "load_1",
        "trigger_type": "cron",
        "cron_expression": "0 9-17 * * 1-5",
        "parameters": {
            "command": "run_load_test",
            "parameters": {"duration": 60, "current": 5.0},
        },
        "conflict_policy": "queue",
    },
]


def test_the_guides_job_bodies_run_to_completion_on_a_real_server(
    tmp_path: Path, servers: list[Server]
) -> None:
    """`lablink serve` with no instrument attached runs the guide's job bodies through its
    agent over NATS (run now: the schedules themselves are tested elsewhere)."""
    data = tmp_path / "data"
    base, auth = admin_client(data, servers)
    with httpx.Client(base_url=base, headers=auth, timeout=30) as client:
        for n, body in enumerate(GUIDE_RUNS):
            job: dict[str, Any] = {"name": f"guide body {n}"}
            if "trigger_type" not in body:  # a Job Types snippet: the smallest trigger
                job.update(trigger_type="interval", interval_hours=1)
            job.update(body)
            job["enabled"] = False
            created = client.post("/api/scheduler/jobs/create", json=job)
            assert created.status_code == 200, (n, created.text)
            job_id = created.json()["job_id"]
            run = client.post(f"/api/scheduler/jobs/{job_id}/run")
            assert run.status_code == 200, (n, run.text)
            execution = final_execution(client, run.json()["execution_id"])
            assert execution["status"] == "completed", (n, execution)


def test_read_your_writes_and_the_projector_in_health_on_a_real_server(
    tmp_path: Path, servers: list[Server]
) -> None:
    """Under `lablink serve` the views fold behind the log in a thread of their own: a
    client that writes and reads back at once still sees its write, and /health shows the
    projector's position and lag (docs/operations.md, "The projector")."""
    data = tmp_path / "data"
    base, auth = admin_client(data, servers)
    with httpx.Client(base_url=base, headers=auth, timeout=30) as client:
        made: list[str] = []
        for n in range(30):
            created = client.post(
                "/api/scheduler/jobs/create", json={**QUICK_START, "name": f"j{n}"}
            )
            assert created.status_code == 200, created.text
            job_id = created.json()["job_id"]
            made.append(job_id)
            got = client.get(f"/api/scheduler/jobs/{job_id}")
            assert got.status_code == 200, (n, got.text)
            assert got.json()["job"]["name"] == f"j{n}"
            resumed = client.post(f"/api/scheduler/jobs/{job_id}/resume")
            assert resumed.status_code == 200, resumed.text
            job = client.get(f"/api/scheduler/jobs/{job_id}").json()["job"]
            assert (job["enabled"], job["status"]) == (True, "active"), (n, job)
            assert job["next_run_time"] is not None
            stats = client.get("/api/scheduler/statistics").json()["statistics"]
            assert (stats["total_jobs"], stats["active_jobs"]) == (n + 1, n + 1), stats
        listed = client.get("/api/scheduler/jobs").json()
        assert [j["job_id"] for j in listed["jobs"]] == made

        health = client.get("/health")
        assert health.status_code == 200, health.text
        projector = health.json()["components"]["projector"]
        assert projector["state"] == "ok", projector
        details = projector["details"]
        assert details["background"] is True
        assert details["lag_events"] == details["head"] - details["position"]
        assert isinstance(details["lag_seconds"], int | float)
        # 30 creates and 30 resumes at least, all of them folded (the log may have moved on
        # since: agents report their instruments online).
        assert details["position"] >= 60

        def quiet() -> dict[str, Any]:
            found: dict[str, Any] = client.get("/health").json()
            return found

        settled = eventually_sync(
            quiet,
            until=lambda h: (
                h["components"]["projector"]["details"]["lag_events"] == 0
                and h["components"]["projector"]["details"]["head"] == h["database"]["events"]
            ),
        )
        assert settled["components"]["projector"]["details"]["lag_seconds"] == 0
