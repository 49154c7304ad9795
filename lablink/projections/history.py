"""Per-job execution totals. They survive retention: pruning rows never lowers a total.

Each execution counts once in ``total_executions`` and, once it has ended, once under its own
final status (``successful`` for ``completed``): the counters never overlap, so they sum to the
total less the executions still pending, queued or running.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

import sqlite_utils

from lablink.events import (
    ENDED_STATUS,
    RECORDED_ENDED_STATUS,
    ExecutionEnded,
    ExecutionQueued,
    ExecutionRecordedEnded,
    ExecutionRequested,
    ExecutionStarted,
    JobCreated,
    JobDeleted,
    JobUpdated,
    RecordedEvent,
)
from lablink.projections.base import as_dicts, instant
from lablink.projections.bulk import BulkFold, Logged, Rows, fast_instant
from lablink.projections.rows import Row, RowCache

# Executions by how they ended (``completed`` is the guide's ``successful``): each execution
# counts once in ``total_executions`` and, once it ended, under exactly one of these.
ENDED_COUNTERS = (
    "successful",
    "failed",
    "timed_out",
    "interrupted",
    "cancelled",
    "skipped",
    "missed",
    "coalesced",
)
COUNTERS = ("total_executions", *ENDED_COUNTERS, "duration_count")
COLUMNS = (
    "job_id",
    "job_name",
    *COUNTERS,
    "duration_total",
    "last_execution",
    "last_execution_id",
    "last_status",
)
# The counter each ending adds to, and the status it gives: the guide counts ``completed``
# executions as ``successful``.
_FINAL_COUNTER = {
    kind: ("successful" if status == "completed" else status, status)
    for kind, status in ENDED_STATUS.items()
}
# Executions recorded already ended: the counter each adds to, which is also its status.
_ONCE = RECORDED_ENDED_STATUS


class HistoryProjection:
    name = "job_history"
    tables: tuple[str, ...] = ("job_history",)
    # Relative cost of the bulk fold (µs per event), for sharing a rebuild between processes.
    bulk_cost = 0.6

    def create(self, db: sqlite_utils.Database) -> None:
        types: dict[str, Any] = {c: str for c in COLUMNS}
        types.update(dict.fromkeys(COUNTERS, int))
        types["duration_total"] = float
        db.table("job_history").create(types, pk="job_id", if_not_exists=True)

    def forget(self) -> None:
        """Nothing is kept between batches."""

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
                case _ if isinstance(event, ExecutionRecordedEnded):
                    status = _ONCE[type(event)]
                    self._opened(rows, event.job_id, event.execution_id, event.actual_time)
                    current = rows.get(event.job_id)
                    if current is not None:
                        rows.put({**current, status: current[status] + 1, "last_status": status})
                case ExecutionStarted():
                    self._status(rows, event.job_id, event.execution_id, "running")
                case _ if isinstance(event, ExecutionEnded):
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

    def bulk(self) -> BulkFold:
        return _BulkHistory()

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


# -- reads (this module owns the job_history table) ---------------------------------------


def read_history(conn: sqlite3.Connection, job_id: str) -> dict[str, Any] | None:
    """The job's history row (every column), or None."""
    rows = as_dicts(conn.execute("SELECT * FROM job_history WHERE job_id = ?", (job_id,)))
    return rows[0] if rows else None


# -- bulk rebuild -------------------------------------------------------------------------------
# The same fold as ``apply`` over plain lists, for rebuilding from empty tables (see
# projections/bulk.py); the replay property tests hold the two to the same rows.

_COL = {c: i for i, c in enumerate(COLUMNS)}
_NAME, _TOTAL, _DURATIONS = _COL["job_name"], _COL["total_executions"], _COL["duration_count"]
_DURATION_TOTAL, _LAST_AT = _COL["duration_total"], _COL["last_execution"]
_LAST_ID, _LAST_STATUS = _COL["last_execution_id"], _COL["last_status"]
_FINAL_AT = {kind: (_COL[counter], status) for kind, (counter, status) in _FINAL_COUNTER.items()}
_ONCE_AT = {kind: _COL[status] for kind, status in _ONCE.items()}


class _BulkHistory:
    def __init__(self) -> None:
        self.history: dict[str, list[Any]] = {}

    def fold(self, events: Sequence[Logged]) -> None:
        history = self.history
        get = history.get
        for _, _, _, _, event in events:
            # Most frequent first; `type(e) is C` is the cheapest test that mypy narrows on.
            if type(event) is ExecutionStarted:
                row = get(event.job_id)
                if row is not None and row[_LAST_ID] == event.execution_id:
                    row[_LAST_STATUS] = "running"
            elif isinstance(event, ExecutionRequested | ExecutionQueued):
                row = get(event.job_id)
                if row is not None:
                    row[_TOTAL] += 1
                    row[_LAST_AT] = fast_instant(event.actual_time)
                    row[_LAST_ID] = event.execution_id
                    row[_LAST_STATUS] = "pending" if type(event) is ExecutionRequested else "queued"
            elif isinstance(event, ExecutionEnded):
                row = get(event.job_id)
                if row is None:
                    continue
                counter, status = _FINAL_AT[type(event)]
                row[counter] += 1
                if event.started_at is not None:
                    row[_DURATIONS] += 1
                    row[_DURATION_TOTAL] += (event.completed_at - event.started_at).total_seconds()
                if row[_LAST_ID] == event.execution_id:
                    row[_LAST_STATUS] = status
            elif isinstance(event, ExecutionRecordedEnded):
                row = get(event.job_id)
                if row is not None:
                    row[_TOTAL] += 1
                    row[_LAST_AT] = fast_instant(event.actual_time)
                    row[_LAST_ID] = event.execution_id
                    row[_ONCE_AT[type(event)]] += 1
                    row[_LAST_STATUS] = _ONCE[type(event)]
            elif type(event) is JobCreated:
                row = [None] * len(COLUMNS)
                for name in COUNTERS:
                    row[_COL[name]] = 0
                row[0] = event.job_id
                row[_NAME] = event.spec.name
                row[_DURATION_TOTAL] = 0.0
                history[event.job_id] = row
            elif type(event) is JobUpdated:
                row = get(event.job_id)
                if row is not None:
                    row[_NAME] = event.spec.name
            elif type(event) is JobDeleted:
                history.pop(event.job_id, None)

    def rows(self) -> Rows:
        return {"job_history": (COLUMNS, list(self.history.values()))}
