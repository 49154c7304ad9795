"""Retention and replay: whatever the order of execution facts and pruning facts (late
reports of runs that ended before an earlier cut-off, facts about rows already pruned, a
pruning in the same transaction as the rows it drops), the one fold leaves the same rows
live (after each commit, or in batches of any size) and rebuilt from position 0, as of any
instant."""

from __future__ import annotations

import sqlite3
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from lablink.application import JobService
from lablink.clock import ManualClock
from lablink.events import (
    ExecutionError,
    ExecutionFailed,
    ExecutionMissed,
    ExecutionProgressed,
    ExecutionRequested,
    ExecutionSkipped,
    ExecutionsPruned,
    ExecutionStarted,
    ExecutionSucceeded,
    NewEvent,
    RecordedEvent,
)
from lablink.eventstore.base import ANY, AppendRequest
from lablink.eventstore.sqlite import SQLiteEventStore, connect
from lablink.ids import SequentialIds
from lablink.logstore import open_store
from lablink.projections.runner import CHECKPOINTS, META, Projector

START = datetime(2026, 5, 4, 8, 0, tzinfo=UTC)
BODY: dict[str, Any] = {
    "name": "Hourly Voltage Check",
    "schedule_type": "measurement",
    "equipment_id": "power_supply_1",
    "trigger_type": "interval",
    "interval_hours": 1,
    "parameters": {"command": "get_voltage"},
}

step = st.one_of(
    st.tuples(st.just("open"), st.integers(0, 1)),
    st.tuples(st.just("start"), st.integers(0, 30)),
    # Ends an execution; the outcome may be reported late, dated up to two days back.
    st.tuples(st.just("end"), st.integers(0, 30), st.booleans(), st.integers(0, 2 * 86400)),
    st.tuples(st.just("progress"), st.integers(0, 30)),
    st.tuples(st.just("skip"), st.integers(0, 1)),
    st.tuples(st.just("miss"), st.integers(0, 1)),
    st.tuples(st.just("advance"), st.integers(1, 2 * 86400)),
    st.tuples(st.just("prune"), st.sampled_from([0, 0.5, 1, 2])),
    # One transaction: a run that ended before the cut-off, the pruning, then a late fact
    # about the pruned run.
    st.tuples(st.just("batch"), st.integers(0, 1), st.sampled_from([0, 1])),
)


def snapshot(conn: sqlite3.Connection) -> dict[str, list[tuple[Any, ...]]]:
    names = [
        n
        for (n,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT IN ('events', ?, ?)",
            (CHECKPOINTS, META),
        )
    ]
    return {n: sorted(conn.execute(f"SELECT * FROM {n}").fetchall(), key=repr) for n in names}


class World:
    def __init__(self, store: SQLiteEventStore) -> None:
        self.store = store
        self.clock = ManualClock(START)
        service = JobService(store, self.clock, default_timezone="UTC", ids=SequentialIds())
        self.jobs = [service.create_job(BODY, actor="alice") for _ in range(2)]
        self.executions: list[tuple[str, str]] = []  # (job id, execution id), every one
        self.started: dict[str, datetime] = {}
        self.ended: set[str] = set()

    def new(self, event: Any, *, actor: str = "scheduler", at: datetime | None = None) -> NewEvent:
        return NewEvent(
            event=event,
            actor=actor,
            occurred_at=at or self.clock.now(),
            correlation_id=getattr(event, "execution_id", None),
        )

    def fact(self, job_id: str, *events: Any) -> None:
        self.store.append(job_id, self.store.stream_version(job_id), [self.new(e) for e in events])

    def opened(self, job_id: str, kind: type[Any] = ExecutionRequested) -> Any:
        now = self.clock.now()
        execution_id = f"exec_{len(self.executions) + 1}"
        self.executions.append((job_id, execution_id))
        common: dict[str, Any] = {
            "job_id": job_id,
            "execution_id": execution_id,
            "scheduled_time": now,
            "actual_time": now,
        }
        if kind is ExecutionSkipped:
            self.ended.add(execution_id)
            return ExecutionSkipped(**common, trigger_info="scheduled", reason="already running")
        if kind is ExecutionMissed:
            self.ended.add(execution_id)
            return ExecutionMissed(
                **{**common, "scheduled_time": now - timedelta(hours=3)},
                missed_count=3,
                window_start=now - timedelta(hours=3),
                window_end=now - timedelta(hours=1),
                reason="down",
            )
        return ExecutionRequested(**common, trigger_info="scheduled")

    def end(self, job_id: str, execution_id: str, ok: bool, completed: datetime) -> Any:
        self.ended.add(execution_id)
        started = self.started.get(execution_id)
        if ok:
            return ExecutionSucceeded(
                job_id=job_id,
                execution_id=execution_id,
                started_at=started,
                completed_at=completed,
                result={"value": 1.0},
            )
        return ExecutionFailed(
            job_id=job_id,
            execution_id=execution_id,
            started_at=started,
            completed_at=completed,
            error=ExecutionError(type="instrument", message="no answer"),
        )

    def pick(self, index: int, *, ended: bool | None = None) -> tuple[str, str] | None:
        found = [e for e in self.executions if ended is None or (e[1] in self.ended) == ended]
        return found[index % len(found)] if found else None

    def pruned(self, days: float) -> NewEvent:
        now = self.clock.now()
        event = ExecutionsPruned(cutoff=now - timedelta(days=days), days=days)
        return self.new(event, actor="retention")

    def apply(self, action: tuple[Any, ...]) -> None:
        kind = action[0]
        now = self.clock.now()
        if kind == "open":
            job_id = self.jobs[action[1]]
            self.fact(job_id, self.opened(job_id))
        elif kind in ("skip", "miss"):
            job_id = self.jobs[action[1]]
            self.fact(
                job_id, self.opened(job_id, ExecutionSkipped if kind == "skip" else ExecutionMissed)
            )
        elif kind == "start":
            chosen = self.pick(action[1], ended=False)
            if chosen is not None and chosen[1] not in self.started:
                self.started[chosen[1]] = now
                self.fact(
                    chosen[0],
                    ExecutionStarted(job_id=chosen[0], execution_id=chosen[1], started_at=now),
                )
        elif kind == "end":
            chosen = self.pick(action[1], ended=False)
            if chosen is not None:
                completed = max(now - timedelta(seconds=action[3]), START)
                if chosen[1] in self.started:
                    completed = max(completed, self.started[chosen[1]])
                self.fact(chosen[0], self.end(*chosen, action[2], completed))
        elif kind == "progress":
            chosen = self.pick(action[1])
            if chosen is not None:
                self.fact(
                    chosen[0],
                    ExecutionProgressed(
                        job_id=chosen[0], execution_id=chosen[1], progress=0.5, message="late"
                    ),
                )
        elif kind == "advance":
            self.clock.advance(action[1])
        elif kind == "prune":
            self.store.append("retention", ANY, [self.pruned(action[1])])
        elif kind == "batch":
            job_id = self.jobs[action[1]]
            opened = self.opened(job_id)
            ended = self.end(job_id, opened.execution_id, True, now - timedelta(days=action[2]))
            late = ExecutionProgressed(
                job_id=job_id, execution_id=opened.execution_id, progress=0.9, message="late"
            )
            version = self.store.stream_version(job_id)
            self.store.append_batch(
                [
                    AppendRequest(
                        stream_id=job_id,
                        expected_version=version,
                        events=[self.new(opened), self.new(ended)],
                    ),
                    AppendRequest(
                        stream_id="retention", expected_version=ANY, events=[self.pruned(0)]
                    ),
                    AppendRequest(
                        stream_id=job_id, expected_version=version + 2, events=[self.new(late)]
                    ),
                ]
            )


