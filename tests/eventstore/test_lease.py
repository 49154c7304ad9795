"""The scheduler's lease in the record's stream (issue 18): acquire, renew, expiry, takeover by
one compare-and-set, self-demotion by the monotonic clock, the fence on appends, and the copy
passing lease messages over. A real nats-server on loopback."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from lablink.bus.server import NatsServer
from lablink.errors import LeaseLost, StreamVersionConflict
from lablink.events import JobPaused, NewEvent
from lablink.eventstore.base import AppendRequest
from lablink.eventstore.jetstream import JetStreamEventStore
from lablink.eventstore.lease import Fence, LeaseRecord, body_of
from lablink.eventstore.lease_keeper import OUTLIVED_TTLS, LeaseKeeper
from lablink.eventstore.loop_thread import LoopThread
from lablink.eventstore.record_format import LEASE_SUBJECT
from lablink.eventstore.record_link import EXPECTED_SEQUENCE, JetStreamOptions, ack_of
from tests.support.eventually import eventually_sync
from tests.support.nats_thread import nats_server

T0 = datetime(2026, 1, 1, tzinfo=UTC)
TTL = 1.0  # JetStream's smallest


def new(job_id: str, n: int = 0) -> NewEvent:
    return NewEvent(
        event=JobPaused(job_id=job_id, reason=f"r{n}"),
        actor="tester",
        occurred_at=T0 + timedelta(seconds=n),
    )


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def server(tmp_path: Path) -> Iterator[NatsServer]:
    with nats_server(tmp_path / "nats") as (_, started):
        yield started


@pytest.fixture
def loop() -> Iterator[LoopThread]:
    """The keepers' own loop (the runtime's, in a replica), not the store's."""
    thread = LoopThread("keepers")
    yield thread
    thread.stop()


class Stores:
    def __init__(self, folder: Path, options: JetStreamOptions) -> None:
        self.folder, self.options = folder, options
        self.opened: list[JetStreamEventStore] = []

    def open(self, name: str) -> JetStreamEventStore:
        store = JetStreamEventStore(self.folder / f"{name}.db", self.options)
        self.opened.append(store)
        return store


@pytest.fixture
def stores(server: NatsServer, tmp_path: Path) -> Iterator[Stores]:
    opened = Stores(tmp_path, JetStreamOptions(servers=(server.url,)))
    yield opened
    for store in opened.opened:
        store.close()


def keeper(
    store: JetStreamEventStore, replica: str, clock: FakeMonotonic | None = None
) -> LeaseKeeper:
    return LeaseKeeper(
        store.lease_link(replica, TTL),
        replica=replica,
        ttl=TTL,
        monotonic=clock or time.monotonic,
        poll=0.1,
    )


# -- the lease's compare-and-set --------------------------------------------------------------


@pytest.mark.nats
def test_acquire_renew_and_a_stale_renewal_is_refused(stores: Stores, loop: LoopThread) -> None:
    store = stores.open("a")
    a, b = store.lease_link("a", TTL), store.lease_link("b", TTL)
    got = loop.call(a.claim(None))
    assert got is not None
    assert got.replica == "a"
    assert got.epoch == got.seq
    assert loop.call(b.claim(None)) is None  # held: the second acquire is refused
    renewed = loop.call(a.claim(got))
    assert renewed is not None
    assert (renewed.epoch, renewed.seq > got.seq) == (got.epoch, True)
    assert loop.call(a.claim(got)) is None  # a renewal from the superseded message
    live = loop.call(b.read())
    assert live == LeaseRecord("a", got.epoch, TTL, live.at if live else "", renewed.seq)


@pytest.mark.nats
def test_an_expired_lease_is_taken_over_by_one_compare_and_set_with_a_higher_epoch(
    stores: Stores, loop: LoopThread
) -> None:
    store = stores.open("a")
    a, b = store.lease_link("a", TTL), store.lease_link("b", TTL)
    first = loop.call(a.claim(None))
    assert first is not None
    eventually_sync(lambda: loop.call(b.read()), until=lambda live: live is None)
    taken = loop.call(b.claim(None))  # no read before it: the subject is at 0 again
    assert taken is not None
    assert taken.replica == "b"
    assert taken.epoch > first.epoch
    assert loop.call(a.claim(first)) is None  # the former holder cannot renew


