"""Retention: old executions leave the executions view through an event, a replay prunes the
same rows, and nothing that counts (history, statistics, max_executions) loses a run."""

from __future__ import annotations

import re
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from lablink.application import JobService
from lablink.clock import ManualClock
from lablink.errors import InvalidRequest
from lablink.events import ExecutionRequested, ExecutionStarted, ExecutionSucceeded, NewEvent
from lablink.eventstore.chain import ChainCheck
from lablink.eventstore.sqlite import SQLiteEventStore, connect
from lablink.ids import SequentialIds
from lablink.logstore import open_store
from lablink.projections.reading import reading_views
from lablink.projections.runner import CHECKPOINTS, Projector
from lablink.scheduler.retention import RetentionPass
from lablink.scheduler.storage import SchedulerStorage
from tests.support.harness import Harness, api_client
from tests.support.views import views_db

HOURLY: dict[str, Any] = {
    "name": "Hourly Voltage Check",
    "schedule_type": "measurement",
    "equipment_id": "power_supply_1",
    "trigger_type": "interval",
    "interval_hours": 1,
    "parameters": {"command": "get_voltage"},
}
COUNTING_TABLES = ("job_history", "stats_jobs", "stats_job_counts", "stats_open", "stats_buckets")


def table(path: Path, name: str) -> list[tuple[Any, ...]]:
    """A view's rows, from the views of the log at ``path``."""
    conn = sqlite3.connect(views_db(path))
    try:
        return sorted(conn.execute(f"SELECT * FROM {name}").fetchall(), key=repr)
    finally:
        conn.close()


def log(path: Path) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT * FROM events ORDER BY position").fetchall()
    finally:
        conn.close()


def chain_breaks(path: Path) -> list[str]:
    """The log's hash chain walked from its first event: retention must leave it whole."""
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute(
            "SELECT position, event_id, stream_id, version, type, occurred_at, actor,"
            " correlation_id, payload, hash FROM events ORDER BY position"
        ).fetchall()
    finally:
        conn.close()
    check = ChainCheck()
    found = (check.feed(row) for row in rows)
    return [f"{b.position}: {b.kind}" for b in found if b is not None]


def test_no_module_deletes_or_updates_events() -> None:
    """Retention and every other pass drop view rows only: nothing in lablink/ says so to the
    log (and its triggers would refuse it). The one UPDATE is the migration that hashes a
    log made before the chain, which fills only empty hashes, before the triggers exist."""
    root = Path(__file__).parents[2] / "lablink"
    pattern = re.compile(r"\b(?:DELETE\s+FROM|UPDATE)\s+(?:main\.|log\.)?events\b[^\"]*", re.I)
    found = [
        (str(p.relative_to(root)), m.group(0))
        for p in sorted(root.rglob("*.py"))
        for m in pattern.finditer(p.read_text())
    ]
    migration = ("eventstore/sqlite.py", "UPDATE events SET hash = ? WHERE position = ?")
    assert found == [migration]
    assert "if row[9] is None:" in (root / "eventstore" / "sqlite.py").read_text()


def views(conn: sqlite3.Connection) -> dict[str, list[tuple[Any, ...]]]:
    names = [
        n
        for (n,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT IN ('events', ?)",
            (CHECKPOINTS,),
        )
    ]
    return {n: sorted(conn.execute(f"SELECT * FROM {n}").fetchall(), key=repr) for n in names}


def execution_ids(harness: Harness) -> list[str]:
    return [r["execution_id"] for r in harness.rows("SELECT execution_id FROM executions")]


