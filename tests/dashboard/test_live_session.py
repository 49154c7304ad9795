"""A live stream whose session ends is closed at its next tick: a screen left open after a
sign-out, an expiry or a revoked key hears of no more changes, and its reconnect goes to the
sign-in page."""

from __future__ import annotations

import asyncio

from lablink.dashboard.live import changes, folded_position
from tests.dashboard.test_overview import Ticks, context_of
from tests.support.harness import Harness


async def test_the_stream_ends_at_the_tick_after_the_session_ends(harness: Harness) -> None:
    context = context_of(harness)
    allowed = True
    asked = 0

    async def still_allowed() -> bool:
        nonlocal asked
        asked += 1
        return allowed

    try:
        ticks = Ticks()
        stream = changes(
            context, folded_position(context), clock=ticks, still_allowed=still_allowed
        )
        assert (await asyncio.wait_for(anext(stream), 30)).event == "hello"
        ticks.now = 31.0
        assert (await asyncio.wait_for(anext(stream), 30)).event == "tick"
        assert asked == 1
        allowed = False
        ticks.now = 62.0
        ended = False
        try:
            await asyncio.wait_for(anext(stream), 30)
        except StopAsyncIteration:
            ended = True
        assert ended
        assert asked == 2
    finally:
        context.close()
