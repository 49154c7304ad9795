"""API keys by hash, for authenticating requests and listing them. Secrets never reach the
log: a key's row holds its sha256 and, for keys made since revocation came, the first
characters that name it in logs and listings."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

import sqlite_utils

from lablink.events import ApiKeyCreated, ApiKeyRevoked, RecordedEvent
from lablink.projections.base import instant
from lablink.projections.bulk import BulkFold, Logged, Rows, occurred_instant

_COLUMNS = (
    "key_id",
    "name",
    "role",
    "key_hash",
    "created_by",
    "created_at",
    "revoked",
    "prefix",
    "revoked_at",
    "revoked_by",
)
_INSERT = (
    f"INSERT OR REPLACE INTO api_keys ({', '.join(_COLUMNS)})"
    f" VALUES ({', '.join('?' * len(_COLUMNS))})"
)
# The first revocation is the one on record; a second (only possible through a raw append)
# changes nothing.
_REVOKE = (
    "UPDATE api_keys SET revoked = 1, revoked_at = COALESCE(revoked_at, ?),"
    " revoked_by = COALESCE(revoked_by, ?) WHERE key_id = ?"
)
# What a listing shows: never the hash.
_PUBLIC = "key_id, name, role, prefix, created_by, created_at, revoked, revoked_at, revoked_by"


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
                "prefix": str,
                "revoked_at": str,
                "revoked_by": str,
            },
            pk="key_id",
            if_not_exists=True,
        )
        db.table("api_keys").create_index(["key_hash"], unique=True, if_not_exists=True)

    def bulk(self) -> BulkFold:
        return _BulkKeys()

    def forget(self) -> None:
        """Nothing is kept between batches."""

    def apply(self, conn: sqlite3.Connection, events: Sequence[RecordedEvent]) -> None:
        for recorded in events:
            match recorded.event:
                case ApiKeyCreated() as event:
                    conn.execute(
                        _INSERT,
                        (
                            event.key_id,
                            event.name,
                            event.role,
                            event.key_hash,
                            recorded.actor,
                            instant(recorded.occurred_at),
                            0,
                            event.prefix,
                            None,
                            None,
                        ),
                    )
                case ApiKeyRevoked() as event:
                    conn.execute(
                        _REVOKE, (instant(recorded.occurred_at), recorded.actor, event.key_id)
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
                    event.prefix,
                    None,
                    None,
                ]
                by_hash[event.key_hash] = event.key_id
            elif type(event) is ApiKeyRevoked and event.key_id in keys:
                row = keys[event.key_id]
                row[6] = 1
                if row[8] is None:
                    row[8] = occurred_instant(occurred_at)
                if row[9] is None:
                    row[9] = actor

    def rows(self) -> Rows:
        return {"api_keys": (_COLUMNS, list(self.keys.values()))}


# -- reads (this module owns the api_keys table) -------------------------------------------


def find_by_hash(conn: sqlite3.Connection, key_hash: str) -> dict[str, Any] | None:
    """The key with this hash, revoked or not (so a failed attempt can name it)."""
    cursor = conn.execute(f"SELECT {_PUBLIC} FROM api_keys WHERE key_hash = ?", (key_hash,))
    row = cursor.fetchone()
    return _as_dict(cursor, row) if row else None


def read_key(conn: sqlite3.Connection, key_id: str) -> dict[str, Any] | None:
    cursor = conn.execute(f"SELECT {_PUBLIC} FROM api_keys WHERE key_id = ?", (key_id,))
    row = cursor.fetchone()
    return _as_dict(cursor, row) if row else None


def list_keys(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """Every key ever made, oldest first, revoked ones included."""
    cursor = conn.execute(f"SELECT {_PUBLIC} FROM api_keys ORDER BY created_at, key_id")
    return [_as_dict(cursor, row) for row in cursor.fetchall()]


def count_keys(conn: sqlite3.Connection, *, include_revoked: bool = False) -> int:
    sql = "SELECT COUNT(*) FROM api_keys" + ("" if include_revoked else " WHERE revoked = 0")
    (count,) = conn.execute(sql).fetchone()
    return int(count)


def _as_dict(cursor: sqlite3.Cursor, row: Sequence[Any]) -> dict[str, Any]:
    names = [d[0] for d in cursor.description]
    record = dict(zip(names, row, strict=True))
    record["revoked"] = bool(record["revoked"])
    return record
