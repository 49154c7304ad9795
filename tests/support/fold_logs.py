"""Logs of jobs and their fires, and the jobs and executions folds run over them in batches:
for the tests that hold the incremental folds (live batches of any size, memory dropped or
a batch rolled back at any point) to a fresh rebuild.

Definitions go through the real ``JobService`` (the domain's decide); execution facts are
appended as the engine appends them (requested, started, progressed, ended, queued, skipped,
missed, coalesced, late results, prunes).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from lablink.application import JobService
from lablink.clock import ManualClock
from lablink.errors import LabLinkError
from lablink.events import (
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
    TriggerInfo,
)
from lablink.eventstore import ANY
from lablink.eventstore.sqlite import SQLiteEventStore, connect
from lablink.ids import SequentialIds
from lablink.projections.executions import ExecutionsProjection
from lablink.projections.jobs import JobsProjection
from lablink.projections.runner import Projector

START = datetime(2026, 3, 27, 12, 0, tzinfo=UTC)
TRIGGERS: list[dict[str, Any]] = [
    {"trigger_type": "interval", "interval_seconds": 30},
    {"trigger_type": "interval", "interval_minutes": 5, "conflict_policy": "queue"},
    {"trigger_type": "cron", "cron_expression": "*/15 * * * *", "timezone": "America/New_York"},
    {"trigger_type": "daily", "time_of_day": "02:30:00"},  # inside Berlin's spring-forward gap
    {"trigger_type": "date", "run_date": "2026-04-01T10:00:00"},
    {"trigger_type": "interval", "interval_hours": 1, "max_executions": 2, "enabled": False},
]
# Names and parameters whose text looks like the view's own keys: the jobs fold cuts the
# stored view around them, and must find the view's keys, not these.
NAMES = [
    "Hourly Voltage Check",
    'a,"version":7,"next_run_time":null',
    'quote " backslash \\ end\\',
    "ünïcødé ✓ 測定",
    ',"execution_count":1,"running_executions":2}',
]
PARAMETERS: list[dict[str, Any]] = [
    {"command": "get_voltage"},
    {"command": "get_voltage", "version": 3, "note": ',"running_executions":0}'},
    {"command": "get_voltage", "next_run_time": None, "execution_count": [1, 2.5, "x"]},
]
FINALS = ["completed", "failed", "timed_out", "cancelled", "interrupted"]

step = st.one_of(
    st.tuples(
        st.just("create"),
        st.integers(0, len(TRIGGERS) - 1),
        st.integers(0, len(NAMES) - 1),
        st.integers(0, len(PARAMETERS) - 1),
    ),
    st.tuples(st.just("update"), st.integers(0, 9), st.sampled_from(["name", "trigger", "off"])),
    st.tuples(st.just("pause"), st.integers(0, 9)),
    st.tuples(st.just("resume"), st.integers(0, 9)),
    st.tuples(st.just("delete"), st.integers(0, 9)),
    st.tuples(st.just("complete"), st.integers(0, 9)),
    st.tuples(st.just("advance"), st.integers(1, 86400)),
    # Fires, most of all: what the incremental path folds.
    *[
        st.tuples(
            st.just("fire"),
            st.integers(0, 9),
            st.sampled_from(["scheduled", "manual", "catch_up"]),
            st.sampled_from([*FINALS, "running", "queued", "pending"]),
        )
    ]
    * 6,
    st.tuples(st.just("start"), st.integers(0, 30)),
    st.tuples(st.just("finish"), st.integers(0, 30), st.sampled_from(FINALS)),
    st.tuples(st.just("skip"), st.integers(0, 9)),
    st.tuples(st.just("miss"), st.integers(0, 9), st.integers(1, 10_000)),
    st.tuples(st.just("coalesce"), st.integers(0, 9), st.integers(1, 300)),
    st.tuples(st.just("late"), st.integers(0, 30), st.sampled_from(["completed", "failed"])),
    st.tuples(st.just("prune"), st.integers(0, 3)),
)


class FireLog:
    """Drives a real SQLite store: jobs through the service, fires as the engine records
    them."""

    def __init__(self, store: SQLiteEventStore) -> None:
        self.store = store
        self.clock = ManualClock(START)
        self.service = JobService(
            store, self.clock, default_timezone="Europe/Berlin", ids=SequentialIds()
        )
        self.jobs: list[str] = []
        self.waiting: dict[str, str] = {}  # execution id -> job id: pending or queued
        self.running: dict[str, tuple[str, datetime]] = {}  # execution id -> (job, started)
        self.ended: list[tuple[str, str]] = []
        self.executions = 0

    def run(self, steps: Sequence[tuple[Any, ...]]) -> None:
        for action in steps:
            try:
                self.apply(action)
            except LabLinkError:
                if action[0] == "create":
                    raise  # every definition offered is valid: a refusal is a bug
                # Other refused commands write nothing; the folds see the rest.

    def facts(self, job_id: str, *events: Any) -> None:
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

    def new_execution(self) -> str:
        self.executions += 1
        return f"exec_{self.executions}"

    def final(self, job_id: str, execution_id: str, status: str, started: datetime) -> Any:
        common: dict[str, Any] = {
            "job_id": job_id,
            "execution_id": execution_id,
            "completed_at": self.clock.now(),
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
            return ExecutionSucceeded(
                **common, result={"v": 1.5, "unit": "V"}, **dispatched, **instrument
            )
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
        if kind == "create":
            body = {
                "name": NAMES[action[2]],
                "schedule_type": "measurement",
                "equipment_id": "power_supply_1",
                "parameters": PARAMETERS[action[3]],
                "tags": ["fold", NAMES[action[2]]],
                **TRIGGERS[action[1]],
            }
            self.jobs.append(self.service.create_job(body, actor="alice"))
            return
        if kind == "advance":
            self.clock.advance(action[1])
            return
        if kind == "prune":
            self.store.append(
                "retention",
                ANY,
                [
                    NewEvent(
                        event=ExecutionsPruned(cutoff=now - timedelta(hours=action[1]), days=0),
                        actor="retention",
                        occurred_at=now,
                    )
                ],
            )
            return
        if kind == "start" and self.waiting:
            execution_id = sorted(self.waiting)[action[1] % len(self.waiting)]
            owner = self.waiting.pop(execution_id)
            self.facts(
                owner, ExecutionStarted(job_id=owner, execution_id=execution_id, started_at=now)
            )
            self.running[execution_id] = (owner, now)
            return
        if kind == "finish" and self.running:
            execution_id = sorted(self.running)[action[1] % len(self.running)]
            owner, started = self.running.pop(execution_id)
            self.facts(owner, self.final(owner, execution_id, action[2], started))
            self.ended.append((owner, execution_id))
            return
        if kind == "late" and self.ended:
            owner, execution_id = self.ended[action[1] % len(self.ended)]
            failed = action[2] == "failed"
            self.facts(
                owner,
                ExecutionLateResult(
                    job_id=owner,
                    execution_id=execution_id,
                    received_at=now,
                    status=action[2],
                    result={} if failed else {"v": 2},
                    error=ExecutionError(type="stopped", message="stopped") if failed else None,
                    agent_id="agent-1",
                    equipment_id="power_supply_1",
                    reported_at=now - timedelta(seconds=3),
                    instrument_started_at=now - timedelta(seconds=5),
                    instrument_ended_at=now - timedelta(seconds=4),
                ),
            )
            return
        if not self.jobs or kind in ("start", "finish", "late"):
            return
        job_id = self.jobs[action[1] % len(self.jobs)]
        if kind == "update":
            changes: dict[str, dict[str, Any]] = {
                "name": {"name": f"renamed at {now.isoformat()}"},
                "trigger": {"trigger_type": "interval", "interval_minutes": 7},
                "off": {"enabled": False},
            }
            self.service.update_job(job_id, changes[action[2]], actor="bob")
        elif kind == "pause":
            self.service.pause_job(job_id, actor="bob")
        elif kind == "resume":
            self.service.resume_job(job_id, actor="bob")
        elif kind == "delete":
            self.service.delete_job(job_id, actor="bob")
        elif kind == "complete":
            self.service.complete_job(job_id, actor="bob")
        elif kind == "fire":
            self.fire(job_id, action[2], action[3])
        elif kind == "skip":
            self.facts(
                job_id,
                ExecutionSkipped(
                    job_id=job_id,
                    execution_id=self.new_execution(),
                    scheduled_time=now,
                    actual_time=now,
                    trigger_info="scheduled",
                    reason="already running",
                ),
            )
        elif kind == "miss":
            self.facts(
                job_id,
                ExecutionMissed(
                    job_id=job_id,
                    execution_id=self.new_execution(),
                    scheduled_time=now - timedelta(seconds=action[2]),
                    actual_time=now,
                    missed_count=action[2],
                    window_start=now - timedelta(seconds=action[2]),
                    window_end=now - timedelta(seconds=1),
                    reason="down",
                ),
            )
        elif kind == "coalesce":
            joined = self.new_execution()
            self.facts(
                job_id,
                ExecutionCoalesced(
                    job_id=job_id,
                    execution_id=self.new_execution(),
                    scheduled_time=now - timedelta(seconds=action[2]),
                    actual_time=now,
                    coalesced_count=action[2],
                    window_start=now - timedelta(seconds=action[2]),
                    window_end=now - timedelta(seconds=1),
                    into_execution_id=joined,
                    reason="late",
                ),
                ExecutionRequested(
                    job_id=job_id,
                    execution_id=joined,
                    scheduled_time=now,
                    actual_time=now,
                    trigger_info="catch_up",
                ),
            )
            self.waiting[joined] = job_id

    def fire(self, job_id: str, trigger_info: TriggerInfo, outcome: str) -> None:
        """One fire: opened, and as far as ``outcome`` says, in one append or several."""
        now = self.clock.now()
        execution_id = self.new_execution()
        opened = (ExecutionQueued if outcome == "queued" else ExecutionRequested)(
            job_id=job_id,
            execution_id=execution_id,
            scheduled_time=now,
            actual_time=now,
            trigger_info=trigger_info,
        )
        if outcome in ("queued", "pending"):
            self.facts(job_id, opened)
            self.waiting[execution_id] = job_id
            return
        self.facts(
            job_id,
            opened,
            ExecutionStarted(job_id=job_id, execution_id=execution_id, started_at=now),
        )
        self.facts(
            job_id,
            ExecutionProgressed(
                job_id=job_id, execution_id=execution_id, progress=0.5, message="halfway"
            ),
        )
        if outcome == "running":
            self.running[execution_id] = (job_id, now)
            return
        self.clock.advance(2)
        self.facts(job_id, self.final(job_id, execution_id, outcome, now))
        self.ended.append((job_id, execution_id))


def fold_projector() -> Projector:
    return Projector([JobsProjection(), ExecutionsProjection()])


def tables(conn: sqlite3.Connection) -> dict[str, list[tuple[Any, ...]]]:
    """Every row, every column, of the tables of the two folds that ``conn`` holds."""
    present = {
        name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
    }
    return {
        table: sorted(conn.execute(f"SELECT * FROM {table}").fetchall(), key=repr)
        for table in ("jobs", "executions", "execution_jobs")
        if table in present
    }


def rebuilt(store: SQLiteEventStore, path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """The two folds' tables from a fresh rebuild into a file of their own."""
    conn = connect(path)
    try:
        fold_projector().rebuild(store, conn)
        return tables(conn)
    finally:
        conn.close()


