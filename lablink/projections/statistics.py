"""Counters behind GET /api/scheduler/statistics.

Executions are counted in 15-minute UTC buckets by the time they were fired, so "today" in
any time zone (every zone's offset is a multiple of 15 minutes) is a sum of at most 96
buckets, whatever the size of the executions table and whatever retention pruned.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
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
    JobCompleted,
    JobCreated,
    JobDeleted,
    JobPaused,
    JobResumed,
    JobUpdated,
    RecordedEvent,
)
from lablink.projections.bulk import BulkFold, Logged, Rows, fast_instant
from lablink.projections.rows import RowCache

BUCKET_MINUTES = 15
JOB_COLUMNS = ("job_id", "schedule_type", "status")
OPEN_COLUMNS = ("execution_id", "job_id", "bucket", "schedule_type", "status")
BUCKET_COLUMNS = ("key", "bucket", "schedule_type", "status", "count")
_FINAL_STATUS = ENDED_STATUS


def bucket_of(instant: datetime) -> str:
    utc = instant.astimezone(UTC)
    floored = utc.replace(minute=utc.minute - utc.minute % BUCKET_MINUTES, second=0, microsecond=0)
    return floored.strftime("%Y-%m-%dT%H:%M:%SZ")


class _Counters:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.rows = RowCache(conn, "stats_buckets", "key", BUCKET_COLUMNS)

    def add(self, bucket: str, schedule_type: str, status: str, delta: int) -> None:
        key = f"{bucket}|{schedule_type}|{status}"
        row = self.rows.get(key) or {
            "key": key,
            "bucket": bucket,
            "schedule_type": schedule_type,
            "status": status,
            "count": 0,
        }
        self.rows.put({**row, "count": row["count"] + delta})


class StatisticsProjection:
    name = "statistics"
    tables: tuple[str, ...] = ("stats_jobs", "stats_job_counts", "stats_open", "stats_buckets")
    # Relative cost of the bulk fold (µs per event), for sharing a rebuild between processes.
    bulk_cost = 1.0

    def create(self, db: sqlite_utils.Database) -> None:
        db.table("stats_jobs").create(
            {c: str for c in JOB_COLUMNS}, pk="job_id", if_not_exists=True
        )
        db.table("stats_open").create(
            {c: str for c in OPEN_COLUMNS}, pk="execution_id", if_not_exists=True
        )
        db.table("stats_open").create_index(["status"], if_not_exists=True)
        # Jobs by status and by type, kept as counters so statistics never scan the jobs.
        db.table("stats_job_counts").create(
            {"key": str, "count": int}, pk="key", if_not_exists=True
        )
        db.table("stats_buckets").create(
            {"key": str, "bucket": str, "schedule_type": str, "status": str, "count": int},
            pk="key",
            if_not_exists=True,
        )
        # Covering: today's counts are read from the index alone.
        db.table("stats_buckets").create_index(["bucket", "status", "count"], if_not_exists=True)

    def forget(self) -> None:
        """Nothing is kept between batches."""

    def apply(self, conn: sqlite3.Connection, events: Sequence[RecordedEvent]) -> None:
        jobs = RowCache(conn, "stats_jobs", "job_id", JOB_COLUMNS)
        open_rows = RowCache(conn, "stats_open", "execution_id", OPEN_COLUMNS)
        counters = _Counters(conn)
        tally = RowCache(conn, "stats_job_counts", "key", ("key", "count"))
        for recorded in events:
            event = recorded.event
            match event:
                case JobCreated():
                    status = "active" if event.enabled else "paused"
                    self._job(
                        jobs,
                        tally,
                        event.job_id,
                        {
                            "job_id": event.job_id,
                            "schedule_type": event.spec.schedule_type,
                            "status": status,
                        },
                    )
                case JobUpdated():
                    self._change(jobs, tally, event.job_id, schedule_type=event.spec.schedule_type)
                case JobPaused():
                    self._change(jobs, tally, event.job_id, status="paused")
                case JobResumed():
                    self._change(jobs, tally, event.job_id, status="active")
                case JobCompleted():
                    self._change(jobs, tally, event.job_id, status="completed")
                case JobDeleted():
                    self._job(jobs, tally, event.job_id, None)
                case ExecutionRequested() | ExecutionQueued():
                    job = jobs.get(event.job_id)
                    kind = job["schedule_type"] if job else "unknown"
                    status = "queued" if isinstance(event, ExecutionQueued) else "pending"
                    bucket = bucket_of(event.actual_time)
                    open_rows.put(
                        {
                            "execution_id": event.execution_id,
                            "job_id": event.job_id,
                            "bucket": bucket,
                            "schedule_type": kind,
                            "status": status,
                        }
                    )
                    counters.add(bucket, kind, status, +1)
                case _ if isinstance(event, ExecutionRecordedEnded):
                    job = jobs.get(event.job_id)
                    kind = job["schedule_type"] if job else "unknown"
                    status = _ONCE_STATUS[type(event)]
                    counters.add(bucket_of(event.actual_time), kind, status, +1)
                case ExecutionStarted():
                    self._move(open_rows, counters, event.execution_id, "running", final=False)
                case _ if isinstance(event, ExecutionEnded):
                    status = _FINAL_STATUS[type(event)]
                    self._move(open_rows, counters, event.execution_id, status, final=True)
        jobs.flush()
        tally.flush()
        open_rows.flush()
        counters.rows.flush()

    def bulk(self) -> BulkFold:
        return _BulkStatistics()

    @staticmethod
    def _job(jobs: RowCache, tally: RowCache, job_id: str, new: dict[str, str] | None) -> None:
        """Replace a job's row and keep the per-status and per-type job counts in step."""
        old = jobs.get(job_id)
        for row, delta in ((old, -1), (new, +1)):
            if row is None:
                continue
            for key in (f"status:{row['status']}", f"type:{row['schedule_type']}"):
                current = tally.get(key) or {"key": key, "count": 0}
                tally.put({"key": key, "count": current["count"] + delta})
        if new is None:
            jobs.delete(job_id)
        else:
            jobs.put(new)

    @classmethod
    def _change(cls, jobs: RowCache, tally: RowCache, job_id: str, **fields: str) -> None:
        row = jobs.get(job_id)
        if row is not None:
            cls._job(jobs, tally, job_id, {**row, **fields})

    @staticmethod
    def _move(
        open_rows: RowCache, counters: _Counters, execution_id: str, status: str, *, final: bool
    ) -> None:
        row = open_rows.get(execution_id)
        if row is None:
            return
        counters.add(row["bucket"], row["schedule_type"], row["status"], -1)
        counters.add(row["bucket"], row["schedule_type"], status, +1)
        if final:
            open_rows.delete(execution_id)
        else:
            open_rows.put({**row, "status": status})


