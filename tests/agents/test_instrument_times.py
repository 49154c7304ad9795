"""The instrument's own times on record (issue 19): when the command was dispatched and when the
operation began and ended on the instrument, recorded with the result, shown by the API
(execution, list, history) with the lateness at each step, and folded the same by a rebuild.

Through a real nats-server to an in-process agent driving pyvisa-sim instruments; then on the
in-process bench (``LABLINK_NATS=off``) and the no-op executor."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from lablink.api.queries import job_history
from lablink.application import JobService
from lablink.bus.server import NatsServer
from lablink.clock import ManualClock
from lablink.equipment_agent.bench import open_simulated_bench
from lablink.equipment_agent.inprocess import InProcessExecutor
from lablink.events import (
    ExecutionFailed,
    ExecutionLateResult,
    ExecutionSucceeded,
    ExecutionTimedOut,
)
from lablink.instruments.protocol import QueueDepth
from lablink.instruments.scpi import MessagePort
from lablink.logstore import LogStore, open_store
from lablink.projections.reading import reading_views
from lablink.repository import JobRepository
from lablink.scheduler.engine import Engine
from lablink.scheduler.executor import Executor, NoOpExecutor
from tests.support.agent_lab import AgentLab, bench_config
from tests.support.bench import copy_bench
from tests.support.eventually import eventually
from tests.support.harness import Harness
from tests.support.views import view_rows, views_db

MEASURE_PSU = {
    "schedule_type": "measurement",
    "equipment_id": "power_supply_1",
    "parameters": {"command": "get_voltage"},
}
NEW_EXECUTION_COLUMNS = ("dispatched_at", "instrument_started_at", "instrument_ended_at")
NEW_HISTORY_COLUMNS = ("last_instrument_started_at", "last_instrument_ended_at")


class RealTime(ManualClock):
    """The system clock, where AgentLab takes a manual one: the scheduler and the agent then
    read one real clock, so the order of their instants is the order things happened."""

    def __init__(self) -> None:
        super().__init__(datetime.now(UTC))

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()


def at(text: str | None) -> datetime:
    assert text is not None
    return datetime.fromisoformat(text)


@pytest.fixture
async def lab(tmp_path: Path, nats_server: NatsServer) -> AsyncIterator[AgentLab]:
    lab = await AgentLab(tmp_path / "scheduler.db", nats_server.url, RealTime()).start()
    await lab.start_agent(bench_config(copy_bench(tmp_path / "bench"), tmp_path / "data"))
    try:
        yield lab
    finally:
        await lab.close()


async def api_get(lab: AgentLab, tmp_path: Path, *paths: str) -> list[dict[str, Any]]:
    answers = await lab.api_get(tmp_path, *paths)
    assert [a.status_code for a in answers] == [200] * len(paths), [a.text for a in answers]
    return [a.json() for a in answers]


def view_tables(path: Path) -> dict[str, list[dict[str, Any]]]:
    return {
        "executions": view_rows(path, "SELECT * FROM executions ORDER BY execution_id"),
        "job_history": view_rows(path, "SELECT * FROM job_history ORDER BY job_id"),
    }


def backup(source: Path, target: Path) -> None:
    """A consistent copy of a database another connection has open."""
    src, dst = sqlite3.connect(source), sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()


def make_views_old(path: Path) -> None:
    """The views as LabLink made them before the instrument's times were recorded: without
    their columns, and noted as made by that version."""
    conn = sqlite3.connect(views_db(path))
    try:
        for column in NEW_EXECUTION_COLUMNS:
            conn.execute(f"ALTER TABLE executions DROP COLUMN {column}")
        for column in NEW_HISTORY_COLUMNS:
            conn.execute(f"ALTER TABLE job_history DROP COLUMN {column}")
        conn.execute("UPDATE projection_meta SET value = 'before-19' WHERE key = 'fingerprint'")
        conn.commit()
    finally:
        conn.close()


async def test_an_agent_records_the_instruments_times_shown_by_the_api_and_kept_by_a_rebuild(
    lab: AgentLab, tmp_path: Path
) -> None:
    job_id = lab.create({"name": "psu voltage", **MEASURE_PSU})
    execution_id = await lab.engine.run_now(job_id)
    row = await lab.finished(execution_id)
    assert row["status"] == "completed", row

    # One real clock for the scheduler and the agent: the instants follow what happened.
    decided, dispatched = at(row["actual_time"]), at(row["dispatched_at"])
    began, ended = at(row["instrument_started_at"]), at(row["instrument_ended_at"])
    completed = at(row["completed_at"])
    assert decided <= dispatched <= began <= ended <= completed

    # Recorded with the result in the log, as the agent's report carried them.
    (final,) = [e for e in lab.events(job_id) if isinstance(e, ExecutionSucceeded)]
    assert (final.dispatched_at, final.instrument_started_at, final.instrument_ended_at) == (
        dispatched,
        began,
        ended,
    )

    one, listed, history = await api_get(
        lab,
        tmp_path,
        f"/api/scheduler/executions/{execution_id}",
        f"/api/scheduler/executions?job_id={job_id}",
        f"/api/scheduler/jobs/{job_id}/history",
    )
    shown = one["execution"]
    assert listed["executions"] == [shown]
    assert at(shown["dispatched_at"]) == dispatched
    assert at(shown["instrument_started_at"]) == began
    assert at(shown["instrument_ended_at"]) == ended
    scheduled = at(shown["scheduled_time"])
    assert shown["lateness"] == {
        "decided_seconds": (decided - scheduled).total_seconds(),
        "dispatched_seconds": (dispatched - scheduled).total_seconds(),
        "instrument_started_seconds": (began - scheduled).total_seconds(),
    }
    lateness = shown["lateness"]
    assert (
        lateness["decided_seconds"]
        <= lateness["dispatched_seconds"]
        <= lateness["instrument_started_seconds"]
    )
    assert history["history"]["last_execution_id"] == execution_id
    assert at(history["history"]["last_instrument_started_at"]) == began
    assert at(history["history"]["last_instrument_ended_at"]) == ended

    # Views made before these columns existed are rebuilt from the log (a copy of this
    # one), to the rows folded live.
    assert rebuilt(lab, tmp_path) == view_tables(lab.path)


def rebuilt(lab: AgentLab, tmp_path: Path) -> dict[str, list[dict[str, Any]]]:
    """The views of a copy of the lab's log, made old so that opening it rebuilds them."""
    copy = tmp_path / "copy" / "scheduler.db"
    copy.parent.mkdir()
    for source, target in ((lab.path, copy), (views_db(lab.path), views_db(copy))):
        backup(source, target)
    make_views_old(copy)
    reopened: LogStore = open_store(copy)
    reopened.close()
    return view_tables(copy)


