"""``BatchPull`` against a real nats-server: what is waiting comes in batches and in order,
an empty consumer is waited on, every message is taken once (a late one by the next fetch),
and a consumer that is gone is said so."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import nats
import pytest
from nats.aio.client import Client as NATS
from nats.js.api import AckPolicy, ConsumerConfig

from lablink.bus.pull import BatchPull, ConsumerGone
from lablink.bus.server import NatsServer

pytestmark = pytest.mark.nats

STREAM = "PULLTEST"
CONSUMER = "taker"


@pytest.fixture
async def nc(nats_server: NatsServer) -> AsyncIterator[NATS]:
    client = await nats.connect(nats_server.url)
    js = client.jetstream()
    await js.add_stream(name=STREAM, subjects=["pulltest.>"])
    await js.add_consumer(
        STREAM, ConsumerConfig(durable_name=CONSUMER, ack_policy=AckPolicy.EXPLICIT)
    )
    yield client
    await client.close()


async def publish(nc: NATS, first: int, count: int) -> None:
    js = nc.jetstream()
    for n in range(first, first + count):
        await js.publish(f"pulltest.{n % 7}", str(n).encode())


async def test_waiting_messages_come_in_batches_in_order(nc: NATS) -> None:
    await publish(nc, 0, 250)
    pull = await BatchPull(nc, STREAM, CONSUMER).start()
    try:
        sizes: list[int] = []
        seen: list[int] = []
        while len(seen) < 250:
            msgs = await pull.fetch(100, 5.0)
            sizes.append(len(msgs))
            for msg in msgs:
                seen.append(int(msg.data))
                await msg.ack()
        assert sizes == [100, 100, 50]
        assert seen == list(range(250))
        with pytest.raises(TimeoutError):
            await pull.fetch(100, 0.3)
    finally:
        await pull.close()
    info = await nc.jetstream().consumer_info(STREAM, CONSUMER)
    assert (info.num_pending, info.num_ack_pending) == (0, 0)


async def test_an_empty_consumer_is_waited_on(nc: NATS) -> None:
    pull = await BatchPull(nc, STREAM, CONSUMER).start()
    try:
        fetching = asyncio.create_task(pull.fetch(100, 30.0))
        await asyncio.sleep(0.2)
        assert not fetching.done()
        await publish(nc, 0, 3)
        msgs = await fetching
        for msg in msgs:
            await msg.ack()
        taken = [int(msg.data) for msg in msgs]
        # The first message ends the wait; the others came with it or come next.
        while len(taken) < 3:
            more = await pull.fetch(100, 5.0)
            for msg in more:
                await msg.ack()
            taken += [int(msg.data) for msg in more]
        assert taken == [0, 1, 2]
    finally:
        await pull.close()


async def test_every_message_is_taken_once_across_short_waits(nc: NATS) -> None:
    """Fetches whose waits run out while messages keep coming: each message is taken once
    (one sent as a wait ran out is the next fetch's), none twice, none lost."""
    pull = await BatchPull(nc, STREAM, CONSUMER).start()
    taken: list[int] = []

    async def take() -> None:
        while len(taken) < 300:
            try:
                msgs = await pull.fetch(7, 0.06)
            except TimeoutError:
                continue
            for msg in msgs:
                taken.append(int(msg.data))
                await msg.ack()

    try:
        taking = asyncio.create_task(take())
        for first in range(0, 300, 20):
            await publish(nc, first, 20)
            await asyncio.sleep(0.01)
        async with asyncio.timeout(60):
            await taking
    finally:
        await pull.close()
    assert taken == list(range(300))


async def test_a_deleted_consumer_is_said_so(nc: NATS) -> None:
    pull = await BatchPull(nc, STREAM, CONSUMER).start()
    try:
        fetching = asyncio.create_task(pull.fetch(100, 30.0))
        await asyncio.sleep(0.2)
        await nc.jetstream().delete_consumer(STREAM, CONSUMER)
        with pytest.raises(ConsumerGone):
            async with asyncio.timeout(20):
                await fetching
    finally:
        await pull.close()


async def test_waiting_messages_take_no_task_each(nc: NATS) -> None:
    """The point of it: nats-py's ``fetch`` makes two tasks (a turn of the loop at least)
    per message; a batch that is waiting is taken here with a handful, whatever its size."""
    await publish(nc, 0, 100)
    pull = await BatchPull(nc, STREAM, CONSUMER).start()
    loop = asyncio.get_running_loop()
    made = 0
    default = loop.get_task_factory()

    def counting(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
        nonlocal made
        made += 1
        if default is not None:
            return default(loop, coro, **kwargs)  # type: ignore[return-value]
        return asyncio.Task(coro, loop=loop, **kwargs)

    loop.set_task_factory(counting)
    try:
        msgs = await pull.fetch(100, 5.0)
    finally:
        loop.set_task_factory(default)
        await pull.close()
    assert len(msgs) == 100
    assert made < 10, f"{made} tasks for one batch of 100"
