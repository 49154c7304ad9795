"""The ends of executions that arrive together go through the write path together (issue 14),
as a chunk's fires do: one submission to the group committer for the batch, not one command
each. Each end is still recorded once, a stream that moved meanwhile is decided again, and an
end queued before a tick is recorded before that tick decides the job's next fire."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from lablink.clock import ManualClock
from lablink.domain.job import CreateJob, JobState, decide
from lablink.domain.requests import parse_job_request
from lablink.events import ExecutionSucceeded, JobPaused, stamp
from lablink.eventstore import AppendRequest, SQLiteEventStore
from lablink.eventstore.base import AppendOutcome
from lablink.eventstore.group_commit import GroupCommitter
from lablink.instruments.execution import ExecutionRequest, Outcome, ProgressReport
from lablink.repository import JobRepository
from lablink.scheduler.engine import Engine
from lablink.scheduler.executor import NoOpExecutor
from tests.support.eventually import eventually

JOBS = 300
START = datetime(2026, 3, 2, 9, 59, 59, tzinfo=UTC)
FIRE = START + timedelta(seconds=1)


def created(
    job_id: str, interval: int = 60, conflict: str | None = None, start: datetime = FIRE
) -> AppendRequest:
    body = {
        "name": f"Reading {job_id}",
        "schedule_type": "measurement",
        "equipment_id": "dmm-01",
        "trigger_type": "interval",
        "interval_seconds": interval,
        "parameters": {"command": "MEAS:VOLT:DC?"},
        "start_date": start.isoformat(),
        "timezone": "UTC",
    }
    if conflict is not None:
        body["conflict_policy"] = conflict
    request = parse_job_request(body)
    command = CreateJob(job_id=job_id, request=request, default_timezone="UTC", created_by="t")
    events = decide(JobState(job_id=job_id), command, START)
    return AppendRequest(stream_id=job_id, expected_version=0, events=stamp(events, "t", START))


def ends_in(requests: Sequence[AppendRequest]) -> int:
    return sum(1 for r in requests for e in r.events if isinstance(e.event, ExecutionSucceeded))


class CountingCommitter(GroupCommitter):
    """The real committer; notes how the ends reached it: one submission each, or together."""

    def __init__(self, store: SQLiteEventStore) -> None:
        super().__init__(store)
        self.ends_alone = 0
        self.ends_together: list[int] = []

    async def submit(self, request: AppendRequest) -> AppendOutcome:
        self.ends_alone += ends_in([request])
        return await super().submit(request)

    async def submit_all(
        self, requests: Sequence[AppendRequest], *, linger: float = 0.0
    ) -> list[AppendOutcome | BaseException]:
        ends = ends_in(requests)
        if ends:
            self.ends_together.append(ends)
        return await super().submit_all(requests, linger=linger)


def counted(engine: Engine, store: SQLiteEventStore) -> CountingCommitter:
    committer = CountingCommitter(store)
    engine.committer = committer
    engine.writer.committer = committer
    return committer


def succeeded(store: SQLiteEventStore, job_id: str) -> list[ExecutionSucceeded]:
    return [r.event for r in store.read_stream(job_id) if isinstance(r.event, ExecutionSucceeded)]


async def test_ends_that_arrive_together_are_recorded_together(tmp_path: Path) -> None:
    store = SQLiteEventStore(tmp_path / "scheduler.db")
    job_ids = [f"job_{n:04d}" for n in range(JOBS)]
    store.append_batch([created(job_id) for job_id in job_ids])
    clock = ManualClock(START)
    engine = Engine(store, clock, NoOpExecutor(), jobs=JobRepository(store))
    committer = counted(engine, store)
    try:
        await engine.open([(job_id, None) for job_id in job_ids], [])
        clock.set(FIRE)
        assert await engine.tick() == JOBS
        async with asyncio.timeout(60):
            await asyncio.gather(*engine.tasks().values())
    finally:
        await engine.aclose()
    try:
        # All 300 ends, recorded in a few submissions (the no-op executor ends a chunk's
        # runs in one turn of the event loop), none alone.
        assert committer.ends_alone == 0
        assert sum(committer.ends_together) == JOBS
        assert len(committer.ends_together) <= JOBS // 10
        assert all(len(succeeded(store, job_id)) == 1 for job_id in job_ids)
    finally:
        store.close()


class MovingStore(SQLiteEventStore):
    """The real store; just before the first commit that holds ends, a client's change (a
    pause) lands on one job's stream, so that job's end finds its stream moved."""

    def __init__(self, path: Path, moved: str) -> None:
        super().__init__(path)
        self.moved = moved
        self.done = False

    def append_batch(self, requests: Sequence[AppendRequest]) -> list[AppendOutcome]:
        if not self.done and ends_in(requests):
            self.done = True
            version = self.stream_version(self.moved)
            pause = stamp([JobPaused(job_id=self.moved)], "user:t", FIRE)
            super().append_batch(
                [AppendRequest(stream_id=self.moved, expected_version=version, events=pause)]
            )
        return super().append_batch(requests)


async def test_an_end_whose_stream_moved_is_decided_again_and_recorded(tmp_path: Path) -> None:
    job_ids = [f"job_{n:04d}" for n in range(20)]
    store = MovingStore(tmp_path / "scheduler.db", moved=job_ids[7])
    store.append_batch([created(job_id) for job_id in job_ids])
    clock = ManualClock(START)
    engine = Engine(store, clock, NoOpExecutor(), jobs=JobRepository(store))
    committer = counted(engine, store)
    try:
        await engine.open([(job_id, None) for job_id in job_ids], [])
        clock.set(FIRE)
        assert await engine.tick() == 20
        async with asyncio.timeout(60):
            await asyncio.gather(*engine.tasks().values())
    finally:
        await engine.aclose()
    try:
        assert store.done
        # The moved job's end was refused in the batch and decided again on its own.
        assert committer.ends_alone == 1
        assert sum(committer.ends_together) == 20
        for job_id in job_ids:
            assert len(succeeded(store, job_id)) == 1, job_id
        kinds = [type(r.event).__name__ for r in store.read_stream(job_ids[7])]
        assert kinds.index("JobPaused") < kinds.index("ExecutionSucceeded")
    finally:
        store.close()


async def all_ended(engine: Engine) -> None:
    """Every execution the engine started has ended, and its end was recorded."""
    async with asyncio.timeout(60):
        while engine.tasks():
            await asyncio.gather(*engine.tasks().values())


class Gated(NoOpExecutor):
    """Runs end when the test says: all of them at once."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()

    async def execute(self, request: ExecutionRequest, progress: ProgressReport) -> Outcome:
        await self.gate.wait()
        return Outcome(status="completed")


