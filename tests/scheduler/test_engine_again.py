"""A replica that gains the scheduler lease a second time starts a second engine under the
same supervisor (cluster mode, issue 18; ``scheduler.leadership``). Found by the NATS fault
test (tests/e2e/test_cluster_faults.py): a holder that lost the lease during an election and
won it back failed to start its engine ("a task named 'task.committer' is already
supervised"); its keeper died with it, so it never claimed again, and it exited 1 at stop.
Now the engine's tasks leave the supervisor as it closes, and a keeper whose engine fails to
start steps down and goes on following."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from lablink.clock import ManualClock
from lablink.eventstore import SQLiteEventStore
from lablink.eventstore.lease import LeaseRecord
from lablink.eventstore.lease_keeper import LeaseKeeper
from lablink.health import Health
from lablink.repository import JobRepository
from lablink.scheduler.engine import Engine
from lablink.scheduler.executor import NoOpExecutor
from lablink.supervision import Supervisor
from tests.scheduler.test_engine_finishes import FIRE, START, created

JOB = "job_0001"


def fired(store: SQLiteEventStore) -> int:
    return sum(1 for r in store.read_stream(JOB) if r.type == "execution.pending")


async def test_an_engine_after_a_closed_one_starts_under_the_same_supervisor(
    tmp_path: Path,
) -> None:
    store = SQLiteEventStore(tmp_path / "log.db")
    store.append_batch([created(JOB, interval=60)])
    clock = ManualClock(START)
    supervisor = Supervisor(Health(clock))
    try:
        first = Engine(
            store, clock, NoOpExecutor(), jobs=JobRepository(store), supervisor=supervisor
        )
        await first.start([(JOB, None)], [])
        clock.set(FIRE)
        assert await first.tick() == 1
        await first.aclose(grace_seconds=0.0)
        assert "task.engine" not in supervisor
        assert "task.committer" not in supervisor

        # The lease gained again: a new engine, the same supervisor.
        second = Engine(
            store, clock, NoOpExecutor(), jobs=JobRepository(store), supervisor=supervisor
        )
        await second.start([(JOB, None)], [])
        clock.set(FIRE + timedelta(seconds=60))
        assert await second.tick() == 1
        assert fired(store) == 2
        await second.aclose(grace_seconds=0.0)
    finally:
        await supervisor.aclose()
        store.close()


class Link:
    """The lease's two requests, in memory: one holder at a time, no expiry."""

    def __init__(self) -> None:
        self.live: LeaseRecord | None = None
        self.seq = 0

    async def read(self) -> LeaseRecord | None:
        return self.live

    async def claim(self, after: LeaseRecord | None) -> LeaseRecord | None:
        if after != self.live:
            return None
        self.seq += 1
        epoch = after.epoch if after is not None else self.seq
        self.live = LeaseRecord(replica="a", epoch=epoch, ttl_seconds=3.0, at="", seq=self.seq)
        return self.live

    async def take_over(self, stale: LeaseRecord) -> LeaseRecord | None:
        if stale != self.live:
            return None
        self.seq += 1
        self.live = LeaseRecord(replica="a", epoch=self.seq, ttl_seconds=3.0, at="", seq=self.seq)
        return self.live


async def test_a_keeper_whose_engine_fails_to_start_steps_down_and_claims_again() -> None:
    link = Link()
    starts: list[int] = []

    async def on_gain(lease: LeaseRecord) -> None:
        starts.append(lease.epoch)
        if len(starts) == 1:
            raise RuntimeError("the copy is behind")

    keeper = LeaseKeeper(link, replica="a", ttl=3.0, on_gain=on_gain)
    await keeper.step()  # gained, the engine failed: stepped down, still running
    assert not keeper.holding
    assert keeper.lost == 1
    link.live = None  # its lease expired on the server
    await keeper.step()
    assert keeper.holding
    assert starts == [1, 2]
