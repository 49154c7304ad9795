"""Reading the event stream back: for audits and for tests. A new consumer can start at any
stream position (JetStream's deliver policy by start sequence); events are deduplicated by
their id, as every consumer of LabLink's stream must."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import nats
from nats.aio.client import Client as NATS
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError, ServiceUnavailableError

from lablink.bus.options import NatsOptions
from lablink.bus.subjects import EVENTS_ALL, STREAM


async def wait_for_stream(nc: NATS, wait: float) -> None:
    """The relay creates the stream on its first connect: wait for JetStream's advisory.
    A cluster still electing its JetStream leader answers nothing: ask again."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    created = await nc.subscribe(f"$JS.EVENT.ADVISORY.STREAM.CREATED.{STREAM}")
    try:
        while True:
            try:
                await nc.jetstream(timeout=2).stream_info(STREAM)
                return
            except NotFoundError:
                with contextlib.suppress(nats.errors.TimeoutError):
                    await created.next_msg(timeout=min(2.0, max(deadline - loop.time(), 0.1)))
                    return
            except nats.errors.TimeoutError:
                pass
            if loop.time() > deadline:
                raise TimeoutError(f"stream {STREAM} did not appear within {wait:g} s")
    finally:
        await created.unsubscribe()


async def read_stream(
    url: str | NatsOptions,
    *,
    expected: int,
    start: int = 1,
    wait: float = 20.0,
    subject: str = EVENTS_ALL,
) -> list[dict[str, Any]]:
    """Distinct events from stream sequence ``start`` on, until ``expected`` arrived or
    ``wait`` seconds passed, in stream order. ``url`` may carry a user (``NatsOptions``)."""
    options = url if isinstance(url, NatsOptions) else NatsOptions(url=url)
    nc = await nats.connect(**options.connect_kwargs())
    try:
        js = nc.jetstream()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        await wait_for_stream(nc, wait)
        policy = (
            ConsumerConfig(deliver_policy=DeliverPolicy.ALL)
            if start <= 1
            else ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start)
        )
        while True:
            # After a node is lost, the cluster may need a moment to place the consumer; a
            # stream just created may not be found for a moment by the next request either.
            try:
                sub = await js.pull_subscribe(subject, durable=None, stream=STREAM, config=policy)
                break
            except (nats.errors.TimeoutError, NotFoundError, ServiceUnavailableError):
                if loop.time() > deadline:
                    raise
                await asyncio.sleep(0.05)
        seen: dict[str, dict[str, Any]] = {}
        while len(seen) < expected and loop.time() < deadline:
            try:
                messages = await sub.fetch(500, timeout=min(1.0, max(deadline - loop.time(), 0.1)))
            except TimeoutError:  # nats-py raises its own subclass, or the plain one
                continue
            except ServiceUnavailableError:
                # No responder for a moment: the consumer's leader was on a node just lost,
                # and the cluster is electing another (a few seconds).
                await asyncio.sleep(0.2)
                continue
            for message in messages:
                event_id = (message.headers or {}).get("Nats-Msg-Id", "")
                seen.setdefault(event_id, json.loads(message.data))
                await message.ack()
        return list(seen.values())
    finally:
        await nc.close()
