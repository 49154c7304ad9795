"""``lablink_notifications_total{channel,outcome}`` counts the facts the notifier writes: each
failed attempt, each delivery and each give-up, per channel, as ``GET /metrics`` shows them
(parsed as Prometheus does)."""

from __future__ import annotations

import collections

import httpx

from lablink.health import Health
from lablink.notify.notifier import Notifier
from tests.metrics.scraping import parse, value
from tests.notify.conftest import SECRET, facts, raise_alarm, sent, webhook
from tests.notify.receiver import Receiver
from tests.support.eventually import eventually
from tests.support.harness import Harness
from tests.support.serve import free_port

NAME = "lablink_notifications_total"
OUTCOMES = {"NotificationSent": "sent", "NotificationFailed": "failed"}


async def test_attempts_deliveries_and_give_ups_are_counted_per_channel(
    client: httpx.AsyncClient, harness: Harness, notifiers: list[Notifier]
) -> None:
    clock, store = harness.clock, harness.store
    flaky = Receiver(SECRET, fail_first=2)
    dead = f"http://127.0.0.1:{free_port()}/nothing-listens"
    try:
        channels = [
            webhook("ops", flaky.url, retry_initial=5),
            # Tries at 0 and 60 s; the next (180 s) is past the give-up age.
            webhook("dead", dead, retry_initial=60, retry_max=3600, give_up_after=150),
        ]
        notifier = Notifier(store, channels, clock, base_url="http://lab/", poll_seconds=0.02)
        notifiers.append(notifier)
        await notifier.start(Health(clock))
        raise_alarm(store, "alarm_1")
        await eventually(lambda: len(facts(store)) == 2)  # each channel's first failure
        clock.advance(5)  # ops: its second failure
        notifier.wake()
        await eventually(lambda: len(facts(store)) == 3)
        clock.advance(10)  # ops: the delivery
        notifier.wake()
        await eventually(lambda: len(sent(store)) == 1)
        clock.advance(45)  # dead: the second attempt, the give-up and its alarm, told to ops
        notifier.wake()
        await eventually(lambda: len(sent(store)) == 2)

        on_record = collections.Counter(
            (f.channel, OUTCOMES.get(type(f).__name__, "abandoned")) for f in facts(store)
        )
        assert on_record == {
            ("ops", "failed"): 2,
            ("ops", "sent"): 2,
            ("dead", "failed"): 1,
            ("dead", "abandoned"): 1,
        }
        response = await client.get("/metrics")
        assert response.status_code == 200, response.text
        _, samples = parse(response.text)
        counted = {
            (channel, outcome): value(samples, NAME, channel=channel, outcome=outcome)
            for channel, outcome in on_record
        }
        assert counted == on_record
        assert value(samples, NAME, channel="dead", outcome="sent") is None
    finally:
        flaky.close()
