"""Instruments' presence, recorded through the write path (``lablink.handler``).

The agents executor calls this when an instrument comes online or goes offline (heartbeats
in between change nothing).
"""

from __future__ import annotations

import contextlib

from lablink.alarm_service import AlarmService
from lablink.clock import Clock
from lablink.domain.equipment import (
    EquipmentState,
    decide_offline,
    decide_online,
    evolve,
    stream_id,
)
from lablink.errors import AlarmNotFound, AlarmStateConflict
from lablink.events import RecordedEvent
from lablink.eventstore.base import EventStore
from lablink.handler import CommandHandler
from lablink.instruments.protocol import Presence
from lablink.repository import Repository, keyed

ACTOR = "agents"


def equipment_repository(store: EventStore) -> Repository[EquipmentState]:
    return keyed(store, EquipmentState, "equipment_id", evolve, stream_id)


def load_equipment(store: EventStore, equipment_id: str) -> tuple[EquipmentState, int]:
    """The instrument folded from its stream, with the version it reflects."""
    return equipment_repository(store).current(equipment_id)


class EquipmentService:
    def __init__(self, store: EventStore, clock: Clock, alarms: AlarmService | None = None):
        self.store = store
        self.clock = clock
        self.alarms = alarms
        self.repository = equipment_repository(store)
        self.handler = CommandHandler(store, clock)

    def load(self, equipment_id: str) -> tuple[EquipmentState, int]:
        return self.repository.current(equipment_id)

    def record(self, presence: Presence) -> list[RecordedEvent]:
        if presence.state == "online":
            handled = self.handler.handle(
                self.repository,
                presence.equipment_id,
                lambda s, _: decide_online(
                    s,
                    kind=presence.kind,
                    identity=presence.identity,
                    agent_id=presence.agent_id,
                    resource=presence.resource,
                ),
                ACTOR,
            )
            if handled.recorded and handled.before.open_alarm and self.alarms is not None:
                self._clear(handled.before.open_alarm)
            return handled.recorded
        return self.handler.handle(
            self.repository,
            presence.equipment_id,
            lambda s, _: decide_offline(s, presence.reason or "offline"),
            ACTOR,
        ).recorded

    def _clear(self, alarm_id: str) -> None:
        """Back online: its offline alarm clears itself, unless someone cleared it already."""
        assert self.alarms is not None
        with contextlib.suppress(AlarmStateConflict, AlarmNotFound):
            self.alarms.clear(alarm_id, by=ACTOR, note="back online", actor=ACTOR)

    async def on_presence(self, presence: Presence) -> None:
        self.record(presence)
