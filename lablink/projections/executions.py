"""The executions view: one row per execution, with its job's name and equipment.

Job names come from this projection's own ``execution_jobs`` table, folded from job events:
a projection never reads another projection.
"""

from __future__ import annotations

import functools
import itertools
import json
import sqlite3
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

import sqlite_utils

from lablink.events import (
    ENDED_STATUS,
    EXECUTION_STATUSES,
    FINAL_STATUSES,
    ExecutionBlocked,
    ExecutionCancelled,
    ExecutionCoalesced,
    ExecutionDataRemoved,
    ExecutionDataStored,
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
from lablink.projections.continuity import Continuity

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
    "data_status",
    "data",
    "dispatched_at",
    "instrument_started_at",
    "instrument_ended_at",
    # Why a blocked execution was not dispatched (calibration_expired, calibration_missing,
    # quarantined); null for the others.
    "cause",
)
JOB_COLUMNS = ("job_id", "name", "schedule_type", "equipment_id")
# How many jobs' names the fold keeps between batches, the least recently used let go first
# (read back from execution_jobs when the job next opens an execution); about 300 bytes each.
MAX_JOBS_IN_MEMORY = 100_000
Row = dict[str, Any]
# In the statuses' documented order (the retention query binds them in it).
FINAL = tuple(s for s in EXECUTION_STATUSES if s in FINAL_STATUSES)
# What ExecutionsPruned drops: ended executions whose end (or start) is before the cut-off.
_PRUNE_SINCE = ("completed_at", "actual_time")
_PRUNABLE = (
    f"status IN ({', '.join('?' for _ in FINAL)}) AND COALESCE({', '.join(_PRUNE_SINCE)}) < ?"
)
# The facts that open an execution's row.
_Opening = (
    ExecutionRequested
    | ExecutionQueued
    | ExecutionSkipped
    | ExecutionMissed
    | ExecutionCoalesced
    | ExecutionBlocked
)
_STATUS = ENDED_STATUS
# The capture's descriptor as the view keeps it (``result["data"]`` less its provenance and
# status, which the result and ``data_status`` hold).
DATA_FIELDS = ("bucket", "object", "file_name", "size", "sha256", "rows", "columns", "sample_rate")
# Where removed captures are remembered after retention prunes their rows: a download of
# one answers 410 naming when and why, not 404.
REMOVALS = "execution_data_removals"
REMOVAL_COLUMNS = ("execution_id", "job_id", "object", "size", "removed_at", "reason")


def _late(event: ExecutionLateResult) -> str:
    """The late result as the execution view shows it."""
    return to_json(
        {
            "status": event.status,
            "result": event.result,
            "error": event.error,
            "agent_id": event.agent_id,
            "received_at": event.received_at.astimezone(UTC).isoformat(),
            "reported_at": _iso(event.reported_at),
            "instrument_started_at": _iso(event.instrument_started_at),
            "instrument_ended_at": _iso(event.instrument_ended_at),
        }
    )


def _iso(when: datetime | None) -> str | None:
    return when.astimezone(UTC).isoformat() if when is not None else None


def _duration(started: datetime | None, completed: datetime) -> float | None:
    return (completed - started).total_seconds() if started is not None else None


def _data_fields(result: dict[str, Any]) -> Row:
    """``data_status`` and ``data`` of a result that names a capture (none: nothing)."""
    data = result.get("data")
    if not isinstance(data, dict):
        return {}
    status = data.get("status")
    return {
        # Only the agent's word makes a capture stored: a result without it (its file went
        # before the upload was prepared) has none to download.
        "data_status": status if status in ("stored", "pending_upload") else "none",
        "data": to_json({k: data.get(k) for k in DATA_FIELDS}),
    }


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
            if "data" in event.result:
                fields.update(_data_fields(event.result))
            fields.update(_times(event))
        case ExecutionFailed():
            fields["error"] = to_json(event.error)
            fields.update(_times(event))
        case ExecutionTimedOut():
            fields["error"] = to_json(
                {
                    "type": "timeout",
                    "message": f"no result within timeout_seconds={event.timeout_seconds:g}",
                }
            )
            fields.update(_times(event))
        case ExecutionCancelled():
            fields["message"] = event.reason
            fields["dispatched_at"] = instant(event.dispatched_at)
        case ExecutionInterrupted():
            fields["message"] = event.reason
            fields["error"] = to_json({"type": "interrupted", "message": event.reason})
    return fields


def _times(event: ExecutionSucceeded | ExecutionFailed | ExecutionTimedOut) -> Row:
    """When the command was dispatched, and the instrument's own times, as recorded with the
    result (or, timed out, as known when the timeout was)."""
    return {
        "dispatched_at": instant(event.dispatched_at),
        "instrument_started_at": instant(event.instrument_started_at),
        "instrument_ended_at": instant(event.instrument_ended_at),
    }


