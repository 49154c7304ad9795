"""Replay equals live: after any valid sequence of commands and execution facts, dropping
every projection and folding the log again from position 0 gives the same rows as folding it
live, in batches of any sizes, with a crash anywhere followed by a catch-up, and as of any
instant (``until``). Each projection has one fold (``apply``) for all of these."""

from __future__ import annotations

import os
import sqlite3
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from lablink.application import JobService
from lablink.clock import ManualClock
from lablink.errors import LabLinkError
from lablink.events import (
    ApiKeyCreated,
    ApiKeyRevoked,
    ExecutionCancelled,
    ExecutionCoalesced,
    ExecutionError,
    ExecutionFailed,
    ExecutionInterrupted,
    ExecutionLateResult,
    ExecutionMissed,
    ExecutionProgressed,
    ExecutionQueued,
    ExecutionRequested,
    ExecutionSkipped,
    ExecutionsPruned,
    ExecutionStarted,
    ExecutionSucceeded,
    ExecutionTimedOut,
    NewEvent,
    RecordedEvent,
)
from lablink.eventstore import ANY
from lablink.eventstore.base import format_instant
from lablink.eventstore.sqlite import SQLiteEventStore, connect
from lablink.ids import SequentialIds
from lablink.logstore import open_store
from lablink.projections import runner
from lablink.projections.base import fast_instant
from lablink.projections.executions import ExecutionsProjection
from lablink.projections.history import HistoryProjection
from lablink.projections.runner import CHECKPOINTS, META, Projector, default_projections
from lablink.projections.statistics import _slow_bucket, bucket_of

START = datetime(2026, 3, 27, 12, 0, tzinfo=UTC)

TEMPLATES: list[dict[str, Any]] = [
    {"trigger_type": "interval", "interval_minutes": 30},
    {"trigger_type": "interval", "interval_seconds": 5, "conflict_policy": "queue"},
    {"trigger_type": "cron", "cron_expression": "0 9-17 * * 1-5"},
    {"trigger_type": "cron", "cron_expression": "*/15 * * * *", "timezone": "America/New_York"},
    {"trigger_type": "daily", "time_of_day": "02:30:00"},  # inside Berlin's spring-forward gap
    {"trigger_type": "weekly", "day_of_week": 6, "time_of_day": "08:00:00"},
    {"trigger_type": "monthly", "day_of_month": -1, "time_of_day": "12:00:00"},
    {"trigger_type": "monthly", "day_of_month": 31, "time_of_day": "23:59:59"},
    {"trigger_type": "date", "run_date": "2026-04-01T10:00:00"},
    {"trigger_type": "interval", "interval_hours": 1, "max_executions": 3, "enabled": False},
]
SCHEDULE_TYPES = ["measurement", "state_capture", "equipment_test", "command", "acquisition"]
PARAMETERS = {
    "measurement": {"command": "get_voltage"},
    "state_capture": {},
    "equipment_test": {"test_name": "self_test"},
    "command": {"command": "set_current", "parameters": {"value": 2.5}},
    "acquisition": {"duration": 60, "sample_rate": 1000, "channels": [1, 2]},
}
FINALS = ["completed", "failed", "timed_out", "cancelled", "interrupted"]
# A result of every shape the results view reads (value, readings, a capture's summary).
RESULT: dict[str, Any] = {
    "value": 1.25,
    "unit": "V",
    "measurements": {"voltage": {"value": 1.25, "unit": "V"}},
    "settings": {"output": {"value": True, "unit": "", "writable": True}},
    "data": {"object": "exec.csv", "size": 3, "rows": 1, "sha256": "ab", "status": "stored"},
}

