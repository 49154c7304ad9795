"""Instruments as their agents last reported them: kind, online or offline, identity."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

import sqlite_utils

from lablink.events import EquipmentOffline, EquipmentOnline, RecordedEvent
from lablink.instruments.scpi import Identity
from lablink.projections.base import Where, as_dicts, instant

COLUMNS = (
    "equipment_id",
    "kind",
    "status",
    "identity",
    "manufacturer",
    "model",
    "serial",
    "firmware",
    "agent_id",
    "resource",
    "since",
    "last_seen",
    "reason",
)


_FACTS = frozenset((EquipmentOnline, EquipmentOffline))


class EquipmentProjection:
    name = "equipment"
    tables: tuple[str, ...] = ("equipment",)

    def create(self, db: sqlite_utils.Database) -> None:
        db.table("equipment").create(
            dict.fromkeys(COLUMNS, str), pk="equipment_id", if_not_exists=True
        )

    def forget(self) -> None:
        """Nothing is kept between batches."""

    def apply(self, conn: sqlite3.Connection, events: Sequence[RecordedEvent]) -> None:
        # Equipment events are rare: one set lookup passes every other event by.
        for recorded in [r for r in events if type(r.event) in _FACTS]:
            at = instant(recorded.occurred_at)
            match recorded.event:
                case EquipmentOnline() as event:
                    identity = Identity.parse(event.identity)
                    conn.execute(
                        "INSERT INTO equipment VALUES"
                        " (?, ?, 'online', ?, ?, ?, ?, ?, ?, ?, ?, ?, '')"
                        " ON CONFLICT(equipment_id) DO UPDATE SET kind = excluded.kind,"
                        " status = 'online', identity = excluded.identity,"
                        " manufacturer = excluded.manufacturer, model = excluded.model,"
                        " serial = excluded.serial, firmware = excluded.firmware,"
                        " agent_id = excluded.agent_id, resource = excluded.resource,"
                        " since = excluded.since, last_seen = excluded.last_seen, reason = ''",
                        (
                            event.equipment_id,
                            event.kind,
                            identity.raw,
                            identity.manufacturer,
                            identity.model,
                            identity.serial,
                            identity.firmware,
                            event.agent_id,
                            event.resource,
                            at,
                            at,
                        ),
                    )
                case EquipmentOffline() as event:
                    conn.execute(
                        "INSERT INTO equipment (equipment_id, kind, status, identity,"
                        " manufacturer, model, serial, firmware, agent_id, resource, since,"
                        " last_seen, reason) VALUES (?, '', 'offline', '', '', '', '', '', '',"
                        " '', ?, NULL, ?) ON CONFLICT(equipment_id) DO UPDATE SET"
                        " status = 'offline', since = excluded.since, reason = excluded.reason",
                        (event.equipment_id, at, event.reason),
                    )


# -- reads (this module owns the equipment table) ---------------------------------------------


def list_equipment_rows(
    conn: sqlite3.Connection, equipment_id: str | None = None
) -> list[dict[str, Any]]:
    """Every instrument's row (or the one asked for), by id."""
    where = Where().equals("equipment_id", equipment_id)
    return as_dicts(
        conn.execute(f"SELECT * FROM equipment{where} ORDER BY equipment_id", where.args)
    )
