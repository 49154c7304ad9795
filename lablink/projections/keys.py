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
_FACTS = frozenset((ApiKeyCreated, ApiKeyRevoked))
# What a listing shows: never the hash.
_PUBLIC = "key_id, name, role, prefix, created_by, created_at, revoked, revoked_at, revoked_by"


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
                "prefix": str,
                "revoked_at": str,
                "revoked_by": str,
            },
            pk="key_id",
            if_not_exists=True,
        )
        db.table("api_keys").create_index(["key_hash"], unique=True, if_not_exists=True)

    def forget(self) -> None:
        """Nothing is kept between batches."""

    def apply(self, conn: sqlite3.Connection, events: Sequence[RecordedEvent]) -> None:
        # Key events are rare: one set lookup passes every other event by.
        for recorded in [r for r in events if type(r.event) in _FACTS]:
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


# -- when each key was last used (operational, not a fact of record: not folded, not rebuilt) --

USAGE_TABLE = "api_key_usage"
_USAGE_SCHEMA = (
    f"CREATE TABLE IF NOT EXISTS main.{USAGE_TABLE} (key_id TEXT PRIMARY KEY, last_used_at TEXT)"
)


def last_used(conn: sqlite3.Connection) -> dict[str, str]:
    """key_id → when the API last accepted it (to the minute); {} before any use."""
    try:
        return dict(conn.execute(f"SELECT key_id, last_used_at FROM {USAGE_TABLE}").fetchall())
    except sqlite3.OperationalError:
        return {}  # no API has run on this database yet


def note_usage(conn: sqlite3.Connection, key_id: str, at: str) -> None:
    conn.execute(_USAGE_SCHEMA)
    conn.execute(
        f"INSERT INTO {USAGE_TABLE} (key_id, last_used_at) VALUES (?, ?)"
        " ON CONFLICT(key_id) DO UPDATE SET last_used_at = excluded.last_used_at",
        (key_id, at),
    )


def carry_usage(views: sqlite3.Connection) -> None:
    """Copy the side table of a log made before views.db (attached as ``log``) into the views'
    file, where it lives now; the caller drops the old one."""
    views.execute(_USAGE_SCHEMA)
    views.execute(
        f"INSERT OR IGNORE INTO main.{USAGE_TABLE}"
        f" SELECT key_id, last_used_at FROM log.{USAGE_TABLE}"
    )
