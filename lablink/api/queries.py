"""Reads for the API, from the projections only. Each function takes a read connection."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from lablink.events import EXECUTION_STATUSES
from lablink.eventstore.base import format_instant
from lablink.projections.statistics import bucket_of
from lablink.projections.views import execution_view, iso

EXECUTION_COLUMNS = (
    "execution_id, seq, job_id, job_name, schedule_type, equipment_id, status, trigger_info,"
    " scheduled_time, actual_time, started_at, completed_at, duration_seconds, result, error,"
    " progress, message, missed_count, window_start, window_end, coalesced_count, coalesced_into,"
    " late_result"
)


def _dicts(cursor: sqlite3.Cursor) -> list[dict[str, Any]]:
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _page(
    rows: list[dict[str, Any]], limit: int, key: str
) -> tuple[list[dict[str, Any]], int | None]:
    """``limit + 1`` rows read: the page, and the cursor of the next one if there is one."""
    page = rows[:limit]
    return page, (page[-1][key] if len(rows) > limit and page else None)


def get_job(conn: sqlite3.Connection, job_id: str) -> dict[str, Any] | None:
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
    where: list[str] = []
    args: list[Any] = []
    if enabled is not None:
        where.append("enabled = ?")
        args.append(int(enabled))
    if schedule_type is not None:
        where.append("schedule_type = ?")
        args.append(schedule_type)
    if equipment_id is not None:
        where.append("equipment_id = ?")
        args.append(equipment_id)
    if status is not None:
        where.append("status = ?")
        args.append(status)
    if tag is not None:
        where.append("EXISTS (SELECT 1 FROM json_each(jobs.tags) WHERE value = ?)")
        args.append(tag)
    if search:
        where.append("(name LIKE ? ESCAPE '\\' OR description LIKE ? ESCAPE '\\')")
        pattern = "%" + search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        args += [pattern, pattern]
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    (total,) = conn.execute(f"SELECT COUNT(*) FROM jobs{clause}", args).fetchone()
    views = [
        row[0]
        for row in conn.execute(
            f"SELECT view FROM jobs{clause} ORDER BY created_at, job_id LIMIT ? OFFSET ?",
            [*args, limit, offset],
        )
    ]
    return int(total), views


def get_execution(conn: sqlite3.Connection, execution_id: str) -> dict[str, Any] | None:
    rows = _dicts(
        conn.execute(
            f"SELECT {EXECUTION_COLUMNS} FROM executions WHERE execution_id = ?", (execution_id,)
        )
    )
    return execution_view(rows[0]) if rows else None


def list_executions(
    conn: sqlite3.Connection,
    *,
    job_id: str | None = None,
    status: Sequence[str] = (),
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 100,
    before: int | None = None,
) -> tuple[list[dict[str, Any]], int | None]:
    """Newest first. Returns the page and the cursor for the next (older) page, if any."""
    where: list[str] = []
    args: list[Any] = []
    if job_id is not None:
        where.append("job_id = ?")
        args.append(job_id)
    if status:
        where.append(f"status IN ({', '.join('?' for _ in status)})")
        args += list(status)
    if since is not None:
        where.append("actual_time >= ?")
        args.append(format_instant(since))
    if until is not None:
        where.append("actual_time < ?")
        args.append(format_instant(until))
    if before is not None:
        where.append("seq < ?")
        args.append(before)
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    rows = _dicts(
        conn.execute(
            f"SELECT {EXECUTION_COLUMNS} FROM executions{clause} ORDER BY seq DESC LIMIT ?",
            [*args, limit + 1],
        )
    )
    page, cursor = _page(rows, limit, "seq")
    return [execution_view(r) for r in page], cursor


# Final statuses as the history counts them (``completed`` is the guide's ``successful``).
HISTORY_COUNTS = (
    "successful",
    "failed",
    "timed_out",
    "interrupted",
    "cancelled",
    "skipped",
    "missed",
    "coalesced",
)


def job_history(conn: sqlite3.Connection, job_id: str) -> dict[str, Any] | None:
    """Each execution counts once in ``total_executions`` and once under its own status
    (docs/api.md, "Job history"): the counts never overlap, and with ``in_progress`` they sum
    to the total."""
    rows = _dicts(conn.execute("SELECT * FROM job_history WHERE job_id = ?", (job_id,)))
    job = conn.execute(
        "SELECT next_run_time, timezone FROM jobs WHERE job_id = ?", (job_id,)
    ).fetchone()
    if not rows or job is None:
        return None
    row = rows[0]
    zone = ZoneInfo(job[1])
    average = row["duration_total"] / row["duration_count"] if row["duration_count"] else None
    counts = {name: row[name] for name in HISTORY_COUNTS}
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
    }


FAILED_TODAY = ("failed", "timed_out", "interrupted")


def statistics(conn: sqlite3.Connection, *, now: datetime, zone: ZoneInfo) -> dict[str, Any]:
    counts = dict(
        conn.execute("SELECT key, count FROM stats_job_counts WHERE count > 0").fetchall()
    )
    jobs = {k[7:]: v for k, v in counts.items() if k.startswith("status:")}
    by_type = {k[5:]: v for k, v in counts.items() if k.startswith("type:")}
    (running,) = conn.execute("SELECT COUNT(*) FROM stats_open WHERE status = 'running'").fetchone()
    local_day = now.astimezone(zone).date()
    # Local midnights, so a 23- or 25-hour DST day counts exactly its own hours.
    start = datetime.combine(local_day, time(0), tzinfo=zone)
    end = datetime.combine(local_day + timedelta(days=1), time(0), tzinfo=zone)
    today = dict(
        conn.execute(
            "SELECT status, SUM(count) FROM stats_buckets WHERE bucket >= ? AND bucket < ?"
            " GROUP BY status",
            (bucket_of(start), bucket_of(end)),
        ).fetchall()
    )
    upcoming = [
        {"job_id": job_id, "job_name": name, "next_run": iso(when, ZoneInfo(tz))}
        for job_id, name, when, tz in conn.execute(
            "SELECT job_id, name, next_run_time, timezone FROM jobs"
            " WHERE status = 'active' AND next_run_time IS NOT NULL"
            " ORDER BY next_run_time LIMIT 10"
        )
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
    return [
        r[0]
        for r in conn.execute(
            "SELECT DISTINCT job_id FROM stats_open WHERE status = 'running' ORDER BY job_id"
        )
    ]


def list_equipment(
    conn: sqlite3.Connection,
    *,
    live: Mapping[str, tuple[datetime, bool]] | None = None,
    equipment_id: str | None = None,
) -> list[dict[str, Any]]:
    """The equipment projection, with what each instrument runs now (the executions
    projection). ``live`` gives the last heartbeat this process saw (and whether its agent
    is still online), which is newer than the log: heartbeats are not events."""
    sql = "SELECT * FROM equipment"
    args: tuple[Any, ...] = ()
    if equipment_id is not None:
        sql += " WHERE equipment_id = ?"
        args = (equipment_id,)
    rows = _dicts(conn.execute(sql + " ORDER BY equipment_id", args))
    running: dict[str, list[dict[str, Any]]] = {}
    for eid, execution_id, job_id, job_name, started_at in conn.execute(
        "SELECT equipment_id, execution_id, job_id, job_name, started_at FROM executions"
        " WHERE status = 'running' ORDER BY seq"
    ):
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
            }
        )
    return items


ALARM_COLUMNS = (
    "alarm_id, raised_position, kind, severity, state, message, equipment_id, job_id,"
    " job_name, execution_id, execution_time, error, equipment, raised_at, raised_by,"
    " acknowledged_by, acknowledged_at, acknowledge_note, cleared_by, cleared_at, clear_note"
)


def _alarm_view(row: dict[str, Any]) -> dict[str, Any]:
    view = dict(row)
    view.pop("raised_position")
    view["error"] = json.loads(row["error"] or "{}")
    view["equipment"] = json.loads(row["equipment"] or "{}")
    for name in ("execution_time", "raised_at", "acknowledged_at", "cleared_at"):
        view[name] = iso(row[name])
    view["acknowledged"] = (
        {
            "by": row["acknowledged_by"],
            "at": view["acknowledged_at"],
            "note": row["acknowledge_note"],
        }
        if row["acknowledged_by"]
        else None
    )
    view["cleared"] = (
        {"by": row["cleared_by"], "at": view["cleared_at"], "note": row["clear_note"]}
        if row["cleared_by"]
        else None
    )
    for name in (
        "acknowledged_by",
        "acknowledged_at",
        "acknowledge_note",
        "cleared_by",
        "cleared_at",
        "clear_note",
    ):
        view.pop(name)
    return view


def get_alarm(conn: sqlite3.Connection, alarm_id: str) -> dict[str, Any] | None:
    rows = _dicts(
        conn.execute(f"SELECT {ALARM_COLUMNS} FROM alarms WHERE alarm_id = ?", (alarm_id,))
    )
    return _alarm_view(rows[0]) if rows else None


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
    where: list[str] = []
    args: list[Any] = []
    for column, values in (("state", state), ("severity", severity)):
        if values:
            where.append(f"{column} IN ({', '.join('?' for _ in values)})")
            args += list(values)
    for column, value in (("equipment_id", equipment_id), ("job_id", job_id)):
        if value is not None:
            where.append(f"{column} = ?")
            args.append(value)
    if before is not None:
        where.append("raised_position < ?")
        args.append(before)
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    rows = _dicts(
        conn.execute(
            f"SELECT {ALARM_COLUMNS} FROM alarms{clause} ORDER BY raised_position DESC LIMIT ?",
            [*args, limit + 1],
        )
    )
    page, cursor = _page(rows, limit, "raised_position")
    return [_alarm_view(r) for r in page], cursor


def alarm_counts(conn: sqlite3.Connection) -> dict[str, int]:
    counts = dict(conn.execute("SELECT state, COUNT(*) FROM alarms GROUP BY state").fetchall())
    return {
        "active_alarms": counts.get("active", 0) + counts.get("acknowledged", 0),
        "unacknowledged_alarms": counts.get("active", 0),
    }
