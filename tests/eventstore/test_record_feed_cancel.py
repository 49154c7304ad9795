"""A feed cancelled at the moment a message arrives ends (record_feed.RecordFeed._follow).

On CPython 3.11, ``asyncio.wait_for`` returns the inner result and drops the cancellation
when the awaited future completes in the same turn as the cancel: the feed took the message
and went on, and whoever cancelled it (a store closing; a test's stop_copying) waited for it
for ever. A CI run hung 120 s on it in tests/eventstore/test_jetstream.py."""

from __future__ import annotations

import asyncio
from typing import cast

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from lablink.eventstore.record_feed import RecordFeed
from lablink.eventstore.sqlite import SQLiteEventStore

WAIT = 10.0


async def test_a_feed_cancelled_as_a_message_arrives_ends() -> None:
    # Neither the connection nor the copy is touched by an idle heartbeat (no reply asked,
    # no rows to write): the feed's loop and its queue are real.
    feed = RecordFeed(cast(NATS, None), "LABLINK", cast(SQLiteEventStore, None))
    queue: asyncio.Queue[Msg] = asyncio.Queue()
    task = asyncio.create_task(feed._follow(queue, 0))
    await asyncio.sleep(0)  # waiting for its first message
    heartbeat = Msg(cast(NATS, None), subject="inbox", headers={"Status": "100"})
    queue.put_nowait(heartbeat)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=WAIT)
    assert task in done, "the feed went on after it was cancelled"
    assert task.cancelled()
