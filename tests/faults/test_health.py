"""Finding 6: `/health` tells the truth, in the shape orchestrators probe.

Through the real Litestar app with components set failing or degraded in a real Health
registry (and a real Supervisor whose task keeps failing), and against a real `lablink serve`
whose database is made read-only under it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from lablink.health import Health
from lablink.supervision import Supervisor, Watch
from tests.support.eventually import eventually, eventually_sync
from tests.support.harness import Harness, api_client

LABLINK = str(Path(sys.executable).parent / "lablink")


def since(body: dict[str, Any], name: str) -> datetime:
    return datetime.fromisoformat(body["components"][name]["since"])


async def test_health_renders_the_registry_and_answers_503_when_a_component_fails(
    harness: Harness,
) -> None:
    health = Health(harness.clock)
    health.set("scheduler", "ok", last_tick_age_seconds=0.2)
    health.set("relay", "degraded", "2100 events not yet published", lag_events=2100)
    health.set("agent.power_supply_1", "ok")
    async with api_client(harness, auth=True, health=health) as client:
        degraded = await client.get("/health")  # no key: probes need none
        assert degraded.status_code == 200, degraded.text
        body = degraded.json()
        assert body["status"] == "degraded"
        relay = body["components"]["relay"]
        assert relay["state"] == "degraded"
        assert relay["reason"] == "2100 events not yet published"
        assert relay["details"] == {"lag_events": 2100}
        assert since(body, "relay") == harness.clock.now()
        assert body["components"]["scheduler"]["details"] == {"last_tick_age_seconds": 0.2}
        assert set(body["components"]) >= {"scheduler", "relay", "agent.power_supply_1"}
        # The runtime's registry has no event_log here: the API answers for the database.
        assert body["components"]["database"]["state"] == "ok"
        assert (await client.get("/health/ready")).status_code == 200

        harness.clock.advance(timedelta(seconds=30))
        health.set("task.engine", "failing", "OperationalError: database or disk is full")
        failing = await client.get("/health")
        assert failing.status_code == 503, failing.text
        body = failing.json()
        assert body["status"] == "failing"
        engine = body["components"]["task.engine"]
        assert engine["state"] == "failing"
        assert "database or disk is full" in engine["reason"]
        assert since(body, "task.engine") == harness.clock.now()
        # The relay is still degraded: its since did not move.
        assert since(body, "relay") == harness.clock.now() - timedelta(seconds=30)
        assert body["scheduler"]["status"] == "ok"  # the summary earlier clients read

        ready = await client.get("/health/ready")
        assert ready.status_code == 503, ready.text
        assert ready.json()["ready"] is False
        assert ready.json()["reasons"] == [
            "task.engine: OperationalError: database or disk is full"
        ]
        live = await client.get("/health/live")
        assert (live.status_code, live.json()) == (200, {"status": "ok"})

        harness.clock.advance(timedelta(seconds=5))
        health.set("task.engine", "ok")
        health.set("relay", "ok")
        healthy = await client.get("/health")
        assert healthy.status_code == 200, healthy.text
        assert healthy.json()["status"] == "ok"
        assert since(healthy.json(), "task.engine") == harness.clock.now()
        assert (await client.get("/health/ready")).json() == {
            "ready": True,
            "status": "ok",
            "reasons": [],
        }


async def test_the_scheduler_section_is_no_longer_always_ok(harness: Harness) -> None:
    health = Health(harness.clock)
    health.set("scheduler", "failing", "no tick for 95 s", last_tick_age_seconds=95.0)
    async with api_client(harness, auth=False, health=health) as client:
        response = await client.get("/health")
    assert response.status_code == 503
    body = response.json()
    assert body["scheduler"]["status"] == "failing"
    assert body["components"]["scheduler"]["reason"] == "no tick for 95 s"


async def test_a_supervised_task_that_keeps_failing_shows_in_health(harness: Harness) -> None:
    health = Health(harness.clock)
    supervisor = Supervisor(health, initial_backoff=0.01, max_backoff=0.05)
    tries = 0

    async def broken(watch: Watch) -> None:
        nonlocal tries
        tries += 1
        raise RuntimeError(f"cannot reach the relay's stream (try {tries})")

    supervisor.spawn("task.relay", broken)
    try:
        async with api_client(harness, auth=False, health=health) as client:

            async def relay_entry() -> tuple[int, dict[str, Any]]:
                response = await client.get("/health")
                return response.status_code, response.json()["components"]["task.relay"]

            status, component = await eventually(
                relay_entry,
                until=lambda found: (
                    found[1]["state"] == "failing" and found[1]["details"]["failures"] >= 2
                ),
                what="task.relay failing, twice or more",
            )
            assert status == 503
            assert "cannot reach the relay's stream" in component["reason"]
            assert component["details"]["last_error"].startswith("RuntimeError")
    finally:
        await supervisor.aclose()


async def test_the_api_alone_answers_for_the_database_and_the_engine(harness: Harness) -> None:
    async with api_client(harness, auth=False) as client:
        response = await client.get("/health")
        ready = await client.get("/health/ready")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ok"
    assert body["components"]["database"]["state"] == "ok"
    assert body["components"]["database"]["details"]["path"] == str(harness.path)
    assert body["components"]["scheduler"]["state"] == "ok"
    assert "nats" not in body["components"]  # no relay in this context
    for section in ("database", "scheduler", "nats", "agents"):
        assert section in body
    assert ready.status_code == 200, ready.text


async def test_readiness_needs_the_store_and_the_engine() -> None:
    from lablink.api.probes import readiness
    from lablink.health import Component

    assert readiness({}).reasons == [
        "the event store is not open",
        "the scheduling engine has not started",
    ]
    ok = Component(state="ok")
    assert readiness({"event_log": ok, "scheduler": ok}).ready is True


async def test_the_openapi_document_describes_the_probes(harness: Harness) -> None:
    async with api_client(harness, auth=False) as client:
        schema = (await client.get("/schema/openapi.json")).json()
    paths = schema["paths"]
    for path in ("/health", "/health/live", "/health/ready"):
        assert path in paths, path
    assert {"200", "503"} <= set(paths["/health"]["get"]["responses"])
    assert {"200", "503"} <= set(paths["/health/ready"]["get"]["responses"])
    components = schema["components"]["schemas"]
    report = components["HealthReport"]
    assert {"status", "components"} <= set(report["required"])
    states = components["Component"]["properties"]["state"]
    assert set(states["enum"]) == {"ok", "degraded", "failing"}
    assert "ready" in components["Readiness"]["properties"]


# -- a real `lablink serve` ---------------------------------------------------------------


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[None]:
    """Make ``path`` unwritable for real, even for root (where the mode bits do not stop
    writes): ``chattr +i`` then, ``chmod 0400`` for anyone else."""
    if os.geteuid() == 0:
        made = subprocess.run(["chattr", "+i", str(path)], capture_output=True, check=False)
        if made.returncode != 0:
            pytest.fail(f"cannot make the fault: chattr +i fails: {made.stderr.decode().strip()}")
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", str(path)], check=True)
    else:
        mode = path.stat().st_mode
        path.chmod(0o400)
        try:
            yield
        finally:
            path.chmod(mode)


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.e2e
@pytest.mark.nats
@pytest.mark.slow
def test_health_of_a_real_server_whose_database_turns_read_only(tmp_path: Path) -> None:
    data = tmp_path / "data"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABLINK_")}
    env.update(LABLINK_DATA_DIR=str(data), LABLINK_TIMEZONE="UTC")
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen(
        [LABLINK, "serve", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            eventually_sync(
                lambda: client.get("/health/live").status_code == 200,
                what="live",
                ignoring=(httpx.HTTPError,),
            )
            # The embedded agent reports its instruments within a few heartbeats.
            body = eventually_sync(
                lambda: client.get("/health"),
                until=lambda r: (
                    r.status_code == 200
                    and any(n.startswith("agent.") for n in r.json()["components"])
                ),
                what="a healthy server with its agents",
                ignoring=(httpx.HTTPError,),
            ).json()
            assert body["status"] in ("ok", "degraded")
            names = set(body["components"])
            assert {"event_log", "scheduler"} <= names, names
            assert "nats" in names or "relay" in names, names
            event_log = body["components"]["event_log"]
            assert event_log["state"] in ("ok", "degraded")
            assert event_log["details"]["path"] == str(data / "scheduler.db")
            assert event_log["details"]["free_bytes"] > 0
            assert event_log["details"]["database_bytes"] > 0
            assert client.get("/health/ready").status_code == 200

            with read_only(data / "scheduler.db"):
                sick = client.get("/health")
                assert sick.status_code == 503, sick.text
                failing = sick.json()["components"]["event_log"]
                assert failing["state"] == "failing"
                assert "read-only" in failing["reason"]
                ready = client.get("/health/ready")
                assert ready.status_code == 503
                assert any(r.startswith("event_log: ") for r in ready.json()["reasons"])
                assert client.get("/health/live").status_code == 200
            eventually_sync(
                lambda: client.get("/health").status_code == 200,
                what="healthy again",
                ignoring=(httpx.HTTPError,),
            )
            assert client.get("/health/ready").status_code == 200
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
        log.close()
    assert server.returncode == 0, (tmp_path / "serve.log").read_text()[-3000:]
