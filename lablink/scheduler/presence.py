"""What the scheduler knows of each instrument's agent: its last presence message and when.

Agents say they are alive on ``lablink.reports.<equipment_id>.presence``, every heartbeat,
and say goodbye (``offline``) when they stop. An instrument whose agent falls silent for the
heartbeat timeout (at least three of its heartbeats) is lost. Either way the executions
running on it end (``on_gone``) and the change is reported (``on_change``) so that the log
records the instrument offline, and online again when its agent comes back.

Each instrument ever seen has an entry in /health, ``agent.<equipment_id>``: ok while its
agent heartbeats, degraded while it is offline, with when it was last seen and, while it is
online, its queue (``queued``, ``running``) as the agent last said.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial

import msgspec
import structlog
from nats.aio.msg import Msg

from lablink.health import Health, Reading
from lablink.instruments.protocol import Presence, subject_equipment

log = structlog.get_logger(tag="executor")

PresenceListener = Callable[[Presence], Awaitable[None]]
# (equipment id, error type, message): end every execution running on that instrument.
GoneListener = Callable[[str, str, str], None]


@dataclass
class Sighting:
    presence: Presence
    last_seen: float  # time.monotonic()
    at: datetime  # wall clock, for the API

    @property
    def online(self) -> bool:
        return self.presence.state == "online"


class Presences:
    def __init__(
        self,
        *,
        heartbeat_timeout: float,
        health: Health,
        on_gone: GoneListener,
        on_change: PresenceListener | None = None,
    ) -> None:
        self.heartbeat_timeout = heartbeat_timeout
        self.health = health
        self.on_gone = on_gone
        self.on_change = on_change
        self.sightings: dict[str, Sighting] = {}

    async def on_message(self, msg: Msg) -> None:
        """A presence message (the NATS subscription's callback)."""
        try:
            presence = msgspec.json.decode(msg.data, type=Presence)
        except msgspec.DecodeError:
            return
        if subject_equipment(msg.subject) != presence.equipment_id:
            log.warning(
                "presence refused: not on its instrument's subject",
                subject=msg.subject,
                equipment_id=presence.equipment_id,
                agent_id=presence.agent_id,
            )
            return
        before = self.sightings.get(presence.equipment_id)
        self._sighted(Sighting(presence, time.monotonic(), datetime.now(UTC)))
        changed = (
            before is None
            or before.presence.state != presence.state
            or before.presence.identity != presence.identity
            or before.presence.agent_id != presence.agent_id
        )
        if presence.state == "offline":
            self.on_gone(
                presence.equipment_id,
                "equipment_offline",
                f"equipment offline: {presence.reason or 'its agent went away'}",
            )
        if changed:
            await self._report(presence)

    def accepted_by(self, equipment_id: str, agent_id: str) -> None:
        """An agent took a run for an instrument: alive, even before its first heartbeat."""
        if equipment_id not in self.sightings:
            presence = Presence(
                equipment_id=equipment_id, agent_id=agent_id, kind="", state="online"
            )
            self._sighted(Sighting(presence, time.monotonic(), datetime.now(UTC)))
        self.seen_now(equipment_id)

    def seen_now(self, equipment_id: str) -> None:
        """Anything from an instrument's agent counts as a heartbeat."""
        sighting = self.sightings.get(equipment_id)
        if sighting is not None and sighting.online:
            sighting.last_seen = time.monotonic()

    async def check(self) -> None:
        """Instruments whose agent fell silent for the heartbeat timeout are lost."""
        now = time.monotonic()
        for equipment_id, sighting in list(self.sightings.items()):
            limit = max(self.heartbeat_timeout, 3 * sighting.presence.heartbeat_seconds)
            if not sighting.online or now - sighting.last_seen <= limit:
                continue
            reason = (
                f"agent lost: no heartbeat from {sighting.presence.agent_id or 'its agent'}"
                f" for {limit:g} s"
            )
            log.warning("agent lost", equipment_id=equipment_id, reason=reason)
            lost = msgspec.structs.replace(sighting.presence, state="offline", reason=reason)
            self.sightings[equipment_id] = Sighting(lost, sighting.last_seen, sighting.at)
            self.on_gone(equipment_id, "agent_lost", reason)
            await self._report(lost)

    def describe(self, equipment_id: str) -> dict[str, object]:
        """What the instrument's agent last said of it: kind, *IDN? identity, agent, resource
        and whether it is online (empty when no agent ever reported it)."""
        sighting = self.sightings.get(equipment_id)
        if sighting is None:
            return {}
        presence = sighting.presence
        return {
            "kind": presence.kind,
            "identity": presence.identity,
            "agent_id": presence.agent_id,
            "resource": presence.resource,
            "online": sighting.online,
            "last_seen": sighting.at.isoformat(),
        }

    def forget_health(self) -> None:
        for equipment_id in self.sightings:
            self.health.remove(f"agent.{equipment_id}")

    def _sighted(self, sighting: Sighting) -> None:
        equipment_id = sighting.presence.equipment_id
        if equipment_id not in self.sightings:
            self.health.probe(f"agent.{equipment_id}", partial(self._health, equipment_id))
        self.sightings[equipment_id] = sighting

    def _health(self, equipment_id: str) -> Reading:
        """``agent.<equipment_id>``: ok while its agent heartbeats, degraded while it is
        offline; with the last heartbeat either way."""
        sighting = self.sightings[equipment_id]
        presence = sighting.presence
        ago = time.monotonic() - sighting.last_seen
        details = {
            "agent_id": presence.agent_id,
            "kind": presence.kind,
            "last_seen": sighting.at.isoformat(),
            "seconds_since_heartbeat": round(ago, 1),
        }
        if sighting.online:
            queue = presence.queue
            details.update(queued=queue.queued, running=queue.running)
            return Reading(state="ok", reason=f"heartbeat {ago:.1f} s ago", details=details)
        return Reading(
            state="degraded",
            reason=presence.reason or f"{equipment_id} is offline",
            details=details,
        )

    async def _report(self, presence: Presence) -> None:
        if self.on_change is None:
            return
        try:
            await self.on_change(presence)
        except Exception:
            log.exception("presence change not recorded", equipment_id=presence.equipment_id)
