"""Cluster mode as processes: two `lablink serve` replicas on a 3-node loopback NATS cluster.
A run-now asked of the follower runs once, on the leader, and the follower shows it in its
very next read; a refused one answers the leader's own 409. One relay per cluster: the
follower's says it follows; after the leader stops, the new leader's relay resumes after
the events stream's tail, so the stream holds each event once and every position."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest

from lablink.bus.subjects import STREAM
from tests.support.eventually import eventually_sync
from tests.support.nats_cluster import SCHEDULER
from tests.support.nats_thread import nats_cluster
from tests.support.serve import Server, free_port, servers  # noqa: F401 (a fixture)

LEASE_SECONDS = 3.0
# A minute on the simulated load in real time (LABLINK_REALTIME): still running when asked
# again, so that the conflict policy (skip) refuses.
LOAD_TEST: dict[str, Any] = {
    "name": "load test",
    "schedule_type": "command",
    "equipment_id": "load_1",
    "trigger_type": "interval",
    "interval_hours": 1,
    "parameters": {"command": "run_load_test", "parameters": {"duration": 60, "current": 2.0}},
    "enabled": False,
}


def health(server: Server) -> dict[str, Any]:
    answer: dict[str, Any] = httpx.get(f"http://127.0.0.1:{server.port}/health", timeout=5).json()
    return answer


def role(server: Server) -> str | None:
    try:
        return str(health(server)["components"]["lease"]["details"]["role"])
    except (httpx.HTTPError, KeyError):
        return None


def event_positions(data_dir: Path) -> dict[str, int]:
    conn = sqlite3.connect(data_dir / "scheduler.db")
    try:
        return dict(conn.execute("SELECT event_id, position FROM events").fetchall())
    finally:
        conn.close()


def bus_messages(url: str) -> list[tuple[str, int]]:
    """Every message of LABLINK_EVENTS as stored (event id, position): not deduplicated."""

    async def read() -> list[tuple[str, int]]:
        nc = await nats.connect(servers=url.split(","), user=SCHEDULER[0], password=SCHEDULER[1])
        try:
            js = nc.jetstream()
            state = (await js.stream_info(STREAM)).state
            found = []
            for seq in range(state.first_seq, state.last_seq + 1):
                body = json.loads((await js.get_msg(STREAM, seq=seq)).data or b"{}")
                found.append((str(body["event_id"]), int(body["position"])))
            return found
        finally:
            await nc.close()

    return asyncio.run(read())


@pytest.mark.nats
@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_run_now_on_a_follower_and_one_relay_across_a_handoff(
    tmp_path: Path,
    servers: list[Server],  # noqa: F811
) -> None:
    started = time.monotonic()
    with nats_cluster(tmp_path / "nats") as (_, nodes):
        url = ",".join(node.url for node in nodes)
        replicas: dict[str, Server] = {}
        for name in ("a", "b"):
            settings = {
                "LABLINK_CLUSTER": "1",
                "LABLINK_NATS_URL": url,
                "LABLINK_NATS_USER": SCHEDULER[0],
                "LABLINK_NATS_PASSWORD": SCHEDULER[1],
                "LABLINK_NATS_REPLICAS": "3",
                "LABLINK_REPLICA_ID": name,
                "LABLINK_LEASE_SECONDS": f"{LEASE_SECONDS:g}",
                "LABLINK_EXECUTOR": "sim",
                "LABLINK_REALTIME": "1",
                "LABLINK_AUTH": "off",
                "LABLINK_PROJECTOR": "thread",
            }
            server = Server(tmp_path / name, free_port(), settings)
            servers.append(server)
            replicas[name] = server
        for server in replicas.values():
            server.listening()
        leader_name = eventually_sync(
            lambda: [n for n, s in replicas.items() if role(s) == "holder"],
            until=lambda found: len(found) == 1,
        )[0]
        follower_name = "b" if leader_name == "a" else "a"
        leader, follower = replicas[leader_name], replicas[follower_name]
        assert role(follower) == "follower"

        # The follower's relay follows, and /health says so without a fault.
        components = health(follower)["components"]
        assert components["relay"]["state"] == "ok"
        assert components["relay"]["reason"].startswith("following")
        assert components["nats"]["state"] == "ok"

        with (
            httpx.Client(base_url=f"http://127.0.0.1:{follower.port}", timeout=30) as on_follower,
            httpx.Client(base_url=f"http://127.0.0.1:{leader.port}", timeout=30) as on_leader,
        ):
            created = on_follower.post("/api/scheduler/jobs/create", json=LOAD_TEST)
            assert created.status_code == 200, created.text
            job_id = created.json()["job_id"]

            ran = on_follower.post(f"/api/scheduler/jobs/{job_id}/run")
            assert ran.status_code == 200, ran.text
            execution_id = ran.json()["execution_id"]
            shown = on_follower.get(f"/api/scheduler/executions/{execution_id}")
            assert shown.status_code == 200, shown.text
            assert shown.json()["execution"]["trigger_info"] == "manual"
            # Run by the leader's engine (the follower's never started): it runs there.
            eventually_sync(
                lambda: on_leader.get("/api/scheduler/running").json()["running_jobs"],
                until=lambda running: running == [job_id],
            )

            refused = on_follower.post(f"/api/scheduler/jobs/{job_id}/run")
            refused_on_leader = on_leader.post(f"/api/scheduler/jobs/{job_id}/run")
            assert refused.status_code == refused_on_leader.status_code == 409
            assert refused.json() == refused_on_leader.json()
            assert refused.json()["running"] == [execution_id]
            unknown = on_follower.post("/api/scheduler/jobs/job_unknown/run")
            assert unknown.status_code == 404, unknown.text
            listed = on_follower.get("/api/scheduler/executions", params={"job_id": job_id}).json()
            assert [e["execution_id"] for e in listed["executions"]] == [execution_id]
        forwarded_at = time.monotonic() - started

        # Handoff: the leader stops; the follower takes the lease, its engine interrupts the
        # capture (more events), its relay publishes them after the stream's tail.
        leader.terminate()
        eventually_sync(lambda: role(follower), until=lambda r: r == "holder", timeout=60)
        relay = eventually_sync(
            lambda: health(follower)["components"]["relay"]["details"],
            until=lambda d: (
                d.get("role") == "publishing"
                and d["published_position"] == d["log_position"]
                and d["lag_events"] == 0
            ),
            timeout=60,
        )
        eventually_sync(
            lambda: on_status(follower, execution_id),
            until=lambda status: status == "interrupted",
            timeout=60,
        )
        relay = eventually_sync(
            lambda: health(follower)["components"]["relay"]["details"],
            until=lambda d: d["published_position"] == d["log_position"],
            timeout=60,
        )
        logged = event_positions(tmp_path / follower_name)
        stored = eventually_sync(
            lambda: bus_messages(url),
            until=lambda found: len(found) >= len(logged),
            ignoring=(Exception,),
        )
        ids = [event_id for event_id, _ in stored]
        assert len(ids) == len(set(ids)), "an event is on the bus twice"
        assert dict(stored) == logged, "the bus and the log differ (a gap, or another event)"
        # The new leader sent only what lay after the tail it found.
        resumed_at = relay["resumed_at"]
        assert resumed_at is not None
        assert resumed_at > 0
        after = [p for _, p in stored if p > resumed_at]
        assert relay["published_total"] == len(after)
    print(
        f"forwarded run-nows checked {forwarded_at:.1f} s after the start;"
        f" the new leader resumed the bus at position {resumed_at} and published {len(after)}"
    )


def on_status(server: Server, execution_id: str) -> str | None:
    answer = httpx.get(
        f"http://127.0.0.1:{server.port}/api/scheduler/executions/{execution_id}", timeout=5
    )
    if answer.status_code != 200:
        return None
    return str(answer.json()["execution"]["status"])
