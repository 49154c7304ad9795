"""The write path for instruments' presence: load the stream, decide, append at its version.

The agents executor calls this when an instrument comes online or goes offline (heartbeats
in between change nothing).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from lablink.alarm_service import AlarmService
from lablink.clock import Clock
from lablink.domain.equipment import (
    EquipmentState,
    decide_offline,
    decide_online,
    evolve,
    stream_id,
)
from lablink.equipment_agent.protocol import Presence
from lablink.errors import AlarmNotFound, AlarmStateConflict, StreamVersionConflict
from lablink.events import AnyEvent, RecordedEvent, stamp
from lablink.eventstore.base import EventStore

ACTOR = "agents"
MAX_RETRIES = 5


def load_equipment(store: EventStore, equipment_id: str) -> tuple[EquipmentState, int]:
    """The instrument folded from its stream, with the version it reflects."""
    state = EquipmentState(equipment_id=equipment_id)
    version = 0
    for recorded in store.read_stream(stream_id(equipment_id)):
        state = evolve(state, recorded.event)
        version = recorded.version
    return state, version


class EquipmentService:
    def __init__(self, store: EventStore, clock: Clock, alarms: AlarmService | None = None):
        self.store = store
        self.clock = clock
        self.alarms = alarms

    def load(self, equipment_id: str) -> tuple[EquipmentState, int]:
        return load_equipment(self.store, equipment_id)

    def record(self, presence: Presence) -> list[RecordedEvent]:
        if presence.state == "online":
            before, recorded = self._execute(
                presence.equipment_id,
                lambda s: decide_online(
                    s,
                    kind=presence.kind,
                    identity=presence.identity,
                    agent_id=presence.agent_id,
                    resource=presence.resource,
                ),
            )
            if recorded and before.open_alarm and self.alarms is not None:
                self._clear(before.open_alarm)
            return recorded
        _, recorded = self._execute(
            presence.equipment_id, lambda s: decide_offline(s, presence.reason or "offline")
        )
        return recorded

    def _clear(self, alarm_id: str) -> None:
        """Back online: its offline alarm clears itself, unless someone cleared it already."""
        assert self.alarms is not None
        with contextlib.suppress(AlarmStateConflict, AlarmNotFound):
            self.alarms.clear(alarm_id, by=ACTOR, note="back online", actor=ACTOR)

    async def on_presence(self, presence: Presence) -> None:
        self.record(presence)

    def _execute(
        self, equipment_id: str, decide: Callable[[EquipmentState], list[AnyEvent]]
    ) -> tuple[EquipmentState, list[RecordedEvent]]:
        """The state decided from, and what was appended."""
        for _ in range(MAX_RETRIES):
            state, version = self.load(equipment_id)
            events = decide(state)
            if not events:
                return state, []
            try:
                return state, self.store.append(
                    stream_id(equipment_id), version, stamp(events, ACTOR, self.clock.now())
                )
            except StreamVersionConflict:
                continue
        raise StreamVersionConflict(
            stream_id(equipment_id), version, self.store.stream_version(stream_id(equipment_id))
        )
