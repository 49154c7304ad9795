"""The live streams of an app share one poller, the beat (beat.py): one task however many
screens, a stream woken only when it has something to send (a frame once its throttle period
is over, a tick, a keep-alive), every stream woken by one pass sending one pass of the frame
built once, a resumed stream still told its own range, and closing the app ending every
stream. Driven by the real store and engine of the harness, on a clock moved by hand
(test_overview.Ticks: it counts the beat's readings of it, one per pass)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Iterator
from typing import Any

import pytest

from lablink.api.context import ApiContext
from lablink.dashboard import overview
from lablink.dashboard.beat import Beat
from lablink.dashboard.frames import Frames
from lablink.dashboard.live import (
    KEEPALIVE_SECONDS,
    THROTTLE_SECONDS,
    TICK_SECONDS,
    Batch,
    beat_for,
    folded_position,
    lookup_of,
    passes,
)
from lablink.dashboard.pushed import Cards, OverviewCards, event_of
from tests.dashboard.test_overview import MEASURE, Ticks, context_of, raise_alarm
from tests.support.eventually import eventually
from tests.support.harness import Harness

SCREENS = 20


class Screen:
    """A stream as Litestar runs it: its passes read in a task of its own."""

    def __init__(self, stream: AsyncGenerator[Batch, None]) -> None:
        self.stream = stream
        self.got: list[Batch] = []
        self.ended = False
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for sent in self.stream:
            self.got.append(sent)
        self.ended = True

    def events(self, index: int) -> list[tuple[str | None, str | None]]:
        return [(m.event, None if m.id is None else str(m.id)) for m in self.got[index].parts]

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.stream.aclose()


class Counted:
    """The context's real topic look-up, noting each range it is asked for."""

    def __init__(self, context: ApiContext) -> None:
        self.inner = lookup_of(context)
        self.ranges: list[tuple[int, int]] = []

    async def __call__(self, after: int, upto: int) -> list[str]:
        self.ranges.append((after, upto))
        return await self.inner(after, upto)


@pytest.fixture
def context(harness: Harness) -> Iterator[ApiContext]:
    found = context_of(harness)
    yield found
    found.close()


def job(name: str) -> dict[str, object]:
    return {**MEASURE, "name": name, "trigger_type": "interval", "interval_hours": 1}


def beats() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_name() == "live-beat" and not t.done()]


async def test_screens_share_one_beat_and_are_woken_only_with_something_to_send(
    harness: Harness, context: ApiContext
) -> None:
    ticks = Ticks()
    beat = beat_for(context, ticks)
    lookups = Counted(context)
    frames = Frames(lookups, period=THROTTLE_SECONDS)
    start = folded_position(context)
    screens = [Screen(passes(context, start, frames=frames, beat=beat)) for _ in range(SCREENS)]
    try:
        await eventually(lambda: beat.waiting, until=lambda n: n == SCREENS)
        assert len(beats()) == 1
        assert [len(s.got) for s in screens] == [1] * SCREENS  # hello

        # Nothing changed: the beat passes, no screen is woken.
        await ticks.passes(4)
        assert beat.woken == 0
        # A change within the throttle period: still none.
        harness.service.create_job(job("First"), "alice")
        changed = folded_position(context)
        assert changed > start
        await ticks.passes(4)
        assert beat.woken == 0

        # The period over: every screen woken once, at one pass, sending one pass built once.
        ticks.now = THROTTLE_SECONDS
        await eventually(lambda: [len(s.got) for s in screens], until=lambda n: min(n) == 2)
        assert beat.woken == SCREENS
        assert len({id(s.got[1]) for s in screens}) == 1
        assert screens[0].events(1) == [("jobs", str(changed)), ("schedules", str(changed))]
        assert lookups.ranges == [(start, changed)]

        # Sent: nothing more to do until the next change, the tick or the keep-alive.
        ticks.now = THROTTLE_SECONDS * 3
        await ticks.passes(4)
        assert beat.woken == SCREENS
        assert len(beats()) == 1
    finally:
        for screen in screens:
            await screen.close()
    # No screen left: the beat's task ends.
    await eventually(beats, until=lambda found: found == [])
    assert not beat.running


async def test_an_idle_screen_is_woken_for_the_keepalive_and_the_tick_alone(
    context: ApiContext,
) -> None:
    ticks = Ticks()
    beat = beat_for(context, ticks)
    asked = 0

    async def still_allowed() -> bool:
        nonlocal asked
        asked += 1
        return True

    start = folded_position(context)
    screen = Screen(passes(context, start, beat=beat, still_allowed=still_allowed))
    try:
        await eventually(lambda: beat.waiting, until=lambda n: n == 1)
        ticks.now = KEEPALIVE_SECONDS
        await eventually(lambda: len(screen.got), until=lambda n: n == 2)
        assert [m.comment for m in screen.got[1].parts] == ["keep-alive"]
        assert beat.woken == 1
        ticks.now = TICK_SECONDS
        await eventually(lambda: len(screen.got), until=lambda n: n == 3)
        assert screen.events(2) == [("tick", str(start))]
        assert (beat.woken, asked) == (2, 1)
        await ticks.passes(4)
        assert beat.woken == 2
    finally:
        await screen.close()


