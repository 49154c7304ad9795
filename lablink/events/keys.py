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


class ApiKeyRevoked(Event, frozen=True, kw_only=True, tag="apikey.revoked"):
    key_id: str