class ExecutionsProjection:
    """Each execution's row is written once per batch, with no read: a row opened in the
    batch is inserted whole; a later fact about an older row is an UPDATE of the columns it
    changes (a start: status and started_at), since every fact carries what its columns need.
    The job names new rows show are kept in memory between batches."""

    name = "executions"
    tables: tuple[str, ...] = ("executions", "execution_jobs", REMOVALS)

    def __init__(self) -> None:
        self._jobs: dict[str, tuple[str, str, str]] = {}
        self._continuity = Continuity()

    def create(self, db: sqlite_utils.Database) -> None:
        types: dict[str, Any] = {c: str for c in COLUMNS}
        types.update(
            seq=int, duration_seconds=float, progress=float, missed_count=int, coalesced_count=int
        )
        db.table("executions").create(
            types, pk="execution_id", defaults={"data_status": "none"}, if_not_exists=True
        )
        # equipment_id, seq: an instrument's recent executions (the dashboard's equipment page)
        # without walking a million rows of the others'.
        for columns in (
            ["job_id", "seq"],
            ["status", "seq"],
            ["actual_time"],
            ["seq"],
            ["equipment_id", "seq"],
        ):
            db.table("executions").create_index(columns, if_not_exists=True)
        db.table("execution_jobs").create(
            {c: str for c in JOB_COLUMNS}, pk="job_id", if_not_exists=True
        )
        # The byte bound's query: the stored captures, oldest first.
        db.table("executions").create_index(["data_status", "seq"], if_not_exists=True)
        removals: dict[str, Any] = {c: str for c in REMOVAL_COLUMNS}
        removals["size"] = int
        db.table(REMOVALS).create(removals, pk="execution_id", if_not_exists=True)

    def forget(self) -> None:
        """Drop the job names kept in memory: the next batch reads them from the table."""
        self._jobs.clear()
        self._continuity.reset()

    def apply(self, conn: sqlite3.Connection, events: Sequence[RecordedEvent]) -> None:
        if not events:
            return
        if not self._continuity.holds(conn, events):
            self.forget()
        batch = _Batch(conn, self._job_of)
        for recorded in events:
            event = recorded.event
            # Most frequent first; `type(e) is C` is the cheapest test that mypy narrows on.
            if type(event) is ExecutionStarted:
                batch.change(
                    event.execution_id, status="running", started_at=instant(event.started_at)
                )
            elif type(event) is ExecutionRequested:
                batch.open(recorded.position, event)
            elif isinstance(event, ExecutionEnded):
                fields = _final_fields(event)
                if event.started_at is not None:
                    fields["started_at"] = instant(event.started_at)
                batch.change(event.execution_id, **fields)
            elif type(event) is ExecutionProgressed:
                batch.change(event.execution_id, progress=event.progress, message=event.message)
            elif isinstance(event, _OPENS):
                batch.open(recorded.position, event)
            elif isinstance(event, JobCreated | JobUpdated):
                spec = event.spec
                job = (spec.name, spec.schedule_type, spec.equipment_id)
                self._jobs.pop(event.job_id, None)
                self._jobs[event.job_id] = job
                batch.jobs[event.job_id] = job
            elif type(event) is ExecutionLateResult:
                batch.change(event.execution_id, late_result=_late(event))
                if "data" in event.result:
                    # A capture that came after the execution ended (timed out, say) is
                    # still downloadable.
                    batch.flush()
                    _late_data(conn, event)
            elif type(event) is ExecutionDataStored:
                # Rare (one per upload that was pending): written at once, after the rows
                # the batch holds, so it sees the result that named the pending upload.
                batch.flush()
                _data_stored(conn, event)
            elif type(event) is ExecutionDataRemoved:
                batch.flush()
                _data_removed(conn, event)
            elif type(event) is ExecutionsPruned:
                batch.flush()
                conn.execute(
                    f"DELETE FROM executions WHERE {_PRUNABLE}", (*FINAL, instant(event.cutoff))
                )
        batch.flush()
        jobs = self._jobs
        if len(jobs) > MAX_JOBS_IN_MEMORY:
            for job_id in list(itertools.islice(jobs, len(jobs) - MAX_JOBS_IN_MEMORY)):
                del jobs[job_id]
        self._continuity.folded(conn, events)

    def _job_of(self, conn: sqlite3.Connection, job_id: str) -> tuple[str, str, str] | None:
        # Taken out and put back: the least recently used are let go first.
        job = self._jobs.pop(job_id, None)
        if job is None:
            row = conn.execute(_JOB, (job_id,)).fetchone()
            if row is None:
                return None
            job = (row[0], row[1], row[2])
        self._jobs[job_id] = job
        return job


