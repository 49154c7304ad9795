"""Replay equals live: after any valid sequence of commands and execution facts, dropping
every projection and folding the log again from position 0 gives the same rows."""

from __future__ import annotations

import sqlite3
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
import sqlite_utils
from hypothesis import HealthCheck, event, given, settings
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
from lablink.projections.base import Projection
from lablink.projections.bulk import BulkFold, Logged, Rows, fast_instant
from lablink.projections.executions import ExecutionsProjection
from lablink.projections.jobs import JobsProjection
from lablink.projections.runner import CHECKPOINTS, Projector, default_projections
from lablink.projections.statistics import _fast_bucket, bucket_of

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
            "SELECT name FROM sqlite_master WHERE type='table' AND name NOT IN ('events', ?)"
            " ORDER BY name",
            (CHECKPOINTS,),
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
        if status == "completed":
            return ExecutionSucceeded(**common, result={"v": 1})
        if status == "failed":
            return ExecutionFailed(
                **common, error=ExecutionError(type="x", message="boom", code=-1)
            )
        if status == "timed_out":
            return ExecutionTimedOut(**common, timeout_seconds=60)
        if status == "cancelled":
            return ExecutionCancelled(**common, reason="operator")
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
                        result={} if failed else {"v": 2},
                        error=ExecutionError(type="stopped", message="stopped") if failed else None,
                        agent_id="agent-1",
                        equipment_id="psu_1",
                        reported_at=now - timedelta(seconds=3),
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
        live = snapshot(store.conn)
        positions = store.last_position()

        # In place, as `lablink replay` does.
        with store.lock:
            folded = Projector().rebuild(store, store.conn)
        assert folded == positions
        assert snapshot(store.conn) == live
        event("jobs rows: " + str(min(len(live["jobs"]), 3)))
        event("execution rows: " + str(min(len(live["executions"]), 3)))

        # Into another file, as `lablink replay --output` does.
        target = connect(Path(folder) / "copy.db")
        Projector().rebuild(store, target)
        assert snapshot(target) == live
        target.close()
        store.close()


# -- the bulk rebuild ---------------------------------------------------------------------------


class Generic:
    """A projection seen without its bulk path, as one is until it gets one."""

    def __init__(self, inner: Projection) -> None:
        self.inner = inner
        self.name = inner.name
        self.tables = inner.tables

    def create(self, db: sqlite_utils.Database) -> None:
        self.inner.create(db)

    def apply(self, conn: sqlite3.Connection, events: Sequence[RecordedEvent]) -> None:
        self.inner.apply(conn, events)


def rebuilt(
    store: SQLiteEventStore, path: Path, projector: Projector, **options: Any
) -> tuple[dict[str, list[tuple[Any, ...]]], dict[str, int], int]:
    target = connect(path)
    try:
        folded = projector.rebuild(store, target, **options)
        return snapshot(target), projector.checkpoints(target), folded
    finally:
        target.close()


@pytest.mark.slow
@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    st.lists(create_step, min_size=1, max_size=4),
    st.lists(step, min_size=5, max_size=60),
    st.integers(0, 100),
)
def test_bulk_rebuild_equals_generic_until_any_instant_and_in_two_processes(
    creates: list[tuple[Any, ...]], steps: list[tuple[Any, ...]], percent: int
) -> None:
    """The bulk folds, alone, beside generic ones and in a second process, give the rows and
    checkpoints of the generic fold, as of any instant."""
    with tempfile.TemporaryDirectory() as folder:
        store = open_store(Path(folder) / "scheduler.db")
        world = World(store)
        for action in creates + steps:
            world.apply(action)
        until = START + (world.clock.now() - START) * percent / 100
        generic = Projector([Generic(p) for p in default_projections()])
        mixed = Projector([Generic(p) if i % 2 else p for i, p in enumerate(default_projections())])
        expected = rebuilt(store, Path(folder) / "generic.db", generic, until=until)
        assert rebuilt(store, Path(folder) / "bulk.db", Projector(), until=until) == expected
        assert (
            rebuilt(store, Path(folder) / "mixed.db", mixed, until=until, processes=2) == expected
        )
        live = snapshot(store.conn)
        assert rebuilt(store, Path(folder) / "two.db", Projector(), processes=2)[0] == live
        event("folded until: " + ("all" if expected[2] == store.last_position() else "part"))
        store.close()


class _Failing:
    def fold(self, events: Sequence[Logged]) -> None:
        pass

    def rows(self) -> Rows:
        raise RuntimeError("the disk is full")


class FailingExecutions(ExecutionsProjection):
    def bulk(self) -> BulkFold:
        return _Failing()


def test_a_failed_bulk_rebuild_leaves_no_checkpoint_ahead_of_its_rows(tmp_path: Path) -> None:
    store = open_store(tmp_path / "scheduler.db")
    world = World(store)
    for action in [("create", 0, "measurement"), ("run", 0, "manual", "completed")]:
        world.apply(action)
    projector = Projector([JobsProjection(), FailingExecutions()])
    with pytest.raises(RuntimeError, match="the disk is full"):
        projector.rebuild(store, store.conn)
    assert projector.checkpoints(store.conn) == {"jobs": 0, "executions": 0}
    assert store.conn.execute("SELECT COUNT(*) FROM jobs").fetchone() == (0,)
    store.close()


@given(
    st.datetimes(
        min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 31), timezones=st.timezones()
    )
    | st.datetimes(min_value=datetime(2, 1, 1), timezones=st.just(UTC))
)
def test_fast_instants_are_the_stored_text(value: datetime) -> None:
    decoded = msgspec.json.decode(msgspec.json.encode(value), type=datetime)
    for instant in (value, decoded):
        assert fast_instant(instant) == format_instant(instant)
        assert _fast_bucket(instant) == bucket_of(instant)
