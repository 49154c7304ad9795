"""The jobs view: one row per live job, every guide field plus status, version and next run.

The row's state column is the job aggregate's own state, folded with the domain's evolve, so
the view can never disagree with what the command side decides from.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

import msgspec
import sqlite_utils

from lablink.domain.job import JobState, evolve
from lablink.events import (
    JobCompleted,
    JobCreated,
    JobDeleted,
    JobEvent,
    JobPaused,
    JobResumed,
    JobUpdated,
    RecordedEvent,
)
from lablink.projections.base import instant, to_json
from lablink.projections.bulk import BulkFold, Logged, Rows, occurred_instant
from lablink.projections.rows import Row, RowCache
from lablink.projections.views import job_view

SPEC_COLUMNS = (
    "name",
    "description",
    "schedule_type",
    "equipment_id",
    "trigger_type",
    "cron_expression",
    "interval_seconds",
    "interval_minutes",
    "interval_hours",
    "interval_days",
    "run_date",
    "time_of_day",
    "day_of_week",
    "day_of_month",
    "parameters",
    "max_instances",
    "misfire_grace_time",
    "coalesce",
    "start_date",
    "end_date",
    "max_executions",
    "tags",
    "profile_id",
    "on_failure_alarm",
    "conflict_policy",
    "timezone",
    "timeout_seconds",
    "alarm_after_missed",
)
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
        if column in ("parameters", "tags"):
            value = to_json(value)
        elif column in ("run_date", "start_date", "end_date"):
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
        for c in (
            "interval_seconds",
            "interval_minutes",
            "interval_hours",
            "interval_days",
            "misfire_grace_time",
            "timeout_seconds",
        ):
            types[c] = float
        for c in (
            "day_of_week",
            "day_of_month",
            "max_instances",
            "coalesce",
            "max_executions",
            "on_failure_alarm",
            "alarm_after_missed",
            "enabled",
            "version",
            "execution_count",
            "running_count",
            "queued_count",
        ):
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
