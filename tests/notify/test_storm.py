"""A storm: 1,000 alarms raised within a minute reach a channel as a handful of messages
(the first ten, then one digest a minute listing the rest), each alarm exactly once."""

from __future__ import annotations

from datetime import timedelta

from lablink.clock import ManualClock
from lablink.events import AlarmRaised
from lablink.eventstore.sqlite import SQLiteEventStore
from lablink.handler import CommandHandler
from tests.notify.conftest import Start, raise_alarm, sent, webhook
from tests.notify.receiver import Receiver
from tests.support.eventually import eventually


def raise_many(store: SQLiteEventStore, clock: ManualClock, first: int, count: int) -> None:
    handler = CommandHandler(store, clock)
    handler.record_together(
        [
            (
                f"equipment:psu_{i}",
                [
                    AlarmRaised(
                        alarm_id=f"alarm_{i:04d}",
                        kind="equipment_offline",
                        severity="critical",
                        message=f"psu_{i} offline",
                        equipment_id=f"psu_{i}",
                    )
                ],
            )
            for i in range(first, first + count)
        ],
        "test",
    )


async def test_a_thousand_alarms_in_a_minute_are_a_handful_of_messages(
    store: SQLiteEventStore, clock: ManualClock, receiver: Receiver, start: Start
) -> None:
    notifier = await start([webhook("ops", receiver.url, storm_threshold=10)], clock)
    # 1,000 alarms over 50 seconds, in bursts of 100 every 5 s.
    for burst in range(10):
        raise_many(store, clock, burst * 100, 100)
        notifier.wake()
        await eventually(lambda: len(notifier.outboxes["ops"].waiting.get("raised", [])) >= 1)
        clock.advance(5)
    await eventually(lambda: sum(len(v) for v in notifier.outboxes["ops"].waiting.values()) == 990)
    assert len(receiver.requests) == 10  # the first ten alarms, one message each
    clock.advance(timedelta(seconds=10))  # a minute after the first messages
    notifier.wake()
    await eventually(lambda: len(receiver.requests) == 11)
    digest = receiver.requests[-1]
    assert digest.signature_ok
    assert digest.body["digest"] is True
    assert digest.body["count"] == 990
    assert digest.key == "alarm_0010:ops:raised:digest"
    # While the storm lasts, one digest a minute at most.
    raise_many(store, clock, 1000, 50)
    notifier.wake()
    await eventually(lambda: len(notifier.outboxes["ops"].waiting.get("raised", [])) == 50)
    assert len(receiver.requests) == 11
    clock.advance(60)
    notifier.wake()
    await eventually(lambda: len(receiver.requests) == 12)
    assert receiver.requests[-1].body["count"] == 50
    # Each alarm delivered once, on record: 10 single messages and 2 digests.
    facts = sent(store)
    assert len(facts) == 12
    ids = [a for f in facts for a in (f.alarm_ids or [f.alarm_id])]
    assert sorted(ids) == [f"alarm_{i:04d}" for i in range(1050)]
    # A quiet minute ends the storm: the next alarm goes out on its own.
    clock.advance(61)
    raise_alarm(store, "alarm_after")
    await eventually(lambda: len(receiver.requests) == 13)
    assert receiver.requests[-1].key == "alarm_after:ops:raised"
