"""Facts about API keys (stream: ``apikey:<key_id>``). Only a hash of the secret is stored."""

from __future__ import annotations

from typing import Literal

from lablink.events.base import Event

Role = Literal["viewer", "operator", "admin"]
ROLES: tuple[str, ...] = ("viewer", "operator", "admin")


class ApiKeyCreated(Event, frozen=True, kw_only=True, tag="apikey.created"):
    key_id: str
    name: str
    role: Role
    # sha256 of the whole key: keys are 256-bit random tokens, so a fast hash is enough.
    key_hash: str
    # The key's first characters ("llk_" and 4 more, 24 of its 256 random bits), which name
    # it in logs and listings. None for keys made before it was recorded.
    prefix: str | None = None


class ApiKeyRevoked(Event, frozen=True, kw_only=True, tag="apikey.revoked"):
    """The key stops working at once; the event's actor is who revoked it."""

    key_id: str
    # Why (None: no reason given).
    reason: str | None = None
