"""The relay against real nats-server processes on loopback: order, outages, lost streams,
crashes between commit and publish. Consumers dedupe by event id (the Nats-Msg-Id)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.js.api import PersistMode

from lablink.bus.connection import ensure_stream
from lablink.bus.consume import read_stream
from lablink.bus.probes import relay_summary
from lablink.bus.relay import NatsOptions, Relay
from lablink.bus.server import NatsServer
from lablink.bus.subjects import STREAM
from lablink.events import JobPaused, NewEvent
from lablink.eventstore.sqlite import SQLiteEventStore
from lablink.logstore import open_store
from lablink.projections.reading import views_file
from tests.support.eventually import eventually

pytestmark = pytest.mark.nats

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def append(store: SQLiteEventStore, count: int, stream: str = "job_a") -> None:
    for _ in range(count):
        version = store.stream_version(stream)
        store.append(
            stream,
            version,
            [
                NewEvent(
                    event=JobPaused(job_id=stream, reason=f"n{version}"),
                    actor="test",
                    occurred_at=T0 + timedelta(seconds=version),
                )
            ],
        )


async def received(url: str, expected: int, wait: float = 60) -> list[dict[str, Any]]:
    return await read_stream(url, expected=expected, wait=wait)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[NatsServer]:
    started = await NatsServer(tmp_path / "nats").start()
    yield started
    await started.stop()


@pytest.fixture
def store(tmp_path: Path) -> SQLiteEventStore:
    return open_store(tmp_path / "scheduler.db")


async def run_relay(store: SQLiteEventStore, url: str) -> Relay:
    relay = Relay(store.path, NatsOptions(url=url), batch_size=200, ack_timeout=2)
    relay.attach(store)
    return await relay.start()


async def test_every_event_once_in_position_order(
    server: NatsServer, store: SQLiteEventStore
) -> None:
    append(store, 50)
    relay = await run_relay(store, server.url)
    append(store, 50, stream="job_b")
    events = await received(server.url, 100)
    assert [e["position"] for e in events] == list(range(1, 101))
    assert events[0]["type"] == "job.paused"
    assert events[0]["actor"] == "test"
    await relay.aclose()
    assert relay.status.published_position == 100


async def test_outage_keeps_committing_and_drains_in_order(
    tmp_path: Path, store: SQLiteEventStore
) -> None:
    server = await NatsServer(tmp_path / "nats").start()
    port = server.port
    relay = await run_relay(store, server.url)
    append(store, 100)
    await server.kill()
    # NATS is gone: the log keeps taking events, nothing waits for the bus.
    append(store, 200)
    assert store.last_position() == 300
    assert relay_summary(relay.status)["status"] == "degraded" or relay.checkpoint() < 300
    restarted = await NatsServer(tmp_path / "nats", port=port).start()
    append(store, 100)
    events = await received(restarted.url, 400)
    assert [e["position"] for e in events] == list(range(1, 401))
    await relay.aclose()
    await restarted.stop()


async def test_deleted_stream_is_recreated_and_refilled(
    server: NatsServer, store: SQLiteEventStore
) -> None:
    relay = await run_relay(store, server.url)
    append(store, 30)
    assert len(await received(server.url, 30)) == 30
    nc = await nats.connect(server.url)
    await nc.jetstream().delete_stream(STREAM)
    await nc.close()
    append(store, 5)
    events = await received(server.url, 35)
    assert [e["position"] for e in events] == list(range(1, 36))
    await relay.aclose()


async def test_committed_but_unpublished_events_are_published_once_after_restart(
    server: NatsServer, store: SQLiteEventStore
) -> None:
    # LabLink died after committing and before publishing: no relay ran.
    append(store, 40)
    first = await run_relay(store, server.url)
    assert len(await received(server.url, 40)) == 40
    await first.aclose()
    # It died again after the acks but before saving its checkpoint: the batch goes again,
    # and JetStream's duplicate window keeps one copy of each.
    conn = store.conn
    with store.lock:
        conn.execute("UPDATE relay_checkpoints SET position = 0")
    second = await run_relay(store, server.url)
    append(store, 2)
    events = await received(server.url, 42)
    assert [e["position"] for e in events] == list(range(1, 43))
    nc = await nats.connect(server.url)
    info = await nc.jetstream().stream_info(STREAM)
    await nc.close()
    assert info.state.messages == 42
    await second.aclose()


async def test_the_events_stream_acks_before_its_disk_and_only_it(
    server: NatsServer, store: SQLiteEventStore
) -> None:
    # The stream copies the log, which the relay repairs it from: no fsync per event. A
    # stream that is the only copy of what it holds (here, one made as the uploads' stream
    # is) keeps nats-server's sync_interval: always.
    relay = await run_relay(store, server.url)
    append(store, 3)
    await received(server.url, 3)
    await relay.aclose()
    nc = await nats.connect(server.url)
    try:
        js = nc.jetstream()
        await ensure_stream(js, "OTHER", ["other.>"], replicas=1)
        modes = {
            name: (await js.stream_info(name)).config.persist_mode for name in (STREAM, "OTHER")
        }
    finally:
        await nc.close()
    assert modes == {STREAM: PersistMode.ASYNC, "OTHER": None}


async def test_a_tail_the_stream_lost_is_published_again_in_order(
    tmp_path: Path, server: NatsServer, store: SQLiteEventStore
) -> None:
    relay = await run_relay(store, server.url)
    append(store, 40)
    assert len(await received(server.url, 40)) == 40
    await relay.aclose()
    assert relay.checkpoint() == 40
    # What a nats-server that crashed before flushing leaves: the stream ends at 30 although
    # the relay was told of 40. (Deleted, then a restart, so that its duplicate window
    # forgets the ten as a crash would.)
    nc = await nats.connect(server.url)
    js = nc.jetstream()
    for seq in range(31, 41):
        await js.delete_msg(STREAM, seq)
    await nc.close()
    port = server.port
    await server.stop()
    restarted = await NatsServer(tmp_path / "nats", port=port).start()
    try:
        second = await run_relay(store, restarted.url)
        append(store, 5)
        events = await received(restarted.url, 45)
        assert [e["position"] for e in events] == list(range(1, 46))
        await second.aclose()
    finally:
        await restarted.stop()


@pytest.mark.slow
@pytest.mark.e2e
async def test_lablink_relay_process_killed_and_restarted_publishes_each_event_once(
    server: NatsServer, tmp_path: Path
) -> None:
    import os
    import signal
    import subprocess
    import sys

    data = tmp_path / "data"
    store = open_store(data / "scheduler.db")
    append(store, 500)
    env = {**os.environ, "LABLINK_DATA_DIR": str(data), "LABLINK_NATS_URL": server.url}
    lablink = str(Path(sys.executable).parent / "lablink")
    first = await asyncio.create_subprocess_exec(
        lablink, "relay", env=env, stdout=subprocess.DEVNULL
    )
    # Killed as soon as some of the log is out: the rest is committed but unpublished.
    await read_stream(server.url, expected=1, wait=60)
    first.send_signal(signal.SIGKILL)
    await asyncio.wait_for(first.wait(), 60)
    append(store, 100)
    second = await asyncio.create_subprocess_exec(
        lablink, "relay", env=env, stdout=subprocess.DEVNULL
    )
    try:
        events = await read_stream(server.url, expected=600, wait=60)
        assert [e["position"] for e in events] == list(range(1, 601))
        nc = await nats.connect(server.url)
        info = await nc.jetstream().stream_info(STREAM)
        await nc.close()
        assert info.state.messages == 600  # JetStream kept one copy of each
    finally:
        second.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(second.wait(), 60) == 0
        store.close()


def remove_views(log_path: Path) -> Path:
    views = views_file(log_path)
    assert views is not None
    for suffix in ("", "-wal", "-shm"):
        Path(f"{views}{suffix}").unlink(missing_ok=True)
    return views


async def test_a_missing_views_file_fails_the_session_clearly_until_it_is_made(
    server: NatsServer, store: SQLiteEventStore
) -> None:
    """The relay reads which instrument a job runs on from the views, read-only. A log whose
    views file is not there (yet): the session fails naming the file and is retried, rather
    than reading the log's file (which has no view tables) for ever; once the scheduler has
    rebuilt the views, every event goes out."""
    append(store, 5)
    store.close()
    views = remove_views(store.path)
    relay = Relay(
        store.path, NatsOptions(url=server.url), ack_timeout=2, poll_seconds=0.05, max_backoff=0.5
    )
    await relay.start()
    try:
        await eventually(lambda: "no views file at" in (relay.status.last_error or ""))
        assert str(views) in (relay.status.last_error or "")
        assert not views.exists()  # read-only: the relay made no empty views file
        reopened = open_store(store.path)  # the scheduler's start rebuilds the views
        try:
            events = await received(server.url, 5)
            assert [e["position"] for e in events] == list(range(1, 6))
        finally:
            reopened.close()
    finally:
        await relay.aclose()