@pytest.mark.nats
def test_a_lease_message_that_outlives_its_ttl_is_taken_over_and_fences_its_holder(
    stores: Stores, loop: LoopThread
) -> None:
    """A lease message the server never expires (as a per-message TTL left unexpired would
    be: published here without one) is taken over by a follower once it has seen it
    unchanged for OUTLIVED_TTLS of its TTL, with a higher epoch; its holder's fence is
    refused from then on."""
    store = stores.open("a")
    body = body_of("a", 0, TTL, datetime.now(UTC))
    reply = loop.call(
        store.on_store_loop(
            store.connection.request(LEASE_SUBJECT, body, headers={EXPECTED_SEQUENCE: "0"})
        )
    )
    stuck = loop.call(store.lease_link("a", TTL).read())
    assert stuck is not None
    assert stuck.seq == ack_of(reply.data).seq
    clock = FakeMonotonic()
    b = keeper(store, "b", clock)
    assert loop.call(b.step()) == b.poll
    assert b.held is None
    clock.now += OUTLIVED_TTLS * TTL - 0.1
    loop.call(b.step())
    assert b.held is None  # not yet: it may still be renewed
    clock.now += 0.2
    loop.call(b.step())
    assert b.held is not None
    assert b.taken_over == 1
    assert b.held.replica == "b"
    assert b.held.epoch > stuck.epoch
    old = Fence(replica="a", epoch=stuck.epoch, seq=stuck.seq)
    with pytest.raises(LeaseLost):
        store.fenced(lambda: old).append("fenced_out", 0, [new("fenced_out", 1)])
    assert store.stream_version("fenced_out") == 0


@pytest.mark.nats
def test_a_renewed_lease_is_never_taken_over_however_long_it_is_held(
    stores: Stores, loop: LoopThread
) -> None:
    store = stores.open("a")
    clock = FakeMonotonic()
    a, b = keeper(store, "a", clock), keeper(store, "b", clock)
    loop.call(a.step())
    assert a.held is not None
    for _ in range(12):  # 4 TTLs, renewed at every third of one
        clock.now += TTL / 3
        loop.call(a.step())
        loop.call(b.step())
        assert a.held is not None
        assert b.held is None
    assert b.taken_over == 0


# -- the keeper ---------------------------------------------------------------------------------


@pytest.mark.nats
def test_the_keeper_renews_at_a_third_and_demotes_itself_before_the_ttl(
    stores: Stores, loop: LoopThread
) -> None:
    clock = FakeMonotonic()
    store = stores.open("a")
    lost: list[str] = []
    holder = keeper(store, "a", clock)

    async def on_lose(why: str) -> None:
        lost.append(why)

    holder.on_lose = on_lose
    loop.call(holder.step())
    assert holder.holding
    assert holder.gained == 1
    first = holder.fence()
    assert first is not None

    clock.now += TTL / 3  # due: one renewal, same epoch, a new fence
    loop.call(holder.step())
    renewed = holder.fence()
    assert renewed is not None
    assert renewed.epoch == first.epoch
    assert renewed.seq > first.seq

    clock.now += TTL * 0.59  # still fresh (0.59 < 0.6 since the renewal)
    assert holder.fence() is not None
    clock.now += TTL * 0.02  # older than 0.6 × TTL: no fence any more, and it steps down
    assert holder.fence() is None
    loop.call(holder.step())
    assert lost
    assert "no renewal" in lost[0]
    assert holder.held is None
    assert holder.status()["role"] == "follower"


