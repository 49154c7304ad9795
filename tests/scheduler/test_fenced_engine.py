"""The engine's appends carry the lease's fence (issue 18): an engine whose replica was paused
past its lease (its monotonic clock did not move, so its keeper still believes it holds the
lease) fires after another replica took over, and the record refuses every one of its
appends: nothing of the fire is stored. A real nats-server, a real engine."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from lablink.bus.server import NatsServer
from lablink.clock import ManualClock
from lablink.errors import RecordingFailed
from lablink.eventstore.base import ShowsLater
from lablink.eventstore.jetstream import JetStreamEventStore
from lablink.eventstore.lease_keeper import LeaseKeeper
from lablink.eventstore.record_link import JetStreamOptions
from lablink.repository import JobRepository
from lablink.scheduler.engine import Engine
from lablink.scheduler.executor import NoOpExecutor
from tests.scheduler.test_engine_finishes import FIRE, START, created
from tests.support.eventually import eventually

pytestmark = pytest.mark.nats

TTL = 1.0
JOB = "job_0001"


class Frozen:
    """A monotonic clock that does not move: the holder's process is stopped."""

    def __call__(self) -> float:
        return 1000.0


@pytest.fixture
async def record(tmp_path: Path, nats_server: NatsServer) -> AsyncIterator[JetStreamEventStore]:
    store = await asyncio.to_thread(
        JetStreamEventStore, tmp_path / "copy.db", JetStreamOptions(servers=(nats_server.url,))
    )
    try:
        yield store
    finally:
        await asyncio.to_thread(store.close)


def started(store: JetStreamEventStore) -> int:
    return sum(1 for r in store.read_stream(JOB) if r.type == "execution.pending")


async def test_a_paused_leaders_engine_cannot_record_a_fire_after_a_takeover(
    record: JetStreamEventStore,
) -> None:
    await asyncio.to_thread(record.append_batch, [created(JOB, interval=60)])
    holder = LeaseKeeper(record.lease_link("old", TTL), replica="old", ttl=TTL, monotonic=Frozen())
    await holder.step()
    assert holder.holding
    fenced = record.fenced(holder.fence)
    clock = ManualClock(START)
    engine = Engine(fenced, clock, NoOpExecutor(), jobs=JobRepository(fenced))
    try:
        await engine.open([(JOB, None)], [])
        clock.set(FIRE)
        assert await engine.tick() == 1  # while the lease is its own: recorded
        await asyncio.gather(*engine.tasks().values())
        assert started(record) == 1

        # Paused past its TTL: the lease expires on the server, another replica takes it.
        other = record.lease_link("new", TTL)
        await eventually(other.read, until=lambda live: live is None)
        assert await other.claim(None) is not None
        assert holder.fence() is not None  # its frozen clock: it still believes it holds

        before = await asyncio.to_thread(record.record_position)
        clock.set(FIRE + timedelta(seconds=60))  # resumed: the next fire is due
        with pytest.raises(RecordingFailed):
            await engine.tick()
        assert await asyncio.to_thread(record.record_position) == before
        assert started(record) == 1
    finally:
        await engine.aclose(grace_seconds=0.0)


async def test_a_clients_run_now_waits_until_this_replica_shows_it(
    record: JetStreamEventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run-now batched with fires is answered from the record's acknowledgement, before
    the replica's copy holds it: the engine waits for the copy (``ShowsLater``) before the
    client is answered, so the client's next read finds the run."""
    await asyncio.to_thread(record.append_batch, [created(JOB, interval=60)])
    holder = LeaseKeeper(record.lease_link("one", 5.0), replica="one", ttl=5.0)
    await holder.step()
    fenced = record.fenced(holder.fence)
    assert isinstance(fenced, ShowsLater)
    waits: list[int] = []
    wait_visible = fenced.wait_visible

    def counted() -> None:
        waits.append(record._answered)
        wait_visible()

    monkeypatch.setattr(fenced, "wait_visible", counted)
    clock = ManualClock(START)
    engine = Engine(fenced, clock, NoOpExecutor(), jobs=JobRepository(fenced))
    try:
        await engine.open([(JOB, None)], [])
        execution_id = await engine.run_now(JOB)
        assert len(waits) == 1
        assert execution_id in {
            getattr(r.event, "execution_id", None) for r in record.read_stream(JOB)
        }
    finally:
        await engine.aclose(grace_seconds=0.0)
