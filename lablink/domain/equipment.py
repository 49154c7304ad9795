"""An instrument as the log knows it: online or offline, and what its agent said it is.

Agents say they are alive every heartbeat; only changes become events (stream
``equipment:<id>``), so the log holds each instrument's history without a row per beat.
"""

from __future__ import annotations

import msgspec

from lablink.events import AlarmRaised, AnyEvent, EquipmentOffline, EquipmentOnline


def stream_id(equipment_id: str) -> str:
    return f"equipment:{equipment_id}"


class EquipmentState(msgspec.Struct, frozen=True, kw_only=True):
    equipment_id: str
    known: bool = False
    online: bool = False
    kind: str = ""
    identity: str = ""
    agent_id: str = ""
    resource: str = ""
    offline_count: int = 0
    # The alarm raised when it last went offline, until it is back online.
    open_alarm: str = ""


def evolve(state: EquipmentState, event: AnyEvent) -> EquipmentState:
    match event:
        case EquipmentOnline():
            return msgspec.structs.replace(
                state,
                known=True,
                online=True,
                kind=event.kind,
                identity=event.identity,
                agent_id=event.agent_id,
                resource=event.resource,
            )
        case EquipmentOffline():
            return msgspec.structs.replace(
                state, known=True, online=False, offline_count=state.offline_count + 1
            )
        case AlarmRaised():
            return msgspec.structs.replace(state, open_alarm=event.alarm_id)
    return state


def decide_online(
    state: EquipmentState, *, kind: str, identity: str, agent_id: str, resource: str
) -> list[AnyEvent]:
    """Online, unless it already is with the same identity through the same agent."""
    if (
        state.online
        and state.identity == identity
        and state.agent_id == agent_id
        and (state.kind == kind or not kind)
    ):
        return []
    return [
        EquipmentOnline(
            equipment_id=state.equipment_id,
            kind=kind or state.kind,
            identity=identity or state.identity,
            agent_id=agent_id,
            resource=resource or state.resource,
        )
    ]


def decide_offline(state: EquipmentState, reason: str) -> list[AnyEvent]:
    """Offline once, with an alarm: an instrument never seen is recorded too, so the API
    can say why."""
    if state.known and not state.online:
        return []
    eid = state.equipment_id
    return [
        EquipmentOffline(equipment_id=eid, reason=reason),
        AlarmRaised(
            alarm_id=f"alarm_offline_{eid}_{state.offline_count + 1}",
            kind="equipment_offline",
            severity="critical",
            message=f"equipment {eid} is offline: {reason}",
            equipment_id=eid,
            error={"type": "equipment_offline", "reason": reason},
            equipment={
                "equipment_id": eid,
                "kind": state.kind,
                "identity": state.identity,
                "agent_id": state.agent_id,
                "resource": state.resource,
            },
        ),
    ]