class _Batch:
    """The rows one batch writes: new rows whole, older rows by the columns that changed."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        job_of: Callable[[sqlite3.Connection, str], tuple[str, str, str] | None],
    ) -> None:
        self.conn = conn
        self.job_of = job_of
        self.new: dict[str, list[Any]] = {}
        self.changed: dict[str, Row] = {}
        self.jobs: dict[str, tuple[str, str, str]] = {}

    def open(self, position: int, event: _Opening) -> None:
        # An opening replaces whatever the row held, as an upsert of the whole row does.
        self.changed.pop(event.execution_id, None)
        self.new[event.execution_id] = _opened(
            position, event, self.job_of(self.conn, event.job_id)
        )

    def change(self, execution_id: str, **fields: Any) -> None:
        row = self.new.get(execution_id)
        if row is not None:
            for column, value in fields.items():
                row[_COL[column]] = value
        else:
            # An UPDATE of a row pruned already (or never opened) changes nothing, as wanted.
            self.changed.setdefault(execution_id, {}).update(fields)

    def flush(self) -> None:
        conn = self.conn
        if self.jobs:
            conn.executemany(_UPSERT_JOB, [(j, *job) for j, job in self.jobs.items()])
        if self.new:
            conn.executemany(_UPSERT, list(self.new.values()))
        shapes: dict[tuple[str, ...], list[list[Any]]] = {}
        for execution_id, fields in self.changed.items():
            shapes.setdefault(tuple(fields), []).append([*fields.values(), execution_id])
        for columns, values in shapes.items():
            conn.executemany(_update(columns), values)
        self.jobs.clear()
        self.new.clear()
        self.changed.clear()


_COL = {c: i for i, c in enumerate(COLUMNS)}
_OPENS = (ExecutionQueued, ExecutionSkipped, ExecutionMissed, ExecutionCoalesced, ExecutionBlocked)
_UPSERT = (
    f"INSERT INTO executions ({', '.join(COLUMNS)}) VALUES ({', '.join('?' for _ in COLUMNS)})"
    " ON CONFLICT(execution_id) DO UPDATE SET"
    f" {', '.join(f'{c} = excluded.{c}' for c in COLUMNS if c != 'execution_id')}"
)
_UPSERT_JOB = (
    f"INSERT INTO execution_jobs ({', '.join(JOB_COLUMNS)})"
    f" VALUES ({', '.join('?' for _ in JOB_COLUMNS)})"
    " ON CONFLICT(job_id) DO UPDATE SET"
    f" {', '.join(f'{c} = excluded.{c}' for c in JOB_COLUMNS if c != 'job_id')}"
)
_JOB = "SELECT name, schedule_type, equipment_id FROM execution_jobs WHERE job_id = ?"


def _data_stored(conn: sqlite3.Connection, event: ExecutionDataStored) -> None:
    """pending_upload -> stored, with the object the store confirmed. A late or repeated one
    changes nothing: a row already stored or removed (or pruned, or never named a capture)
    is left as it is."""
    conn.execute(
        "UPDATE executions SET data_status = 'stored', data = json_set(COALESCE(data, '{}'),"
        " '$.object', ?, '$.size', ?, '$.sha256', ?, '$.stored_at', ?)"
        " WHERE execution_id = ? AND data_status = 'pending_upload'",
        (
            event.object,
            event.size,
            event.sha256,
            instant(event.stored_at),
            event.execution_id,
        ),
    )


def _data_removed(conn: sqlite3.Connection, event: ExecutionDataRemoved) -> None:
    removed_at = instant(event.removed_at)
    changed = conn.execute(
        "UPDATE executions SET data_status = 'removed', data = json_set(COALESCE(data, '{}'),"
        " '$.removed_at', ?, '$.removal_reason', ?) WHERE execution_id = ?"
        # A loss is of an upload still pending: never of a capture the store has.
        + (" AND data_status = 'pending_upload'" if event.reason == "lost" else ""),
        (removed_at, event.reason, event.execution_id),
    ).rowcount
    if event.reason == "lost" and not changed:
        return
    conn.execute(
        f"INSERT INTO {REMOVALS} ({', '.join(REMOVAL_COLUMNS)}) VALUES (?, ?, ?, ?, ?, ?)"
        f" ON CONFLICT(execution_id) DO UPDATE SET"
        f" {', '.join(f'{c} = excluded.{c}' for c in REMOVAL_COLUMNS[1:])}",
        (event.execution_id, event.job_id, event.object, event.size, removed_at, event.reason),
    )


def _late_data(conn: sqlite3.Connection, event: ExecutionLateResult) -> None:
    fields = _data_fields(event.result)
    if fields:
        conn.execute(
            "UPDATE executions SET data_status = ?, data = ?"
            " WHERE execution_id = ? AND data_status = 'none'",
            (fields["data_status"], fields["data"], event.execution_id),
        )


@functools.cache
def _update(columns: tuple[str, ...]) -> str:
    return f"UPDATE executions SET {', '.join(f'{c} = ?' for c in columns)} WHERE execution_id = ?"


def _opened(position: int, event: _Opening, job: tuple[str, str, str] | None) -> list[Any]:
    """A new execution's row, in COLUMNS order."""
    message: str | None = None
    missed_count: int | None = None
    window_start: str | None = None
    window_end: str | None = None
    coalesced_count: int | None = None
    coalesced_into: str | None = None
    error: str | None = None
    cause: str | None = None
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
            window_start = instant(event.window_start)
            window_end = instant(event.window_end)
        case ExecutionCoalesced():
            status, trigger_info, message = "coalesced", "scheduled", event.reason
            window_start = instant(event.window_start)
            window_end = instant(event.window_end)
            coalesced_count = event.coalesced_count
            coalesced_into = event.into_execution_id
        case ExecutionBlocked():
            status, trigger_info, message, cause = (
                "blocked",
                event.trigger_info,
                event.reason,
                event.cause,
            )
            error = to_json(
                {
                    "type": event.cause,
                    "message": event.reason,
                    "code": None,
                    "details": {
                        "equipment_id": event.equipment_id,
                        "certificate": event.certificate,
                        "due": event.due.isoformat() if event.due is not None else None,
                    },
                }
            )
    return [
        event.execution_id,
        position,
        event.job_id,
        *(job or (None, None, None)),
        status,
        trigger_info,
        instant(event.scheduled_time),
        instant(event.actual_time),
        None,  # started_at
        None,  # completed_at
        None,  # duration_seconds
        None,  # result
        error,
        0.0,  # progress
        message,
        missed_count,
        window_start,
        window_end,
        coalesced_count,
        coalesced_into,
        None,  # late_result
        "none",  # data_status
        None,  # data
        None,  # dispatched_at
        None,  # instrument_started_at
        None,  # instrument_ended_at
        cause,
    ]


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
    equipment_id: str | None = None,
) -> list[Row]:
    """Newest first (by ``seq``, the log position that opened each), up to ``limit`` rows;
    ``since``/``until`` bound the actual time (``until`` exclusive), ``before`` the seq."""
    where = Where().equals("job_id", job_id).one_of("status", status)
    where.equals("equipment_id", equipment_id)
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


