"""The profiles view: one row per live profile, as the API shows it and agents apply it.

A deleted profile's row goes; creating it again starts a new row at the stream's version.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
import sqlite_utils

from lablink.events import ProfileCreated, ProfileDeleted, ProfileUpdated, RecordedEvent
from lablink.eventstore.sqlite import SQLiteEventStore
from lablink.projections.base import instant, to_json
from lablink.projections.reading import reading_views
from lablink.projections.views import iso

COLUMNS: dict[str, Any] = {
    "profile_id": str,
    "name": str,
    "description": str,
    "equipment_type": str,
    "model": str,
    "settings": str,  # JSON object, in the order the settings are applied
    "tags": str,  # JSON array
    "version": int,
    "created_at": str,
    "created_by": str,
    "updated_at": str,
    "updated_by": str,
}


_FACTS = frozenset((ProfileCreated, ProfileUpdated, ProfileDeleted))


class ProfilesProjection:
    name = "profiles"
    tables: tuple[str, ...] = ("profiles",)

    def create(self, db: sqlite_utils.Database) -> None:
        db.table("profiles").create(COLUMNS, pk="profile_id", if_not_exists=True)
        db.table("profiles").create_index(["equipment_type"], if_not_exists=True)

    def forget(self) -> None:
        """Nothing is kept between batches."""

    def apply(self, conn: sqlite3.Connection, events: Sequence[RecordedEvent]) -> None:
        # Profile events are rare: one set lookup passes every other event by.
        for recorded in [r for r in events if type(r.event) in _FACTS]:
            match recorded.event:
                case ProfileCreated() as event:
                    at = instant(recorded.occurred_at)
                    conn.execute(
                        "INSERT OR REPLACE INTO profiles VALUES"
                        " (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            event.profile_id,
                            event.name,
                            event.description,
                            event.equipment_type,
                            event.model,
                            to_json(event.settings),
                            to_json(event.tags),
                            recorded.version,
                            at,
                            recorded.actor,
                            at,
                            recorded.actor,
                        ),
                    )
                case ProfileUpdated() as event:
                    conn.execute(
                        "UPDATE profiles SET name = ?, description = ?, equipment_type = ?,"
                        " model = ?, settings = ?, tags = ?, version = ?, updated_at = ?,"
                        " updated_by = ? WHERE profile_id = ?",
                        (
                            event.name,
                            event.description,
                            event.equipment_type,
                            event.model,
                            to_json(event.settings),
                            to_json(event.tags),
                            recorded.version,
                            instant(recorded.occurred_at),
                            recorded.actor,
                            event.profile_id,
                        ),
                    )
                case ProfileDeleted() as event:
                    conn.execute("DELETE FROM profiles WHERE profile_id = ?", (event.profile_id,))


# -- reads -------------------------------------------------------------------------------------

_SELECT = f"SELECT {', '.join(COLUMNS)} FROM profiles"


def _view(row: tuple[Any, ...]) -> dict[str, Any]:
    item = dict(zip(COLUMNS, row, strict=True))
    item["settings"] = msgspec.json.decode(item["settings"])
    item["tags"] = msgspec.json.decode(item["tags"])
    item["created_at"] = iso(item["created_at"])
    item["updated_at"] = iso(item["updated_at"])
    return item


def read_profile(conn: sqlite3.Connection, profile_id: str) -> dict[str, Any] | None:
    row = conn.execute(_SELECT + " WHERE profile_id = ?", (profile_id,)).fetchone()
    return _view(row) if row is not None else None


def list_profiles(
    conn: sqlite3.Connection, *, equipment_type: str | None = None, tag: str | None = None
) -> list[dict[str, Any]]:
    sql, args = _SELECT, []
    clauses = []
    if equipment_type is not None:
        clauses.append("equipment_type = ?")
        args.append(equipment_type)
    if tag is not None:
        clauses.append("EXISTS (SELECT 1 FROM json_each(profiles.tags) WHERE value = ?)")
        args.append(tag)
    if clauses:
        sql += " WHERE " + " AND ".join(clauses)
    return [_view(row) for row in conn.execute(sql + " ORDER BY profile_id", args)]


def read_profile_settings(conn: sqlite3.Connection, profile_id: str) -> dict[str, Any] | None:
    row = conn.execute(
        "SELECT settings FROM profiles WHERE profile_id = ?", (profile_id,)
    ).fetchone()
    if row is None:
        return None
    settings: dict[str, Any] = msgspec.json.decode(row[0])
    return settings


def profile_lookup(store: SQLiteEventStore) -> Callable[[str], dict[str, Any] | None]:
    """``profile_id -> settings`` (None: no such profile) for the executors, reading this
    view through the store's views reader (``reading_views``)."""

    def lookup(profile_id: str) -> dict[str, Any] | None:
        with reading_views(store) as views:
            return read_profile_settings(views, profile_id)

    return lookup
