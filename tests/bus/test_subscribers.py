"""Subscribers on real NATS: events tail, alarms watch, the example dashboard, replay from a
position, and an outage while the engine fires jobs (with /health saying degraded)."""

from __future__ import annotations

import asyncio
import importlib.util
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from lablink.bus.consume import read_stream
from lablink.bus.relay import NatsOptions, Relay
from lablink.bus.server import NatsServer
from lablink.bus.watch import tail_events
from lablink.clock import ManualClock
from lablink.events import AlarmRaised, NewEvent
from tests.support.eventually import eventually
from tests.support.harness import Harness, api_client

pytestmark = pytest.mark.nats

LABLINK = str(Path(sys.executable).parent / "lablink")
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
JOB: dict[str, Any] = {
    "name": "Fast check",
    "schedule_type": "measurement",
    "equipment_id": "multimeter_1",
    "trigger_type": "interval",
    "interval_seconds": 1,
    "parameters": {"command": "get_voltage"},
}


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[NatsServer]:
    started = await NatsServer(tmp_path / "nats").start()
    yield started
    await started.stop()


async def relay_for(h: Harness, url: str) -> Relay:
    relay = Relay(h.store.path, NatsOptions(url=url), batch_size=100, ack_timeout=2)
    relay.attach(h.store)
    return await relay.start()


async def fire(h: Harness, job_id: str, seconds: int) -> None:
    for _ in range(seconds):
        planned = h.engine.timers.planned(job_id)
        assert planned is not None
        await h.at(planned)


async def test_dashboard_example_counts_live_executions(
    harness: Harness, server: NatsServer
) -> None:
    spec = importlib.util.spec_from_file_location(
        "dashboard", Path(__file__).parents[2] / "examples" / "dashboard.py"
    )
    assert spec is not None
    assert spec.loader is not None
    dashboard = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(dashboard)
    relay = await relay_for(harness, server.url)
    job = harness.service.create_job(JOB, "alice")
    await fire(harness, job, 3)
    counts = await asyncio.wait_for(dashboard.follow(server.url, updates=6), 60)
    assert counts == {"running": 0, "completed": 3, "failed": 0}
    await relay.aclose()


async def test_events_tail_filters_and_replays_from_a_position(
    harness: Harness, server: NatsServer
) -> None:
    relay = await relay_for(harness, server.url)
    first = harness.service.create_job(JOB, "alice")
    second = harness.service.create_job({**JOB, "equipment_id": "load_1", "enabled": False}, "bob")
    await fire(harness, first, 2)
    harness.service.resume_job(second, "bob")
    # Under load a publish took 5.5 s once: tail what is in the stream, not what may be.
    await eventually(
        relay.checkpoint,
        until=lambda published: published == harness.store.last_position(),
        what="every event published",
    )

    async def lines(**filters: Any) -> list[str]:
        console = Console(record=True, width=300)
        await asyncio.wait_for(tail_events(server.url, console=console, **filters), 60)
        return console.export_text().splitlines()

    resumed = await lines(event_type="job.resumed", from_start=True, count=1)
    assert "job.resumed" in resumed[0]
    assert second in resumed[0]
    on_load = await lines(equipment_id="load_1", from_start=True, count=2)
    assert [("job.created" in line, "job.resumed" in line) for line in on_load] == [
        (True, False),
        (False, True),
    ]
    of_first = await lines(job_id=first, from_start=True, count=3)
    assert all(first in line for line in of_first)
    replayed = await lines(start_position=3, count=1)
    assert replayed[0].split()[0] == "3"
    await relay.aclose()


@pytest.mark.e2e
async def test_events_tail_command(harness: Harness, server: NatsServer) -> None:
    relay = await relay_for(harness, server.url)
    harness.service.create_job(JOB, "alice")
    env = {"LABLINK_NATS_URL": server.url, "PATH": str(Path(sys.executable).parent)}
    tail = await asyncio.create_subprocess_exec(
        LABLINK, "events", "tail", "--from-start", "--count", "1", env=env, stdout=subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(tail.communicate(), 60)
    assert tail.returncode == 0
    assert "job.created" in out.decode()
    assert "alice" in out.decode()
    await relay.aclose()


@pytest.mark.e2e
async def test_alarms_watch_prints_alarms_from_their_subject(
    harness: Harness, server: NatsServer
) -> None:
    relay = await relay_for(harness, server.url)
    env = {"LABLINK_NATS_URL": server.url, "PATH": str(Path(sys.executable).parent)}
    watcher = await asyncio.create_subprocess_exec(
        LABLINK,
        "alarms",
        "watch",
        "--count",
        "1",
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert watcher.stderr is not None
    # It says so once its subscription is on the server: no alarm after that is missed.
    assert "watching" in (await asyncio.wait_for(watcher.stderr.readline(), 60)).decode()
    alarm = AlarmRaised(
        alarm_id="alarm_1",
        kind="job_failure",
        severity="critical",
        message="Hourly Voltage Check failed: -222,Data out of range",
        equipment_id="power_supply_1",
        job_name="Hourly Voltage Check",
    )
    harness.store.append(
        "alarm:alarm_1", 0, [NewEvent(event=alarm, actor="scheduler", occurred_at=T0)]
    )
    out, _ = await asyncio.wait_for(watcher.communicate(), 60)
    assert watcher.returncode == 0
    assert "CRITICAL" in out.decode()
    assert "power_supply_1" in out.decode()
    await relay.aclose()


@pytest.mark.slow
async def test_nats_outage_while_jobs_fire(tmp_path: Path) -> None:
    clock = ManualClock(T0)
    h = await Harness(tmp_path / "data" / "scheduler.db", clock).start()
    server = await NatsServer(tmp_path / "nats").start()
    port = server.port
    relay = await relay_for(h, server.url)
    async with api_client(h, auth=False, relay=relay) as client:
        job = h.service.create_job(JOB, "alice")
        await fire(h, job, 5)
        await server.kill()
        # NATS is down: jobs keep firing, every fire is committed, the API keeps answering.
        await fire(h, job, 20)
        assert h.rows("SELECT COUNT(*) AS n FROM executions")[0]["n"] == 25
        health = (await client.get("/health")).json()
        assert health["status"] == "degraded"
        assert health["nats"]["connected"] is False
        assert health["nats"]["lag_events"] > 0
        assert health["nats"]["url"] == server.url
        restarted = await NatsServer(tmp_path / "nats", port=port).start()
        await fire(h, job, 5)
        expected = h.store.last_position()
        events = await read_stream(restarted.url, expected=expected, wait=60)
        assert [e["position"] for e in events] == list(range(1, expected + 1))
        health = (await client.get("/health")).json()
        assert health["nats"]["connected"] is True
    await relay.aclose()
    await restarted.stop()
    await h.close()
