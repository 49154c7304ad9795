"""Alarms as they stand: raised (from any stream), acknowledged, cleared."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

import sqlite_utils

from lablink.events import AlarmAcknowledged, AlarmCleared, AlarmRaised, RecordedEvent
from lablink.projections.base import instant, to_json


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

    def apply(self, conn: sqlite3.Connection, events: Sequence[RecordedEvent]) -> None:
        for recorded in events:
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
