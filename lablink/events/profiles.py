"""Facts about equipment profiles (stream: ``profile:<profile_id>``)."""

from __future__ import annotations

from typing import Any

import msgspec

from lablink.events.base import Event
from lablink.events.changes import FieldChange


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
    # Why the person changed it (None: no reason given), and each changed field's value
    # before and after. Absent from updates recorded before they were.
    reason: str | None = None
    changes: tuple[FieldChange, ...] = ()


class ProfileDeleted(Event, frozen=True, kw_only=True, tag="profile.deleted"):
    profile_id: str
    reason: str | None = None
