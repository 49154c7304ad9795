"""API keys: issued once, stored as a hash, looked up by hash. Creating one is an event."""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
from datetime import datetime

import msgspec

from lablink.errors import InvalidRequest
from lablink.events import ROLES, ApiKeyCreated, NewEvent
from lablink.eventstore.base import EventStore

KEY_PREFIX = "llk_"


class Identity(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    role: str

    def allows(self, needed: str) -> bool:
        return ROLES.index(self.role) >= ROLES.index(needed)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(
    store: EventStore, *, name: str, role: str, actor: str, now: datetime
) -> tuple[str, str]:
    """Record a new key and return (key_id, key). The key itself is shown only here."""
    if role not in ROLES:
        raise InvalidRequest.one("role", role, f"must be one of {', '.join(ROLES)}")
    if not name or len(name) > 64:
        raise InvalidRequest.one("name", name, "must be 1 to 64 characters")
    key_id = secrets.token_hex(6)
    key = f"{KEY_PREFIX}{secrets.token_urlsafe(32)}"
    event = ApiKeyCreated(key_id=key_id, name=name, role=role, key_hash=hash_key(key))  # type: ignore[arg-type]
    store.append(f"apikey:{key_id}", 0, [NewEvent(event=event, actor=actor, occurred_at=now)])
    return key_id, key


def lookup(conn: sqlite3.Connection, key: str) -> Identity | None:
    row = conn.execute(
        "SELECT name, role FROM api_keys WHERE key_hash = ? AND revoked = 0", (hash_key(key),)
    ).fetchone()
    return Identity(name=row[0], role=row[1]) if row else None


def count_keys(conn: sqlite3.Connection) -> int:
    (count,) = conn.execute("SELECT COUNT(*) FROM api_keys WHERE revoked = 0").fetchone()
    return int(count)
