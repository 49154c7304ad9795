"""What the log stores around each event: position, ids, stream version, time and actor."""

from __future__ import annotations

from datetime import datetime

import msgspec

from lablink.events.union import AnyEvent


class NewEvent(msgspec.Struct, frozen=True, kw_only=True):
    """An event on its way into the log; the store gives it a position and a version."""

    event: AnyEvent
    actor: str
    occurred_at: datetime
    correlation_id: str | None = None
    event_id: str | None = None


class RecordedEvent(msgspec.Struct, frozen=True, kw_only=True):
    position: int
    event_id: str
    stream_id: str
    version: int
    occurred_at: datetime
    actor: str
    correlation_id: str | None
    event: AnyEvent

    @property
    def type(self) -> str:
        tag = type(self.event).__struct_config__.tag
        assert isinstance(tag, str)
        return tag


def stamp(events: list[AnyEvent], actor: str, occurred_at: datetime) -> list[NewEvent]:
    """Wrap decided events for the log; execution facts carry their execution id as
    correlation id."""
    return [
        NewEvent(
            event=e,
            actor=actor,
            occurred_at=occurred_at,
            correlation_id=getattr(e, "execution_id", None),
        )
        for e in events
    ]