# -- captured data (the download, retention and the byte bound read these) --------------------

_CAPTURE = "SELECT execution_id, job_id, data, COALESCE(completed_at, actual_time) FROM executions"


def removal_of(conn: sqlite3.Connection, execution_id: str) -> Row | None:
    """When and why an execution's capture left the bucket, kept after its row is pruned."""
    rows = as_dicts(
        conn.execute(
            f"SELECT {', '.join(REMOVAL_COLUMNS)} FROM {REMOVALS} WHERE execution_id = ?",
            (execution_id,),
        )
    )
    return rows[0] if rows else None


class Capture(NamedTuple):
    """A capture the view names: its execution, job, object, size and when it ended."""

    execution_id: str
    job_id: str
    object: str
    size: int
    ended: str | None


def _captures(cursor: sqlite3.Cursor) -> list[Capture]:
    found: list[Capture] = []
    for execution_id, job_id, data, ended in cursor:
        descriptor = json.loads(data) if data else {}
        name = descriptor.get("object")
        if isinstance(name, str) and name:
            found.append(
                Capture(execution_id, job_id, name, int(descriptor.get("size") or 0), ended)
            )
    return found


def prunable_captures(conn: sqlite3.Connection, cutoff: datetime) -> list[Capture]:
    """The captures (stored, or still pending upload) of the rows that folding
    ``ExecutionsPruned(cutoff)`` would drop now."""
    return _captures(
        conn.execute(
            f"{_CAPTURE} WHERE {_PRUNABLE} AND data_status IN ('stored', 'pending_upload')"
            " ORDER BY seq",
            (*FINAL, instant(cutoff)),
        )
    )


def stored_captures(conn: sqlite3.Connection) -> list[Capture]:
    """Every stored capture, oldest first (by the log position that opened its execution)."""
    return _captures(conn.execute(f"{_CAPTURE} WHERE data_status = 'stored' ORDER BY seq"))
