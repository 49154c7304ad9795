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
    ExecutionBlocked,
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
    "blocked",
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
    # The instrument's own times of the newest execution, once its result recorded them.
    "last_instrument_started_at",
    "last_instrument_ended_at",
)
# The counter each ending adds to, and the status it gives: the guide counts ``completed``
# executions as ``successful``.
_FINAL_COUNTER = {
    kind: ("successful" if status == "completed" else status, status)
    for kind, status in ENDED_STATUS.items()
}
# Executions recorded already ended: the counter each adds to, which is also its status.
_ONCE: dict[type[Any], str] = dict(RECORDED_ENDED_STATUS)


# The facts the fold looks at, by type: anything else passes by at the cost of one lookup.
_OPENED: dict[type[Any], str] = {ExecutionRequested: "pending", ExecutionQueued: "queued"}


class HistoryProjection:
    name = "job_history"
    tables: tuple[str, ...] = ("job_history",)

    def create(self, db: sqlite_utils.Database) -> None:
        types: dict[str, Any] = {c: str for c in COLUMNS}
        types.update(dict.fromkeys(COUNTERS, int))
        types["duration_total"] = float
        db.table("job_history").create(types, pk="job_id", if_not_exists=True)

    def forget(self) -> None:
        """Nothing is kept between batches."""

    def apply(self, conn: sqlite3.Connection, events: Sequence[RecordedEvent]) -> None:
        # The batch's jobs are read in one go and their rows changed in place: a fire costs a
        # few dict operations, and the batch writes each touched row once.
        cache = RowCache(conn, "job_history", "job_id", COLUMNS)
        rows = cache.load({getattr(r.event, "job_id", None) for r in events} - {None})
        get, changed = rows.get, cache.changed
        for recorded in events:
            event = recorded.event
            kind = type(event)
            # Most frequent first; anything else passes by at the cost of a few lookups.
            if kind is ExecutionStarted:
                started: ExecutionStarted = event  # type: ignore[assignment]
                row = get(started.job_id)
                if row is not None and row["last_execution_id"] == started.execution_id:
                    row["last_status"] = "running"
                    changed(started.job_id)
            elif kind in _FINAL_COUNTER:
                ended: ExecutionEnded = event  # type: ignore[assignment]
                row = get(ended.job_id)
                if row is None:
                    continue
                counter, status = _FINAL_COUNTER[kind]
                row[counter] += 1
                if ended.started_at is not None:
                    row["duration_count"] += 1
                    row["duration_total"] += (ended.completed_at - ended.started_at).total_seconds()
                if row["last_execution_id"] == ended.execution_id:
                    row["last_status"] = status
                    # A result carries them (completed, failed), and a timeout those known then.
                    row["last_instrument_started_at"] = instant(
                        getattr(ended, "instrument_started_at", None)
                    )
                    row["last_instrument_ended_at"] = instant(
                        getattr(ended, "instrument_ended_at", None)
                    )
                changed(ended.job_id)
            elif isinstance(event, ExecutionBlocked) and event.queued:
                # Counted in the total when it queued: it only ends, as blocked.
                waited: ExecutionBlocked = event
                row = get(waited.job_id)
                if row is None:
                    continue
                row["blocked"] += 1
                if row["last_execution_id"] == waited.execution_id:
                    row["last_status"] = "blocked"
                changed(waited.job_id)
            elif kind in _OPENED or kind in _ONCE:
                opened: ExecutionRequested | ExecutionQueued | ExecutionRecordedEnded = event  # type: ignore[assignment]
                row = get(opened.job_id)
                if row is None:
                    continue
                row["total_executions"] += 1
                row["last_execution"] = instant(opened.actual_time)
                row["last_execution_id"] = opened.execution_id
                row["last_instrument_started_at"] = None
                row["last_instrument_ended_at"] = None
                once = _ONCE.get(kind)
                if once is not None:
                    row[once] += 1
                    row["last_status"] = once
                else:
                    row["last_status"] = _OPENED[kind]
                changed(opened.job_id)
            elif kind is JobCreated:
                created: JobCreated = event  # type: ignore[assignment]
                new: Row = dict.fromkeys(COLUMNS)
                new.update(dict.fromkeys(COUNTERS, 0))
                new.update(job_id=created.job_id, job_name=created.spec.name, duration_total=0.0)
                rows[created.job_id] = new
                changed(created.job_id)
            elif kind is JobUpdated:
                updated: JobUpdated = event  # type: ignore[assignment]
                row = get(updated.job_id)
                if row is not None:
                    row["job_name"] = updated.spec.name
                    changed(updated.job_id)
            elif kind is JobDeleted:
                deleted: JobDeleted = event  # type: ignore[assignment]
                rows[deleted.job_id] = None
                changed(deleted.job_id)
        cache.flush()


# -- reads (this module owns the job_history table) ---------------------------------------


def read_history(conn: sqlite3.Connection, job_id: str) -> dict[str, Any] | None:
    """The job's history row (every column), or None."""
    rows = as_dicts(conn.execute("SELECT * FROM job_history WHERE job_id = ?", (job_id,)))
    return rows[0] if rows else None
