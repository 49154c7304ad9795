"""The relay's pipeline against a real nats-server on loopback: envelopes built from the stored
row are today's bytes, a rejected publish in the middle of the window resumes from
the last fully acked batch, and stopping with acks in flight neither leaks them nor swallows
the caller's cancellation."""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import os
import signal
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.js.api import DiscardPolicy, StorageType, StreamConfig

from lablink.bus.consume import read_stream
from lablink.bus.relay import NatsOptions, Relay, envelope, row_envelope
from lablink.bus.server import NatsServer
from lablink.bus.subjects import EVENTS_ALL, STREAM, event_subject
from lablink.events import (
    AnyEvent,
    ExecutionsPruned,
    JobCreated,
    JobPaused,
    JobUpdated,
    NewEvent,
    decode_event,
)
from lablink.eventstore.sqlite import LogReader, SQLiteEventStore
from lablink.logstore import open_store
from tests.support.eventually import eventually

T0 = datetime(2026, 3, 2, 9, 0, 0, 123456, tzinfo=UTC)


def codec_samples() -> list[AnyEvent]:
    """One event of every kind: the codec tests keep that list complete."""
    path = Path(__file__).parents[1] / "events" / "test_codec.py"
    spec = importlib.util.spec_from_file_location("lablink_codec_samples", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    samples: list[AnyEvent] = module.SAMPLES
    return samples


def append(store: SQLiteEventStore, count: int, stream: str = "job_a") -> None:
    for _ in range(count):
        version = store.stream_version(stream)
        event = JobPaused(job_id=stream, reason=f"n{version}")
        store.append(stream, version, [NewEvent(event=event, actor="test", occurred_at=T0)])


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[NatsServer]:
    started = await NatsServer(tmp_path / "nats").start()
    yield started
    await started.stop()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteEventStore]:
    opened = open_store(tmp_path / "scheduler.db")
    yield opened
    opened.close()


def routed(event: AnyEvent, jobs: dict[str, str]) -> str | None:
    """The equipment a subject names, as the relay has always found it."""
    if isinstance(event, JobCreated | JobUpdated):
        jobs[event.job_id] = event.spec.equipment_id
        return event.spec.equipment_id
    equipment = getattr(event, "equipment_id", None)
    if equipment is not None:
        return str(equipment)
    job_id = getattr(event, "job_id", None)
    return None if job_id is None else jobs.get(job_id) or None


async def test_envelope_from_the_row_is_byte_for_byte_todays_for_every_kind(
    store: SQLiteEventStore,
) -> None:
    # Every kind, plus a float field given an int: stored as ``30``, published as ``30.0``
    # (the decoded value), as the relay always did; splicing the stored JSON would not be.
    samples = [*codec_samples(), ExecutionsPruned(cutoff=T0, days=30)]
    for n, event in enumerate(samples):
        stream = getattr(event, "job_id", None) or f"stream_{n}"
        occurred = T0 + timedelta(seconds=n) if n % 2 else T0.replace(microsecond=0)
        new = NewEvent(event=event, actor="alice", occurred_at=occurred, correlation_id=f"c{n}")
        store.append(stream, store.stream_version(stream), [new])
    rows = store.read_rows(0, 1000)  # what the relay reads
    decoded = LogReader(store.conn).read_events(0, 1000)
    assert len(rows) == len(decoded) == len(samples)
    relay = Relay(store.path, NatsOptions(url="nats://127.0.0.1:1"))
    jobs: dict[str, str] = {}
    try:
        for row, recorded in zip(rows, decoded, strict=True):
            event = decode_event(row[8])
            assert row_envelope(row, event) == envelope(recorded), recorded.type
            old = event_subject(recorded.type, recorded.stream_id, routed(recorded.event, jobs))
            assert relay._subject(row, event) == old
            assert relay._subject(row, event) == old  # cached
    finally:
        await relay.aclose()
    assert b'"days":30.0' in envelope(decoded[-1])


@pytest.mark.nats
async def test_a_rejected_publish_resumes_from_the_last_acked_batch_in_order(
    server: NatsServer, store: SQLiteEventStore
) -> None:
    # The stream takes 150 messages, then rejects each publish: with batches of 20 and 4 in
    # flight, the relay is told "no" in the middle of its window, again and again.
    nc = await nats.connect(server.url)
    js = nc.jetstream()
    config = StreamConfig(
        name=STREAM,
        subjects=[EVENTS_ALL],
        storage=StorageType.FILE,
        duplicate_window=600.0,
        max_msgs=150,
        discard=DiscardPolicy.NEW,
    )
    await js.add_stream(config)
    append(store, 400)
    relay = Relay(store.path, NatsOptions(url=server.url), batch_size=20, window=4)
    relay.attach(store)
    await relay.start()
    try:
        await eventually(lambda: relay.status.last_error and relay.checkpoint() == 140)
        # Only whole, fully acked batches count; the 10 stored of the 8th batch do not.
        assert relay.checkpoint() == 140
        assert relay.status.last_error is not None
        config.max_msgs = -1
        await js.update_stream(config)
        events = await read_stream(server.url, expected=400, wait=60)
        assert [e["position"] for e in events] == list(range(1, 401))
        assert (await js.stream_info(STREAM)).state.messages == 400  # the resent 10 dropped
    finally:
        await relay.aclose()
        await nc.close()
    assert relay.checkpoint() == 400


@pytest.mark.nats
@pytest.mark.parametrize("caller_cancelled", [False, True], ids=["stopped", "caller-cancelled"])
async def test_stopped_with_acks_in_flight(
    server: NatsServer, store: SQLiteEventStore, caller_cancelled: bool
) -> None:
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, context: reported.append(context))
    relay = Relay(store.path, NatsOptions(url=server.url), batch_size=10, ack_timeout=60)
    relay.attach(store)
    await relay.start()
    append(store, 5)
    await read_stream(server.url, expected=5, wait=60)
    assert server.pid is not None
    os.kill(server.pid, signal.SIGSTOP)  # the server takes the messages but never acks
    try:
        append(store, 30)
        status = relay.status
        await eventually(lambda: status.log_position, until=lambda position: position == 35)
        await asyncio.sleep(0.1)  # batches published, their acks pending
        if caller_cancelled:  # while aclose() waits for the drain
            closing = asyncio.create_task(relay.aclose(drain_seconds=60))
            await asyncio.sleep(0.1)
            closing.cancel()
            with pytest.raises(asyncio.CancelledError):
                await closing
            del closing
        else:
            await relay.aclose(drain_seconds=0)
    finally:
        os.kill(server.pid, signal.SIGCONT)
    assert relay.checkpoint() == 5
    assert relay.stopped  # its session ended, even when its caller was cancelled
    # A leaked ack future (or gather) only reports when it is collected.
    del relay
    gc.collect()
    await asyncio.sleep(0)
    assert [c.get("message") for c in reported] == []