async def test_a_job_refused_before_the_instrument_is_touched_has_no_instrument_times(
    lab: AgentLab,
) -> None:
    """The agent's driver refuses a reading that is not one: nothing reached the instrument,
    so there are no instrument times; the command was still dispatched."""
    job_id = lab.create(
        {
            "schedule_type": "measurement",
            "equipment_id": "power_supply_1",
            "parameters": {"command": "set_voltage"},
        }
    )
    execution_id = await lab.engine.run_now(job_id)
    row = await lab.finished(execution_id)
    assert row["status"] == "failed", row
    assert at(row["actual_time"]) <= at(row["dispatched_at"]) <= at(row["completed_at"])
    assert (row["instrument_started_at"], row["instrument_ended_at"]) == (None, None)
    (final,) = [e for e in lab.events(job_id) if isinstance(e, ExecutionFailed)]
    assert final.instrument_started_at is None


class Held:
    """A PortWrapper that holds every exchange with one instrument while closed: an operation
    stays on that instrument as long as the test says, reporting no progress."""

    def __init__(self, equipment_id: str) -> None:
        self.equipment_id = equipment_id
        self.opened = threading.Event()
        self.opened.set()

    def __call__(self, equipment_id: str, port: MessagePort) -> MessagePort:
        return port if equipment_id != self.equipment_id else HeldPort(port, self.opened)


