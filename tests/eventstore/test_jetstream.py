"""The JetStream store beyond the shared contract (test_store_contract.py): the record's
subjects, two replicas on one stream, a copy that lags, restarts, and a 3-node cluster that
loses a node. Real nats-servers on loopback."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nats
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lablink.bus.server import NatsServer
from lablink.errors import (
    AppendTooLarge,
    DuplicateId,
    LocalCopyBehind,
    LocalCopyMismatch,
    RecordUnconfirmed,
    StorageError,
    StreamVersionConflict,
)
from lablink.events import JobPaused, JobResumed, NewEvent, RecordedEvent
from lablink.eventstore import EventQuery, LogReader, SQLiteEventStore, connect
from lablink.eventstore.chain import ChainCheck
from lablink.eventstore.jetstream import JetStreamEventStore
from lablink.eventstore.record_format import stream_id_of, stream_subjects, stream_token
from lablink.eventstore.record_link import JetStreamOptions
from tests.support.eventually import eventually_sync
from tests.support.nats_cluster import SCHEDULER
from tests.support.nats_thread import nats_cluster, nats_server

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def new(job_id: str, n: int = 0, *, event_id: str | None = None) -> NewEvent:
    return NewEvent(
        event=JobPaused(job_id=job_id, reason=f"r{n}"),
        actor="tester",
        occurred_at=T0 + timedelta(seconds=n),
        event_id=event_id,
    )


# -- the record's subjects (pure) -----------------------------------------------------------


def test_ordinary_stream_ids_are_their_own_token() -> None:
    for stream_id in ("job_ab12", "scheduler", "exec-1", "JOB_X"):
        assert stream_token(stream_id) == stream_id
    assert stream_subjects("job_ab12") == "lablink.log.job_ab12.>"


def test_tokens_escape_what_a_subject_cannot_hold() -> None:
    assert stream_token("a.b") == "a~2eb"
    assert stream_token("a~2eb") == "a~7e2eb"
    assert stream_token("*") == "~2a"
    assert stream_token("> x") == "~3e~20x"
    assert stream_token("café") == "caf~c3~a9"
    with pytest.raises(ValueError, match="empty"):
        stream_token("")
    for bad in ("a.b", "~2", "~41", "~zz", "", "a b"):
        with pytest.raises(ValueError, match="not a stream token"):
            stream_id_of(bad)


@given(st.text(min_size=1, max_size=40))
def test_tokens_are_one_token_and_injective(stream_id: str) -> None:
    token = stream_token(stream_id)
    assert token
    assert "." not in token
    assert not any(c.isspace() for c in token)
    assert token not in ("*", ">")
    assert stream_id_of(token) == stream_id


# -- one server, several replicas ------------------------------------------------------------


@pytest.fixture
def server(tmp_path: Path) -> Iterator[NatsServer]:
    with nats_server(tmp_path / "nats") as (_, started):
        yield started


class Replicas:
    """JetStream stores on one stream, each with its own copy; all closed after the test."""

    def __init__(self, folder: Path, options: JetStreamOptions) -> None:
        self.folder = folder
        self.options = options
        self.opened: list[JetStreamEventStore] = []

    def open(self, name: str, *, copy_timeout: float = 5.0) -> JetStreamEventStore:
        store = JetStreamEventStore(
            self.folder / f"{name}.db", self.options, copy_timeout=copy_timeout
        )
        self.opened.append(store)
        return store

    def close(self) -> None:
        for store in self.opened:
            store.close()


@pytest.fixture
def replicas(server: NatsServer, tmp_path: Path) -> Iterator[Replicas]:
    opened = Replicas(tmp_path, JetStreamOptions(servers=(server.url,)))
    yield opened
    opened.close()


def stop_copying(store: JetStreamEventStore) -> None:
    """Make ``store`` a replica whose copy lags: its feed stopped (the store has no public
    way to do this; a lagging copy is what a slow or cut-off replica has)."""

    async def stop() -> None:
        task = store._feed_task
        assert task is not None
        task.cancel()
        await asyncio.wait({task})

    store._loop.call(stop())


@pytest.mark.nats
def test_a_stale_expectation_from_another_replica_is_refused_and_stores_nothing(
    replicas: Replicas,
) -> None:
    first = replicas.open("first")
    second = replicas.open("second", copy_timeout=0.5)
    stop_copying(second)
    first.append("job_a", 0, [new("job_a", 1)])

    # The second replica's copy says job_a is new: the record refuses what it expects.
    with pytest.raises(StreamVersionConflict) as caught:
        second.append("job_a", 0, [new("job_a", 2)])
    assert (caught.value.stream_id, caught.value.expected) == ("job_a", 0)
    # Ahead of its copy: it waits for the copy (which lags), then refuses too.
    with pytest.raises(StreamVersionConflict):
        second.append("job_a", 1, [new("job_a", 3)])
    assert first.record_position() == 1
    assert [r.event for r in first.read_stream("job_a")] == [new("job_a", 1).event]


@pytest.mark.nats
def test_an_atomic_append_with_a_stale_expectation_stores_none_of_its_events(
    replicas: Replicas,
) -> None:
    first = replicas.open("first")
    second = replicas.open("second", copy_timeout=0.5)
    stop_copying(second)
    first.append("job_a", 0, [new("job_a", 1)])
    with pytest.raises(StreamVersionConflict):
        second.append("job_a", 0, [new("job_a", n) for n in range(2, 12)])
    assert first.record_position() == 1

    # An id the record holds, which the lagging copy cannot know: the whole batch refused.
    first.append("job_b", 0, [new("job_b", 1, event_id="taken")])
    with pytest.raises(DuplicateId):
        second.append("job_c", 0, [new("job_c", 1), new("job_c", 2, event_id="taken")])
    assert first.record_position() == 2
    # Several events are recorded together, numbered in their stream in order.
    recorded = first.append("job_a", 1, [new("job_a", n) for n in range(2, 6)])
    assert [(r.position, r.version) for r in recorded] == [(3, 2), (4, 3), (5, 4), (6, 5)]


@pytest.mark.nats
def test_an_append_over_the_batch_limit_is_refused_whole(replicas: Replicas) -> None:
    store = replicas.open("first")
    with pytest.raises(AppendTooLarge) as caught:
        store.append("job_a", 0, [new("job_a", n) for n in range(1001)])
    assert (caught.value.stream_id, caught.value.count) == ("job_a", 1001)
    assert store.record_position() == 0
    assert len(store.append("job_a", 0, [new("job_a", n) for n in range(1000)])) == 1000


@pytest.mark.nats
def test_replicas_see_each_others_events_once_in_record_order(replicas: Replicas) -> None:
    first, second = replicas.open("first"), replicas.open("second")
    heard: list[RecordedEvent] = []
    second.subscribe(heard.extend)
    first.append("job_a", 0, [new("job_a", 1), new("job_a", 2)])
    second.append("job_b", 0, [new("job_b", 3)])
    first.append("job_b", 1, [new("job_b", 4)])
    eventually_sync(lambda: second.last_position(), until=lambda n: n == 4)
    eventually_sync(lambda: first.last_position(), until=lambda n: n == 4)
    status = first.copy_status()
    assert (status.copied, status.recorded, status.lag, status.error) == (4, 4, 0, None)
    assert status.consumers >= 1  # more if a loaded machine made a heartbeat late: harmless
    assert first.read_rows(0, 10) == second.read_rows(0, 10)
    assert [(e.position, e.stream_id, e.version) for e in heard] == [
        (1, "job_a", 1),
        (2, "job_a", 2),
        (3, "job_b", 1),
        (4, "job_b", 2),
    ]


@pytest.mark.nats
def test_a_restart_resumes_the_copy_from_its_checkpoint(replicas: Replicas) -> None:
    first, other = replicas.open("first"), replicas.open("other")
    for n in range(5):
        first.append("job_a", n, [new("job_a", n)])
    first.close()
    assert not first._loop.running  # its event loop thread ended with it
    for n in range(5, 10):
        other.append("job_a", n, [new("job_a", n)])

    again = replicas.open("first")  # the same copy file
    assert again.feed.first_start == 6  # from its checkpoint, not from the beginning
    # Caught up when handed out: nothing lost, nothing twice, the chain unbroken.
    assert again.last_position() == 10
    assert [r.version for r in again.read_stream("job_a")] == list(range(1, 11))
    check = ChainCheck()
    reader = LogReader(again.copy.conn)
    assert all(check.feed(row) is None for row in reader.read_chain(0, 100))
    assert check.position == 10
    assert again.read_rows(0, 20) == other.read_rows(0, 20)


@pytest.mark.nats
def test_a_copy_of_another_record_is_refused(tmp_path: Path) -> None:
    with nats_server(tmp_path / "one") as (_, one):
        store = JetStreamEventStore(tmp_path / "copy.db", JetStreamOptions(servers=(one.url,)))
        store.append("job_a", 0, [new("job_a", 1)])
        store.close()
    with nats_server(tmp_path / "two") as (_, two):
        other = JetStreamEventStore(tmp_path / "other.db", JetStreamOptions(servers=(two.url,)))
        other.append("job_b", 0, [new("job_b", 1)])
        with pytest.raises(LocalCopyMismatch):
            JetStreamEventStore(tmp_path / "copy.db", JetStreamOptions(servers=(two.url,)))
        other.close()


@pytest.mark.nats
def test_the_copy_is_a_sqlite_log_that_agrees_with_the_sqlite_store(
    replicas: Replicas, tmp_path: Path
) -> None:
    store = replicas.open("first")
    sqlite_store = SQLiteEventStore(tmp_path / "events.db")
    for target in (store, sqlite_store):
        for n in range(10):
            stream = f"job_{n % 3}"
            event = (
                JobPaused(job_id=stream, reason=f"r{n}")
                if n % 2
                else JobResumed(job_id=stream, resumed_at=T0 + timedelta(seconds=n))
            )
            target.append(
                stream,
                target.stream_version(stream),
                [
                    NewEvent(
                        event=event,
                        actor="key:alice" if n < 5 else "scheduler",
                        occurred_at=T0 + timedelta(seconds=n),
                        correlation_id=f"c{n}" if n % 4 == 0 else None,
                        event_id=f"e-{n}",
                    )
                ],
            )
    assert store.read_rows(0, 100) == sqlite_store.read_rows(0, 100)
    for query in (EventQuery(), EventQuery(stream_id="job_1", types=("job.",))):
        assert store.find(query) == sqlite_store.find(query)
    # Its file reads as any log does, through another connection (the API's, the relay's).
    conn = connect(store.path)
    conn.execute("PRAGMA query_only = ON")
    assert LogReader(conn).read_rows(0, 100) == sqlite_store.read_rows(0, 100)
    assert LogReader(conn).head() == sqlite_store.head()  # the same hash chain
    conn.close()
    sqlite_store.close()
    raw = sqlite3.connect(store.path)
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    raw.close()


# -- a 3-node cluster, R3 ---------------------------------------------------------------------


async def _stream_leader(urls: list[str], stream: str) -> str:
    nc = await nats.connect(servers=urls, user=SCHEDULER[0], password=SCHEDULER[1])
    try:
        info = await nc.jetstream().stream_info(stream)
        assert info.cluster is not None
        assert info.cluster.leader is not None
        assert info.config.num_replicas == 3
        return info.cluster.leader
    finally:
        await nc.close()


@pytest.mark.nats
@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize("killed", ["stream leader", "the store's node"])
def test_appends_go_on_after_a_node_is_killed(tmp_path: Path, killed: str) -> None:
    with nats_cluster(tmp_path) as (thread, nodes):
        urls = [node.url for node in nodes]
        options = JetStreamOptions(
            servers=tuple(urls), user=SCHEDULER[0], password=SCHEDULER[1], replicas=3
        )
        store = JetStreamEventStore(tmp_path / "copy.db", options, open_timeout=60.0)
        other = JetStreamEventStore(tmp_path / "other.db", options, open_timeout=60.0)
        acknowledged: list[str] = []
        try:
            for n in range(20):
                acknowledged += [r.event_id for r in store.append("job_a", n, [new("job_a", n)])]
            leader = thread.call(_stream_leader(urls, options.stream))
            if killed == "stream leader":
                victim = nodes[int(leader.removeprefix("nats-")) - 1]
            else:
                connected = store._nc.connected_url
                assert connected is not None
                victim = next(node for node in nodes if node.port == connected.port)
            thread.kill(victim)

            def append_once() -> list[RecordedEvent]:
                version = store.stream_version("job_a")
                return store.append("job_a", version, [new("job_a", version)])

            # An election takes 4-10 s; meanwhile an append fails, named, or is unconfirmed.
            for _ in range(20):
                recorded = eventually_sync(
                    append_once, timeout=90, ignoring=(StorageError, StreamVersionConflict)
                )
                acknowledged += [r.event_id for r in recorded]
            survivors = [node.url for node in nodes if node is not victim]
            victim_name = f"nats-{nodes.index(victim) + 1}"
            assert thread.call(_stream_leader(survivors, options.stream)) != victim_name
            events = store.read_stream("job_a")
            # Every acknowledged append is there, once, in a gapless stream.
            assert set(acknowledged) <= {e.event_id for e in events}
            assert [e.version for e in events] == list(range(1, len(events) + 1))
            assert store.last_position() == store.record_position()
            # The other replica's copy is the same, whichever node it was on.
            eventually_sync(lambda: other.last_position(), until=lambda n: n == len(events))
            assert other.read_rows(0, 1000) == store.read_rows(0, 1000)
        finally:
            other.close()
            store.close()


@pytest.mark.nats
def test_a_message_that_is_no_event_stops_the_copy_there_named(
    replicas: Replicas, server: NatsServer
) -> None:
    store = replicas.open("first", copy_timeout=0.5)
    store.append("job_a", 0, [new("job_a", 1)])

    async def publish_garbage() -> None:
        nc = await nats.connect(server.url)
        await nc.jetstream().publish("lablink.log.job_a", b"{}")  # no type token, no envelope
        await nc.close()

    asyncio.run(publish_garbage())
    with pytest.raises(LocalCopyBehind, match="copying stopped") as caught:
        store.append("job_b", 0, [new("job_b", 2)])
    # Recorded (the record takes it), not copied: the copy never skips what it cannot read.
    assert caught.value.position == 3
    assert store.last_position() == 1
    status = store.copy_status()
    assert (status.copied, status.recorded, status.lag) == (1, 3, 2)
    assert status.error is not None
    assert "not a LabLink event" in status.error


@pytest.mark.nats
def test_an_ack_that_never_comes_is_unconfirmed_and_may_land(
    server: NatsServer, tmp_path: Path
) -> None:
    store = JetStreamEventStore(
        tmp_path / "copy.db", JetStreamOptions(servers=(server.url,)), ack_timeout=0.5
    )
    assert server.pid is not None
    try:
        os.kill(server.pid, signal.SIGSTOP)
        try:
            with pytest.raises(RecordUnconfirmed) as caught:
                store.append("job_a", 0, [new("job_a", 1, event_id="maybe")])
        finally:
            os.kill(server.pid, signal.SIGCONT)
        assert caught.value.event_ids == ("maybe",)
        # The server took it once it ran again: "unconfirmed" means "may be recorded".
        eventually_sync(lambda: store.read_stream("job_a"), until=lambda events: len(events) == 1)
        with pytest.raises(DuplicateId):  # a retry with the same id is refused, not doubled
            store.append("job_a", 0, [new("job_a", 1, event_id="maybe")])
    finally:
        store.close()