create_step = st.tuples(
    st.just("create"), st.integers(0, len(TEMPLATES) - 1), st.sampled_from(SCHEDULE_TYPES)
)
run_step = st.tuples(
    st.just("run"),
    st.integers(0, 20),
    st.sampled_from(["scheduled", "manual", "catch_up"]),
    st.sampled_from([*FINALS, "running", "queued"]),
)
step = st.one_of(
    create_step,
    st.tuples(st.just("update"), st.integers(0, 20), st.sampled_from(["name", "trigger", "off"])),
    st.tuples(st.just("pause"), st.integers(0, 20)),
    st.tuples(st.just("resume"), st.integers(0, 20)),
    st.tuples(st.just("delete"), st.integers(0, 20)),
    st.tuples(st.just("complete"), st.integers(0, 20)),
    st.tuples(st.just("advance"), st.integers(1, 4 * 86400)),
    run_step,
    run_step,
    run_step,
    st.tuples(st.just("skip"), st.integers(0, 20)),
    st.tuples(st.just("miss"), st.integers(0, 20), st.integers(1, 10_000)),
    st.tuples(st.just("coalesce"), st.integers(0, 20), st.integers(1, 300)),
    st.tuples(st.just("finish"), st.integers(0, 20), st.sampled_from(FINALS)),
    # An agent's result for an ended execution (possibly pruned already, or never known).
    st.tuples(st.just("late"), st.integers(0, 40), st.sampled_from(["completed", "failed"])),
    st.tuples(st.just("prune"), st.integers(0, 40)),
    # Few ids and hashes, so that keys are replaced and hashes collide (INSERT OR REPLACE).
    st.tuples(st.just("key"), st.integers(0, 3), st.integers(0, 2)),
    st.tuples(st.just("revoke"), st.integers(0, 3)),
)


def snapshot(conn: sqlite3.Connection) -> dict[str, list[tuple[Any, ...]]]:
    tables = [
        name
        for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name NOT IN ('events', ?, ?)"
            " ORDER BY name",
            (CHECKPOINTS, META),
        )
    ]
    return {
        table: sorted(conn.execute(f"SELECT * FROM {table}").fetchall(), key=repr)
        for table in tables
    }


