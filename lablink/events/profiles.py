"""Facts about equipment profiles (stream: ``profile:<profile_id>``)."""

from __future__ import annotations

from typing import Any

import msgspec

from lablink.events.base import Event


class ProfileCreated(Event, frozen=True, kw_only=True, tag="profile.created"):
    profile_id: str
    name: str
    equipment_type: str
    description: str = ""
    model: str = ""
    settings: dict[str, Any] = msgspec.field(default_factory=dict)
    tags: tuple[str, ...] = ()


class ProfileUpdated(Event, frozen=True, kw_only=True, tag="profile.updated"):
    profile_id: str
    name: str
    equipment_type: str
    description: str = ""
    model: str = ""
    settings: dict[str, Any] = msgspec.field(default_factory=dict)
    tags: tuple[str, ...] = ()


class ProfileDeleted(Event, frozen=True, kw_only=True, tag="profile.deleted"):
    profile_id: str
