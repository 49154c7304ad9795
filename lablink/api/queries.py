"""Reads for the API: the projections' query functions (each projection module owns its
tables and their SQL), shaped as the API shows them. Each function takes a read connection."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import msgspec

from lablink.api.calibration_views import CalibrationRules, missing_summary, summaries
from lablink.events import EXECUTION_STATUSES
from lablink.eventstore.base import format_instant
from lablink.instruments.protocol import QueueDepth
from lablink.projections.alarms import get_alarm_row, list_alarm_rows, state_counts
from lablink.projections.equipment import list_equipment_rows
from lablink.projections.executions import get_execution_row, list_execution_rows, running_now
from lablink.projections.history import ENDED_COUNTERS, read_history
from lablink.projections.jobs import get_job, list_job_views, next_to_fire, schedule_of
from lablink.projections.statistics import (
    counts_between,
    job_counts,
    running_count,
    running_job_ids,
)
from lablink.projections.views import alarm_view, execution_view, iso

# get_job and list_job_views are the jobs view's own (it renders each job as it folds it),
# named here too so that the controllers read from one place.
__all__ = [
    "alarm_counts",
    "get_alarm",
    "get_execution",
    "get_job",
    "job_history",
    "list_alarms",
    "list_equipment",
    "list_executions",
    "list_job_views",
    "running_jobs",
    "statistics",
]


def _page(
    rows: list[dict[str, Any]], limit: int, key: str
) -> tuple[list[dict[str, Any]], int | None]:
    """``limit + 1`` rows read: the page, and the cursor of the next one if there is one."""
    page = rows[:limit]
    return page, (page[-1][key] if len(rows) > limit and page else None)


def get_execution(conn: sqlite3.Connection, execution_id: str) -> dict[str, Any] | None:
    row = get_execution_row(conn, execution_id)
    return execution_view(row) if row else None


def list_executions(
    conn: sqlite3.Connection,
    *,
    job_id: str | None = None,
    status: Sequence[str] = (),
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 100,
    before: int | None = None,
    equipment_id: str | None = None,
) -> tuple[list[dict[str, Any]], int | None]:
    """Newest first. Returns the page and the cursor for the next (older) page, if any."""
    rows = list_execution_rows(
        conn,
        job_id=job_id,
        equipment_id=equipment_id,
        status=status,
        since=since,
        until=until,
        before=before,
        limit=limit + 1,
    )
    page, cursor = _page(rows, limit, "seq")
    return [execution_view(r) for r in page], cursor


def job_history(conn: sqlite3.Connection, job_id: str) -> dict[str, Any] | None:
    """Each execution counts once in ``total_executions`` and once under its own status
    (docs/api.md, "Job history"): the counts never overlap, and with ``in_progress`` they sum
    to the total."""
    row = read_history(conn, job_id)
    job = schedule_of(conn, job_id)
    if row is None or job is None:
        return None
    zone = ZoneInfo(job[1])
    average = row["duration_total"] / row["duration_count"] if row["duration_count"] else None
    counts = {name: row[name] for name in ENDED_COUNTERS}
    return {
        "job_id": job_id,
        "job_name": row["job_name"],
        "total_executions": row["total_executions"],
        **counts,
        # Pending, queued or running now.
        "in_progress": row["total_executions"] - sum(counts.values()),
        "average_duration": average,
        "last_execution": iso(row["last_execution"], zone),
        "last_execution_id": row["last_execution_id"],
        "last_status": row["last_status"],
        "next_run": iso(job[0], zone),
        "last_instrument_started_at": iso(row["last_instrument_started_at"], zone),
        "last_instrument_ended_at": iso(row["last_instrument_ended_at"], zone),
    }


FAILED_TODAY = ("failed", "timed_out", "interrupted")


def statistics(conn: sqlite3.Connection, *, now: datetime, zone: ZoneInfo) -> dict[str, Any]:
    counts = job_counts(conn)
    jobs = {k[7:]: v for k, v in counts.items() if k.startswith("status:")}
    by_type = {k[5:]: v for k, v in counts.items() if k.startswith("type:")}
    running = running_count(conn)
    local_day = now.astimezone(zone).date()
    # Local midnights, so a 23- or 25-hour DST day counts exactly its own hours.
    start = datetime.combine(local_day, time(0), tzinfo=zone)
    end = datetime.combine(local_day + timedelta(days=1), time(0), tzinfo=zone)
    today = counts_between(conn, start, end)
    upcoming = [
        {"job_id": job_id, "job_name": name, "next_run": iso(when, ZoneInfo(tz))}
        for job_id, name, when, tz in next_to_fire(conn, 10)
    ]
    total = sum(jobs.values())
    return {
        "total_jobs": total,
        "active_jobs": jobs.get("active", 0),
        "disabled_jobs": jobs.get("paused", 0),
        "completed_jobs": jobs.get("completed", 0),
        "running_executions": running,
        "total_executions_today": sum(v for v in today.values() if v),
        "successful_today": today.get("completed", 0) or 0,
        # Every execution that ended without its result: the endings that raise a failure
        # alarm (failed, timed_out, interrupted), each also given on its own below.
        "failed_today": sum(today.get(s, 0) or 0 for s in FAILED_TODAY),
        "failed_today_includes": list(FAILED_TODAY),
        "skipped_today": today.get("skipped", 0) or 0,
        "missed_today": today.get("missed", 0) or 0,
        "today_by_status": {s: today.get(s, 0) or 0 for s in EXECUTION_STATUSES},
        "by_type": by_type,
        "upcoming_jobs": upcoming,
        "timezone": zone.key,
    }


def running_jobs(conn: sqlite3.Connection) -> list[str]:
    return running_job_ids(conn)


def list_equipment(
    conn: sqlite3.Connection,
    *,
    live: Mapping[str, tuple[datetime, bool]] | None = None,
    equipment_id: str | None = None,
    queues: Mapping[str, QueueDepth] | None = None,
    calibration: CalibrationRules | None = None,
) -> list[dict[str, Any]]:
    """The equipment projection, with what each instrument runs now (the executions
    projection). ``live`` gives the last heartbeat this process saw (and whether its agent
    is still online), which is newer than the log: heartbeats are not events; ``queues``
    each instrument's queue now (``queue`` is None for one it lacks); ``calibration``: each
    instrument's calibration status at that instant (the calibration view)."""
    rows = list_equipment_rows(conn, equipment_id)
    assessed = summaries(conn, calibration) if calibration is not None else {}
    running: dict[str, list[dict[str, Any]]] = {}
    for eid, execution_id, job_id, job_name, started_at in running_now(conn):
        running.setdefault(eid, []).append(
            {
                "execution_id": execution_id,
                "job_id": job_id,
                "job_name": job_name,
                "started_at": iso(started_at),
            }
        )
    items = []
    for row in rows:
        eid = row["equipment_id"]
        last_seen = row.pop("last_seen")
        seen = (live or {}).get(eid)
        if seen is not None and seen[1]:
            last_seen = format_instant(seen[0])
        identity = {k: row.pop(k) for k in ("manufacturer", "model", "serial", "firmware")}
        items.append(
            {
                "equipment_id": eid,
                "kind": row["kind"],
                "status": row["status"],
                "online": row["status"] == "online",
                "identity": {**identity, "raw": row["identity"]},
                "agent_id": row["agent_id"],
                "resource": row["resource"],
                "since": iso(row["since"]),
                "last_seen": iso(last_seen),
                "reason": row["reason"] or None,
                "running": running.get(eid, []),
                "queue": _queue((queues or {}).get(eid)),
                "calibration": (
                    msgspec.to_builtins(assessed.get(eid) or missing_summary(eid, calibration))
                    if calibration is not None
                    else None
                ),
            }
        )
    return items