class World:
    """Drives a real SQLite store through the service and raw execution facts."""

    def __init__(self, store: SQLiteEventStore) -> None:
        self.store = store
        self.clock = ManualClock(START)
        self.service = JobService(
            store, self.clock, default_timezone="Europe/Berlin", ids=SequentialIds()
        )
        self.jobs: list[str] = []
        self.open: dict[str, tuple[str, Any]] = {}  # execution id -> (job id, started_at)
        self.ended: list[tuple[str, str]] = []  # (job id, execution id)
        self.executions = 0

    def job(self, index: int) -> str | None:
        return self.jobs[index % len(self.jobs)] if self.jobs else None

    def fact(self, job_id: str, *events: Any) -> None:
        self.store.append(
            job_id,
            self.store.stream_version(job_id),
            [
                NewEvent(
                    event=e,
                    actor="scheduler",
                    occurred_at=self.clock.now(),
                    correlation_id=getattr(e, "execution_id", None),
                )
                for e in events
            ],
        )

    def final(self, job_id: str, execution_id: str, status: str, started: Any) -> Any:
        now = self.clock.now()
        common: dict[str, Any] = {
            "job_id": job_id,
            "execution_id": execution_id,
            "completed_at": now,
            "started_at": started,
        }
        # When it was dispatched, and the instrument's own times (an agent's clock: they
        # need not fall between the scheduler's).
        dispatched: dict[str, Any] = {"dispatched_at": started + timedelta(milliseconds=1)}
        instrument: dict[str, Any] = {
            "instrument_started_at": started + timedelta(milliseconds=2),
            "instrument_ended_at": started + timedelta(milliseconds=7),
        }
        if status == "completed":
            return ExecutionSucceeded(**common, result=RESULT, **dispatched, **instrument)
        if status == "failed":
            return ExecutionFailed(
                **common,
                error=ExecutionError(type="x", message="boom", code=-1),
                **dispatched,
                **instrument,
            )
        if status == "timed_out":
            return ExecutionTimedOut(**common, timeout_seconds=60, **dispatched)
        if status == "cancelled":
            return ExecutionCancelled(**common, reason="operator", **dispatched)
        return ExecutionInterrupted(**common)

    def apply(self, action: tuple[Any, ...]) -> None:
        kind = action[0]
        now = self.clock.now()
        try:
            if kind == "create":
                template = TEMPLATES[action[1]]
                body = {
                    "name": f"job {len(self.jobs)}",
                    "schedule_type": action[2],
                    "equipment_id": "psu_1",
                    "parameters": PARAMETERS[action[2]],
                    **template,
                }
                self.jobs.append(self.service.create_job(body, actor="alice"))
                return
            if kind == "advance":
                self.clock.advance(action[1])
                return
            if kind == "prune":
                cutoff = now - timedelta(days=action[1])
                self.store.append(
                    "retention",
                    ANY,
                    [
                        NewEvent(
                            event=ExecutionsPruned(cutoff=cutoff, days=action[1]),
                            actor="retention",
                            occurred_at=now,
                        )
                    ],
                )
                return
            if kind in ("key", "revoke"):
                event: Any = (
                    ApiKeyCreated(
                        key_id=f"key_{action[1]}",
                        name=f"key {action[1]} at {now.isoformat()}",
                        role="operator",
                        key_hash=f"hash_{action[2]}",
                    )
                    if kind == "key"
                    else ApiKeyRevoked(key_id=f"key_{action[1]}")
                )
                self.store.append(
                    f"apikey:key_{action[1]}",
                    ANY,
                    [NewEvent(event=event, actor="admin", occurred_at=now)],
                )
                return
            job_id = self.job(action[1])
            if job_id is None:
                return
            if kind == "update":
                options: dict[str, dict[str, Any]] = {
                    "name": {"name": f"renamed at {now.isoformat()}"},
                    "trigger": {"trigger_type": "interval", "interval_minutes": 7},
                    "off": {"enabled": False},
                }
                changes = options[action[2]]
                self.service.update_job(job_id, changes, actor="bob")
            elif kind == "pause":
                self.service.pause_job(job_id, actor="bob")
            elif kind == "resume":
                self.service.resume_job(job_id, actor="bob")
            elif kind == "delete":
                self.service.delete_job(job_id, actor="bob")
            elif kind == "complete":
                self.service.complete_job(job_id, actor="bob")
            elif kind == "run":
                self.executions += 1
                execution_id = f"exec_{self.executions}"
                opened: Any = (ExecutionQueued if action[3] == "queued" else ExecutionRequested)(
                    job_id=job_id,
                    execution_id=execution_id,
                    scheduled_time=now,
                    actual_time=now,
                    trigger_info=action[2],
                )
                events: list[Any] = [opened]
                if action[3] != "queued":
                    events.append(
                        ExecutionStarted(job_id=job_id, execution_id=execution_id, started_at=now)
                    )
                    events.append(
                        ExecutionProgressed(job_id=job_id, execution_id=execution_id, progress=0.5)
                    )
                if action[3] in FINALS:
                    events.append(self.final(job_id, execution_id, action[3], now))
                    self.ended.append((job_id, execution_id))
                else:
                    self.open[execution_id] = (job_id, now if action[3] == "running" else None)
                self.fact(job_id, *events)
            elif kind == "skip":
                self.executions += 1
                self.fact(
                    job_id,
                    ExecutionSkipped(
                        job_id=job_id,
                        execution_id=f"exec_{self.executions}",
                        scheduled_time=now,
                        actual_time=now,
                        trigger_info="scheduled",
                        reason="already running",
                    ),
                )
            elif kind == "miss":
                self.executions += 1
                self.fact(
                    job_id,
                    ExecutionMissed(
                        job_id=job_id,
                        execution_id=f"exec_{self.executions}",
                        scheduled_time=now - timedelta(seconds=action[2]),
                        actual_time=now,
                        missed_count=action[2],
                        window_start=now - timedelta(seconds=action[2]),
                        window_end=now - timedelta(seconds=1),
                        reason="down",
                    ),
                )
            elif kind == "coalesce":
                # Fires within the grace merged into a run recorded with them (the engine's
                # order: the coalesced record, then the run it joined).
                self.executions += 2
                run_id = f"exec_{self.executions - 1}"
                self.fact(
                    job_id,
                    ExecutionCoalesced(
                        job_id=job_id,
                        execution_id=f"exec_{self.executions}",
                        scheduled_time=now - timedelta(seconds=action[2]),
                        actual_time=now,
                        coalesced_count=action[2],
                        window_start=now - timedelta(seconds=action[2]),
                        window_end=now - timedelta(seconds=1),
                        into_execution_id=run_id,
                        reason="late",
                    ),
                    ExecutionRequested(
                        job_id=job_id,
                        execution_id=run_id,
                        scheduled_time=now,
                        actual_time=now,
                        trigger_info="catch_up",
                    ),
                    ExecutionStarted(job_id=job_id, execution_id=run_id, started_at=now),
                )
                self.open[run_id] = (job_id, now)
            elif kind == "finish" and self.open:
                execution_id = sorted(self.open)[action[1] % len(self.open)]
                owner, started = self.open.pop(execution_id)
                if started is None:
                    self.fact(
                        owner,
                        ExecutionStarted(job_id=owner, execution_id=execution_id, started_at=now),
                    )
                    started = now
                self.fact(owner, self.final(owner, execution_id, action[2], started))
                self.ended.append((owner, execution_id))
            elif kind == "late" and self.ended:
                owner, execution_id = self.ended[action[1] % len(self.ended)]
                failed = action[2] == "failed"
                self.fact(
                    owner,
                    ExecutionLateResult(
                        job_id=owner,
                        execution_id=execution_id,
                        received_at=now,
                        status=action[2],
                        result={} if failed else {"value": 2, "unit": "V"},
                        error=ExecutionError(type="stopped", message="stopped") if failed else None,
                        agent_id="agent-1",
                        equipment_id="psu_1",
                        reported_at=now - timedelta(seconds=3),
                        instrument_started_at=now - timedelta(seconds=5),
                        instrument_ended_at=now - timedelta(seconds=4),
                    ),
                )
        except LabLinkError:
            if kind == "create":
                raise  # every template is valid: a refusal here is a bug
            # Other refused commands write nothing; the property covers them too.


