"""`lablink serve` replicas in cluster mode as child processes, for the process tests of
issue 18: their settings over a 3-node cluster (``nats_thread.nats_cluster``), who holds the
lease, jobs created over the API (each acknowledged one noted for the checker,
``cluster_check``), and the record's fires as a replica's copy holds them."""

from __future__ import annotations

import json
import queue
import sqlite3
from pathlib import Path
from typing import Any

import httpx

from lablink.datadir import DB_NAME
from tests.support.cluster_check import Acknowledged
from tests.support.eventually import eventually_sync
from tests.support.nats_cluster import SCHEDULER
from tests.support.serve import Server, free_port

LEASE_SECONDS = 3.0


def replica(
    data_dir: Path, name: str, url: str, *, lease_seconds: float = LEASE_SECONDS, **more: str
) -> Server:
    """A replica named ``name`` of the cluster at ``url`` (comma-separated servers), started."""
    settings = {
        "LABLINK_CLUSTER": "1",
        "LABLINK_NATS_URL": url,
        "LABLINK_NATS_USER": SCHEDULER[0],
        "LABLINK_NATS_PASSWORD": SCHEDULER[1],
        "LABLINK_NATS_REPLICAS": "3",
        "LABLINK_REPLICA_ID": name,
        "LABLINK_LEASE_SECONDS": f"{lease_seconds:g}",
        "LABLINK_EXECUTOR": "sim",
        "LABLINK_AUTH": "off",
        "LABLINK_PROJECTOR": "thread",
        **more,
    }
    return Server(data_dir, free_port(), settings)


def base(server: Server) -> str:
    return f"http://127.0.0.1:{server.port}"


def lease_of(server: Server) -> dict[str, Any]:
    response = httpx.get(f"{base(server)}/health", timeout=5)
    details: dict[str, Any] = response.json()["components"]["lease"]["details"]
    return details


def role(server: Server) -> str | None:
    """``holder`` or ``follower`` as the replica's /health says; None: it does not answer."""
    try:
        return str(lease_of(server)["role"])
    except (httpx.HTTPError, KeyError, ValueError):
        return None


def holder(replicas: dict[str, Server], timeout: float = 60) -> str:
    """The one replica holding the lease, once exactly one says so."""
    found = eventually_sync(
        lambda: [name for name, s in replicas.items() if role(s) == "holder"],
        until=lambda names: len(names) == 1,
        timeout=timeout,
    )
    return found[0]


def create_interval_jobs(
    server: Server, count: int, acknowledged: Acknowledged, *, prefix: str = "job"
) -> list[str]:
    """``count`` jobs firing every second on the simulated bench (coalescing what a failover
    leaves due), each noted in ``acknowledged`` once the API answered 200."""
    created = []
    with httpx.Client(base_url=base(server), timeout=30) as client:
        for n in range(count):
            response = client.post(
                "/api/scheduler/jobs/create",
                json={
                    "name": f"{prefix} {n}",
                    "schedule_type": "measurement",
                    "equipment_id": "power_supply_1",
                    "trigger_type": "interval",
                    "interval_seconds": 1,
                    "parameters": {"command": "get_voltage"},
                    "coalesce": True,
                    "misfire_grace_time": 300,
                },
            )
            assert response.status_code == 200, response.text
            job_id = response.json()["job_id"]
            acknowledged.jobs.add(job_id)
            created.append(job_id)
    return created


def requested(data_dir: Path, job_id: str | None = None) -> list[tuple[str, str]]:
    """``(job id, scheduled time)`` of every scheduled fire a replica's copy holds."""
    conn = sqlite3.connect(f"file:{data_dir / DB_NAME}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT payload FROM events WHERE type = 'execution.pending' ORDER BY position"
        ).fetchall()
    except sqlite3.OperationalError:  # not made yet
        return []
    finally:
        conn.close()
    fires = []
    for (payload,) in rows:
        event = json.loads(payload)
        if event["trigger_info"] != "manual" and job_id in (None, event["job_id"]):
            fires.append((event["job_id"], event["scheduled_time"]))
    return fires


def trouble(server: Server, limit: int = 40) -> list[str]:
    """The warnings and errors a replica has logged so far (to print when a test fails)."""
    while True:
        try:
            server.seen.append(server.lines.get_nowait())
        except queue.Empty:
            break
    found = [
        f"{line.get('timestamp')} {line.get('event')}: {line.get('why') or line.get('error')}"
        for line in server.seen
        if line.get("level") in ("warning", "error")
        or str(line.get("event")).startswith(("lease", "leading", "following"))
    ]
    return found[-limit:]
