"""One relay per cluster (cluster mode): each replica's relay follows until its replica leads,
and a new leader's relay resumes after the events stream's tail, not from its own stale
checkpoint. Two copies of one log (the same events at the same positions, as every replica's
copy of the record) and two relays on one real nats-server: across a handoff the stream
holds each event once, with no gap, and the new leader publishes only what came after."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import nats
import pytest

from lablink.bus.probes import nats_reading, relay_reading, relay_summary
from lablink.bus.relay import CHECKPOINTS, NatsOptions, Relay
from lablink.bus.server import NatsServer
from lablink.bus.subjects import STREAM
from lablink.eventstore.sqlite import SQLiteEventStore
from lablink.logstore import open_store
from tests.bus.test_relay import append, received
from tests.support.eventually import eventually

pytestmark = pytest.mark.nats


async def stream_messages(url: str) -> int:
    nc = await nats.connect(url)
    try:
        info = await nc.jetstream().stream_info(STREAM)
        return int(info.state.messages)
    finally:
        await nc.close()


def copy_log(source: SQLiteEventStore, folder: Path, stale_checkpoint: int) -> SQLiteEventStore:
    """Another replica's copy of ``source``'s log, its relay's checkpoint left at
    ``stale_checkpoint`` (where it stood when it last published, long ago)."""
    folder.mkdir(parents=True)
    target = folder / "scheduler.db"
    src, dst = sqlite3.connect(source.path), sqlite3.connect(target)
    try:
        src.backup(dst)
        with dst:
            dst.execute(CHECKPOINTS)
            dst.execute("DELETE FROM relay_checkpoints")
            dst.execute(
                "INSERT INTO relay_checkpoints (name, position) VALUES ('relay', ?)",
                (stale_checkpoint,),
            )
    finally:
        src.close()
        dst.close()
    return open_store(target)


async def shared_relay(store: SQLiteEventStore, url: str) -> Relay:
    relay = Relay(
        store.path, NatsOptions(url=url), batch_size=50, ack_timeout=2, shared_stream=True
    )
    relay.attach(store)
    return await relay.start()


async def test_a_handoff_publishes_each_event_once_without_a_gap(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    first = open_store(tmp_path / "a" / "scheduler.db")
    append(first, 60)
    relay_a = await shared_relay(first, nats_server.url)
    relay_b: Relay | None = None
    second: SQLiteEventStore | None = None
    try:
        # Following: publishes nothing, and says so as healthy.
        await asyncio.sleep(0.5)
        assert relay_a.status.published_total == 0
        reading = relay_reading(relay_a.status)
        assert (reading.state, reading.reason.startswith("following")) == ("ok", True)
        assert nats_reading(relay_a.status).state == "ok"
        assert relay_summary(relay_a.status)["role"] == "following"

        await relay_a.lead()  # replica a gains the lease
        assert [e["position"] for e in await received(nats_server.url, 60)] == list(range(1, 61))
        await eventually(lambda: relay_a.checkpoint(), until=lambda p: p == 60)
        await relay_a.follow()  # ... and loses it
        assert relay_a.status.published_total == 60

        # The log goes on (recorded by the next leader); replica b's copy holds all of it,
        # and its relay's checkpoint is where it stood long ago.
        append(first, 40, stream="job_b")
        second = copy_log(first, tmp_path / "b", stale_checkpoint=10)
        relay_b = await shared_relay(second, nats_server.url)
        assert relay_b.checkpoint() == 10
        await relay_b.lead()
        events = await received(nats_server.url, 100)
        await eventually(lambda: relay_b.checkpoint(), until=lambda p: p == 100)

        ids = [e["event_id"] for e in events]
        assert len(ids) == len(set(ids)) == 100
        assert await stream_messages(nats_server.url) == 100  # as stored, not deduplicated
        assert [e["position"] for e in events] == list(range(1, 101))
        # Only what came after the tail it found was sent: nothing twice, even within
        # JetStream's duplicate window (which would have hidden it).
        assert relay_b.status.resumed_at == 60
        assert relay_b.status.published_total == 40
        assert relay_a.status.published_total == 60
        assert relay_summary(relay_b.status)["role"] == "publishing"
        assert relay_reading(relay_b.status).state == "ok"
    finally:
        if relay_b is not None:
            await relay_b.aclose()
        await relay_a.aclose()
        if second is not None:
            second.close()
        first.close()


async def test_a_relay_that_leads_again_resumes_after_the_other_ones_events(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    """Leadership back and forth: a's checkpoint is behind what b published meanwhile."""
    first = open_store(tmp_path / "a" / "scheduler.db")
    append(first, 20)
    second = copy_log(first, tmp_path / "b", stale_checkpoint=0)
    relay_a = await shared_relay(first, nats_server.url)
    relay_b = await shared_relay(second, nats_server.url)
    try:
        await relay_b.lead()
        await received(nats_server.url, 20)
        await eventually(lambda: relay_b.checkpoint(), until=lambda p: p == 20)
        await relay_b.follow()
        assert relay_a.checkpoint() == 0
        await relay_a.lead()
        await eventually(lambda: relay_a.status.resumed_at, until=lambda p: p == 20)
        append(first, 5, stream="job_c")
        events = await received(nats_server.url, 25)
        assert [e["position"] for e in events] == list(range(1, 26))
        assert await stream_messages(nats_server.url) == 25
        await eventually(lambda: relay_a.checkpoint(), until=lambda p: p == 25)
        assert relay_a.status.published_total == 5
    finally:
        await relay_a.aclose()
        await relay_b.aclose()
        second.close()
        first.close()