@pytest.mark.slow
@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(st.lists(create_step, min_size=1, max_size=4), st.lists(step, min_size=5, max_size=40))
def test_rebuild_equals_live(creates: list[tuple[Any, ...]], steps: list[tuple[Any, ...]]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "scheduler.db"
        store = open_store(path)
        world = World(store)
        for action in creates + steps:
            world.apply(action)
        live = snapshot(store.views.conn)
        positions = store.last_position()

        # In place (views.db), as `lablink replay` does.
        with store.views.write_lock:
            folded = Projector().rebuild(store, store.views.conn)
        assert folded == positions
        assert snapshot(store.views.conn) == live
        event("jobs rows: " + str(min(len(live["jobs"]), 3)))
        event("execution rows: " + str(min(len(live["executions"]), 3)))

        # Into another file, as `lablink replay --output` does.
        target = connect(Path(folder) / "copy.db")
        Projector().rebuild(store, target)
        assert snapshot(target) == live
        target.close()
        store.close()


# -- live folding in batches of any size, crashes, and replay to an instant ---------------------


def fold_live(
    events: Sequence[RecordedEvent], path: Path, sizes: Sequence[int], crash_at: int | None = None
) -> sqlite3.Connection:
    """Fold ``events`` as the follower does, a batch per transaction (rows and checkpoints
    together), batch sizes taken in turn from ``sizes``. With ``crash_at``, the batch that
    reaches that many events is folded but never committed, and the process "dies": the
    connection is dropped with it, and so is every projection's memory. The returned
    connection is a fresh one (the views as a restart finds them)."""
    conn = connect(path)
    projector = Projector()
    projector.create(conn)
    done, turn = 0, 0
    while done < len(events):
        batch = list(events[done : done + sizes[turn % len(sizes)]])
        turn += 1
        conn.execute("BEGIN IMMEDIATE")
        projector.apply(conn, batch)
        if crash_at is not None and done < crash_at <= done + len(batch):
            conn.execute("ROLLBACK")  # what a crash before the COMMIT leaves on disk
            break
        conn.execute("COMMIT")
        done += len(batch)
    conn.close()
    return connect(path)


def rebuilt(
    store: SQLiteEventStore, path: Path, **options: Any
) -> tuple[dict[str, list[tuple[Any, ...]]], dict[str, int], int]:
    """A rebuild into another file: (rows, checkpoints, events folded)."""
    target = connect(path)
    try:
        projector = Projector()
        folded = projector.rebuild(store, target, **options)
        return snapshot(target), projector.checkpoints(target), folded
    finally:
        target.close()


batch_sizes = st.lists(st.integers(1, 12), min_size=1, max_size=5)


@pytest.mark.slow
@settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    st.lists(create_step, min_size=1, max_size=4),
    st.lists(step, min_size=5, max_size=60),
    batch_sizes,
    st.integers(0, 100),
    st.integers(0, 100),
)
def test_live_batches_of_any_size_and_a_crash_anywhere_then_catch_up_equal_a_rebuild(
    creates: list[tuple[Any, ...]],
    steps: list[tuple[Any, ...]],
    sizes: list[int],
    crash_percent: int,
    until_percent: int,
) -> None:
    """The one fold, three ways: live in batches of random sizes; live with a crash at a
    random point (a batch folded, never committed, the process gone) and then the catch-up
    a restart runs; and a rebuild from position 0. Also as of any instant: the rebuild
    ``until`` it equals the live fold of the events up to it."""
    with tempfile.TemporaryDirectory() as folder:
        store = open_store(Path(folder) / "scheduler.db")
        world = World(store)
        for action in creates + steps:
            world.apply(action)
        log = list(store.read_all())
        expected_rows, expected_checkpoints, folded = rebuilt(store, Path(folder) / "rebuilt.db")
        assert folded == len(log)
        assert set(expected_checkpoints.values()) == {len(log)}

        live = fold_live(log, Path(folder) / "live.db", sizes)
        assert snapshot(live) == expected_rows
        live.close()

        crash_at = 1 + (len(log) - 1) * crash_percent // 100
        crashed = fold_live(log, Path(folder) / "crashed.db", sizes, crash_at=crash_at)
        behind = Projector().checkpoints(crashed)
        assert max(behind.values()) < crash_at, "a checkpoint ran ahead of its rows"
        caught_up = Projector()
        assert caught_up.catch_up(store, crashed) == len(log) - min(behind.values())
        assert snapshot(crashed) == expected_rows
        assert caught_up.checkpoints(crashed) == expected_checkpoints
        crashed.close()

        until = START + (world.clock.now() - START) * until_percent / 100
        prefix = [e for e in log if e.occurred_at <= until]
        partial = fold_live(prefix, Path(folder) / "live-until.db", sizes)
        rows, checkpoints, folded = rebuilt(store, Path(folder) / "until.db", until=until)
        assert folded == len(prefix)
        assert rows == snapshot(partial)
        assert set(checkpoints.values()) == {prefix[-1].position if prefix else 0}
        partial.close()
        event("folded until: " + ("all" if len(prefix) == len(log) else "part"))
        event("crashed at: " + ("start" if not min(behind.values()) else "later"))
        store.close()