def _queue(depth: QueueDepth | None) -> dict[str, int] | None:
    if depth is None:
        return None
    return {"queued": depth.queued, "running": depth.running, "depth": depth.depth}


def get_alarm(conn: sqlite3.Connection, alarm_id: str) -> dict[str, Any] | None:
    row = get_alarm_row(conn, alarm_id)
    return alarm_view(row) if row else None


def list_alarms(
    conn: sqlite3.Connection,
    *,
    state: Sequence[str] = (),
    severity: Sequence[str] = (),
    equipment_id: str | None = None,
    job_id: str | None = None,
    limit: int = 100,
    before: int | None = None,
) -> tuple[list[dict[str, Any]], int | None]:
    """Newest first, with the cursor of the next (older) page."""
    rows = list_alarm_rows(
        conn,
        state=state,
        severity=severity,
        equipment_id=equipment_id,
        job_id=job_id,
        before=before,
        limit=limit + 1,
    )
    page, cursor = _page(rows, limit, "raised_position")
    return [alarm_view(r) for r in page], cursor


def alarm_counts(conn: sqlite3.Connection) -> dict[str, int]:
    counts = state_counts(conn)
    return {
        "active_alarms": counts.get("active", 0) + counts.get("acknowledged", 0),
        "unacknowledged_alarms": counts.get("active", 0),
    }
