"""API keys by hash, for authenticating requests. Secrets never reach the log."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

import sqlite_utils

from lablink.events import ApiKeyCreated, ApiKeyRevoked, RecordedEvent
from lablink.projections.base import instant
from lablink.projections.bulk import BulkFold, Logged, Rows, occurred_instant

_COLUMNS = ("key_id", "name", "role", "key_hash", "created_by", "created_at", "revoked")


class KeysProjection:
    name = "api_keys"
    tables: tuple[str, ...] = ("api_keys",)
    # Relative cost of the bulk fold (µs per event), for sharing a rebuild between processes.
    bulk_cost = 0.1

    def create(self, db: sqlite_utils.Database) -> None:
        db.table("api_keys").create(
            {
                "key_id": str,
                "name": str,
                "role": str,
                "key_hash": str,
                "created_by": str,
                "created_at": str,
                "revoked": int,
            },
            pk="key_id",
            if_not_exists=True,
        )
        db.table("api_keys").create_index(["key_hash"], unique=True, if_not_exists=True)

    def bulk(self) -> BulkFold:
        return _BulkKeys()

    def apply(self, conn: sqlite3.Connection, events: Sequence[RecordedEvent]) -> None:
        for recorded in events:
            match recorded.event:
                case ApiKeyCreated() as event:
                    conn.execute(
                        "INSERT OR REPLACE INTO api_keys VALUES (?, ?, ?, ?, ?, ?, 0)",
                        (
                            event.key_id,
                            event.name,
                            event.role,
                            event.key_hash,
                            recorded.actor,
                            instant(recorded.occurred_at),
                        ),
                    )
                case ApiKeyRevoked() as event:
                    conn.execute(
                        "UPDATE api_keys SET revoked = 1 WHERE key_id = ?", (event.key_id,)
                    )


class _BulkKeys:
    """The same fold as ``apply`` in memory, for rebuilding from an empty table (see
    projections/bulk.py)."""

    def __init__(self) -> None:
        self.keys: dict[str, list[Any]] = {}
        self.by_hash: dict[str, str] = {}

    def fold(self, events: Sequence[Logged]) -> None:
        keys, by_hash = self.keys, self.by_hash
        for _, _, occurred_at, actor, event in events:
            if type(event) is ApiKeyCreated:
                # INSERT OR REPLACE also removes a row that holds the same (unique) hash.
                for key_id in (event.key_id, by_hash.get(event.key_hash)):
                    if key_id is not None and key_id in keys:
                        del by_hash[keys.pop(key_id)[3]]
                keys[event.key_id] = [
                    event.key_id,
                    event.name,
                    event.role,
                    event.key_hash,
                    actor,
                    occurred_instant(occurred_at),
                    0,
                ]
                by_hash[event.key_hash] = event.key_id
            elif type(event) is ApiKeyRevoked and event.key_id in keys:
                keys[event.key_id][6] = 1

    def rows(self) -> Rows:
        return {"api_keys": (_COLUMNS, list(self.keys.values()))}
