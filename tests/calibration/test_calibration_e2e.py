"""The interlock on a real `lablink serve` (a child process, the real clock, the in-process
simulated bench): a certificate in its lab.toml that expired two days ago blocks the runs
of a job on that instrument, with one alarm, over HTTP; a new certificate recorded through
the API lets the next runs go; a restart records the lab.toml's certificate no second time.
Waits poll with generous deadlines (tests/support/eventually.py)."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from lablink.instruments.simulated import SIMULATED_BENCH
from tests.support.eventually import eventually_sync
from tests.support.serve import Server, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
PSU = "power_supply_1"


def lab_toml(today: datetime) -> str:
    kind, resource = SIMULATED_BENCH[PSU]
    due = (today - timedelta(days=2)).date()
    performed = due - timedelta(days=365)
    return (
        '[agent]\nid = "bench"\n\n'
        f'[[instruments]]\nid = "{PSU}"\nkind = "{kind}"\nresource = "{resource}"\n'
        'backend = "@sim"\n\n'
        "[[instruments.calibration]]\n"
        f'certificate = "CAL-OLD"\nperformed = {performed}\ndue = {due}\nby = "Metrology Lab"\n'
    )


def start(data: Path, lab: Path, servers: list[Server]) -> tuple[Server, str]:
    port = free_port()
    server = Server(data, port, {"LABLINK_NATS": "off", "LABLINK_AGENT_CONFIG": str(lab)})
    servers.append(server)
    server.listening()
    return server, f"http://127.0.0.1:{port}"


def statuses(client: httpx.Client, job_id: str) -> list[str]:
    listed = client.get("/api/scheduler/executions", params={"job_id": job_id, "limit": 1000})
    assert listed.status_code == 200, listed.text
    return [e["status"] for e in listed.json()["executions"]]


def calibration_events(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        (count,) = conn.execute(
            "SELECT COUNT(*) FROM events WHERE type = 'equipment.calibrated'"
        ).fetchone()
        return int(count)
    finally:
        conn.close()


def test_an_expired_certificate_blocks_runs_on_a_real_server(
    tmp_path: Path, servers: list[Server]
) -> None:
    data = tmp_path / "data"
    lab = tmp_path / "lab.toml"
    lab.write_text(lab_toml(datetime.now(UTC)))
    server, base = start(data, lab, servers)
    key = (data / "admin.key").read_text().strip()
    with httpx.Client(base_url=base, headers={"X-API-Key": key}, timeout=30) as client:
        found: dict[str, Any] = client.get(f"/api/equipment/{PSU}/calibrations").json()
        assert found["calibration"]["status"] == "expired", found
        assert found["calibrations"][0]["source"] == "lab.toml"
        created = client.post(
            "/api/scheduler/jobs/create",
            json={
                "name": "Every second",
                "schedule_type": "measurement",
                "equipment_id": PSU,
                "trigger_type": "interval",
                "interval_seconds": 1,
                "parameters": {"command": "get_voltage"},
            },
        )
        assert created.status_code == 200, created.text
        job_id = created.json()["job_id"]
        eventually_sync(lambda: statuses(client, job_id), until=lambda s: s.count("blocked") >= 3)
        assert set(statuses(client, job_id)) == {"blocked"}
        alarms = {
            a["kind"]: a
            for a in client.get(
                "/api/alarms", params={"equipment_id": PSU, "state": "active"}
            ).json()["alarms"]
        }
        # One alarm for all the blocked runs; and the due-date watch's warning, which for a
        # certificate already past its due date says it expired.
        assert sorted(alarms) == ["calibration_blocked", "calibration_due"]
        assert "expired" in alarms["calibration_due"]["message"]

        today = datetime.now(UTC).date()
        recorded = client.post(
            f"/api/equipment/{PSU}/calibrations",
            json={
                "certificate": "CAL-NEW",
                "performed": str(today - timedelta(days=1)),
                "due": str(today + timedelta(days=365)),
                "by": "Metrology Lab",
            },
        )
        assert recorded.status_code == 200, recorded.text
        assert recorded.json()["calibration"]["status"] == "valid"
        eventually_sync(lambda: statuses(client, job_id), until=lambda s: "completed" in s)
        for alarm in alarms.values():  # both ended by the new certificate
            cleared = client.get(f"/api/alarms/{alarm['alarm_id']}").json()["alarm"]
            assert cleared["state"] == "cleared", cleared

    server.terminate()
    assert server.proc.wait(timeout=60) == 0
    start(data, lab, servers)  # the same lab.toml again
    assert calibration_events(data / "scheduler.db") == 2  # CAL-OLD once, CAL-NEW
