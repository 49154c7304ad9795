"""Facts about alarm notifications (stream: ``notification:<alarm_id>:<channel>``).

Each delivery attempt of an alarm's transition (raised, acknowledged, cleared) to one channel
is on record: the outbox (lablink/notify) decides from these what is still owed, and
``lablink_notifications_total{channel,outcome}`` counts them (outcome: the tag's last word).
A digest (many alarms in one message, when a channel is over its rate) names every alarm it
carries in ``alarm_ids``; ``alarm_id`` is then the first of them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec

from lablink.events.base import Event

Transition = Literal["raised", "acknowledged", "cleared"]


class NotificationSent(Event, frozen=True, kw_only=True, tag="notification.sent"):
    alarm_id: str
    channel: str
    transition: Transition = "raised"
    attempt: int
    # The receiver's dedup key (webhook ``Idempotency-Key``): alarm id + channel + transition.
    idempotency_key: str
    alarm_ids: list[str] = msgspec.field(default_factory=list)
    detail: str = ""


class NotificationFailed(Event, frozen=True, kw_only=True, tag="notification.failed"):
    alarm_id: str
    channel: str
    transition: Transition = "raised"
    attempt: int
    error: str
    retry_at: datetime | None = None
    alarm_ids: list[str] = msgspec.field(default_factory=list)


class NotificationAbandoned(Event, frozen=True, kw_only=True, tag="notification.abandoned"):
    alarm_id: str
    channel: str
    transition: Transition = "raised"
    attempts: int
    first_attempt_at: datetime
    error: str
    alarm_ids: list[str] = msgspec.field(default_factory=list)
