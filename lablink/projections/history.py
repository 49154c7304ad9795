"""Per-job execution totals. They survive retention: pruning rows never lowers a total."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

import sqlite_utils

from lablink.events import (
    ExecutionCancelled,
    ExecutionFailed,
    ExecutionInterrupted,
    ExecutionMissed,
    ExecutionQueued,
    ExecutionRequested,
    ExecutionSkipped,
    ExecutionStarted,
    ExecutionSucceeded,
    ExecutionTimedOut,
    JobCreated,
    JobDeleted,
    JobUpdated,
    RecordedEvent,
)
from lablink.projections.base import instant
from lablink.projections.rows import Row, RowCache

COUNTERS = (
    "total_executions",
    "successful",
    "failed",
    "timed_out",
    "interrupted",
    "cancelled",
    "skipped",
    "missed",
    "duration_count",
)
COLUMNS = (
    "job_id",
    "job_name",
    *COUNTERS,
    "duration_total",
    "last_execution",
    "last_execution_id",
    "last_status",
)
_FINAL_COUNTER = {
    ExecutionSucceeded: ("successful", "completed"),
    ExecutionFailed: ("failed", "failed"),
    ExecutionTimedOut: ("timed_out", "timed_out"),
    ExecutionInterrupted: ("interrupted", "interrupted"),
    ExecutionCancelled: ("cancelled", "cancelled"),
}


class HistoryProjection:
    name = "job_history"
    tables: tuple[str, ...] = ("job_history",)

    def create(self, db: sqlite_utils.Database) -> None:
        types: dict[str, Any] = {c: str for c in COLUMNS}
        types.update(dict.fromkeys(COUNTERS, int))
        types["duration_total"] = float
        db.table("job_history").create(types, pk="job_id", if_not_exists=True)

    def apply(self, conn: sqlite3.Connection, events: Sequence[RecordedEvent]) -> None:
        rows = RowCache(conn, "job_history", "job_id", COLUMNS)
        for recorded in events:
            event = recorded.event
            match event:
                case JobCreated():
                    row: Row = dict.fromkeys(COLUMNS)
                    row.update(dict.fromkeys(COUNTERS, 0))
                    row.update(job_id=event.job_id, job_name=event.spec.name, duration_total=0.0)
                    rows.put(row)
                case JobUpdated():
                    self._change(rows, event.job_id, job_name=event.spec.name)
                case JobDeleted():
                    rows.delete(event.job_id)
                case ExecutionRequested() | ExecutionQueued():
                    self._opened(rows, event.job_id, event.execution_id, event.actual_time)
                    status = "queued" if isinstance(event, ExecutionQueued) else "pending"
                    self._change(rows, event.job_id, last_status=status)
                case ExecutionSkipped() | ExecutionMissed():
                    status = "skipped" if isinstance(event, ExecutionSkipped) else "missed"
                    self._opened(rows, event.job_id, event.execution_id, event.actual_time)
                    current = rows.get(event.job_id)
                    if current is not None:
                        rows.put({**current, status: current[status] + 1, "last_status": status})
                case ExecutionStarted():
                    self._status(rows, event.job_id, event.execution_id, "running")
                case (
                    ExecutionSucceeded()
                    | ExecutionFailed()
                    | ExecutionTimedOut()
                    | ExecutionInterrupted()
                    | ExecutionCancelled()
                ):
                    counter, status = _FINAL_COUNTER[type(event)]
                    found = rows.get(event.job_id)
                    if found is None:
                        continue
                    row = {**found, counter: found[counter] + 1}
                    if event.started_at is not None:
                        row["duration_count"] += 1
                        row["duration_total"] += (
                            event.completed_at - event.started_at
                        ).total_seconds()
                    if row["last_execution_id"] == event.execution_id:
                        row["last_status"] = status
                    rows.put(row)
        rows.flush()

    @staticmethod
    def _change(rows: RowCache, job_id: str, **fields: Any) -> None:
        row = rows.get(job_id)
        if row is not None:
            rows.put({**row, **fields})

    @staticmethod
    def _opened(rows: RowCache, job_id: str, execution_id: str, actual_time: Any) -> None:
        row = rows.get(job_id)
        if row is not None:
            rows.put(
                {
                    **row,
                    "total_executions": row["total_executions"] + 1,
                    "last_execution": instant(actual_time),
                    "last_execution_id": execution_id,
                }
            )

    @staticmethod
    def _status(rows: RowCache, job_id: str, execution_id: str, status: str) -> None:
        row = rows.get(job_id)
        if row is not None and row["last_execution_id"] == execution_id:
            rows.put({**row, "last_status": status})