async def old_and_new_runs(harness: Harness) -> tuple[str, list[str], list[str]]:
    """A job fired three times, 40 days of pause, then two more fires: (job, old, new)."""
    start = harness.clock.now()
    job_id = harness.service.create_job(HOURLY, actor="alice")
    for hours in (1, 2, 3):
        await harness.at(start + timedelta(hours=hours))
    old = execution_ids(harness)
    harness.service.pause_job(job_id, actor="alice")
    harness.clock.advance(timedelta(days=40))
    harness.service.resume_job(job_id, actor="alice")
    resumed = harness.clock.now()
    for hours in (1, 2):
        await harness.at(resumed + timedelta(hours=hours))
    new = [e for e in execution_ids(harness) if e not in old]
    assert (len(old), len(new)) == (3, 2)
    return job_id, old, new


async def test_cleanup_removes_old_rows_and_no_count_changes(harness: Harness) -> None:
    _, _, new = await old_and_new_runs(harness)
    counts = {name: table(harness.path, name) for name in COUNTING_TABLES}
    (job_before,) = harness.rows("SELECT execution_count, view FROM jobs")
    log_before = log(harness.path)

    storage = SchedulerStorage(store=harness.store, clock=harness.clock)
    assert storage.cleanup_old_executions(days=30) == 3

    assert sorted(execution_ids(harness)) == sorted(new)
    assert {name: table(harness.path, name) for name in COUNTING_TABLES} == counts
    (history,) = harness.rows("SELECT total_executions, successful FROM job_history")
    assert history == {"total_executions": 5, "successful": 5}
    assert harness.rows("SELECT execution_count, view FROM jobs") == [job_before]
    # The log only grew, by the one pruning fact.
    log_after = log(harness.path)
    assert log_after[: len(log_before)] == log_before
    (pruned,) = log_after[len(log_before) :]
    assert (pruned[2], pruned[4], pruned[6]) == (
        "retention",
        "executions.pruned",
        "cleanup_old_executions",
    )
    assert chain_breaks(harness.path) == []
    # Again: nothing left to prune.
    assert storage.cleanup_old_executions(days=30) == 0
    # Strictly before the cut-off: the run that ended this very instant stays.
    assert storage.cleanup_old_executions(days=0) == 1
    harness.clock.advance(1)
    assert storage.cleanup_old_executions(days=0) == 1
    assert execution_ids(harness) == []
    assert harness.rows("SELECT total_executions FROM job_history") == [{"total_executions": 5}]


async def test_unfinished_executions_are_never_pruned(harness: Harness) -> None:
    harness.executor.hold = True
    job_id = harness.service.create_job(HOURLY, actor="alice")
    await harness.at(harness.clock.now() + timedelta(hours=1))
    (held,) = harness.executor.held()
    harness.clock.advance(timedelta(days=60))
    storage = SchedulerStorage(store=harness.store, clock=harness.clock)
    assert storage.cleanup_old_executions(days=30) == 0
    assert harness.rows("SELECT execution_id, status FROM executions WHERE job_id = ?", job_id)[
        :1
    ] == [{"execution_id": held, "status": "running"}]


async def test_max_executions_count_survives_pruning(harness: Harness) -> None:
    start = harness.clock.now()
    job_id = harness.service.create_job({**HOURLY, "max_executions": 3}, actor="alice")
    for hours in (1, 2):
        await harness.at(start + timedelta(hours=hours))
    harness.clock.advance(1)
    storage = SchedulerStorage(store=harness.store, clock=harness.clock)
    assert storage.cleanup_old_executions(days=0) == 2
    assert execution_ids(harness) == []
    for hours in (3, 4, 5):
        await harness.at(start + timedelta(hours=hours))
    # The third fire is the last: the two pruned ones still count.
    assert len(execution_ids(harness)) == 1
    job = harness.job(job_id)
    assert (job["status"], job["next_run_time"], job["execution_count"]) == ("completed", None, 3)
    # And after a restart, which loads the job again.
    await harness.close()
    await harness.start()
    await harness.at(start + timedelta(hours=6))
    assert len(execution_ids(harness)) == 1
    assert harness.job(job_id)["status"] == "completed"


