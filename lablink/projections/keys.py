"""API keys by hash, for authenticating requests. Secrets never reach the log."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

import sqlite_utils

from lablink.events import ApiKeyCreated, ApiKeyRevoked, RecordedEvent
from lablink.projections.base import instant


class KeysProjection:
    name = "api_keys"
    tables: tuple[str, ...] = ("api_keys",)

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