async def test_an_end_queued_before_a_tick_is_recorded_before_its_next_fire(
    tmp_path: Path,
) -> None:
    # skip policy: a fire decided while the previous run still counts as running is skipped.
    job_ids = [f"job_{n:04d}" for n in range(50)]
    store = SQLiteEventStore(tmp_path / "scheduler.db")
    store.append_batch([created(job_id, interval=1, conflict="skip") for job_id in job_ids])
    clock = ManualClock(START)
    executor = Gated()
    engine = Engine(store, clock, executor, jobs=JobRepository(store))
    try:
        await engine.open([(job_id, None) for job_id in job_ids], [])
        clock.set(FIRE)
        assert await engine.tick() == 50
        await asyncio.sleep(0)  # the runs wait at the gate
        # The runs end, and in the same turn of the event loop (before the batch of ends
        # is written) the next second's fires fall due.
        executor.gate.set()
        await asyncio.sleep(0)
        clock.set(FIRE + timedelta(seconds=1))
        assert await engine.tick() == 50
        await all_ended(engine)
    finally:
        await engine.aclose()
    try:
        for job_id in job_ids:
            kinds = [type(r.event).__name__ for r in store.read_stream(job_id)]
            # Both seconds ran: the end was recorded before the second fire was decided.
            assert kinds.count("ExecutionRequested") == 2, (job_id, kinds)
            assert "ExecutionSkipped" not in kinds, (job_id, kinds)
            first_end = kinds.index("ExecutionSucceeded")
            second_fire = [i for i, k in enumerate(kinds) if k == "ExecutionRequested"][1]
            assert first_end < second_fire
    finally:
        store.close()


