"""Faults of the bus, made real: the private nats-server killed by pid, its stream's store failing
on a write error, the server frozen by SIGSTOP.

- Finding 5: the private server is supervised (``task.nats-server``): SIGKILLed while events
  are appended, it comes back on the same port with the same store and users; the relay and
  the agents reconnect, and every event is published exactly once.
- Finding 4: after a write error (here RLIMIT_FSIZE on the server: "file too large", as a full
  disk gives "no space left") nats-server keeps the stream's store failed and answers no
  publish to it, even once writes work again; the relay saw acks missing for ever. Now it
  restarts the private server and resumes from its checkpoint: everything published once.
- Finding 6 (bus part): with the server stopped (SIGSTOP) for about 20 s while events are
  appended, the ``relay`` health entry reads degraded, with its lag in events and seconds,
  and ``nats`` says the connection is gone; after SIGCONT both return to ok.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import signal
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from lablink.bus import probes
from lablink.bus.permissions import SCHEDULER
from lablink.bus.private import TASK as SERVER_TASK
from lablink.bus.private import PrivateNats
from lablink.bus.relay import TASK as RELAY_TASK
from lablink.bus.relay import Relay
from lablink.clock import SystemClock
from lablink.events import JobPaused, NewEvent
from lablink.eventstore.sqlite import SQLiteEventStore
from lablink.health import Health
from lablink.projections.reading import reading_views
from lablink.runtime import Runtime, start_bus
from lablink.scheduler.agents import AgentExecutor
from lablink.settings import Settings
from tests.support.eventually import eventually

pytestmark = [pytest.mark.nats, pytest.mark.slow]

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
JOB: dict[str, Any] = {
    "name": "Voltage check",
    "schedule_type": "measurement",
    "equipment_id": "multimeter_1",
    "trigger_type": "interval",
    "interval_hours": 1,
    "parameters": {"command": "get_voltage"},
    "enabled": False,
}


def append(store: SQLiteEventStore, count: int = 1) -> None:
    for _ in range(count):
        version = store.stream_version("job_a")
        event = JobPaused(job_id="job_a", reason=f"n{version} " + "x" * 200)
        store.append("job_a", version, [NewEvent(event=event, actor="test", occurred_at=T0)])


@contextlib.asynccontextmanager
async def appending(store: SQLiteEventStore, every: float = 0.02) -> AsyncIterator[None]:
    """Events committed steadily (about 50 a second) while the block runs."""

    async def run() -> None:
        while True:
            await asyncio.to_thread(append, store)
            await asyncio.sleep(every)

    task = asyncio.create_task(run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def scheduler_login(server: PrivateNats) -> dict[str, Any]:
    options = server.options(SCHEDULER)
    return {"user": options.user, "password": options.password}


async def test_a_killed_nats_server_comes_back_and_the_backlog_is_published_once(
    tmp_path: Path, store: SQLiteEventStore, invariants: Any
) -> None:
    health = Health(SystemClock())
    settings = Settings(data_dir=store.path.parent, timezone="UTC")
    server, relay = await start_bus(settings, store, health)
    assert server is not None
    try:
        port = server.port
        async with appending(store):
            await eventually(lambda: relay.checkpoint() >= 50, what="first events published")
            killed = server.pid
            assert killed is not None
            os.kill(killed, signal.SIGKILL)
            await eventually(
                lambda: server.pid != killed and server.running, what="nats-server back"
            )
            assert server.port == port  # where every client reconnects
            await eventually(lambda: relay.checkpoint() > store.last_position() - 100)
        await eventually(
            lambda: relay.checkpoint() == store.last_position(), what="backlog published"
        )
        entry = health.get(SERVER_TASK)
        assert entry is not None
        assert entry.state == "ok"
        assert entry.details["restarts"] == 1
        assert entry.details["failures"] == 1  # the exit, counted
        await invariants(
            store.path,
            nats_url=server.url,
            nats_options=scheduler_login(server),
            require_all_published=True,
        )
    finally:
        await relay.aclose()
        await server.stop()


@pytest.mark.parametrize(
    "embedded_agent", ["inprocess", pytest.param("process", marks=pytest.mark.e2e)]
)
async def test_agents_reconnect_after_the_nats_server_is_killed(
    tmp_path: Path, embedded_agent: str
) -> None:
    settings = Settings(data_dir=tmp_path / "data", timezone="UTC", embedded_agent=embedded_agent)
    async with Runtime(settings) as runtime:
        server = runtime.nats_server
        assert server is not None
        job = runtime.service.create_job(JOB, "alice")
        killed = server.pid
        assert killed is not None
        os.kill(killed, signal.SIGKILL)
        await eventually(lambda: server.pid != killed and server.running, what="server back")
        # The embedded agent's and the executor's connections come back by themselves: a
        # heartbeat through the new server says both are (until then a run is, rightly,
        # equipment_offline).
        executor = runtime.executor
        assert isinstance(executor, AgentExecutor)
        back = time.monotonic()
        await eventually(
            lambda: executor.sightings["multimeter_1"].last_seen > back, what="agent back"
        )
        for _ in range(2):
            execution = await runtime.engine.run_now(job, "alice")
            status = await wait_for_status(runtime, execution)
            assert status == "completed", status


async def wait_for_status(runtime: Runtime, execution: str) -> str:
    def row() -> Any:
        with reading_views(runtime.store) as views:
            return views.execute(
                "SELECT status, error FROM executions WHERE execution_id = ?", (execution,)
            ).fetchone()

    ended = await eventually(
        row,
        until=lambda found: (
            found and found[0] in ("completed", "failed", "timed_out", "interrupted")
        ),
        what=f"{execution} ended",
    )
    return f"{ended[0]} {ended[1] or ''}".strip()


def stream_blocks(server: PrivateNats) -> list[Path]:
    return sorted(server.folder.glob("jetstream/**/LABLINK_EVENTS/msgs/*.blk"))


async def test_the_relay_recovers_when_the_streams_store_fails_on_a_write_error(
    store: SQLiteEventStore, invariants: Any
) -> None:
    health = Health(SystemClock())
    server = await PrivateNats(store.path.parent / "nats", health).start()
    # The wiring of start_bus, with shorter waits than a lab's.
    relay = Relay(
        store.path,
        server.options(SCHEDULER),
        health=health,
        on_stuck=server.restart,
        stuck_seconds=3.0,
        ack_timeout=1.0,
    )
    relay.attach(store)
    await relay.start()
    try:
        append(store, 100)
        await eventually(lambda: relay.checkpoint() == 100, what="first events published")
        pid = server.pid
        assert pid is not None
        # The next blocks' writes fail with EFBIG, as on a disk that just filled up.
        (block,) = stream_blocks(server)
        limit = block.stat().st_size + 4096
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
        append(store, 300)
        await eventually(lambda: relay.status.last_error is not None, what="publishes failing")
        await eventually(
            lambda: (entry := health.get(RELAY_TASK)) is not None and entry.state == "failing",
            what="task.relay failing",
        )
        # Either the stream acked them before its disk had them (it copies the log:
        # persist_mode async) and lost them: the relay finds the stream's tail short of its
        # checkpoint and goes back to it, to publish the rest again (counted: republishing
        # may take the checkpoint back to 400 between two looks, acked again and lost again);
        # or the failing store never acked them, and the checkpoint stays short of 400.
        await eventually(
            lambda: relay.status.tails_lost >= 1 or relay.checkpoint() < 400,
            what="the relay back at the tail, or the writes unacknowledged",
        )
        # The disk has room again; the stream's store stays failed until a restart.
        with contextlib.suppress(ProcessLookupError):
            resource.prlimit(
                pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
            )
        append(store, 100)
        await eventually(lambda: relay.checkpoint() == 500, what="everything published")
        assert relay.status.stuck_calls >= 1
        assert server.restarts >= 1
        entry = health.get(RELAY_TASK)
        assert entry is not None
        assert entry.state == "ok"
        await invariants(
            store.path,
            nats_url=server.url,
            nats_options=scheduler_login(server),
            require_all_published=True,
        )
    finally:
        await relay.aclose()
        await server.stop()


async def test_a_frozen_server_shows_in_health_and_clears_after(
    store: SQLiteEventStore, invariants: Any
) -> None:
    health = Health(SystemClock())
    settings = Settings(data_dir=store.path.parent, timezone="UTC")
    server, relay = await start_bus(settings, store, health)
    assert server is not None
    pid = server.pid
    assert pid is not None
    worst: dict[str, str] = {}
    lag_seconds: list[float] = []
    legacy: list[str] = []
    try:
        append(store, 20)
        await eventually(lambda: relay.checkpoint() == 20, what="first events published")
        assert health.get("relay").state == "ok"  # type: ignore[union-attr]
        os.kill(pid, signal.SIGSTOP)
        try:
            async with appending(store):
                loop = asyncio.get_running_loop()
                until = loop.time() + 20
                while loop.time() < until:
                    found = health.read()
                    for name in ("relay", "nats"):
                        state = found[name].state
                        if probes_gravity(state) > probes_gravity(worst.get(name, "ok")):
                            worst[name] = state
                    lag_seconds.append(found["relay"].details["lag_seconds"])
                    legacy.append(probes.relay_summary(relay.status)["status"])
                    await asyncio.sleep(0.5)
                lagging = health.get("relay")
                assert lagging is not None
                assert lagging.details["lag_events"] > 100
        finally:
            os.kill(pid, signal.SIGCONT)
        assert worst["relay"] in ("degraded", "failing")
        assert worst["nats"] in ("degraded", "failing")
        assert max(lag_seconds) > probes.DEGRADED_AFTER
        assert "ok" not in legacy[-5:]  # /health's nats summary no longer says ok either
        await eventually(
            lambda: relay.checkpoint() == store.last_position(), what="backlog published"
        )

        def healthy() -> bool:
            return all(health.get(n).state == "ok" for n in ("relay", "nats"))  # type: ignore[union-attr]

        await eventually(healthy, what="health ok again")
        assert health.get("relay").details["lag_seconds"] == 0  # type: ignore[union-attr]
        assert server.pid == pid  # frozen, not dead: never restarted
        await invariants(
            store.path,
            nats_url=server.url,
            nats_options=scheduler_login(server),
            require_all_published=True,
        )
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
        await relay.aclose()
        await server.stop()


def probes_gravity(state: str) -> int:
    return {"ok": 0, "degraded": 1, "failing": 2}[state]
