"""The notifier on a real SQLite log (views folded right after each commit), a manual clock,
and webhook receivers served by the test on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime
from typing import Any

import pytest

from lablink.clock import Clock
from lablink.events import AlarmRaised, NotificationAbandoned, NotificationFailed, NotificationSent
from lablink.eventstore.sqlite import SQLiteEventStore
from lablink.handler import CommandHandler
from lablink.health import Health
from lablink.notify.config import Channel, Routing, Webhook
from lablink.notify.notifier import Notifier
from tests.notify.receiver import Receiver

SECRET = "s3cret-of-the-test-channel"


def webhook(name: str, url: str, **options: Any) -> Channel:
    routing = {k: options.pop(k) for k in list(options) if k in Routing.__dataclass_fields__}
    return Channel(
        name=name,
        kind="webhook",
        target=Webhook(url=url, secret=SECRET),
        routing=Routing(**routing),
        **options,
    )


def raise_alarm(
    store: SQLiteEventStore,
    alarm_id: str,
    *,
    severity: str = "critical",
    equipment_id: str | None = "power_supply_1",
    job_id: str | None = None,
    at: datetime | None = None,
) -> None:
    event = AlarmRaised(
        alarm_id=alarm_id,
        kind="job_failure",
        severity=severity,  # type: ignore[arg-type]
        message=f"{alarm_id} failed",
        equipment_id=equipment_id,
        job_id=job_id,
    )
    stream = f"job:{job_id}" if job_id else f"equipment:{equipment_id}"
    CommandHandler(store).record(stream, [event], "test", at=at)


def facts(store: SQLiteEventStore) -> list[Any]:
    kinds = (NotificationSent, NotificationFailed, NotificationAbandoned)
    return [r.event for r in store.read_all() if isinstance(r.event, kinds)]


def sent(store: SQLiteEventStore) -> list[NotificationSent]:
    return [e for e in facts(store) if isinstance(e, NotificationSent)]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    started = Receiver(SECRET)
    yield started
    started.close()


Start = Callable[..., Any]


@pytest.fixture
async def notifiers() -> AsyncIterator[list[Notifier]]:
    """Every notifier a test starts is closed afterwards."""
    started: list[Notifier] = []
    yield started
    for notifier in started:
        await notifier.aclose()


@pytest.fixture
def start(store: SQLiteEventStore, notifiers: list[Notifier]) -> Start:
    async def start(channels: list[Channel], clock: Clock, **options: Any) -> Notifier:
        options.setdefault("poll_seconds", 0.02)
        health = options.pop("health", None) or Health(clock)
        notifier = Notifier(store, channels, clock, base_url="http://127.0.0.1:8000/", **options)
        notifiers.append(notifier)
        return await notifier.start(health)

    return start
