"""API keys: issued once, stored as a hash, looked up by hash, revoked by an event.

Creating and revoking a key are events on the stream ``apikey:<key_id>``; the api_keys view
folds them in the append's transaction, so a revocation holds for the very next request.
When a key was last used is not a fact of record (it would flood the log): the API notes it
in a small side table, at most once a minute per key.
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
import threading
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import structlog

from lablink.clock import Clock
from lablink.domain.reasons import checked_reason
from lablink.errors import InvalidRequest, KeyAlreadyRevoked, KeyNotFound
from lablink.events import ROLES, AnyEvent, ApiKeyCreated, ApiKeyRevoked, RecordedEvent
from lablink.eventstore.base import EventStore, format_instant
from lablink.eventstore.sqlite import connect
from lablink.handler import CommandHandler
from lablink.projections.keys import count_keys as count_rows
from lablink.projections.keys import find_by_hash, last_used, list_keys, note_usage
from lablink.repository import Repository

KEY_PREFIX = "llk_"
# "llk_" and four characters of the random part: enough to tell keys apart in a log.
PREFIX_LENGTH = 8

log = structlog.get_logger(tag="api")


class Identity(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    role: str
    key_id: str = ""

    def allows(self, needed: str) -> bool:
        return ROLES.index(self.role) >= ROLES.index(needed)


class KeyMatch(msgspec.Struct, frozen=True, kw_only=True):
    """A presented key found by its hash, revoked or not."""

    key_id: str
    name: str
    role: str
    revoked: bool

    def identity(self) -> Identity:
        return Identity(name=self.name, role=self.role, key_id=self.key_id)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def shown_prefix(presented: str) -> str:
    """What a log may say of a presented secret: its first characters, never so many that a
    short guess would be logged whole."""
    return presented[: min(PREFIX_LENGTH, len(presented) // 4)] + "…"


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
    event = ApiKeyCreated(
        key_id=key_id,
        name=name,
        role=role,  # type: ignore[arg-type]
        key_hash=hash_key(key),
        prefix=key[:PREFIX_LENGTH],
    )
    CommandHandler(store).record(stream_id(key_id), [event], actor, expected_version=0, at=now)
    return key_id, key


class KeyState(msgspec.Struct, kw_only=True):
    """A key as its own events tell it."""

    key_id: str
    version: int = 0
    revoked_at: datetime | None = None
    revoked_by: str | None = None


def stream_id(key_id: str) -> str:
    return f"apikey:{key_id}"


def evolve_key(state: KeyState | None, recorded: RecordedEvent) -> KeyState | None:
    """One event of a key's stream; None until it was created."""
    match recorded.event:
        case ApiKeyCreated():
            state = KeyState(key_id=recorded.event.key_id)
        case ApiKeyRevoked() if state is not None and state.revoked_at is None:
            state = msgspec.structs.replace(
                state, revoked_at=recorded.occurred_at, revoked_by=recorded.actor
            )
    if state is not None:
        state = msgspec.structs.replace(state, version=recorded.version)
    return state


def key_state(key_id: str, events: list[RecordedEvent]) -> KeyState | None:
    """Fold a key's stream; None when it was never created."""
    state: KeyState | None = None
    for recorded in events:
        state = evolve_key(state, recorded)
    return state


def _decide_revoke(
    key_id: str, state: KeyState | None, reason: str | None, require_reason: bool
) -> list[AnyEvent]:
    if state is None:
        raise KeyNotFound(key_id)
    if state.revoked_at is not None:
        raise KeyAlreadyRevoked(key_id, format_instant(state.revoked_at), state.revoked_by)
    return [ApiKeyRevoked(key_id=key_id, reason=checked_reason(reason, required=require_reason))]


def revoke_key(
    store: EventStore,
    key_id: str,
    *,
    actor: str,
    now: datetime,
    reason: str | None = None,
    require_reason: bool = False,
) -> RecordedEvent:
    """Revoke a key: an ``apikey.revoked`` event whose actor is who revoked it, with the
    reason given (required with ``require_reason``: 422 naming ``reason``). Unknown: 404;
    already revoked: 409 naming when and by whom (revoking is not silently repeated): a
    revocation that loses the race reads again, to say by whom."""
    keys: Repository[KeyState | None] = Repository(
        store, initial=lambda _: None, fold=evolve_key, stream=stream_id
    )

    def decide(state: KeyState | None, _: datetime) -> list[AnyEvent]:
        return _decide_revoke(key_id, state, reason, require_reason)

    handled = CommandHandler(store).handle(keys, key_id, decide, actor, retries=3, at=now)
    (recorded,) = handled.recorded
    return recorded


def lookup(conn: sqlite3.Connection, key: str) -> KeyMatch | None:
    """The key with this secret, revoked or not; None for a key never issued. Read from the
    view on every call, never cached: a revocation holds for the next request."""
    row = find_by_hash(conn, hash_key(key))
    if row is None:
        return None
    return KeyMatch(
        key_id=row["key_id"], name=row["name"], role=row["role"], revoked=row["revoked"]
    )


# -- when each key was last used (operational, not a fact of record) ------------------------


class KeyUsage:
    """Notes each accepted key's last use: exact in memory, written to the side table at most
    once a minute per key so that a busy dashboard costs no write per request. A failed write
    (full disk, locked database) is logged and never fails the request."""

    WRITE_EVERY = timedelta(minutes=1)

    def __init__(self, path: Path, clock: Clock) -> None:
        # The views' file (views.db): a write there never waits for the log's writer.
        self.path = path
        self.clock = clock
        self._lock = threading.Lock()
        self._seen: dict[str, datetime] = {}
        self._written: dict[str, datetime] = {}

    def seen(self, key_id: str) -> None:
        now = self.clock.now()
        with self._lock:
            self._seen[key_id] = now
            written = self._written.get(key_id)
            if written is not None and now - written < self.WRITE_EVERY:
                return
            self._written[key_id] = now
            self._write(key_id, now)

    def last_used(self, conn: sqlite3.Connection) -> dict[str, str]:
        """The side table, overlaid with this process's more recent uses."""
        stored = last_used(conn)
        with self._lock:
            for key_id, at in self._seen.items():
                stored[key_id] = format_instant(at)
        return stored

    def _write(self, key_id: str, now: datetime) -> None:
        # A connection per write (once a minute per key at most): nothing to close later.
        try:
            conn = connect(self.path)
        except sqlite3.Error as exc:
            log.warning("could not note the key's last use", key_id=key_id, error=str(exc))
            return
        try:
            # Never hold a request up behind a long write of the log.
            conn.execute("PRAGMA busy_timeout=250")
            note_usage(conn, key_id, format_instant(now))
        except sqlite3.Error as exc:
            log.warning("could not note the key's last use", key_id=key_id, error=str(exc))
        finally:
            conn.close()


def key_listing(conn: sqlite3.Connection, usage: dict[str, str]) -> list[dict[str, Any]]:
    """Every key, oldest first, with when it was last used (None: not known)."""
    return [{**row, "last_used_at": usage.get(row["key_id"])} for row in list_keys(conn)]


def count_keys(conn: sqlite3.Connection, *, include_revoked: bool = False) -> int:
    """Keys in force; with ``include_revoked``, every key ever made."""
    return count_rows(conn, include_revoked=include_revoked)
