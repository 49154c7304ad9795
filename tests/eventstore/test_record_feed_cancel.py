"""A feed cancelled at the moment a message arrives ends (record_feed.RecordFeed._follow), and
a lease keeper cancelled as it is nudged (lease_keeper.LeaseKeeper.run).

On CPython 3.11, ``asyncio.wait_for`` returns the inner result and drops the cancellation
when the awaited future completes in the same turn as the cancel: the feed took the message
and went on, and whoever cancelled it (a store closing; a test's stop_copying) waited for it
for ever. A CI run hung 120 s on it in tests/eventstore/test_jetstream.py."""

from __future__ import annotations

import asyncio
from typing import cast

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from lablink.eventstore.lease import LeaseRecord
from lablink.eventstore.lease_keeper import LeaseKeeper
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


class NeverGranted:
    """A lease link whose lease is always someone else's: the keeper stays a follower and
    waits a poll between claims."""

    def __init__(self) -> None:
        self.claims = 0
        self.claimed = asyncio.Event()

    async def read(self) -> LeaseRecord | None:
        return None

    async def claim(self, after: LeaseRecord | None) -> LeaseRecord | None:
        self.claims += 1
        self.claimed.set()
        return None

    async def take_over(self, stale: LeaseRecord) -> LeaseRecord | None:
        return None


async def test_a_keeper_cancelled_as_it_is_nudged_ends() -> None:
    link = NeverGranted()
    keeper = LeaseKeeper(link, replica="a", ttl=5.0, poll=60.0)
    task = asyncio.create_task(keeper.run())
    # Its first claim made, it waits for its poll, or a nudge.
    await asyncio.wait_for(link.claimed.wait(), WAIT)
    await asyncio.sleep(0)
    keeper.nudge()
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=WAIT)
    assert task in done, "the keeper went on after it was cancelled"
    assert task.cancelled()
    assert link.claims == 1