async def test_a_rebuild_after_pruning_gives_the_same_views(harness: Harness) -> None:
    _, old, new = await old_and_new_runs(harness)
    SchedulerStorage(store=harness.store, clock=harness.clock).cleanup_old_executions(days=30)
    harness.clock.advance(timedelta(hours=3))  # a missed run and a catch-up, after the pruning
    await harness.at(harness.clock.now())
    with reading_views(harness.store) as conn:
        live = views(conn)
    target = connect(harness.path.parent / "rebuilt.db")
    try:
        Projector().rebuild(harness.store, target)
        assert views(target) == live
    finally:
        target.close()
    kept = {row[0] for row in live["executions"]}
    assert set(new) < kept
    assert not kept & set(old)


def test_scheduler_storage_as_the_guide_shows_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`SchedulerStorage()` finds data/scheduler.db from the working directory (or
    LABLINK_DATA_DIR) and prunes by the system clock: rows from 2020 go, rows of 2100 stay."""
    for name in ("LABLINK_DATA_DIR", "LABLINK_TIMEZONE", "LABLINK_NATS", "LABLINK_EXECUTOR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    store = open_store(tmp_path / "data" / "scheduler.db")
    clock = ManualClock(datetime(2020, 1, 6, 9, 0, tzinfo=UTC))
    service = JobService(store, clock, default_timezone="UTC", ids=SequentialIds())
    job_id = service.create_job(HOURLY, actor="alice")
    run(store, clock, job_id, "exec_2020_a")
    run(store, clock, job_id, "exec_2020_b")
    clock.set(datetime(2100, 1, 1, tzinfo=UTC))
    run(store, clock, job_id, "exec_2100")
    store.close()

    from lablink.scheduler.storage import SchedulerStorage

    storage = SchedulerStorage()
    deleted = storage.cleanup_old_executions(days=30)

    assert deleted == 2
    db = tmp_path / "data" / "scheduler.db"
    assert [r[0] for r in table(db, "executions")] == ["exec_2100"]
    assert [(r[0], r[2]) for r in table(db, "job_history")] == [(job_id, 3)]
    monkeypatch.setenv("LABLINK_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path.parent)
    assert SchedulerStorage().cleanup_old_executions(days=30) == 0
    assert SchedulerStorage(db).db_path == db


def test_days_must_be_a_finite_non_negative_number(tmp_path: Path) -> None:
    storage = SchedulerStorage(tmp_path / "scheduler.db")
    for days in (-1, float("nan"), float("inf"), "30", True):
        with pytest.raises(InvalidRequest) as refused:
            storage.cleanup_old_executions(days=days)  # type: ignore[arg-type]
        assert refused.value.errors[0].field == "days"
    assert not (tmp_path / "scheduler.db").exists()  # refused before opening anything
    with pytest.raises(FileNotFoundError, match="no LabLink database at"):
        storage.cleanup_old_executions(days=30)
    assert not (tmp_path / "scheduler.db").exists()


def run(store: SQLiteEventStore, clock: ManualClock, job_id: str, execution_id: str) -> None:
    now = clock.now()
    events: list[Any] = [
        ExecutionRequested(
            job_id=job_id,
            execution_id=execution_id,
            scheduled_time=now,
            actual_time=now,
            trigger_info="manual",
        ),
        ExecutionStarted(job_id=job_id, execution_id=execution_id, started_at=now),
        ExecutionSucceeded(
            job_id=job_id,
            execution_id=execution_id,
            started_at=now,
            completed_at=now + timedelta(seconds=2),
            result={"value": 1.0},
        ),
    ]
    store.append(
        job_id,
        store.stream_version(job_id),
        [
            NewEvent(event=e, actor="scheduler", occurred_at=now, correlation_id=execution_id)
            for e in events
        ],
    )
    clock.advance(timedelta(minutes=5))


# -- the daily pass ------------------------------------------------------------------------------


def pruned_events(store: SQLiteEventStore) -> list[tuple[datetime, str]]:
    return [(r.occurred_at, r.actor) for r in store.read_stream("retention")]


async def test_daily_pass_runs_on_start_then_once_a_day(harness: Harness) -> None:
    _, old, new = await old_and_new_runs(harness)
    clock = harness.clock
    daily = RetentionPass(harness.store, clock, days=30)
    assert daily.next_run() == clock.now()  # never pruned: due now
    await daily.start()
    try:
        first = clock.now()
        assert sorted(execution_ids(harness)) == sorted(new)
        assert pruned_events(harness.store) == [(first, "retention")]
        assert daily.next_run() == first + timedelta(days=1)
        clock.advance(timedelta(hours=23, minutes=59))
        assert daily.run_if_due() is None
        clock.advance(timedelta(minutes=1))
        assert daily.run_if_due() == 0
        assert pruned_events(harness.store)[-1] == (first + timedelta(days=1), "retention")
    finally:
        await daily.aclose()

    # A restart finds the last pass in the log: no second pass the same day.
    clock.advance(timedelta(hours=5))
    again = RetentionPass(harness.store, clock, days=30)
    assert again.next_run() == first + timedelta(days=2)
    await again.start()
    await again.aclose()
    assert len(pruned_events(harness.store)) == 2
    # 31 days after the new runs, they go too; their totals stay.
    clock.advance(timedelta(days=31))
    assert again.run_once(clock.now()) == 2
    assert execution_ids(harness) == []
    assert harness.rows("SELECT total_executions FROM job_history") == [{"total_executions": 5}]
    assert old  # pruned on start, above


async def test_days_zero_switches_the_pass_off(harness: Harness) -> None:
    await old_and_new_runs(harness)
    off = RetentionPass(harness.store, harness.clock, days=0)
    assert (off.enabled, off.next_run(), off.due(harness.clock.now())) == (False, None, False)
    await off.start()
    await off.aclose()
    assert pruned_events(harness.store) == []
    assert len(execution_ids(harness)) == 5
    with pytest.raises(InvalidRequest):
        RetentionPass(harness.store, harness.clock, days=-1)


# -- what the API shows ----------------------------------------------------------------------------


async def test_pruned_executions_leave_the_list_but_not_the_totals(harness: Harness) -> None:
    job_id, old, new = await old_and_new_runs(harness)
    async with api_client(harness, auth=False) as client:

        async def read() -> dict[str, Any]:
            return {
                "history": (await client.get(f"/api/scheduler/jobs/{job_id}/history")).json(),
                "statistics": (await client.get("/api/scheduler/statistics")).json(),
                "job": (await client.get(f"/api/scheduler/jobs/{job_id}")).json(),
            }

        listed = (await client.get("/api/scheduler/executions")).json()
        assert sorted(e["execution_id"] for e in listed["executions"]) == sorted(old + new)
        before = await read()
        assert before["history"]["history"]["total_executions"] == 5

        deleted = SchedulerStorage(
            store=harness.store, clock=harness.clock
        ).cleanup_old_executions()
        assert deleted == 3

        listed = (await client.get("/api/scheduler/executions")).json()
        assert sorted(e["execution_id"] for e in listed["executions"]) == sorted(new)
        assert listed["count"] == 2
        gone = await client.get(f"/api/scheduler/executions/{old[0]}")
        assert gone.status_code == 404
        assert (await read()) == before
        # Their facts stay in the log, and so in the audit trail.
        trail = (await client.get(f"/api/audit?job_id={job_id}&type=execution.completed")).json()
        assert sorted(e["correlation_id"] for e in trail["events"]) == sorted(old + new)
        pruning = (await client.get("/api/audit?type=executions.pruned")).json()["events"]
        assert [(e["actor"], e["data"]["days"]) for e in pruning] == [
            ("cleanup_old_executions", 30.0)
        ]
