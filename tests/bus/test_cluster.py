"""deploy/nats-server.conf, as three real nats-server processes on loopback: LabLink
publishes through the cluster (replicas 3) and keeps publishing when a node is killed; the
read-only subscriber user reads but cannot publish events."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nats
import pytest

from lablink.bus.consume import read_stream
from lablink.bus.relay import NatsOptions, Relay
from lablink.bus.server import NatsServer
from lablink.bus.subjects import STREAM
from lablink.events import JobPaused, NewEvent
from lablink.eventstore.sqlite import SQLiteEventStore
from lablink.logstore import open_store
from tests.support.eventually import eventually
from tests.support.nats_cluster import cluster_nodes

pytestmark = pytest.mark.nats

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[list[NatsServer]]:
    nodes = cluster_nodes(tmp_path)
    await asyncio.gather(*(node.start() for node in nodes))
    yield nodes
    await asyncio.gather(*(node.stop() for node in nodes))


def append(store: SQLiteEventStore, count: int) -> None:
    for _ in range(count):
        version = store.stream_version("job_a")
        store.append(
            "job_a",
            version,
            [
                NewEvent(
                    event=JobPaused(job_id="job_a", reason=f"n{version}"),
                    actor="test",
                    occurred_at=T0 + timedelta(seconds=version),
                )
            ],
        )


def subscriber(nodes: list[NatsServer]) -> NatsOptions:
    """The read-only user (whose replies come to its own inbox, ``_INBOX.subscriber``)."""
    url = ",".join(node.url for node in nodes)
    return NatsOptions(url=url, user="subscriber", password="subscriber-secret")


@pytest.mark.slow
async def test_publishes_through_the_cluster_and_survives_a_killed_node(
    cluster: list[NatsServer], tmp_path: Path
) -> None:
    store = open_store(tmp_path / "scheduler.db")
    options = NatsOptions(
        url=",".join(node.url for node in cluster),
        user="scheduler",
        password="scheduler-secret",
        replicas=3,
    )
    relay = Relay(store.path, options, batch_size=100, ack_timeout=5)
    relay.attach(store)
    await relay.start()
    append(store, 50)
    seen = await read_stream(subscriber(cluster), expected=50, wait=60)
    assert [e["position"] for e in seen] == list(range(1, 51))

    await cluster[0].kill()
    append(store, 50)
    survivors = cluster[1:]
    seen = await read_stream(subscriber(survivors), expected=100, wait=60)
    assert [e["position"] for e in seen] == list(range(1, 101))

    nc = await nats.connect(**subscriber(survivors).connect_kwargs())
    info = await nc.jetstream().stream_info(STREAM)
    assert info.config.num_replicas == 3
    await nc.close()
    await relay.aclose()
    store.close()


async def test_subscriber_user_cannot_publish_events(cluster: list[NatsServer]) -> None:
    errors: list[Exception] = []

    async def record(exc: Exception) -> None:
        errors.append(exc)

    nc = await nats.connect(**subscriber(cluster).connect_kwargs(), error_cb=record)
    await nc.publish("lablink.events.job.created.job_x._", b"{}")
    await nc.flush()
    # The server answers a permissions violation asynchronously.

    async def reported() -> list[Exception]:
        await nc.flush()
        return errors

    await eventually(reported, what="an error reported")
    await nc.close()
    assert any("permissions violation" in str(e).lower() for e in errors)