@pytest.mark.nats
def test_a_refused_renewal_demotes_at_once(stores: Stores, loop: LoopThread) -> None:
    clock = FakeMonotonic()
    store = stores.open("a")
    holder = keeper(store, "a", clock)
    loop.call(holder.step())
    held = holder.held
    assert held is not None
    # Someone else's write on the lease subject (a takeover after an expiry the holder
    # slept through): the holder's next renewal expects a sequence that is gone.
    eventually_sync(lambda: loop.call(store.lease_link("x", TTL).read()), until=lambda r: r is None)
    assert loop.call(store.lease_link("b", TTL).claim(None)) is not None
    clock.now += TTL / 3
    loop.call(holder.step())
    assert holder.held is None
    assert holder.lost == 1


class _Unreachable:
    """A link whose renewals never answer (the holder cut off from the servers)."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.cut = False

    async def read(self) -> LeaseRecord | None:
        return await self.inner.read()  # type: ignore[attr-defined,no-any-return]

    async def claim(self, after: LeaseRecord | None) -> LeaseRecord | None:
        if self.cut:
            await asyncio.sleep(3600)
        return await self.inner.claim(after)  # type: ignore[attr-defined,no-any-return]

    async def take_over(self, stale: LeaseRecord) -> LeaseRecord | None:
        if self.cut:
            await asyncio.sleep(3600)
        return await self.inner.take_over(stale)  # type: ignore[attr-defined,no-any-return]


@pytest.mark.nats
def test_on_the_real_clock_a_cut_off_holder_stops_before_another_takes_over(
    stores: Stores, loop: LoopThread
) -> None:
    store = stores.open("a")
    events: list[tuple[str, float]] = []
    link = _Unreachable(store.lease_link("a", TTL))
    a = LeaseKeeper(link, replica="a", ttl=TTL, poll=0.1)
    b = keeper(store, "b")

    async def a_lost(why: str) -> None:
        events.append(("a lost", time.monotonic()))

    async def b_gained(record: LeaseRecord) -> None:
        events.append(("b gained", time.monotonic()))

    a.on_lose, b.on_gain = a_lost, b_gained
    task_a = loop.submit(a.run())
    eventually_sync(lambda: a.holding)
    task_b = loop.submit(b.run())
    link.cut = True
    eventually_sync(lambda: [name for name, _ in events], until=lambda n: "b gained" in n)
    task_a.cancel()
    task_b.cancel()
    assert [name for name, _ in events] == ["a lost", "b gained"]


@pytest.mark.nats
def test_a_failed_start_of_leading_steps_down_and_the_keeper_goes_on(
    stores: Stores, loop: LoopThread
) -> None:
    """A start of the engine that raises (seen under load in the SIGKILL test: the keeper
    ended, and that replica never led again) demotes, and the keeper claims again later."""
    store = stores.open("a")
    a = keeper(store, "a")
    gained: list[int] = []
    lost: list[str] = []

    async def on_gain(record: LeaseRecord) -> None:
        gained.append(record.epoch)
        if len(gained) == 1:
            raise RuntimeError("the copy could not catch up")

    async def on_lose(why: str) -> None:
        lost.append(why)
        raise RuntimeError("closing failed too")

    a.on_gain, a.on_lose = on_gain, on_lose
    task = loop.submit(a.run())
    eventually_sync(lambda: len(gained), until=lambda n: n >= 2, timeout=60)
    eventually_sync(lambda: a.holding)
    assert not task.done()
    assert "could not start leading" in lost[0]
    assert gained[1] > gained[0]
    task.cancel()


@pytest.mark.nats
def test_a_start_of_leading_longer_than_the_ttl_keeps_its_lease(
    stores: Stores, loop: LoopThread
) -> None:
    """The engine's start (catch-up, recovery of 1,000 jobs) may take longer than 0.6 × TTL:
    the keeper renews meanwhile, instead of stepping down from the lease it starts on."""
    store = stores.open("a")
    a = keeper(store, "a")
    started: list[float] = []

    async def on_gain(record: LeaseRecord) -> None:
        await asyncio.sleep(3 * TTL)
        started.append(time.monotonic())

    a.on_gain = on_gain
    task = loop.submit(a.run())
    eventually_sync(lambda: started)
    assert a.holding
    assert (a.gained, a.lost) == (1, 0)
    task.cancel()


@pytest.mark.nats
def test_a_start_of_leading_is_called_off_when_the_lease_goes(
    stores: Stores, loop: LoopThread
) -> None:
    clock = FakeMonotonic()
    store = stores.open("a")
    a = keeper(store, "a", clock)
    called_off: list[str] = []
    lost: list[str] = []

    async def on_gain(record: LeaseRecord) -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            called_off.append("start called off")
            raise

    async def on_lose(why: str) -> None:
        lost.append(why)

    a.on_gain, a.on_lose = on_gain, on_lose
    task = loop.submit(a.run())
    eventually_sync(lambda: a.held is not None)
    clock.now += TTL  # no renewal for longer than 0.6 × TTL (a frozen loop, say)
    eventually_sync(lambda: lost)
    assert called_off == ["start called off"]
    assert "no renewal" in lost[0]
    task.cancel()


# -- the fence ------------------------------------------------------------------------------------


@pytest.mark.nats
def test_a_fenced_append_after_a_takeover_is_refused_and_stores_nothing(
    stores: Stores, loop: LoopThread
) -> None:
    clock = FakeMonotonic()
    old, other = stores.open("old"), stores.open("other")
    holder = keeper(old, "old", clock)
    loop.call(holder.step())
    fenced = old.fenced(holder.fence)
    assert [e.version for e in fenced.append("job_a", 0, [new("job_a", 1)])] == [1]
    fence = holder.fence()
    assert fence is not None

    # The holder is paused past its TTL (its clock does not move: it is not running) and
    # another replica takes over; resumed, it appends with the fence it still has.
    eventually_sync(lambda: loop.call(other.lease_link("x", TTL).read()), until=lambda r: r is None)
    taken = loop.call(other.lease_link("other", TTL).claim(None))
    assert taken is not None
    before = old.record_position()
    with pytest.raises(LeaseLost) as refused:
        fenced.append("job_a", 1, [new("job_a", 2)])
    assert refused.value.epoch == fence.epoch
    with pytest.raises(LeaseLost):
        fenced.append("job_b", 0, [new("job_b", 1), new("job_b", 2)])  # a batch, too
    with pytest.raises(LeaseLost):  # and a group commit of several jobs' fires
        fenced.append_batch(
            [
                AppendRequest(stream_id="job_a", expected_version=1, events=[new("job_a", 3)]),
                AppendRequest(stream_id="job_b", expected_version=0, events=[new("job_b", 3)]),
            ]
        )
    assert old.record_position() == before == taken.seq
    eventually_sync(lambda: other.seen_position, until=lambda n: n >= taken.seq)
    assert other.stream_version("job_a") == 1
    assert other.stream_version("job_b") == 0


@pytest.mark.nats
def test_a_fenced_batch_carries_both_expectations(stores: Stores, loop: LoopThread) -> None:
    clock = FakeMonotonic()
    store, other = stores.open("a"), stores.open("b")
    holder = keeper(store, "a", clock)
    loop.call(holder.step())
    fenced = store.fenced(holder.fence)
    fenced.append("job_a", 0, [new("job_a", 1), new("job_a", 2)])
    other.append("job_a", 2, [new("job_a", 3)])  # a follower's write (an API pause)
    # The holder's copy may not have it yet: the server judges the batch's aggregate
    # expectation (first message) while the fence (second message) holds.
    request = AppendRequest(
        stream_id="job_a", expected_version=2, events=[new("job_a", 4), new("job_a", 5)]
    )
    outcome = fenced.append_batch([request])[0]
    assert isinstance(outcome, StreamVersionConflict)
    assert outcome.actual == 3
    assert store.stream_version("job_a") == 3


# -- a group commit under the fence ---------------------------------------------------------------


def fires(prefix: str, count: int, events: int = 1) -> list[AppendRequest]:
    return [
        AppendRequest(
            stream_id=f"{prefix}{n}",
            expected_version=0,
            events=[new(f"{prefix}{n}", k) for k in range(events)],
        )
        for n in range(count)
    ]


def recorded_positions(outcomes: list[object]) -> list[int]:
    positions: list[int] = []
    for outcome in outcomes:
        assert isinstance(outcome, list), outcome
        positions.extend(event.position for event in outcome)
    return positions


@pytest.mark.nats
def test_a_fenced_group_commit_is_one_atomic_batch(stores: Stores, loop: LoopThread) -> None:
    store = stores.open("a")
    holder = keeper(store, "a", FakeMonotonic())
    loop.call(holder.step())
    requests = fires("one_", 20) + fires("two_", 20, events=2)
    before = store.publishes
    outcomes = store.fenced(holder.fence).append_batch(requests)
    assert store.publishes - before == 1
    positions = recorded_positions(list(outcomes))
    assert positions == list(range(positions[0], positions[0] + 60))  # in the requests' order
    assert [[e.version for e in o] for o in outcomes if isinstance(o, list)] == [[1]] * 20 + [
        [1, 2]
    ] * 20
    copied(store, [r.stream_id for r in requests], [1] * 20 + [2] * 20)


@pytest.mark.nats
def test_a_fenced_batch_is_answered_before_the_copy_holds_it_and_the_next_builds_on_it(
    stores: Stores, loop: LoopThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = stores.open("a")
    holder = keeper(store, "a", FakeMonotonic())
    loop.call(holder.step())
    fenced = store.fenced(holder.fence)
    # The copy takes nothing in until released: what the batches answer is the record's.
    release, copy_in = threading.Event(), store.copy.copy_in

    def held(*args: Any, **kwargs: Any) -> Any:
        release.wait(60)
        return copy_in(*args, **kwargs)

    monkeypatch.setattr(store.copy, "copy_in", held)
    copied_before = store.copied_position
    try:
        first = fenced.append_batch(fires("ahead_", 10))
        assert [[e.version for e in o] for o in first if isinstance(o, list)] == [[1]] * 10
        # The next fires of the same jobs expect version 1, which the copy does not hold
        # yet: their heads come from the first batch's acknowledgement, and they go in one
        # atomic batch again, not one by one after a wait for the copy.
        before = store.publishes
        second = fenced.append_batch(
            [
                AppendRequest(stream_id=f"ahead_{n}", expected_version=1, events=[new("x", n)])
                for n in range(10)
            ]
        )
        assert store.publishes - before == 1
        assert [[e.version for e in o] for o in second if isinstance(o, list)] == [[2]] * 10
        assert store.copied_position == copied_before
        positions = recorded_positions(list(first)) + recorded_positions(list(second))
        assert positions == list(range(positions[0], positions[0] + 20))
        # A caller answering a client waits for them (``ShowsLater``): not while held.
        shown = threading.Event()

        def wait_then_say() -> None:
            fenced.wait_visible()
            shown.set()

        waiting = threading.Thread(target=wait_then_say)
        waiting.start()
        assert not shown.wait(0.5)
    finally:
        release.set()
    assert shown.wait(30)
    waiting.join(30)
    assert store.copied_position >= positions[-1]
    copied(store, [f"ahead_{n}" for n in range(10)], [2] * 10)
    held_rows = list(store.read_all(after_position=positions[0] - 1))
    assert [(e.position, e.event_id, e.version, e.event) for e in held_rows] == [
        (e.position, e.event_id, e.version, e.event)
        for o in list(first) + list(second)
        if isinstance(o, list)
        for e in o
    ]


@pytest.mark.nats
def test_a_batchs_first_request_recorded_after_a_write_it_did_not_see_gets_the_copys_versions(
    stores: Stores, loop: LoopThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch's first message carries the fence, so a lone first request has no version
    check of its own: a follower's write that came between is found (one request to the
    record), its versions are the copy's, and a later append at the version it was decided
    on is refused."""
    store, other = stores.open("a"), stores.open("b")
    holder = keeper(store, "a", FakeMonotonic())
    loop.call(holder.step())
    fenced = store.fenced(holder.fence)
    fenced.append("job_s", 0, [new("job_s", 1)])
    behind = store.copy.stream_head("job_s")
    other.append("job_s", 1, [new("job_s", 2)])  # a follower's write (an API pause)
    eventually_sync(lambda: store.stream_version("job_s"), until=lambda v: v == 2)
    copy_behind_once(store, monkeypatch, "job_s", behind)
    outcomes = fenced.append_batch(
        [
            AppendRequest(stream_id="job_s", expected_version=1, events=[new("job_s", 3)]),
            AppendRequest(stream_id="job_t", expected_version=0, events=[new("job_t", 1)]),
        ]
    )
    assert [[e.version for e in o] for o in outcomes if isinstance(o, list)] == [[3], [1]]
    with pytest.raises(StreamVersionConflict):
        fenced.append("job_s", 2, [new("job_s", 4)])
    copied(store, ["job_s", "job_t"], [3, 1])


