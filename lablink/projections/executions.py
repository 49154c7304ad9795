"""The executions view: one row per execution, with its job's name and equipment.

Job names come from this projection's own ``execution_jobs`` table, folded from job events:
a projection never reads another projection.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlite_utils

from lablink.events import (
    ENDED_STATUS,
    EXECUTION_STATUSES,
    FINAL_STATUSES,
    ExecutionCancelled,
    ExecutionCoalesced,
    ExecutionEnded,
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
    JobCreated,
    JobUpdated,
    RecordedEvent,
)
from lablink.projections.base import Where, as_dicts, instant, to_json
from lablink.projections.bulk import BulkFold, Logged, Rows, fast_instant
from lablink.projections.rows import Row, RowCache

COLUMNS = (
    "execution_id",
    "seq",
    "job_id",
    "job_name",
    "schedule_type",
    "equipment_id",
    "status",
    "trigger_info",
    "scheduled_time",
    "actual_time",
    "started_at",
    "completed_at",
    "duration_seconds",
    "result",
    "error",
    "progress",
    "message",
    "missed_count",
    "window_start",
    "window_end",
    "coalesced_count",
    "coalesced_into",
    "late_result",
)
JOB_COLUMNS = ("job_id", "name", "schedule_type", "equipment_id")
# In the statuses' documented order (the retention query binds them in it).
FINAL = tuple(s for s in EXECUTION_STATUSES if s in FINAL_STATUSES)
# What ExecutionsPruned drops: ended executions whose end (or start) is before the cut-off.
# The one prune rule: the bulk fold applies the same to its rows in memory (``_prune``).
_PRUNE_SINCE = ("completed_at", "actual_time")
_PRUNABLE = (
    f"status IN ({', '.join('?' for _ in FINAL)}) AND COALESCE({', '.join(_PRUNE_SINCE)}) < ?"
)
# The facts that open an execution's row.
_Opening = (
    ExecutionRequested | ExecutionQueued | ExecutionSkipped | ExecutionMissed | ExecutionCoalesced
)
_STATUS = ENDED_STATUS


def _late(event: ExecutionLateResult) -> str:
    """The late result as the execution view shows it (both folds write this text)."""
    return to_json(
        {
            "status": event.status,
            "result": event.result,
            "error": event.error,
            "agent_id": event.agent_id,
            "received_at": event.received_at.astimezone(UTC).isoformat(),
            "reported_at": (
                event.reported_at.astimezone(UTC).isoformat() if event.reported_at else None
            ),
        }
    )


def _duration(started: datetime | None, completed: datetime) -> float | None:
    return (completed - started).total_seconds() if started is not None else None


def _final_fields(event: ExecutionEnded) -> Row:
    fields: Row = {
        "status": _STATUS[type(event)],
        "completed_at": instant(event.completed_at),
        "duration_seconds": _duration(event.started_at, event.completed_at),
    }
    match event:
        case ExecutionSucceeded():
            fields["result"] = to_json(event.result)
            fields["progress"] = 1.0
        case ExecutionFailed():
            fields["error"] = to_json(event.error)
        case ExecutionTimedOut():
            fields["error"] = to_json(
                {
                    "type": "timeout",
                    "message": f"no result within timeout_seconds={event.timeout_seconds:g}",
                }
            )
        case ExecutionCancelled():
            fields["message"] = event.reason
        case ExecutionInterrupted():
            fields["message"] = event.reason
            fields["error"] = to_json({"type": "interrupted", "message": event.reason})
    return fields


class ExecutionsProjection:
    name = "executions"
    tables: tuple[str, ...] = ("executions", "execution_jobs")
    # Relative cost of the bulk fold and of writing its rows (µs per event of the bench log),
    # for sharing a rebuild between two processes.
    bulk_cost = 4.5

    def create(self, db: sqlite_utils.Database) -> None:
        types: dict[str, Any] = {c: str for c in COLUMNS}
        types.update(
            seq=int, duration_seconds=float, progress=float, missed_count=int, coalesced_count=int
        )
        db.table("executions").create(types, pk="execution_id", if_not_exists=True)
        for columns in (["job_id", "seq"], ["status", "seq"], ["actual_time"], ["seq"]):
            db.table("executions").create_index(columns, if_not_exists=True)
        db.table("execution_jobs").create(
            {c: str for c in JOB_COLUMNS}, pk="job_id", if_not_exists=True
        )

    def forget(self) -> None:
        """Nothing is kept between batches."""

    def apply(self, conn: sqlite3.Connection, events: Sequence[RecordedEvent]) -> None:
        rows = RowCache(conn, "executions", "execution_id", COLUMNS)
        jobs = RowCache(conn, "execution_jobs", "job_id", JOB_COLUMNS)
        for recorded in events:
            event = recorded.event
            match event:
                case JobCreated() | JobUpdated():
                    jobs.put(
                        {
                            "job_id": event.job_id,
                            "name": event.spec.name,
                            "schedule_type": event.spec.schedule_type,
                            "equipment_id": event.spec.equipment_id,
                        }
                    )
                case (
                    ExecutionRequested()
                    | ExecutionQueued()
                    | ExecutionSkipped()
                    | ExecutionMissed()
                    | ExecutionCoalesced()
                ):
                    rows.put(self._new_row(recorded.position, event, jobs.get(event.job_id)))
                case ExecutionStarted():
                    self._update(
                        rows,
                        event.execution_id,
                        status="running",
                        started_at=instant(event.started_at),
                    )
                case ExecutionProgressed():
                    self._update(
                        rows, event.execution_id, progress=event.progress, message=event.message
                    )
                case _ if isinstance(event, ExecutionEnded):
                    fields = _final_fields(event)
                    if event.started_at is not None:
                        fields["started_at"] = instant(event.started_at)
                    self._update(rows, event.execution_id, **fields)
                case ExecutionLateResult():
                    self._update(rows, event.execution_id, late_result=_late(event))
                case ExecutionsPruned():
                    rows.flush()
                    cutoff = instant(event.cutoff)
                    conn.execute(f"DELETE FROM executions WHERE {_PRUNABLE}", (*FINAL, cutoff))
        jobs.flush()
        rows.flush()

    def bulk(self) -> BulkFold:
        return _BulkExecutions()

    @staticmethod
    def _update(rows: RowCache, execution_id: str, **fields: Any) -> None:
        row = rows.get(execution_id)
        if row is not None:  # pruned already: later facts about it change nothing here
            rows.put({**row, **fields})

    @staticmethod
    def _new_row(
        position: int,
        event: _Opening,
        job: Row | None,
    ) -> Row:
        row: Row = dict.fromkeys(COLUMNS)
        row.update(
            execution_id=event.execution_id,
            seq=position,
            job_id=event.job_id,
            job_name=job["name"] if job else None,
            schedule_type=job["schedule_type"] if job else None,
            equipment_id=job["equipment_id"] if job else None,
            scheduled_time=instant(event.scheduled_time),
            actual_time=instant(event.actual_time),
            progress=0.0,
        )
        match event:
            case ExecutionRequested():
                row.update(status="pending", trigger_info=event.trigger_info)
            case ExecutionQueued():
                row.update(
                    status="queued",
                    trigger_info=event.trigger_info,
                    message=f"waiting behind {', '.join(event.behind)}" if event.behind else "",
                )
            case ExecutionSkipped():
                row.update(status="skipped", trigger_info=event.trigger_info, message=event.reason)
            case ExecutionMissed():
                row.update(
                    status="missed",
                    trigger_info="scheduled",
                    message=event.reason,
                    missed_count=event.missed_count,
                    window_start=instant(event.window_start),
                    window_end=instant(event.window_end),
                )
            case ExecutionCoalesced():
                row.update(
                    status="coalesced",
                    trigger_info="scheduled",
                    message=event.reason,
                    window_start=instant(event.window_start),
                    window_end=instant(event.window_end),
                    coalesced_count=event.coalesced_count,
                    coalesced_into=event.into_execution_id,
                )
        return row


# -- reads (this module owns the executions and execution_jobs tables) ----------------------

_SELECT = f"SELECT {', '.join(COLUMNS)} FROM executions"


def get_execution_row(conn: sqlite3.Connection, execution_id: str) -> Row | None:
    rows = as_dicts(conn.execute(_SELECT + " WHERE execution_id = ?", (execution_id,)))
    return rows[0] if rows else None


def list_execution_rows(
    conn: sqlite3.Connection,
    *,
    job_id: str | None = None,
    status: Sequence[str] = (),
    since: datetime | None = None,
    until: datetime | None = None,
    before: int | None = None,
    limit: int = 100,
) -> list[Row]:
    """Newest first (by ``seq``, the log position that opened each), up to ``limit`` rows;
    ``since``/``until`` bound the actual time (``until`` exclusive), ``before`` the seq."""
    where = Where().equals("job_id", job_id).one_of("status", status)
    if since is not None:
        where.add("actual_time >= ?", instant(since))
    if until is not None:
        where.add("actual_time < ?", instant(until))
    if before is not None:
        where.add("seq < ?", before)
    return as_dicts(
        conn.execute(f"{_SELECT}{where} ORDER BY seq DESC LIMIT ?", [*where.args, limit])
    )


def running_now(conn: sqlite3.Connection) -> list[tuple[str, str, str, str | None, str | None]]:
    """(equipment id, execution id, job id, job name, started at) of each running execution,
    oldest first."""
    return conn.execute(
        "SELECT equipment_id, execution_id, job_id, job_name, started_at FROM executions"
        " WHERE status = 'running' ORDER BY seq"
    ).fetchall()


def count_prunable(conn: sqlite3.Connection, cutoff: datetime) -> int:
    """How many rows folding ``ExecutionsPruned(cutoff)`` would drop now."""
    (count,) = conn.execute(
        f"SELECT COUNT(*) FROM executions WHERE {_PRUNABLE}", (*FINAL, instant(cutoff))
    ).fetchone()
    return int(count)


def equipment_of_job(conn: sqlite3.Connection, job_id: str) -> str | None:
    """The instrument the job names (as its last definition said), or None."""
    row = conn.execute(
        "SELECT equipment_id FROM execution_jobs WHERE job_id = ?", (job_id,)
    ).fetchone()
    return row[0] if row else None


# -- bulk rebuild -------------------------------------------------------------------------------
# The same fold as ``apply`` over plain lists, for rebuilding from empty tables (see
# projections/bulk.py); the replay property tests hold the two to the same rows.

_COL = {c: i for i, c in enumerate(COLUMNS)}
_STATUS_AT, _STARTED_AT, _COMPLETED_AT = _COL["status"], _COL["started_at"], _COL["completed_at"]
_DURATION, _RESULT, _ERROR = _COL["duration_seconds"], _COL["result"], _COL["error"]
_PROGRESS, _MESSAGE = _COL["progress"], _COL["message"]
_LATE = _COL["late_result"]
_FINAL_SET = frozenset(FINAL)
_OPENS = (
    ExecutionRequested,
    ExecutionQueued,
    ExecutionSkipped,
    ExecutionMissed,
    ExecutionCoalesced,
)
_PRUNE_SINCE_AT = tuple(_COL[column] for column in _PRUNE_SINCE)


class _BulkExecutions:
    def __init__(self) -> None:
        self.executions: dict[str, list[Any]] = {}
        self.jobs: dict[str, tuple[str, str, str, str]] = {}

    def fold(self, events: Sequence[Logged]) -> None:
        executions, jobs = self.executions, self.jobs
        get = executions.get
        for position, _, _, _, event in events:
            # Most frequent first; `type(e) is C` is the cheapest test that mypy narrows on.
            if type(event) is ExecutionStarted:
                row = get(event.execution_id)
                if row is not None:
                    row[_STATUS_AT] = "running"
                    row[_STARTED_AT] = fast_instant(event.started_at)
            elif type(event) is ExecutionRequested:
                executions[event.execution_id] = self._opened(position, event)
            elif isinstance(event, ExecutionEnded):
                row = get(event.execution_id)
                if row is not None:
                    self._ended(row, event)
            elif type(event) is ExecutionProgressed:
                row = get(event.execution_id)
                if row is not None:
                    row[_PROGRESS] = event.progress
                    row[_MESSAGE] = event.message
            elif isinstance(event, _OPENS):
                executions[event.execution_id] = self._opened(position, event)
            elif isinstance(event, JobCreated | JobUpdated):
                spec = event.spec
                jobs[event.job_id] = (
                    event.job_id,
                    spec.name,
                    spec.schedule_type,
                    spec.equipment_id,
                )
            elif type(event) is ExecutionLateResult:
                row = get(event.execution_id)
                if row is not None:
                    row[_LATE] = _late(event)
            elif type(event) is ExecutionsPruned:
                self._prune(fast_instant(event.cutoff))

    def _opened(
        self,
        position: int,
        event: _Opening,
    ) -> list[Any]:
        job = self.jobs.get(event.job_id)
        status: str
        message: str | None = None
        missed_count: int | None = None
        window_start: str | None = None
        window_end: str | None = None
        coalesced_count: int | None = None
        coalesced_into: str | None = None
        match event:
            case ExecutionRequested():
                status, trigger_info = "pending", event.trigger_info
            case ExecutionQueued():
                status, trigger_info = "queued", event.trigger_info
                message = f"waiting behind {', '.join(event.behind)}" if event.behind else ""
            case ExecutionSkipped():
                status, trigger_info, message = "skipped", event.trigger_info, event.reason
            case ExecutionMissed():
                status, trigger_info, message = "missed", "scheduled", event.reason
                missed_count = event.missed_count
                window_start = fast_instant(event.window_start)
                window_end = fast_instant(event.window_end)
            case ExecutionCoalesced():
                status, trigger_info, message = "coalesced", "scheduled", event.reason
                window_start = fast_instant(event.window_start)
                window_end = fast_instant(event.window_end)
                coalesced_count = event.coalesced_count
                coalesced_into = event.into_execution_id
        return [
            event.execution_id,
            position,
            event.job_id,
            job[1] if job else None,
            job[2] if job else None,
            job[3] if job else None,
            status,
            trigger_info,
            fast_instant(event.scheduled_time),
            fast_instant(event.actual_time),
            None,
            None,
            None,
            None,
            None,
            0.0,
            message,
            missed_count,
            window_start,
            window_end,
            coalesced_count,
            coalesced_into,
            None,  # late_result
        ]

    @staticmethod
    def _ended(row: list[Any], event: ExecutionEnded) -> None:
        row[_STATUS_AT] = _STATUS[type(event)]
        row[_COMPLETED_AT] = fast_instant(event.completed_at)
        row[_DURATION] = _duration(event.started_at, event.completed_at)
        match event:
            case ExecutionSucceeded():
                row[_RESULT] = to_json(event.result)
                row[_PROGRESS] = 1.0
            case ExecutionFailed():
                row[_ERROR] = to_json(event.error)
            case ExecutionTimedOut():
                row[_ERROR] = to_json(
                    {
                        "type": "timeout",
                        "message": f"no result within timeout_seconds={event.timeout_seconds:g}",
                    }
                )
            case ExecutionCancelled():
                row[_MESSAGE] = event.reason
            case ExecutionInterrupted():
                row[_MESSAGE] = event.reason
                row[_ERROR] = to_json({"type": "interrupted", "message": event.reason})
        if event.started_at is not None:
            row[_STARTED_AT] = fast_instant(event.started_at)

    def _prune(self, cutoff: str) -> None:
        """``_PRUNABLE`` on the rows in memory (text compares as SQLite compares it)."""
        executions = self.executions
        for execution_id, row in list(executions.items()):
            if row[_STATUS_AT] in _FINAL_SET:
                # COALESCE: the first of the columns that is not NULL.
                since = next((row[at] for at in _PRUNE_SINCE_AT if row[at] is not None), None)
                if since is not None and since < cutoff:
                    del executions[execution_id]

    def rows(self) -> Rows:
        return {
            "executions": (COLUMNS, list(self.executions.values())),
            "execution_jobs": (JOB_COLUMNS, list(self.jobs.values())),
        }