def rebuilt(
    store: SQLiteEventStore, path: Path, until: datetime | None = None
) -> dict[str, list[tuple[Any, ...]]]:
    target = connect(path)
    try:
        Projector().rebuild(store, target, until=until)
        return snapshot(target)
    finally:
        target.close()


def folded_in_batches(
    events: Sequence[RecordedEvent], path: Path, sizes: Sequence[int]
) -> dict[str, list[tuple[Any, ...]]]:
    """``events`` folded as the follower folds them: a batch per transaction, with the
    checkpoints, batch sizes taken in turn from ``sizes``."""
    conn = connect(path)
    try:
        projector = Projector()
        projector.create(conn)
        done, turn = 0, 0
        while done < len(events):
            batch = list(events[done : done + sizes[turn % len(sizes)]])
            turn += 1
            conn.execute("BEGIN IMMEDIATE")
            projector.apply(conn, batch)
            conn.execute("COMMIT")
            done += len(batch)
        return snapshot(conn)
    finally:
        conn.close()


@pytest.mark.slow
@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    st.lists(step, min_size=3, max_size=50),
    st.lists(st.integers(1, 20), min_size=1, max_size=4),
    st.integers(0, 100),
)
def test_pruning_replays_the_same_live_in_any_batches_and_rebuilt(
    steps: list[tuple[Any, ...]], sizes: list[int], percent: int
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        store = open_store(Path(folder) / "scheduler.db")
        world = World(store)
        for action in steps:
            world.apply(action)
        live = snapshot(store.views.conn)
        log = list(store.read_all())
        assert rebuilt(store, Path(folder) / "rebuilt.db") == live
        assert folded_in_batches(log, Path(folder) / "batches.db", sizes) == live
        until = START + (world.clock.now() - START) * percent / 100
        prefix = [e for e in log if e.occurred_at <= until]
        assert rebuilt(store, Path(folder) / "until.db", until) == (
            folded_in_batches(prefix, Path(folder) / "batches-until.db", sizes)
        )
        kept = {row[0] for row in live["executions"]}
        event(f"pruned rows: {min(len(world.executions) - len(kept), 3)}")
        # Totals never drop with the rows: every opened execution is still counted.
        assert sum(row[2] for row in live["job_history"]) == len(world.executions)
        store.close()


def test_a_pruning_in_the_same_transaction_drops_the_rows_before_it(tmp_path: Path) -> None:
    store = open_store(tmp_path / "scheduler.db")
    world = World(store)
    world.clock.advance(timedelta(days=3))
    world.apply(("batch", 0, 1))  # ended a day ago, pruned at now: gone, the late fact ignored
    world.apply(("batch", 1, 0))  # ended this instant: not before the cut-off, kept
    rows = store.views.conn.execute(
        "SELECT execution_id, progress, message FROM executions"
    ).fetchall()
    assert rows == [("exec_2", 0.9, "late")]
    assert rebuilt(store, tmp_path / "rebuilt.db") == snapshot(store.views.conn)
    store.close()