@pytest.mark.nats
def test_a_group_commit_over_a_thousand_messages_goes_in_batches_of_a_thousand(
    stores: Stores, loop: LoopThread
) -> None:
    store = stores.open("a")
    holder = keeper(store, "a", FakeMonotonic())
    loop.call(holder.step())
    requests = fires("big_", 600, events=2)  # 1,200 messages
    before = store.publishes
    outcomes = store.fenced(holder.fence).append_batch(requests)
    assert store.publishes - before == 2
    assert len(recorded_positions(list(outcomes))) == 1200
    copied(store, [r.stream_id for r in requests], [2] * 600)


@pytest.mark.nats
def test_one_streams_second_request_in_a_group_commit_follows_its_first(
    stores: Stores, loop: LoopThread
) -> None:
    store = stores.open("a")
    holder = keeper(store, "a", FakeMonotonic())
    loop.call(holder.step())
    requests = [
        AppendRequest(stream_id="job_x", expected_version=0, events=[new("job_x", 1)]),
        AppendRequest(stream_id="job_y", expected_version=0, events=[new("job_y", 1)]),
        AppendRequest(stream_id="job_x", expected_version=1, events=[new("job_x", 2)]),
    ]
    outcomes = store.fenced(holder.fence).append_batch(requests)
    assert [[e.version for e in o] for o in outcomes if isinstance(o, list)] == [[1], [1], [2]]
    assert store.stream_version("job_x") == 2