class HeldPort:
    def __init__(self, inner: MessagePort, opened: threading.Event) -> None:
        self.inner, self.opened = inner, opened

    def write(self, message: str) -> int:
        self.opened.wait(120)  # bounded: a failed test's worker cannot outlive it for ever
        return self.inner.write(message)

    def query(self, message: str) -> str:
        self.opened.wait(120)
        return self.inner.query(message)


@pytest.mark.slow
async def test_a_run_timed_out_on_its_instrument_is_recorded_with_when_it_began_there(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    """A measurement held on its instrument (no progress: the instrument's presence says when
    it began) and one waiting behind it both time out. The first is recorded timed out with
    its instrument start, the second, which never reached the instrument, without; the API,
    the history and a rebuild of the views show the same."""
    held = Held("power_supply_1")
    lab = await AgentLab(tmp_path / "scheduler.db", nats_server.url, RealTime()).start()
    try:
        config = bench_config(
            copy_bench(tmp_path / "bench"), tmp_path / "data", only=("power_supply_1",)
        )
        await lab.start_agent(config, wrap=held)
        held.opened.clear()
        on_job = lab.create({"name": "held on the instrument", **MEASURE_PSU, "timeout_seconds": 1})
        behind_job = lab.create({"name": "behind it", **MEASURE_PSU, "timeout_seconds": 1})
        on = await lab.engine.run_now(on_job)
        await eventually(
            lambda: lab.executor.instrument_times(on).started_at,
            until=lambda began: began is not None,
            what="the agent's word that the measurement began on the instrument",
        )
        behind = await lab.engine.run_now(behind_job)
        await eventually(
            lambda: lab.executor.queue_depths().get("power_supply_1"),
            until=lambda q: q == QueueDepth(queued=1, running=1),
            what="the second run waiting for the instrument",
        )
        started = [await lab.until(e, ("running",)) for e in (on, behind)]
        due = max(at(r["started_at"]) for r in started) + timedelta(seconds=1)
        await asyncio.sleep((due - datetime.now(UTC)).total_seconds() + 0.05)
        # The tick waits for the stops it makes; the held one's safe state waits for the port.
        ticking = asyncio.create_task(lab.engine.tick())
        rows = {e: await lab.until(e, ("timed_out",)) for e in (on, behind)}
        assert not held.opened.is_set()  # still on the instrument when its timeout was recorded
        held.opened.set()
        assert await ticking == 2

        # The agent's own word on each stopped run comes after, as its late result.
        def late_results() -> list[Any]:
            sql = "SELECT late_result FROM executions WHERE execution_id IN (?, ?)"
            return [r["late_result"] for r in lab.rows(sql, on, behind)]

        await eventually(late_results, until=lambda late: all(late), what="both late results")

        timed_out = rows[on]
        began = at(timed_out["instrument_started_at"])
        assert at(timed_out["dispatched_at"]) <= began <= at(timed_out["completed_at"])
        assert timed_out["instrument_ended_at"] is None  # it had not ended then
        (fact,) = [e for e in lab.events(on_job) if isinstance(e, ExecutionTimedOut)]
        assert (fact.instrument_started_at, fact.instrument_ended_at) == (began, None)
        # The same instant as the agent's result of the stopped run says.
        (late,) = [e for e in lab.events(on_job) if isinstance(e, ExecutionLateResult)]
        assert late.instrument_started_at == began
        assert late.instrument_ended_at is not None

        never = rows[behind]
        assert (never["instrument_started_at"], never["instrument_ended_at"]) == (None, None)
        (fact,) = [e for e in lab.events(behind_job) if isinstance(e, ExecutionTimedOut)]
        assert fact.instrument_started_at is None

        shown_on, listed, history, shown_behind = await api_get(
            lab,
            tmp_path,
            f"/api/scheduler/executions/{on}",
            f"/api/scheduler/executions?job_id={on_job}",
            f"/api/scheduler/jobs/{on_job}/history",
            f"/api/scheduler/executions/{behind}",
        )
        shown = shown_on["execution"]
        assert listed["executions"] == [shown]
        assert shown["status"] == "timed_out"
        assert at(shown["instrument_started_at"]) == began
        assert shown["instrument_ended_at"] is None
        scheduled = at(shown["scheduled_time"])
        assert shown["lateness"]["instrument_started_seconds"] == (
            (began - scheduled).total_seconds()
        )
        assert history["history"]["last_execution_id"] == on
        assert at(history["history"]["last_instrument_started_at"]) == began
        assert history["history"]["last_instrument_ended_at"] is None
        other = shown_behind["execution"]
        assert (other["instrument_started_at"], other["instrument_ended_at"]) == (None, None)
        assert other["lateness"]["instrument_started_seconds"] is None

        assert rebuilt(lab, tmp_path) == view_tables(lab.path)
    finally:
        held.opened.set()
        await lab.close()


class TickingPort:
    """Each exchange with the instrument takes exactly one millisecond of the manual clock:
    the instrument's times then say how many exchanges lay between them."""

    def __init__(self, inner: MessagePort, clock: ManualClock, exchanges: list[str]) -> None:
        self.inner, self.clock, self.exchanges = inner, clock, exchanges

    def write(self, message: str) -> int:
        self.clock.advance(0.001)
        self.exchanges.append(message)
        return self.inner.write(message)

    def query(self, message: str) -> str:
        self.clock.advance(0.001)
        self.exchanges.append(message)
        return self.inner.query(message)


class Scheduler:
    """An engine over a real SQLite file with the given executor, driven by a manual clock."""

    def __init__(self, path: Path, clock: ManualClock, executor: Executor) -> None:
        self.path = path
        self.store = open_store(path)
        self.jobs = JobRepository(self.store)
        self.service = JobService(self.store, clock, default_timezone="UTC", repository=self.jobs)
        self.engine = Engine(self.store, clock, executor, jobs=self.jobs)

    async def run(self, body: dict[str, Any]) -> dict[str, Any]:
        job = {"name": "t", "trigger_type": "interval", "interval_hours": 1, "enabled": False}
        job_id = self.service.create_job({**job, **body}, "tester")
        await self.engine.run_now(job_id)
        await asyncio.gather(*self.engine.tasks().values())
        self.store.settled()
        (row,) = view_rows(self.path, "SELECT * FROM executions WHERE job_id = ?", job_id)
        return row

    def history(self, job_id: str) -> dict[str, Any]:
        with reading_views(self.store) as views:
            found = job_history(views, job_id)
        assert found is not None
        return found

    async def close(self) -> None:
        await self.engine.aclose(grace_seconds=5)
        self.store.close()


@pytest.fixture
async def ticking_bench(
    tmp_path: Path, clock: ManualClock
) -> AsyncIterator[tuple[InProcessExecutor, list[str]]]:
    exchanges: list[str] = []
    bench = open_simulated_bench(
        copy_bench(tmp_path / "bench"),
        wrap=lambda _, port: TickingPort(port, clock, exchanges),
    )
    executor = InProcessExecutor(bench, tmp_path / "data", clock=clock)
    try:
        yield executor, exchanges
    finally:
        await executor.aclose()


async def test_the_in_process_bench_stamps_the_instrument_times_around_its_exchanges(
    tmp_path: Path,
    clock: ManualClock,
    ticking_bench: tuple[InProcessExecutor, list[str]],
) -> None:
    """``LABLINK_NATS=off``: the engine hands the execution to the bench's worker, which reads
    the clock right before the operation's first exchange and right after its last."""
    executor, exchanges = ticking_bench
    scheduler = Scheduler(tmp_path / "scheduler.db", clock, executor)
    await scheduler.engine.open([], [])
    try:
        before = len(exchanges)
        row = await scheduler.run({"schedule_type": "state_capture", "equipment_id": "load_1"})
        made = len(exchanges) - before
        assert row["status"] == "completed", row
        assert made > 5  # identity, every setting and every measurement
        decided = at(row["actual_time"])
        # Nothing touched an instrument between the decision and the hand-over.
        assert at(row["dispatched_at"]) == decided == at(row["instrument_started_at"])
        took = at(row["instrument_ended_at"]) - at(row["instrument_started_at"])
        assert round(took.total_seconds() * 1000) == made
        assert at(row["completed_at"]) == at(row["instrument_ended_at"])
        history = scheduler.history(row["job_id"])
        assert at(history["last_instrument_ended_at"]) == at(row["instrument_ended_at"])
    finally:
        await scheduler.close()


async def test_the_in_process_bench_records_when_a_timed_out_run_began_on_its_instrument(
    tmp_path: Path, clock: ManualClock
) -> None:
    """``LABLINK_NATS=off``: the executor reads its worker's stamp when the timeout is
    recorded, while the operation is still on the instrument."""
    held = Held("power_supply_1")
    bench = open_simulated_bench(copy_bench(tmp_path / "bench"), wrap=held)
    executor = InProcessExecutor(bench, tmp_path / "data", clock=clock)
    scheduler = Scheduler(tmp_path / "scheduler.db", clock, executor)
    await scheduler.engine.open([], [])
    try:
        held.opened.clear()
        job = {"name": "t", "trigger_type": "interval", "interval_hours": 1, "enabled": False}
        job_id = scheduler.service.create_job({**job, **MEASURE_PSU, "timeout_seconds": 5}, "t")
        execution_id = await scheduler.engine.run_now(job_id)
        began = clock.now()
        await eventually(
            lambda: executor.instrument_times(execution_id).started_at,
            until=lambda stamped: stamped is not None,
        )
        clock.advance(6)
        ticking = asyncio.create_task(scheduler.engine.tick())
        (row,) = await eventually(
            lambda: view_rows(
                scheduler.path, "SELECT * FROM executions WHERE execution_id = ?", execution_id
            ),
            until=lambda rows: bool(rows) and rows[0]["status"] == "timed_out",
        )
        held.opened.set()  # the stop's safe state goes after the held exchange
        assert await ticking == 1
    finally:
        held.opened.set()
        await scheduler.close()
        await executor.aclose()
    assert at(row["instrument_started_at"]) == began
    assert row["instrument_ended_at"] is None
    assert at(row["completed_at"]) == began + timedelta(seconds=6)


async def test_the_no_op_executor_records_its_dispatch_and_no_instrument(
    tmp_path: Path, clock: ManualClock
) -> None:
    scheduler = Scheduler(tmp_path / "scheduler.db", clock, NoOpExecutor())
    await scheduler.engine.open([], [])
    try:
        row = await scheduler.run({"schedule_type": "measurement", "equipment_id": "load_1"})
    finally:
        await scheduler.close()
    assert row["status"] == "completed", row
    assert at(row["dispatched_at"]) == at(row["actual_time"])
    assert (row["instrument_started_at"], row["instrument_ended_at"]) == (None, None)


@pytest.mark.parametrize("ending", ["timed_out", "cancelled"])
async def test_a_run_that_ends_without_its_result_keeps_when_it_was_dispatched(
    harness: Harness, clock: ManualClock, ending: str
) -> None:
    harness.executor.hold = True
    job_id = harness.service.create_job(
        {
            "name": "held",
            "trigger_type": "interval",
            "interval_hours": 1,
            "enabled": False,
            "schedule_type": "measurement",
            "equipment_id": "psu_1",
            "timeout_seconds": 5,
        },
        "tester",
    )
    execution_id = await harness.engine.run_now(job_id)
    await harness.settle()
    handed = clock.now()
    if ending == "timed_out":
        await harness.at(handed + timedelta(seconds=6))
    else:
        clock.advance(1)
        assert await harness.engine.cancel(job_id, execution_id)
    (row,) = harness.rows("SELECT * FROM executions WHERE execution_id = ?", execution_id)
    assert row["status"] == ending, row
    assert at(row["dispatched_at"]) == handed
    assert (row["instrument_started_at"], row["instrument_ended_at"]) == (None, None)
