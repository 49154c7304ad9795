"""Expectations in process on a 3-node cluster (issue 18; found by the cluster fault tests).

In a cluster, JetStream refuses a publish that carries an expectation on a subject while
another publish carrying one on the same subject is proposed and not yet applied: "wrong last
sequence", err_code 10164, nothing written (a stale expectation on one message answers
10071 and names the sequence). Every fenced append expects on the lease subject, so a
leader's concurrent appends (its fires, each job's on its own) and its lease renewals
contend there; and two replicas writing one aggregate at once contend on its subjects. Such a
refusal is not a conflict: the store and the lease send again. Real nats-servers on loopback.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from lablink.errors import StreamVersionConflict
from lablink.events import JobPaused, NewEvent
from lablink.eventstore.base import AppendRequest
from lablink.eventstore.jetstream import JetStreamEventStore
from lablink.eventstore.lease import Fence, LeaseRecord
from lablink.eventstore.lease_keeper import LeaseKeeper
from lablink.eventstore.loop_thread import LoopThread
from lablink.eventstore.record_link import JetStreamOptions
from tests.support.eventually import eventually_sync
from tests.support.nats_cluster import SCHEDULER
from tests.support.nats_thread import nats_cluster

T0 = datetime(2026, 1, 1, tzinfo=UTC)
TTL = 3.0
JOBS = 40


def new(job_id: str, n: int = 0) -> NewEvent:
    return NewEvent(
        event=JobPaused(job_id=job_id, reason=f"r{n}"),
        actor="tester",
        occurred_at=T0 + timedelta(seconds=n),
    )


@pytest.fixture
def options(tmp_path: Path) -> Iterator[JetStreamOptions]:
    with nats_cluster(tmp_path / "nats") as (_, nodes):
        yield JetStreamOptions(
            servers=tuple(node.url for node in nodes),
            user=SCHEDULER[0],
            password=SCHEDULER[1],
            replicas=3,
        )


@pytest.fixture
def loop() -> Iterator[LoopThread]:
    thread = LoopThread("keepers")
    yield thread
    thread.stop()


def open_store(path: Path, options: JetStreamOptions) -> JetStreamEventStore:
    return JetStreamEventStore(path, options, open_timeout=60.0)


@pytest.mark.nats
@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize("events", [1, 2], ids=["one event", "a batch"])
def test_a_leaders_concurrent_fenced_appends_are_all_recorded(
    tmp_path: Path, options: JetStreamOptions, loop: LoopThread, events: int
) -> None:
    store = open_store(tmp_path / "copy.db", options)
    try:
        holder = LeaseKeeper(store.lease_link("a", TTL), replica="a", ttl=TTL)
        loop.call(holder.step())
        assert holder.fence() is not None
        fenced = store.fenced(holder.fence)
        prefix = f"job_{events}_"
        # One request per job, sent at once (as the engine's group commit does).
        requests = [
            AppendRequest(
                stream_id=f"{prefix}{n}",
                expected_version=0,
                events=[new(f"{prefix}{n}", k) for k in range(events)],
            )
            for n in range(JOBS)
        ]
        outcomes = fenced.append_batch(requests)
        conflicts = [o for o in outcomes if isinstance(o, StreamVersionConflict)]
        assert not conflicts, f"{len(conflicts)} of {JOBS} refused: {conflicts[:3]}"
        # Answered from the acknowledgement (the copy may not hold them yet) ...
        for outcome in outcomes:
            assert isinstance(outcome, list)
            assert [event.version for event in outcome] == list(range(1, events + 1))
        # ... and the copy comes to hold every one.
        eventually_sync(
            lambda: [store.stream_version(f"{prefix}{n}") for n in range(JOBS)],
            until=lambda versions: versions == [events] * JOBS,
            timeout=60,
        )
    finally:
        store.close()


class Held:
    """The lease as its holder knows it: what its fenced appends expect."""

    def __init__(self, record: LeaseRecord) -> None:
        self.record = record

    def fence(self) -> Fence:
        return Fence(replica=self.record.replica, epoch=self.record.epoch, seq=self.record.seq)


@pytest.mark.nats
@pytest.mark.slow
@pytest.mark.timeout(180)
def test_renewals_beside_fenced_appends_are_not_refused(
    tmp_path: Path, options: JetStreamOptions, loop: LoopThread
) -> None:
    store = open_store(tmp_path / "copy.db", options)
    try:
        link = store.lease_link("r", TTL)
        first = loop.call(link.claim(None))
        assert first is not None
        held = Held(first)
        requests = [
            AppendRequest(stream_id=f"renewed_{n}", expected_version=0, events=[new("x", n)])
            for n in range(JOBS)
        ]
        failed: list[BaseException] = []

        def append() -> None:
            try:
                outcomes = store.fenced(held.fence).append_batch(requests)
                failed.extend(o for o in outcomes if isinstance(o, StreamVersionConflict))
            except Exception as exc:
                failed.append(exc)

        appending = threading.Thread(target=append)
        appending.start()
        try:
            # Renewals as the keeper makes them, only more often (every TTL/3 there).
            while appending.is_alive():
                renewed = loop.call(link.claim(held.record))
                assert renewed is not None, "a renewal was refused while the lease was held"
                held.record = renewed
                time.sleep(0.1)
        finally:
            appending.join(60)
        assert not failed
        assert all(store.stream_version(f"renewed_{n}") == 1 for n in range(JOBS))
    finally:
        store.close()


@pytest.mark.nats
@pytest.mark.slow
@pytest.mark.timeout(180)
def test_two_replicas_creating_one_stream_at_once_conflict_with_what_was_recorded(
    tmp_path: Path, options: JetStreamOptions
) -> None:
    first = open_store(tmp_path / "first.db", options)
    second = open_store(tmp_path / "second.db", options)
    try:
        for n in range(20):
            stream = f"profile_{n}"
            outcomes: dict[str, object] = {}

            def create(
                name: str,
                store: JetStreamEventStore,
                stream: str = stream,
                outcomes: dict[str, object] = outcomes,
            ) -> None:
                try:
                    outcomes[name] = store.append(stream, 0, [new(stream, 1)])
                except StreamVersionConflict as exc:
                    outcomes[name] = exc

            threads = [
                threading.Thread(target=create, args=("first", first)),
                threading.Thread(target=create, args=("second", second)),
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
            conflicts = [o for o in outcomes.values() if isinstance(o, StreamVersionConflict)]
            # One is recorded; the other's conflict names the version the record holds.
            assert len(conflicts) == 1, outcomes
            assert conflicts[0].actual == 1, f"{stream}: {conflicts[0]}"
    finally:
        second.close()
        first.close()