# -- reads (this module owns the stats_* tables) ---------------------------------------------


def job_counts(conn: sqlite3.Connection) -> dict[str, int]:
    """Jobs by ``status:<status>`` and by ``type:<schedule type>`` (non-zero counts only)."""
    return dict(conn.execute("SELECT key, count FROM stats_job_counts WHERE count > 0").fetchall())


def running_count(conn: sqlite3.Connection) -> int:
    (running,) = conn.execute("SELECT COUNT(*) FROM stats_open WHERE status = 'running'").fetchone()
    return int(running)


def counts_between(conn: sqlite3.Connection, start: datetime, end: datetime) -> dict[str, Any]:
    """Executions by status whose buckets lie in [start, end)."""
    return dict(
        conn.execute(
            "SELECT status, SUM(count) FROM stats_buckets WHERE bucket >= ? AND bucket < ?"
            " GROUP BY status",
            (bucket_of(start), bucket_of(end)),
        ).fetchall()
    )


def running_job_ids(conn: sqlite3.Connection) -> list[str]:
    """Ids of the jobs with an execution running now, in order."""
    return [
        r[0]
        for r in conn.execute(
            "SELECT DISTINCT job_id FROM stats_open WHERE status = 'running' ORDER BY job_id"
        )
    ]


# -- bulk rebuild -------------------------------------------------------------------------------
# The same fold as ``apply`` over plain dicts, for rebuilding from empty tables (see
# projections/bulk.py); the replay property tests hold the two to the same rows.

_JOB_STATUS: dict[type[Any], str] = {
    JobPaused: "paused",
    JobResumed: "active",
    JobCompleted: "completed",
}
_OPEN_STATUS: dict[type[Any], str] = {ExecutionRequested: "pending", ExecutionQueued: "queued"}
_ONCE_STATUS = RECORDED_ENDED_STATUS