async def test_a_resumed_screen_on_the_shared_beat_is_told_its_own_range(
    harness: Harness, context: ApiContext
) -> None:
    ticks = Ticks()
    beat = beat_for(context, ticks)
    lookups = Counted(context)
    frames = Frames(lookups, period=THROTTLE_SECONDS)
    before = folded_position(context)
    alarm_id = await raise_alarm(harness)
    raised = folded_position(context)
    following = Screen(passes(context, raised, frames=frames, beat=beat))
    # Back with the Last-Event-ID it had before the alarm.
    resumed = Screen(passes(context, before, frames=frames, beat=beat))
    try:
        await eventually(lambda: beat.waiting, until=lambda n: n == 2)
        context.alarms.acknowledge(alarm_id, "alice", "seen", "alice")
        acked = folded_position(context)
        assert acked > raised
        ticks.now = THROTTLE_SECONDS
        await eventually(
            lambda: (len(following.got), len(resumed.got)), until=lambda n: n == (2, 2)
        )
        # One frame for both, at one pass: its topics for the one that follows it, its own
        # range's for the other, both with the frame's position as id.
        assert following.events(1) == [("alarms", str(acked))]
        assert resumed.events(1) == [
            (topic, str(acked)) for topic in ("alarms", "executions", "jobs", "schedules")
        ]
        assert sorted(lookups.ranges) == [(before, acked), (raised, acked)]
    finally:
        await following.close()
        await resumed.close()


async def test_closing_the_app_ends_every_screen_at_the_next_beat(
    harness: Harness, context: ApiContext
) -> None:
    ticks = Ticks()
    beat = beat_for(context, ticks)
    frames = Frames(lookup_of(context), period=THROTTLE_SECONDS)
    start = folded_position(context)
    screens = [Screen(passes(context, start, frames=frames, beat=beat)) for _ in range(SCREENS)]
    try:
        await eventually(lambda: beat.waiting, until=lambda n: n == SCREENS)
        harness.service.create_job(job("Pending"), "alice")
        context.close_streams()
        # The clock stands still: no screen has anything due, and yet every one ends.
        await eventually(lambda: [s.ended for s in screens], until=all)
        assert [len(s.got) for s in screens] == [1] * SCREENS
        await eventually(lambda: beat.running, until=lambda running: not running)
        assert beat.waiting == 0
    finally:
        for screen in screens:
            await screen.close()


async def test_a_failing_beat_ends_the_waiting_streams_with_its_error() -> None:
    def folded() -> int:
        raise OSError("the views are gone")

    beat = Beat(folded, lambda: False, every=0.01, clock=Ticks())
    waits = [asyncio.create_task(beat.until(lambda folded, now: True)) for _ in range(3)]
    for wait in waits:
        with pytest.raises(OSError, match="gone"):
            await wait
    assert beat.waiting == 0
    await eventually(lambda: beat.running, until=lambda running: not running)


async def test_a_screen_that_goes_away_stops_waiting() -> None:
    beat = Beat(lambda: 0, lambda: False, every=0.01, clock=Ticks())
    kept = asyncio.create_task(beat.until(lambda folded, now: folded > 0))
    gone = asyncio.create_task(beat.until(lambda folded, now: folded > 0))
    await eventually(lambda: beat.waiting, until=lambda n: n == 2)
    gone.cancel()
    await eventually(lambda: beat.waiting, until=lambda n: n == 1)
    assert beat.running
    kept.cancel()
    await eventually(lambda: beat.running, until=lambda running: not running)
    assert gone.cancelled()
    assert kept.cancelled()


async def test_screens_started_apart_tick_at_one_pass_and_share_its_cards(
    context: ApiContext,
) -> None:
    drawn: list[str] = []

    def render(card: str, can_write: bool) -> str:
        drawn.append(card)
        return f"<p>{card}</p>"

    ticks = Ticks()
    beat = beat_for(context, ticks)
    frames = Frames(lookup_of(context), period=THROTTLE_SECONDS)
    pushed = OverviewCards(Cards(render), can_write=True)
    start = folded_position(context)
    first = Screen(passes(context, start, frames=frames, beat=beat, pushed=pushed))
    await eventually(lambda: beat.waiting, until=lambda n: n == 1)
    ticks.now = TICK_SECONDS / 3
    second = Screen(passes(context, start, frames=frames, beat=beat, pushed=pushed))
    try:
        await eventually(lambda: beat.waiting, until=lambda n: n == 2)
        await ticks.passes(2)
        assert beat.woken == 0
        # The first's first tick may come at 30 s, the second's not before 40 s: both at 60.
        ticks.now = TICK_SECONDS * 2
        await eventually(lambda: (len(first.got), len(second.got)), until=lambda n: n == (2, 2))
        assert first.got[1] is second.got[1]
        ticking = [card for card, shows in overview.SHOWS.items() if "tick" in shows]
        assert first.events(1) == [("tick", str(start))] + [
            (event_of(card), str(start)) for card in ticking
        ]
        assert sorted(drawn) == sorted(ticking)  # once for both screens
    finally:
        await first.close()
        await second.close()
