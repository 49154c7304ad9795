"""Counters behind GET /api/scheduler/statistics.

Executions are counted in 15-minute UTC buckets by the time they were fired, so "today" in
any time zone (every zone's offset is a multiple of 15 minutes) is a sum of at most 96
buckets, whatever the size of the executions table and whatever retention pruned.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, cast

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
    JobCompleted,
    JobCreated,
    JobDeleted,
    JobPaused,
    JobResumed,
    JobUpdated,
    RecordedEvent,
)
from lablink.projections.base import fast_instant
from lablink.projections.rows import RowCache

BUCKET_MINUTES = 15
JOB_COLUMNS = ("job_id", "schedule_type", "status")
OPEN_COLUMNS = ("execution_id", "job_id", "bucket", "schedule_type", "status")
BUCKET_COLUMNS = ("key", "bucket", "schedule_type", "status", "count")


def bucket_of(instant: datetime) -> str:
    """The 15-minute UTC bucket ``instant`` falls in (``2026-03-02T08:00:00Z``)."""
    text = fast_instant(instant)
    if text[0] == "0":
        # A UTC year below 1000: strftime writes it with fewer digits than isoformat.
        return _slow_bucket(instant)
    minute = int(text[14:16])
    return f"{text[:14]}{minute - minute % BUCKET_MINUTES:02d}:00Z"


def _slow_bucket(instant: datetime) -> str:
    utc = instant.astimezone(UTC)
    floored = utc.replace(minute=utc.minute - utc.minute % BUCKET_MINUTES, second=0, microsecond=0)
    return floored.strftime("%Y-%m-%dT%H:%M:%SZ")


# The facts the fold looks at, by type: anything else passes by at the cost of one lookup.
_OPENED: dict[type[Any], str] = {ExecutionRequested: "pending", ExecutionQueued: "queued"}
_ONCE: dict[type[Any], str] = dict(RECORDED_ENDED_STATUS)
_FINAL: dict[type[Any], str] = dict(ENDED_STATUS)
_JOB_STATUS: dict[type[Any], str] = {
    JobPaused: "paused",
    JobResumed: "active",
    JobCompleted: "completed",
}
_JOB_FACTS = frozenset((JobCreated, JobUpdated, JobDeleted, *_JOB_STATUS))


_MISSING: Any = object()


class StatisticsProjection:
    name = "statistics"
    tables: tuple[str, ...] = ("stats_jobs", "stats_job_counts", "stats_open", "stats_buckets")

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
        # Counts are summed per (bucket, type, status) in a plain dict and written once per
        # key; execution rows are read at most once per batch and changed in place; an
        # execution that opens and ends within the batch never reaches stats_open at all.
        jobs = RowCache(conn, "stats_jobs", "job_id", JOB_COLUMNS)
        tally = RowCache(conn, "stats_job_counts", "key", ("key", "count"))
        open_cache = RowCache(conn, "stats_open", "execution_id", OPEN_COLUMNS)
        open_rows = open_cache.load(())
        deltas: dict[tuple[str, str, str], int] = {}
        job_of = jobs.load({getattr(r.event, "job_id", None) for r in events} - {None}).get
        for recorded in events:
            event = recorded.event
            kind = type(event)
            # Most frequent first; anything else passes by at the cost of a few lookups.
            if (
                kind is ExecutionStarted
                or kind in _FINAL
                or (kind is ExecutionBlocked and cast(ExecutionBlocked, event).queued)
            ):
                # A queued run blocked at its turn moves from queued to blocked, as an end.
                moved: ExecutionStarted | ExecutionEnded | ExecutionBlocked = event  # type: ignore[assignment]
                execution_id = moved.execution_id
                row = open_rows.get(execution_id, _MISSING)
                if row is _MISSING:
                    row = open_cache.get(execution_id)
                if row is None:
                    continue
                key = (row["bucket"], row["schedule_type"], row["status"])
                deltas[key] = deltas.get(key, 0) - 1
                status = "running" if kind is ExecutionStarted else _FINAL.get(kind, "blocked")
                key = (row["bucket"], row["schedule_type"], status)
                deltas[key] = deltas.get(key, 0) + 1
                if kind is ExecutionStarted:
                    row["status"] = status
                    open_cache.changed(execution_id)
                else:
                    open_cache.delete(execution_id)
            elif kind in _OPENED:
                opened: ExecutionRequested | ExecutionQueued = event  # type: ignore[assignment]
                job = job_of(opened.job_id)
                schedule_type = job["schedule_type"] if job else "unknown"
                status = _OPENED[kind]
                bucket = bucket_of(opened.actual_time)
                open_cache.insert(
                    {
                        "execution_id": opened.execution_id,
                        "job_id": opened.job_id,
                        "bucket": bucket,
                        "schedule_type": schedule_type,
                        "status": status,
                    }
                )
                key = (bucket, schedule_type, status)
                deltas[key] = deltas.get(key, 0) + 1
            elif kind in _ONCE:
                once: ExecutionRecordedEnded = event  # type: ignore[assignment]
                job = job_of(once.job_id)
                schedule_type = job["schedule_type"] if job else "unknown"
                key = (bucket_of(once.actual_time), schedule_type, _ONCE[kind])
                deltas[key] = deltas.get(key, 0) + 1
            elif kind in _JOB_FACTS:
                self._job_fact(jobs, tally, event)  # type: ignore[arg-type]
        self._count(conn, deltas)
        jobs.flush()
        tally.flush()
        open_cache.flush()

    @staticmethod
    def _count(conn: sqlite3.Connection, deltas: dict[tuple[str, str, str], int]) -> None:
        """Add the batch's counts to the buckets' rows (a row that sums to 0 stays)."""
        buckets = RowCache(conn, "stats_buckets", "key", BUCKET_COLUMNS)
        for (bucket, schedule_type, status), delta in deltas.items():
            key = f"{bucket}|{schedule_type}|{status}"
            row = buckets.get(key) or {
                "key": key,
                "bucket": bucket,
                "schedule_type": schedule_type,
                "status": status,
                "count": 0,
            }
            row["count"] += delta
            buckets.put(row)
        buckets.flush()

    @classmethod
    def _job_fact(
        cls,
        jobs: RowCache,
        tally: RowCache,
        event: JobCreated | JobUpdated | JobPaused | JobResumed | JobCompleted | JobDeleted,
    ) -> None:
        match event:
            case JobCreated():
                status = "active" if event.enabled else "paused"
                new = {
                    "job_id": event.job_id,
                    "schedule_type": event.spec.schedule_type,
                    "status": status,
                }
                cls._job(jobs, tally, event.job_id, new)
            case JobUpdated():
                cls._change(jobs, tally, event.job_id, schedule_type=event.spec.schedule_type)
            case JobDeleted():
                cls._job(jobs, tally, event.job_id, None)
            case _:
                cls._change(jobs, tally, event.job_id, status=_JOB_STATUS[type(event)])

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
