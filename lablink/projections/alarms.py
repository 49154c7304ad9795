"""Alarms as they stand: raised (from any stream), acknowledged, cleared."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

import sqlite_utils

from lablink.events import AlarmAcknowledged, AlarmCleared, AlarmRaised, RecordedEvent
from lablink.projections.base import Where, as_dicts, instant, to_json

_FACTS = frozenset((AlarmRaised, AlarmAcknowledged, AlarmCleared))


class AlarmsProjection:
    name = "alarms"
    tables: tuple[str, ...] = ("alarms",)

    def create(self, db: sqlite_utils.Database) -> None:
        db.table("alarms").create(
            {
                "alarm_id": str,
                "raised_position": int,
                "kind": str,
                "severity": str,
                "state": str,
                "message": str,
                "equipment_id": str,
                "job_id": str,
                "job_name": str,
                "execution_id": str,
                "execution_time": str,
                "error": str,
                "equipment": str,
                "raised_at": str,
                "raised_by": str,
                "acknowledged_by": str,
                "acknowledged_at": str,
                "acknowledge_note": str,
                "cleared_by": str,
                "cleared_at": str,
                "clear_note": str,
            },
            pk="alarm_id",
            if_not_exists=True,
        )
        for columns in (["raised_position"], ["state", "raised_position"]):
            db.table("alarms").create_index(columns, if_not_exists=True)

    def forget(self) -> None:
        """Nothing is kept between batches."""

    def apply(self, conn: sqlite3.Connection, events: Sequence[RecordedEvent]) -> None:
        # Alarm events are rare: one set lookup passes every other event by.
        for recorded in [r for r in events if type(r.event) in _FACTS]:
            at = instant(recorded.occurred_at)
            match recorded.event:
                case AlarmRaised() as event:
                    conn.execute(
                        "INSERT OR IGNORE INTO alarms (alarm_id, raised_position, kind, severity,"
                        " state, message, equipment_id, job_id, job_name, execution_id,"
                        " execution_time, error, equipment, raised_at, raised_by)"
                        " VALUES (?, ?, ?, ?, 'active', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            event.alarm_id,
                            recorded.position,
                            event.kind,
                            event.severity,
                            event.message,
                            event.equipment_id,
                            event.job_id,
                            event.job_name,
                            event.execution_id,
                            instant(event.execution_time),
                            to_json(event.error),
                            to_json(event.equipment),
                            at,
                            recorded.actor,
                        ),
                    )
                case AlarmAcknowledged() as event:
                    conn.execute(
                        "UPDATE alarms SET state = 'acknowledged', acknowledged_by = ?,"
                        " acknowledged_at = ?, acknowledge_note = ?"
                        " WHERE alarm_id = ? AND state = 'active'",
                        (event.by, at, event.note, event.alarm_id),
                    )
                case AlarmCleared() as event:
                    conn.execute(
                        "UPDATE alarms SET state = 'cleared', cleared_by = ?, cleared_at = ?,"
                        " clear_note = ? WHERE alarm_id = ? AND state != 'cleared'",
                        (event.by, at, event.note, event.alarm_id),
                    )


# -- reads (this module owns the alarms table) -----------------------------------------------

COLUMNS = (
    "alarm_id, raised_position, kind, severity, state, message, equipment_id, job_id,"
    " job_name, execution_id, execution_time, error, equipment, raised_at, raised_by,"
    " acknowledged_by, acknowledged_at, acknowledge_note, cleared_by, cleared_at, clear_note"
)


def get_alarm_row(conn: sqlite3.Connection, alarm_id: str) -> dict[str, Any] | None:
    rows = as_dicts(conn.execute(f"SELECT {COLUMNS} FROM alarms WHERE alarm_id = ?", (alarm_id,)))
    return rows[0] if rows else None


def list_alarm_rows(
    conn: sqlite3.Connection,
    *,
    state: Sequence[str] = (),
    severity: Sequence[str] = (),
    equipment_id: str | None = None,
    job_id: str | None = None,
    before: int | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Newest first (by the log position of the raise), up to ``limit`` rows."""
    where = Where().one_of("state", state).one_of("severity", severity)
    where.equals("equipment_id", equipment_id).equals("job_id", job_id)
    if before is not None:
        where.add("raised_position < ?", before)
    return as_dicts(
        conn.execute(
            f"SELECT {COLUMNS} FROM alarms{where} ORDER BY raised_position DESC LIMIT ?",
            [*where.args, limit],
        )
    )


def state_counts(conn: sqlite3.Connection) -> dict[str, int]:
    """Alarms by state."""
    return dict(conn.execute("SELECT state, COUNT(*) FROM alarms GROUP BY state").fetchall())


def unresolved_by_severity(conn: sqlite3.Connection) -> dict[str, int]:
    """Alarms not yet cleared (active or acknowledged), by severity."""
    return dict(
        conn.execute(
            "SELECT severity, COUNT(*) FROM alarms WHERE state IN ('active', 'acknowledged')"
            " GROUP BY severity"
        ).fetchall()
    )


def raised_position(conn: sqlite3.Connection, alarm_id: str) -> int | None:
    """The log position of the alarm's raise, or None for an alarm never raised."""
    row = conn.execute(
        "SELECT raised_position FROM alarms WHERE alarm_id = ?", (alarm_id,)
    ).fetchone()
    return int(row[0]) if row else None
