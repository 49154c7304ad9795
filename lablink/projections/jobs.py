"""The jobs view: one row per live job, every guide field plus status, version and next run.

The row's state column is the job aggregate's own state, folded with the domain's evolve, so
the view can never disagree with what the command side decides from.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from datetime import datetime
from types import UnionType
from typing import Any, Union, get_args, get_origin

import msgspec
import sqlite_utils

from lablink.domain.job import JobState, evolve
from lablink.domain.requests import FIELD_ORDER
from lablink.events import (
    JobCompleted,
    JobCreated,
    JobDeleted,
    JobEvent,
    JobPaused,
    JobResumed,
    JobSpec,
    JobUpdated,
    RecordedEvent,
)
from lablink.projections.base import Where, instant, to_json
from lablink.projections.bulk import BulkFold, Logged, Rows, occurred_instant
from lablink.projections.rows import Row, RowCache
from lablink.projections.views import job_view

# The spec's fields, each a column, in the guide's order (the order the API shows them).
SPEC_COLUMNS: tuple[str, ...] = tuple(f for f in FIELD_ORDER if f in JobSpec.__struct_fields__)


def _kinds(column: str) -> set[Any]:
    """The types a spec field holds, None aside (``float | None`` -> {float})."""
    kind = _SPEC_TYPES[column]
    kinds = get_args(kind) if get_origin(kind) in (Union, UnionType) else (kind,)
    return {get_origin(k) or k for k in kinds} - {type(None)}


_SPEC_TYPES = {field.name: field.type for field in msgspec.structs.fields(JobSpec)}
# Stored as JSON text (parameters, tags) and as UTC instants (run_date, start_date, end_date).
_SPEC_JSON = frozenset(c for c in SPEC_COLUMNS if _kinds(c) & {dict, tuple, list})
_SPEC_INSTANTS = frozenset(c for c in SPEC_COLUMNS if _kinds(c) == {datetime})
COLUMNS = (
    "job_id",
    *SPEC_COLUMNS,
    "enabled",
    "status",
    "version",
    "created_by",
    "created_at",
    "updated_at",
    "next_run_time",
    "last_fire_time",
    "execution_count",
    "running_count",
    "queued_count",
    "parameters_check",
    "state",
    "view",
)
_DEFINITION_EVENTS = (JobCreated, JobUpdated, JobPaused, JobResumed, JobCompleted)
_state_decoder = msgspec.json.Decoder(JobState)
_JOB_EVENTS = frozenset(JobEvent)
_DEFINITIONS = frozenset(_DEFINITION_EVENTS)


def _row(state: JobState, version: int, updated_at: str | None) -> Row:
    spec = state.spec
    assert spec is not None
    row: Row = {"job_id": state.job_id}
    for column in SPEC_COLUMNS:
        value: Any = getattr(spec, column)
        if column in _SPEC_JSON:
            value = to_json(value)
        elif column in _SPEC_INSTANTS:
            value = instant(value)
        row[column] = value
    row.update(
        enabled=int(state.enabled),
        status=state.status,
        version=version,
        created_by=state.created_by,
        created_at=instant(state.created_at),
        updated_at=updated_at,
        next_run_time=instant(state.next_fire_time()),
        last_fire_time=instant(state.last_fire_time),
        execution_count=state.counted_runs,
        running_count=len(state.running) + len(state.pending),
        queued_count=len(state.queued),
        parameters_check=state.parameters_check,
        state=to_json(state),
    )
    row["view"] = to_json(job_view(row))
    return row


class JobsProjection:
    name = "jobs"
    tables: tuple[str, ...] = ("jobs",)
    # Relative cost of the bulk fold (µs per event), for sharing a rebuild between processes.
    bulk_cost = 2.6

    def create(self, db: sqlite_utils.Database) -> None:
        types: dict[str, Any] = {c: str for c in COLUMNS}
        for c in SPEC_COLUMNS:
            if _kinds(c) == {float}:
                types[c] = float
            elif _kinds(c) <= {int, bool}:
                types[c] = int
        for c in ("enabled", "version", "execution_count", "running_count", "queued_count"):
            types[c] = int
        db.table("jobs").create(types, pk="job_id", if_not_exists=True)
        for columns in (
            ["next_run_time"],
            ["equipment_id"],
            ["schedule_type"],
            ["enabled"],
            ["running_count"],
            ["created_at", "job_id"],
        ):
            db.table("jobs").create_index(columns, if_not_exists=True)

    def bulk(self) -> BulkFold:
        return _BulkJobs()

    def forget(self) -> None:
        """Nothing is kept between batches."""

    def apply(self, conn: sqlite3.Connection, events: Sequence[RecordedEvent]) -> None:
        cache = RowCache(conn, "jobs", "job_id", COLUMNS)
        touched: dict[str, tuple[JobState, int, str | None]] = {}
        for recorded in events:
            event = recorded.event
            if not isinstance(event, JobEvent):
                continue
            job_id = event.job_id
            if isinstance(event, JobDeleted):
                touched.pop(job_id, None)
                cache.delete(job_id)
                continue
            if job_id in touched:
                state, _, updated_at = touched[job_id]
            elif isinstance(event, JobCreated):
                state, updated_at = JobState(job_id=job_id), None
            else:
                row = cache.get(job_id)
                if row is None:
                    continue  # execution facts of a job deleted in an earlier batch
                state, updated_at = _state_decoder.decode(row["state"]), row["updated_at"]
            if isinstance(event, _DEFINITION_EVENTS):
                updated_at = instant(recorded.occurred_at)
            touched[job_id] = (evolve(state, event), recorded.version, updated_at)
        for state, version, updated_at in touched.values():
            cache.put(_row(state, version, updated_at))
        cache.flush()


# -- reads (this module owns the jobs table) ------------------------------------------------


def get_job(conn: sqlite3.Connection, job_id: str) -> dict[str, Any] | None:
    """The job as the API shows it (rendered when folded), or None."""
    row = conn.execute("SELECT view FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
    return json.loads(row[0]) if row else None


def list_job_views(
    conn: sqlite3.Connection,
    *,
    enabled: bool | None = None,
    schedule_type: str | None = None,
    equipment_id: str | None = None,
    tag: str | None = None,
    search: str | None = None,
    status: str | None = None,
    limit: int = 1000,
    offset: int = 0,
) -> tuple[int, list[str]]:
    """(total matching, the page as the jobs' rendered JSON views)."""
    where = Where()
    where.equals("enabled", int(enabled) if enabled is not None else None)
    where.equals("schedule_type", schedule_type).equals("equipment_id", equipment_id)
    where.equals("status", status)
    if tag is not None:
        where.add("EXISTS (SELECT 1 FROM json_each(jobs.tags) WHERE value = ?)", tag)
    if search:
        pattern = "%" + search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        where.add("(name LIKE ? ESCAPE '\\' OR description LIKE ? ESCAPE '\\')", pattern, pattern)
    (total,) = conn.execute(f"SELECT COUNT(*) FROM jobs{where}", where.args).fetchone()
    views = [
        row[0]
        for row in conn.execute(
            f"SELECT view FROM jobs{where} ORDER BY created_at, job_id LIMIT ? OFFSET ?",
            [*where.args, limit, offset],
        )
    ]
    return int(total), views


def schedule_of(conn: sqlite3.Connection, job_id: str) -> tuple[str | None, str] | None:
    """(next run time as stored, time zone) of the job, or None."""
    row = conn.execute(
        "SELECT next_run_time, timezone FROM jobs WHERE job_id = ?", (job_id,)
    ).fetchone()
    return (row[0], row[1]) if row else None


def next_to_fire(conn: sqlite3.Connection, limit: int = 10) -> list[tuple[str, str, str, str]]:
    """(job id, name, next run time, time zone) of the next active jobs to fire."""
    return conn.execute(
        "SELECT job_id, name, next_run_time, timezone FROM jobs"
        " WHERE status = 'active' AND next_run_time IS NOT NULL"
        " ORDER BY next_run_time LIMIT ?",
        (limit,),
    ).fetchall()


def active_schedules(conn: sqlite3.Connection) -> list[tuple[str, str | None]]:
    """(job id, next run time as stored) of every active job."""
    return conn.execute("SELECT job_id, next_run_time FROM jobs WHERE status = 'active'").fetchall()


def with_unfinished(conn: sqlite3.Connection) -> list[str]:
    """Ids of the jobs with executions running or queued."""
    return [
        r[0]
        for r in conn.execute("SELECT job_id FROM jobs WHERE running_count > 0 OR queued_count > 0")
    ]


def read_snapshot(conn: sqlite3.Connection, job_id: str) -> tuple[JobState, int] | None:
    """The job aggregate's own fold as the view stored it, with the version it reflects.

    A starting point for loading the aggregate without folding a long stream: the caller
    reads only the events past this version, and an append from a stale one fails cleanly.
    """
    row = conn.execute("SELECT state, version FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
    if row is None:
        return None
    return _state_decoder.decode(row[0]), int(row[1])


# -- bulk rebuild -------------------------------------------------------------------------------


class _BulkJobs:
    """The same fold as ``apply``, each job's state kept in memory and its row rendered once
    at the end, for rebuilding from an empty table (see projections/bulk.py)."""

    def __init__(self) -> None:
        self.jobs: dict[str, tuple[JobState, int, str | None]] = {}

    def fold(self, events: Sequence[Logged]) -> None:
        jobs = self.jobs
        for _, version, occurred_at, _, event in events:
            kind = type(event)
            if kind not in _JOB_EVENTS:
                continue
            # Every job event has a job id: the membership test above is what mypy misses.
            job_id: str = event.job_id  # type: ignore[union-attr,assignment]
            if kind is JobDeleted:
                jobs.pop(job_id, None)
                continue
            if kind is JobCreated:
                # As live, where a creation is never in the same append as its job's row.
                state, updated_at = JobState(job_id=job_id), None
            else:
                current = jobs.get(job_id)
                if current is None:
                    continue  # execution facts of a deleted job
                state, _, updated_at = current
            if kind in _DEFINITIONS:
                updated_at = occurred_instant(occurred_at)
            jobs[job_id] = (evolve(state, event), version, updated_at)

    def rows(self) -> Rows:
        return {
            "jobs": (
                COLUMNS,
                [
                    _values(_row(state, version, updated_at))
                    for state, version, updated_at in self.jobs.values()
                ],
            )
        }


def _values(row: Row) -> list[Any]:
    return [row[column] for column in COLUMNS]