def _fast_bucket(instant: datetime) -> str:
    """``bucket_of`` without strftime, for the UTC instants the log decodes to (a year
    below 1000 is written with fewer digits by strftime than by isoformat)."""
    text = fast_instant(instant)
    if instant.year < 1000:
        return bucket_of(instant)
    minute = int(text[14:16])
    return f"{text[:14]}{minute - minute % BUCKET_MINUTES:02d}:00Z"


class _BulkStatistics:
    def __init__(self) -> None:
        self.jobs: dict[str, tuple[str, str]] = {}  # job id -> (schedule type, status)
        self.tally: dict[str, int] = {}
        self.open: dict[str, list[str]] = {}  # rows of stats_open
        self.buckets: dict[str, list[Any]] = {}  # rows of stats_buckets by key

    def fold(self, events: Sequence[Logged]) -> None:
        jobs, open_rows, count = self.jobs, self.open, self._count
        for _, _, _, _, event in events:
            # Most frequent first; `type(e) is C` is the cheapest test that mypy narrows on.
            if type(event) is ExecutionStarted:
                self._move(event.execution_id, "running", final=False)
            elif isinstance(event, ExecutionEnded):
                self._move(event.execution_id, _FINAL_STATUS[type(event)], final=True)
            elif isinstance(event, ExecutionRequested | ExecutionQueued):
                job = jobs.get(event.job_id)
                schedule_type = job[0] if job else "unknown"
                status = _OPEN_STATUS[type(event)]
                bucket = _fast_bucket(event.actual_time)
                open_rows[event.execution_id] = [
                    event.execution_id,
                    event.job_id,
                    bucket,
                    schedule_type,
                    status,
                ]
                count(bucket, schedule_type, status, +1)
            elif isinstance(event, ExecutionRecordedEnded):
                job = jobs.get(event.job_id)
                schedule_type = job[0] if job else "unknown"
                status = _ONCE_STATUS[type(event)]
                count(_fast_bucket(event.actual_time), schedule_type, status, +1)
            elif type(event) is JobCreated:
                status = "active" if event.enabled else "paused"
                self._job(event.job_id, (event.spec.schedule_type, status))
            elif type(event) is JobUpdated:
                job = jobs.get(event.job_id)
                if job is not None:
                    self._job(event.job_id, (event.spec.schedule_type, job[1]))
            elif isinstance(event, JobPaused | JobResumed | JobCompleted):
                job = jobs.get(event.job_id)
                if job is not None:
                    self._job(event.job_id, (job[0], _JOB_STATUS[type(event)]))
            elif type(event) is JobDeleted:
                self._job(event.job_id, None)

    def _job(self, job_id: str, new: tuple[str, str] | None) -> None:
        tally = self.tally
        old = self.jobs.get(job_id)
        for job, delta in ((old, -1), (new, +1)):
            if job is None:
                continue
            for key in (f"status:{job[1]}", f"type:{job[0]}"):
                tally[key] = tally.get(key, 0) + delta
        if new is None:
            self.jobs.pop(job_id, None)
        else:
            self.jobs[job_id] = new

    def _count(self, bucket: str, schedule_type: str, status: str, delta: int) -> None:
        key = f"{bucket}|{schedule_type}|{status}"
        row = self.buckets.get(key)
        if row is None:
            self.buckets[key] = [key, bucket, schedule_type, status, delta]
        else:
            row[4] += delta

    def _move(self, execution_id: str, status: str, *, final: bool) -> None:
        row = self.open.get(execution_id)
        if row is None:
            return
        self._count(row[2], row[3], row[4], -1)
        self._count(row[2], row[3], status, +1)
        if final:
            del self.open[execution_id]
        else:
            row[4] = status

    def rows(self) -> Rows:
        return {
            "stats_jobs": (
                JOB_COLUMNS,
                [(job_id, *job) for job_id, job in self.jobs.items()],
            ),
            "stats_job_counts": (("key", "count"), list(self.tally.items())),
            "stats_open": (OPEN_COLUMNS, list(self.open.values())),
            "stats_buckets": (BUCKET_COLUMNS, list(self.buckets.values())),
        }
