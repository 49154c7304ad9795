"""An aligned tick is decided, committed and dispatched in chunks (issue 14): the first
chunk goes to the group committer alone, and its executions leave as soon as it is durable,
while the commit of the later chunks is still held. Record, then act, chunk by chunk."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from lablink.clock import ManualClock
from lablink.domain.job import CreateJob, JobState, decide
from lablink.domain.requests import parse_job_request
from lablink.events import ExecutionRequested, ExecutionSucceeded, stamp
from lablink.eventstore import AppendRequest, SQLiteEventStore
from lablink.eventstore.base import AppendOutcome
from lablink.instruments.execution import ExecutionRequest, Outcome, ProgressReport
from lablink.repository import JobRepository
from lablink.scheduler.engine import CHUNK_TIMERS, Engine
from lablink.scheduler.executor import NoOpExecutor

JOBS = 3 * CHUNK_TIMERS
START = datetime(2026, 3, 2, 9, 59, 59, tzinfo=UTC)
FIRE = START + timedelta(seconds=1)
HOLD_SECONDS = 30.0


class HeldStore(SQLiteEventStore):
    """The real store; a commit of fires after the first waits (in the committer's thread)
    until an execution has been dispatched, or HOLD_SECONDS. Records what each commit held
    and which executions were durable."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.dispatched = threading.Event()
        self.fire_batches: list[int] = []  # fires requested in each commit that had any
        self.durable: set[str] = set()
        self.held_in_vain = False

    def append_batch(self, requests: Sequence[AppendRequest]) -> list[AppendOutcome]:
        fires = [
            e.event.execution_id
            for r in requests
            for e in r.events
            if isinstance(e.event, ExecutionRequested)
        ]
        if fires:
            if self.fire_batches and not self.dispatched.wait(HOLD_SECONDS):
                self.held_in_vain = True
            self.fire_batches.append(len(fires))
        outcomes = super().append_batch(requests)
        self.durable.update(fires)
        return outcomes


class Recording(NoOpExecutor):
    """An executor that notes, at each dispatch, how many fires were durable then."""

    def __init__(self, store: HeldStore) -> None:
        self.store = store
        self.durable_at_dispatch: list[int] = []
        self.not_durable: list[str] = []

    async def execute(self, request: ExecutionRequest, progress: ProgressReport) -> Outcome:
        if request.execution_id not in self.store.durable:
            self.not_durable.append(request.execution_id)
        self.durable_at_dispatch.append(len(self.store.durable))
        self.store.dispatched.set()
        return Outcome(status="completed")


def created(job_id: str) -> AppendRequest:
    request = parse_job_request(
        {
            "name": f"Reading {job_id}",
            "schedule_type": "measurement",
            "equipment_id": "dmm-01",
            "trigger_type": "interval",
            "interval_seconds": 60,
            "parameters": {"command": "MEAS:VOLT:DC?"},
            "start_date": FIRE.isoformat(),
            "timezone": "UTC",
        }
    )
    command = CreateJob(job_id=job_id, request=request, default_timezone="UTC", created_by="t")
    events = decide(JobState(job_id=job_id), command, START)
    return AppendRequest(stream_id=job_id, expected_version=0, events=stamp(events, "t", START))


async def test_an_aligned_tick_leaves_in_chunks_each_once_durable(tmp_path: Path) -> None:
    store = HeldStore(tmp_path / "scheduler.db")
    job_ids = [f"job_{n:04d}" for n in range(JOBS)]
    store.append_batch([created(job_id) for job_id in job_ids])
    clock = ManualClock(START)
    executor = Recording(store)
    engine = Engine(store, clock, executor, jobs=JobRepository(store))
    try:
        await engine.open([(job_id, None) for job_id in job_ids], [])
        clock.set(FIRE)
        assert await engine.tick() == JOBS
        async with asyncio.timeout(60):
            await asyncio.gather(*engine.tasks().values())  # each records its outcome
    finally:
        await engine.aclose()
    try:
        # The first chunk was committed alone, and its executions were dispatched while the
        # commit of the others was held: they did not wait for the whole tick.
        assert store.fire_batches[0] <= CHUNK_TIMERS
        assert sum(store.fire_batches) == JOBS
        assert not store.held_in_vain
        assert executor.durable_at_dispatch[0] < JOBS
        # Record, then act: no execution left before its fire was durable.
        assert executor.not_durable == []
        assert len(executor.durable_at_dispatch) == JOBS
        # Every job fired once and its outcome was recorded.
        completed = [
            r.event
            for job_id in job_ids
            for r in store.read_stream(job_id)
            if isinstance(r.event, ExecutionSucceeded)
        ]
        assert len(completed) == JOBS
    finally:
        store.close()
