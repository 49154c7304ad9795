"""deploy/nats-server.conf, as three real nats-server processes on loopback: LabLink
publishes through the cluster (replicas 3) and keeps publishing when a node is killed; the
read-only subscriber user reads but cannot publish events; cluster mode's record (R3) is the
scheduler user's to append to, and no agent's."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from lablink.bus.consume import read_stream
from lablink.bus.relay import NatsOptions, Relay
from lablink.bus.server import NatsServer
from lablink.bus.subjects import CLUSTER_RUN, REPLICAS_BUCKET, STREAM
from lablink.events import JobPaused, NewEvent
from lablink.eventstore.record_link import (
    RECORD_STREAM,
    JetStreamOptions,
    close,
    connect,
    ensure_stream,
    last_sequence,
    publish,
)
from lablink.eventstore.sqlite import SQLiteEventStore
from lablink.logstore import open_store
from tests.support.eventually import eventually
from tests.support.nats_cluster import PASSWORDS, SCHEDULER, cluster_nodes

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


class Violations:
    """A connection as one user, keeping the permissions violations the server reports."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    async def record(self, exc: Exception) -> None:
        self.errors.append(str(exc).lower())

    async def refused(self, nc: NATS, subject: str) -> None:
        await nc.publish(subject, b"{}")

        async def reported() -> list[str]:
            await nc.flush()
            return self.errors

        await eventually(
            reported,
            until=lambda seen: any(
                "permissions violation" in e and subject.lower() in e for e in seen
            ),
            what=f"a permissions violation on {subject}",
        )


@pytest.mark.slow
async def test_the_record_r3_is_the_schedulers_to_append_and_no_agents(
    cluster: list[NatsServer], tmp_path: Path
) -> None:
    """Cluster mode's record on deploy/nats-server.conf: the scheduler user makes LABLINK_LOG
    with 3 replicas and appends to it (under an expectation, as the store does), but cannot
    delete or purge it; an agent can neither append nor reach its API; the read-only user
    reads it but appends nothing."""
    url = [node.url for node in cluster]
    scheduler = JetStreamOptions(
        servers=tuple(n.url for n in cluster), user=SCHEDULER[0], password=SCHEDULER[1], replicas=3
    )
    nc = await connect(scheduler, name="test", within=10)
    loop = asyncio.get_running_loop()
    info = await ensure_stream(nc, scheduler, deadline=loop.time() + 60)
    assert info["config"]["num_replicas"] == 3
    messages = [("lablink.log.job_a.job.paused", {"Nats-Msg-Id": f"e{n}"}, b"{}") for n in range(3)]
    ack = await publish(nc, messages, {"Nats-Expected-Last-Sequence": "0"}, 10)
    assert (ack.ok, ack.seq) == (True, 3)
    mine = Violations()
    nc2 = await nats.connect(url, user=SCHEDULER[0], password=SCHEDULER[1], error_cb=mine.record)
    for verb in ("DELETE", "PURGE", "MSG.DELETE"):
        await mine.refused(nc2, f"$JS.API.STREAM.{verb}.{RECORD_STREAM}")
    await nc2.close()

    agent = Violations()
    agent_nc = await nats.connect(
        url,
        user="agent-lab-pc-1",
        password=PASSWORDS["NATS_AGENT_LAB_PC_1_PASSWORD"],
        inbox_prefix="_INBOX.agent-lab-pc-1",
        error_cb=agent.record,
    )
    for subject in (
        "lablink.log.job_a.job.paused",
        "lablink.log.~lease.scheduler",
        f"$JS.API.STREAM.INFO.{RECORD_STREAM}",
        f"$JS.API.STREAM.CREATE.{RECORD_STREAM}",
        f"$JS.API.STREAM.MSG.GET.{RECORD_STREAM}",
        f"$KV.{REPLICAS_BUCKET}.replica-1",
    ):
        await agent.refused(agent_nc, subject)
    await agent_nc.close()

    reader = Violations()
    reader_nc = await nats.connect(**subscriber(cluster).connect_kwargs(), error_cb=reader.record)
    await reader.refused(reader_nc, "lablink.log.job_a.job.paused")
    assert await last_sequence(reader_nc, RECORD_STREAM, 10) == 3
    await reader_nc.close()

    assert await last_sequence(nc, RECORD_STREAM, 10) == 3  # nothing got in, nothing went
    await close(nc)


async def test_only_the_scheduler_user_forwards_a_run_now(cluster: list[NatsServer]) -> None:
    """deploy/nats-server.conf lets one replica (the scheduler user) ask another for a run-now
    on lablink.cluster.run and get the answer on its inbox; an agent and the read-only user
    may not send one."""
    url = [node.url for node in cluster]
    holder = await nats.connect(url, user=SCHEDULER[0], password=SCHEDULER[1])
    asker = await nats.connect(url, user=SCHEDULER[0], password=SCHEDULER[1])
    try:

        async def answer(msg: Msg) -> None:
            await msg.respond(b'{"replica": "a", "execution_id": "exec_1"}')

        await holder.subscribe(CLUSTER_RUN, cb=answer)
        await holder.flush()
        reply = await eventually(
            lambda: asker.request(CLUSTER_RUN, b'{"job_id": "job_a"}', timeout=2),
            ignoring=(nats.errors.NoRespondersError, nats.errors.TimeoutError),
        )
        assert b"exec_1" in reply.data

        agent = Violations()
        agent_nc = await nats.connect(
            url,
            user="agent-lab-pc-1",
            password=PASSWORDS["NATS_AGENT_LAB_PC_1_PASSWORD"],
            inbox_prefix="_INBOX.agent-lab-pc-1",
            error_cb=agent.record,
        )
        await agent.refused(agent_nc, CLUSTER_RUN)
        await agent_nc.close()
        reader = Violations()
        reader_nc = await nats.connect(
            **subscriber(cluster).connect_kwargs(), error_cb=reader.record
        )
        await reader.refused(reader_nc, CLUSTER_RUN)
        await reader_nc.close()
    finally:
        await holder.close()
        await asker.close()