def fold_live(
    events: Sequence[RecordedEvent],
    path: Path,
    sizes: Iterator[int],
    *,
    forget_after: frozenset[int] = frozenset(),
    roll_back: frozenset[int] = frozenset(),
    forget_on_roll_back: bool = True,
    projector: Projector | None = None,
) -> dict[str, list[tuple[Any, ...]]]:
    """Fold ``events`` as the follower does, a batch per transaction, batch sizes drawn from
    ``sizes``. Batch number n in ``roll_back`` is rolled back once and folded again (the
    projections told to forget, or not: their own guard must notice); after batch n in
    ``forget_after`` the projections drop their memory."""
    projector = projector or fold_projector()
    conn = connect(path)
    try:
        projector.create(conn)
        done, number = 0, 0
        rolled: set[int] = set()
        while done < len(events):
            batch = list(events[done : done + max(1, next(sizes))])
            conn.execute("BEGIN IMMEDIATE")
            projector.apply(conn, batch)
            if number in roll_back and number not in rolled:
                conn.execute("ROLLBACK")
                rolled.add(number)
                if forget_on_roll_back:
                    projector.forget()
                continue
            conn.execute("COMMIT")
            if number in forget_after:
                projector.forget()
            done += len(batch)
            number += 1
        return tables(conn)
    finally:
        conn.close()
