"""An alarm: raised with the fact that caused it (in the job's or the instrument's stream),
then acknowledged and cleared in its own stream, ``alarm:<alarm_id>``.

    active ──acknowledge──▶ acknowledged ──clear──▶ cleared
       └──────────────────clear───────────────────────┘
"""

from __future__ import annotations

from datetime import datetime

import msgspec

from lablink.errors import AlarmNotFound, AlarmStateConflict
from lablink.events import AlarmAcknowledged, AlarmCleared, AlarmRaised, AnyEvent


def stream_id(alarm_id: str) -> str:
    return f"alarm:{alarm_id}"


class AlarmState(msgspec.Struct, frozen=True, kw_only=True):
    alarm_id: str
    raised: bool = False
    state: str = "none"  # "active" | "acknowledged" | "cleared"
    acknowledged_by: str = ""
    cleared_by: str = ""
    cleared_at: datetime | None = None


def evolve(state: AlarmState, event: AnyEvent) -> AlarmState:
    match event:
        case AlarmRaised() if event.alarm_id == state.alarm_id:
            return msgspec.structs.replace(state, raised=True, state="active")
        case AlarmAcknowledged() if state.state == "active":
            return msgspec.structs.replace(state, state="acknowledged", acknowledged_by=event.by)
        case AlarmCleared() if state.state in ("active", "acknowledged"):
            return msgspec.structs.replace(state, state="cleared", cleared_by=event.by)
    return state


def decide_acknowledge(state: AlarmState, by: str, note: str) -> list[AnyEvent]:
    _require(state)
    if state.state == "acknowledged":
        raise AlarmStateConflict(
            state.alarm_id, state.state, f"already acknowledged by {state.acknowledged_by}"
        )
    if state.state == "cleared":
        raise AlarmStateConflict(
            state.alarm_id, state.state, f"cleared by {state.cleared_by}: nothing to acknowledge"
        )
    return [AlarmAcknowledged(alarm_id=state.alarm_id, by=by, note=note)]


def decide_clear(state: AlarmState, by: str, note: str) -> list[AnyEvent]:
    _require(state)
    if state.state == "cleared":
        raise AlarmStateConflict(
            state.alarm_id, state.state, f"already cleared by {state.cleared_by}"
        )
    return [AlarmCleared(alarm_id=state.alarm_id, by=by, note=note)]


def _require(state: AlarmState) -> None:
    if not state.raised:
        raise AlarmNotFound(state.alarm_id)
