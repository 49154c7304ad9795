"""Facts about instruments as their agents report them (stream: ``equipment:<id>``)."""

from __future__ import annotations

from lablink.events.base import Event


class EquipmentOnline(Event, frozen=True, kw_only=True, tag="equipment.online"):
    equipment_id: str
    kind: str
    identity: str
    agent_id: str
    resource: str = ""


class EquipmentOffline(Event, frozen=True, kw_only=True, tag="equipment.offline"):
    equipment_id: str
    reason: str