class FailingExecutions(ExecutionsProjection):
    """The executions fold, failing (as a full disk would) from the n-th batch it is given."""

    def __init__(self, fail_at: int) -> None:
        super().__init__()
        self.batches = 0
        self.fail_at = fail_at

    def apply(self, conn: sqlite3.Connection, events: Sequence[RecordedEvent]) -> None:
        self.batches += 1
        if self.batches >= self.fail_at:
            raise RuntimeError("the disk is full")
        super().apply(conn, events)


def test_a_rebuild_that_fails_part_way_leaves_no_checkpoint_ahead_of_its_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Small batches and transactions, so that the rebuild commits some before it fails: what
    it committed is whole (rows and checkpoints agree), and a catch-up folds the rest into
    what a full rebuild gives."""
    monkeypatch.setattr(runner, "REBUILD_BATCH", 4)
    monkeypatch.setattr(runner, "REBUILD_COMMIT_EVERY", 8)
    store = open_store(tmp_path / "scheduler.db")
    world = World(store)
    for action in [
        ("create", 0, "measurement"),
        ("create", 1, "command"),
        *[("run", i, "manual", "completed") for i in range(6)],
        ("run", 1, "scheduled", "running"),
    ]:
        world.apply(action)
    log = list(store.read_all())
    expected, expected_checkpoints, _ = rebuilt(store, tmp_path / "full.db")
    target = connect(tmp_path / "target.db")
    projector = Projector(
        [
            FailingExecutions(fail_at=4) if p.name == "executions" else p
            for p in default_projections()
        ]
    )
    with pytest.raises(RuntimeError, match="the disk is full"):
        projector.rebuild(store, target)
    # Batches of 4: the first two committed together (8 events); the third went into the next
    # transaction, and the fourth failed, which rolled both back.
    checkpoints = projector.checkpoints(target)
    assert set(checkpoints.values()) == {8}
    assert snapshot(target) == snapshot(fold_live(log[:8], tmp_path / "eight.db", [8]))
    resumed = Projector()
    assert resumed.catch_up(store, target) == len(log) - 8
    assert snapshot(target) == expected
    assert resumed.checkpoints(target) == expected_checkpoints
    target.close()
    store.close()


@pytest.mark.slow
@settings(
    max_examples=15,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    st.lists(create_step, min_size=1, max_size=4),
    st.lists(step, min_size=5, max_size=60),
    st.integers(0, 100),
)
def test_a_rebuild_in_two_processes_equals_one_in_one_until_any_instant(
    creates: list[tuple[Any, ...]], steps: list[tuple[Any, ...]], percent: int
) -> None:
    """The second process runs the same folds on the same log up to the same position: its
    rows and checkpoints, copied back, are those of the one-process rebuild."""
    with tempfile.TemporaryDirectory() as folder:
        store = open_store(Path(folder) / "scheduler.db")
        world = World(store)
        for action in creates + steps:
            world.apply(action)
        until = START + (world.clock.now() - START) * percent / 100
        for moment in (until, None):
            one = rebuilt(store, Path(folder) / f"one-{moment}.db", until=moment, processes=1)
            two = rebuilt(store, Path(folder) / f"two-{moment}.db", until=moment, processes=2)
            assert two == one
        assert one[0] == snapshot(store.views.conn)
        store.close()


class FailingHistory(HistoryProjection):
    """The history fold, failing as a full disk would."""

    def apply(self, conn: sqlite3.Connection, events: Sequence[RecordedEvent]) -> None:
        raise RuntimeError("the disk is full")


def test_a_second_process_that_fails_leaves_its_projections_empty_at_checkpoint_0(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing the second process folded reaches the views unless it all does, with its
    checkpoints; what this process folded stands with its own; a catch-up does the rest."""
    # The second process unpickles FailingHistory from this module: it must find it.
    here = str(Path(__file__).parent)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([here, os.environ.get("PYTHONPATH", "")]))
    store = open_store(tmp_path / "scheduler.db")
    world = World(store)
    for action in [
        ("create", 0, "measurement"),
        *[("run", 0, "manual", "completed") for _ in range(3)],
    ]:
        world.apply(action)
    last = store.last_position()
    expected, expected_checkpoints, _ = rebuilt(store, tmp_path / "full.db")
    target = connect(tmp_path / "target.db")
    projector = Projector(
        [FailingHistory() if p.name == "job_history" else p for p in default_projections()]
    )
    with pytest.raises(RuntimeError, match="the disk is full"):
        projector.rebuild(store, target, processes=2)
    checkpoints = projector.checkpoints(target)
    for name in runner.FOLDED_HERE:  # folded by this process: executions, results
        assert checkpoints.pop(name) == last
    assert set(checkpoints.values()) == {0}
    assert target.execute("SELECT COUNT(*) FROM executions").fetchone() == (3,)
    for table in ("jobs", "job_history", "stats_jobs"):
        assert target.execute(f"SELECT COUNT(*) FROM {table}").fetchone() == (0,)
    resumed = Projector()
    assert resumed.catch_up(store, target) == last
    assert snapshot(target) == expected
    assert resumed.checkpoints(target) == expected_checkpoints
    target.close()
    store.close()


@given(
    st.datetimes(
        min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 31), timezones=st.timezones()
    )
    | st.datetimes(min_value=datetime(2, 1, 1), timezones=st.just(UTC))
)
# In UTC the year 999: a zone must not let the year's digits through uncounted.
@example(datetime(1000, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=1))))
def test_fast_instants_are_the_stored_text(value: datetime) -> None:
    decoded = msgspec.json.decode(msgspec.json.encode(value), type=datetime)
    for instant in (value, decoded):
        assert fast_instant(instant) == format_instant(instant)
        assert bucket_of(instant) == _slow_bucket(instant)