@pytest.mark.nats
def test_a_renewal_between_fence_and_group_commit_moves_the_fence_and_all_are_recorded(
    stores: Stores, loop: LoopThread
) -> None:
    store = stores.open("a")
    link = store.lease_link("a", TTL)
    old = loop.call(link.claim(None))
    assert old is not None
    renewed = loop.call(link.claim(old))
    assert renewed is not None
    # The keeper has not heard its renewal's answer yet: its fence names the old message.
    stale = Fence(replica=old.replica, epoch=old.epoch, seq=old.seq)
    before = store.publishes
    outcomes = store.fenced(lambda: stale).append_batch(fires("moved_", 10))
    assert len(recorded_positions(list(outcomes))) == 10
    assert store.publishes - before == 2  # refused once, sent again expecting the renewal


@pytest.mark.nats
def test_a_stale_request_in_a_fenced_group_commit_is_answered_alone_and_the_rest_recorded(
    stores: Stores, loop: LoopThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, other = stores.open("a"), stores.open("b")
    holder = keeper(store, "a", FakeMonotonic())
    loop.call(holder.step())
    fenced = store.fenced(holder.fence)
    fenced.append("job_a", 0, [new("job_a", 1), new("job_a", 2)])
    behind = store.copy.stream_head("job_a")
    other.append("job_a", 2, [new("job_a", 3)])  # a follower's write (an API pause)
    eventually_sync(lambda: store.stream_version("job_a"), until=lambda v: v == 3)
    # The holder decides from a copy that has not seen the follower's write yet: the batch's
    # expectation on job_a is stale, the server refuses the whole batch and stores nothing.
    # (Only for the batch: by the time its requests go one by one, the copy has caught up.)
    copy_behind_once(store, monkeypatch, "job_a", behind)
    # (The batch's first message carries the fence, so job_a is not first: a lone message
    # carries one expectation, and a single fire's is the fence's.)
    requests = [
        AppendRequest(stream_id="job_b", expected_version=0, events=[new("job_b", 1)]),
        AppendRequest(stream_id="job_a", expected_version=2, events=[new("job_a", 4)]),
        AppendRequest(stream_id="job_c", expected_version=0, events=[new("job_c", 1)]),
    ]
    outcomes = fenced.append_batch(requests)
    assert isinstance(outcomes[1], StreamVersionConflict)
    assert outcomes[1].actual == 3
    assert [[e.version for e in o] for o in outcomes if isinstance(o, list)] == [[1], [1]]
    copied(store, ["job_a", "job_b", "job_c"], [3, 1, 1])


def copy_behind_once(
    store: JetStreamEventStore,
    monkeypatch: pytest.MonkeyPatch,
    stream_id: str,
    head: tuple[int, int],
) -> None:
    """The next batch decides from a copy that has not seen the latest write of
    ``stream_id`` (its head as ``head``); the asks after it read the copy as it is."""
    heads, calls = store._copy_heads, []

    def copy_behind(ids: list[str]) -> dict[str, tuple[int, int] | None]:
        calls.append(ids)
        return {**heads(ids), **({stream_id: head} if len(calls) == 1 else {})}

    monkeypatch.setattr(store, "_copy_heads", copy_behind)


def copied(store: JetStreamEventStore, stream_ids: list[str], versions: list[int]) -> None:
    """The copy comes to hold ``stream_ids`` at ``versions`` (a fenced batch is answered
    from its acknowledgement, before the copy holds it)."""
    eventually_sync(
        lambda: [store.stream_version(stream_id) for stream_id in stream_ids],
        until=lambda found: found == versions,
        timeout=60,
    )


def test_a_fence_names_the_lease_subject() -> None:
    assert Fence("a", 3, 7).headers() == {
        "Nats-Expected-Last-Subject-Sequence": "7",
        "Nats-Expected-Last-Subject-Sequence-Subject": "lablink.log.~lease.scheduler",
    }


# -- the copy passes lease messages over ----------------------------------------------------------


@pytest.mark.nats
def test_lease_messages_leave_gaps_that_the_copy_and_its_waits_tolerate(
    stores: Stores, loop: LoopThread
) -> None:
    first, second = stores.open("first"), stores.open("second")
    link = first.lease_link("first", TTL)
    got = loop.call(link.claim(None))
    assert got is not None
    first.append("job_a", 0, [new("job_a", 1)])
    renewed = loop.call(link.claim(got))
    assert renewed is not None
    recorded = second.append("job_a", 1, [new("job_a", 2)])  # read-your-writes across a gap
    assert [(e.position, e.version) for e in recorded] == [(renewed.seq + 1, 2)]
    # The last message is a lease message: the copy is not behind for it.
    renewed_again = loop.call(link.claim(renewed))
    assert renewed_again is not None
    eventually_sync(lambda: first.copy_status(), until=lambda s: s.lag == 0 and s.error is None)
    assert [r[0] for r in first.read_rows(0, 10)] == [got.seq + 1, renewed.seq + 1]
    assert first.read_rows(0, 10) == second.read_rows(0, 10)

    # Every lease message expired: the record's last sequence is one no consumer delivers.
    eventually_sync(lambda: loop.call(link.read()), until=lambda r: r is None)
    first.close()
    again = stores.open("first")  # caught up when handed out, no wait for the expired
    assert again.last_position() == renewed.seq + 1
    assert again.append("job_a", 2, [new("job_a", 3)])[0].version == 3