class BatchNotingStore(SQLiteEventStore):
    """The real store; notes the event types of each commit, by stream."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.commits: list[dict[str, list[str]]] = []

    def append_batch(self, requests: Sequence[AppendRequest]) -> list[AppendOutcome]:
        commit: dict[str, list[str]] = {}
        for r in requests:
            commit.setdefault(r.stream_id, []).extend(type(e.event).__name__ for e in r.events)
        self.commits.append(commit)
        return super().append_batch(requests)


class LingerNotingCommitter(GroupCommitter):
    """The real committer; notes each linger it is asked for."""

    def __init__(self, store: SQLiteEventStore) -> None:
        super().__init__(store)
        self.lingers: list[float] = []

    async def submit_all(
        self, requests: Sequence[AppendRequest], *, linger: float = 0.0
    ) -> list[AppendOutcome | BaseException]:
        if linger > 0:
            self.lingers.append(linger)
        return await super().submit_all(requests, linger=linger)


def lingering_engine(
    store: SQLiteEventStore, clock: ManualClock, executor: NoOpExecutor
) -> tuple[Engine, LingerNotingCommitter]:
    engine = Engine(store, clock, executor, jobs=JobRepository(store))
    committer = LingerNotingCommitter(store)
    engine.committer = committer
    engine.writer.committer = committer
    # An hour past the fire's instant: on any machine, only the fire (or a hurry) ends the
    # wait within the test's deadline.
    engine.end_linger_slack = 3600.0
    return engine, committer


async def test_an_end_waits_for_a_fire_due_within_milliseconds_and_shares_its_commit(
    tmp_path: Path,
) -> None:
    store = BatchNotingStore(tmp_path / "scheduler.db")
    soon = FIRE + timedelta(seconds=1)
    store.append_batch([created("job_a"), created("job_b", start=soon)])
    clock = ManualClock(START)
    executor = Gated()
    engine, committer = lingering_engine(store, clock, executor)
    try:
        await engine.open([("job_a", None), ("job_b", None)], [])
        clock.set(FIRE)
        assert await engine.tick() == 2  # job_a fires; job_b's first fire is planned
        clock.set(soon - timedelta(milliseconds=10))
        executor.gate.set()  # job_a's run ends; job_b fires 10 ms later
        await eventually(lambda: len(committer.lingers) == 1)
        await asyncio.sleep(0.2)  # time enough for a write that was not held back
        assert not succeeded(store, "job_a")
        clock.set(soon)
        assert await engine.tick() == 1
        await all_ended(engine)
    finally:
        await engine.aclose()
    try:
        assert len(succeeded(store, "job_a")) == 1
        ends = [c for c in store.commits if "ExecutionSucceeded" in c.get("job_a", [])]
        assert len(ends) == 1, store.commits
        assert "ExecutionRequested" in ends[0].get("job_b", []), store.commits
        # job_b's own end had no fire within the linger: written at once, alone.
        assert committer.lingers == [pytest.approx(3600.01)]
    finally:
        store.close()


async def test_a_fire_of_the_job_whose_end_lingers_does_not_wait_out_the_linger(
    tmp_path: Path,
) -> None:
    store = SQLiteEventStore(tmp_path / "scheduler.db")
    store.append_batch([created("job_a", interval=1)])
    clock = ManualClock(START)
    executor = Gated()
    engine, committer = lingering_engine(store, clock, executor)
    try:
        await engine.open([("job_a", None)], [])
        clock.set(FIRE)
        assert await engine.tick() == 1
        clock.set(FIRE + timedelta(milliseconds=995))
        executor.gate.set()  # the run ends 5 ms before the job's own next fire
        await eventually(lambda: len(committer.lingers) == 1)
        clock.set(FIRE + timedelta(seconds=1))
        async with asyncio.timeout(60):  # not the hour's linger: the fire hurries the end
            assert await engine.tick() == 1
        await all_ended(engine)
    finally:
        await engine.aclose()
    try:
        kinds = [type(r.event).__name__ for r in store.read_stream("job_a")]
        fires = [i for i, k in enumerate(kinds) if k == "ExecutionRequested"]
        assert len(fires) == 2, kinds
        assert kinds.index("ExecutionSucceeded") < fires[1]
    finally:
        store.close()
