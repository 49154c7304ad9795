"""Rows as the API shows them: JSON columns parsed, instants ISO 8601 with offset.

The jobs view renders each job's API form when it folds it (column ``view``), so reading a
page of jobs is one query and no per-row work. It renders it from the job's state, not from
its row; ``job_view`` is the same rendering from a stored row (the tests hold the fold's text
to it, byte for byte).

Job fields are shown in the job's own time zone; execution times in UTC (+00:00).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from lablink.eventstore.base import parse_instant

JOB_INSTANTS = (
    "run_date",
    "start_date",
    "end_date",
    "created_at",
    "updated_at",
    "next_run_time",
    "last_fire_time",
)
EXECUTION_INSTANTS = (
    "scheduled_time",
    "actual_time",
    "started_at",
    "completed_at",
    "window_start",
    "window_end",
    "dispatched_at",
    "instrument_started_at",
    "instrument_ended_at",
)
# How late an execution was at each step, against its scheduled time (docs/api.md,
# "Executions"): the step's key in ``lateness`` -> the column of the instant it happened.
LATENESS_STEPS = {
    "decided_seconds": "actual_time",
    "dispatched_seconds": "dispatched_at",
    "instrument_started_seconds": "instrument_started_at",
}
HIDDEN_JOB_COLUMNS = ("state", "queued_count", "last_fire_time", "view")


def iso(text: str | None, zone: ZoneInfo | None = None) -> str | None:
    if text is None:
        return None
    instant = parse_instant(text)
    return (instant.astimezone(zone) if zone else instant).isoformat()


def iso_instant(instant: datetime, zone: ZoneInfo | None = None) -> str:
    return (instant.astimezone(zone) if zone else instant).isoformat()


def job_view(row: dict[str, Any]) -> dict[str, Any]:
    zone = ZoneInfo(row["timezone"])
    view = {k: v for k, v in row.items() if k not in HIDDEN_JOB_COLUMNS}
    view["parameters"] = json.loads(row["parameters"])
    view["tags"] = json.loads(row["tags"])
    for flag in ("enabled", "coalesce", "on_failure_alarm"):
        view[flag] = bool(row[flag])
    for column in JOB_INSTANTS:
        if column in view:
            view[column] = iso(row[column], zone)
    view["running_executions"] = view.pop("running_count")
    return view


def alarm_view(row: dict[str, Any]) -> dict[str, Any]:
    """An alarms view row as ``GET /api/alarms/{id}`` shows it."""
    view = {k: v for k, v in row.items() if k != "raised_position"}
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


def execution_view(row: dict[str, Any]) -> dict[str, Any]:
    view = dict(row)
    view.pop("seq", None)
    for column in ("result", "error", "late_result"):
        if column in row:
            view[column] = json.loads(row[column]) if row[column] else None
    for column in EXECUTION_INSTANTS:
        view[column] = iso(row[column])
    view["lateness"] = lateness(row)
    if "data_status" in row:
        view["data"] = data_view(row)
        del view["data_status"]
    return view


def lateness(row: dict[str, Any]) -> dict[str, float | None]:
    """Seconds from the scheduled time to each step, where the row knows both (null
    otherwise); negative when a step came before its scheduled time."""
    scheduled = row.get("scheduled_time")
    base = parse_instant(scheduled) if scheduled else None
    steps: dict[str, float | None] = {}
    for step, column in LATENESS_STEPS.items():
        when = row.get(column)
        steps[step] = (
            (parse_instant(when) - base).total_seconds() if base is not None and when else None
        )
    return steps


DATA_URL = "/api/scheduler/executions/{}/data"
DATA_VIEW_FIELDS = (
    "status",
    "file_name",
    "size",
    "sha256",
    "rows",
    "columns",
    "sample_rate",
    "object",
    "stored_at",
    "removed_at",
    "removal_reason",
)


def data_view(row: dict[str, Any]) -> dict[str, Any]:
    """An execution's captured data as the API shows it: every field present (null when
    unknown), and the download's URL while the capture is stored."""
    stored = json.loads(row["data"]) if row.get("data") else {}
    stored["status"] = row.get("data_status") or "none"
    view = {field: stored.get(field) for field in DATA_VIEW_FIELDS}
    for field in ("stored_at", "removed_at"):
        view[field] = iso(view[field])
    view["url"] = DATA_URL.format(row["execution_id"]) if view["status"] == "stored" else None
    return view
