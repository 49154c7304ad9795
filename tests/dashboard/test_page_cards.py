"""The pages' own streams (pushed.PageCards): the screens showing the same page share each
frame's drawing of its parts, drawn once even when the drawing waits (a chart is drawn on a
thread) and the streams asked for it at the same pass; a page of another kind is drawn for
itself; a part is sent only on the topics it shows. Driven by the real store and engine of
the harness, on a clock moved by hand (test_overview.Ticks)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest

from lablink.api.context import ApiContext
from lablink.dashboard.drawer import Drawer
from lablink.dashboard.frames import Frames
from lablink.dashboard.live import THROTTLE_SECONDS, beat_for, folded_position, lookup_of, passes
from lablink.dashboard.pushed import Card, PageCards, event_of
from tests.dashboard.test_live_beat import Screen, job
from tests.dashboard.test_overview import Ticks, context_of
from tests.support.eventually import eventually
from tests.support.harness import Harness

SCREENS = 5


@pytest.fixture
def context(harness: Harness) -> Iterator[ApiContext]:
    found = context_of(harness)
    yield found
    found.close()


class Drawings:
    """Parts that note each drawing (on its worker thread) and wait for ``release`` before
    they are done."""

    def __init__(self) -> None:
        self.drawn: list[str] = []
        self.release = threading.Event()

    def card(self, name: str, *topics: str) -> Card:
        def draw(context: ApiContext) -> str:
            # Drawn off the loop, over a reader connection of the drawing's own.
            assert threading.current_thread() is not threading.main_thread()
            context.reader.execute("select 1").fetchone()
            self.drawn.append(name)
            self.release.wait(timeout=60)
            return f"<p>{name} {len(self.drawn)}</p>"

        return Card(frozenset(topics), draw)


async def test_screens_of_one_page_share_its_drawing_and_other_pages_draw_their_own(
    harness: Harness, context: ApiContext
) -> None:
    ticks = Ticks()
    beat = beat_for(context, ticks)
    frames = Frames(lookup_of(context), period=THROTTLE_SECONDS)
    drawings = Drawings()
    drawer = Drawer(context, share=1.0)

    def page(kind: str) -> PageCards:
        return PageCards(
            drawer,
            ("page", kind),
            {
                "summary": drawings.card(f"{kind}:summary", "jobs", "executions"),
                "alarms": drawings.card(f"{kind}:alarms", "alarms"),
            },
        )

    start = folded_position(context)
    same = [
        Screen(passes(context, start, frames=frames, beat=beat, pushed=page("a")))
        for _ in range(SCREENS)
    ]
    other = Screen(passes(context, start, frames=frames, beat=beat, pushed=page("b")))
    screens = [*same, other]
    try:
        await eventually(lambda: beat.waiting, until=lambda n: n == SCREENS + 1)
        harness.service.create_job(job("First"), "alice")
        changed = folded_position(context)
        ticks.now = THROTTLE_SECONDS
        # Every stream asked at the same pass: one drawing at a time (the drawer's thread),
        # the other page's waiting for its turn, none of page a's five screens drawing again.
        await eventually(lambda: len(drawings.drawn), until=lambda n: n == 1)
        drawings.release.set()
        await eventually(lambda: [len(s.got) for s in screens], until=lambda n: min(n) == 2)

        # One pass for the five screens of page a, built once; page b's of its own.
        assert len({id(s.got[1]) for s in same}) == 1
        assert other.got[1] is not same[0].got[1]
        # The topics, then the part showing them (not the alarms, which no topic named).
        assert same[0].events(1) == [
            ("jobs", str(changed)),
            ("schedules", str(changed)),
            (event_of("summary"), str(changed)),
        ]
        assert str(same[0].got[1].parts[-1].data).startswith("<p>a:summary ")
        assert str(other.got[1].parts[-1].data).startswith("<p>b:summary ")
        assert sorted(drawings.drawn) == ["a:summary", "b:summary"]
    finally:
        drawings.release.set()
        for screen in screens:
            await screen.close()


async def test_a_screen_that_goes_away_does_not_cancel_the_drawing_others_wait_for(
    harness: Harness, context: ApiContext
) -> None:
    ticks = Ticks()
    beat = beat_for(context, ticks)
    frames = Frames(lookup_of(context), period=THROTTLE_SECONDS)
    drawings = Drawings()
    drawer = Drawer(context, share=1.0)
    cards = PageCards(drawer, ("page",), {"summary": drawings.card("summary", "jobs")})
    start = folded_position(context)
    leaving = Screen(passes(context, start, frames=frames, beat=beat, pushed=cards))
    staying = Screen(passes(context, start, frames=frames, beat=beat, pushed=cards))
    try:
        await eventually(lambda: beat.waiting, until=lambda n: n == 2)
        harness.service.create_job(job("First"), "alice")
        ticks.now = THROTTLE_SECONDS
        await eventually(lambda: len(drawings.drawn), until=lambda n: n == 1)
        await leaving.close()
        drawings.release.set()
        await eventually(lambda: len(staying.got), until=lambda n: n == 2)
        assert staying.got[1].parts[-1].data == "<p>summary 1</p>"
        assert drawings.drawn == ["summary"]
    finally:
        drawings.release.set()
        await staying.close()


class Moments:
    """A monotonic clock moved by hand, and the sleeps asked of it (which move it)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


async def test_drawings_are_paced_to_their_share_of_the_time(context: ApiContext) -> None:
    moments = Moments()
    drawer = Drawer(context, share=0.25, clock=moments, sleep=moments.sleep)

    def slow(_: ApiContext) -> str:
        moments.now += 1.0  # this drawing takes a second
        return "<p>slow</p>"

    try:
        assert await drawer.draw([slow]) == ["<p>slow</p>"]
        assert moments.slept == []
        # A second of drawing at a quarter of the time: the next waits three.
        assert await drawer.draw([slow, slow]) == ["<p>slow</p>", "<p>slow</p>"]
        assert moments.slept == [3.0]
        # Two seconds: six; but time that passed anyway counts.
        moments.now += 4.0
        await drawer.draw([slow])
        assert moments.slept == [3.0, 2.0]
        assert drawer.drawings == 3
        assert drawer.spent == 4.0
        assert drawer.waited == 5.0
    finally:
        drawer.close()


async def test_drawings_on_the_real_clock_run_off_the_loop_and_wait_their_turn(
    context: ApiContext,
) -> None:
    drawer = Drawer(context, share=0.5)
    threads: list[str] = []

    def draw(reading: ApiContext) -> str:
        threads.append(threading.current_thread().name)
        time.sleep(0.02)  # a drawing that takes a while (not a measurement)
        row = reading.reader.execute("select count(*) from sqlite_master").fetchone()
        return f"<p>{row[0]}</p>"

    try:
        first, second = await asyncio.gather(drawer.draw([draw]), drawer.draw([draw]))
        assert first == second
        assert threads[0].startswith("dashboard-draw")
        assert threads[0] == threads[1]
        assert drawer.drawings == 2
        assert drawer.waited > 0
    finally:
        drawer.close()
    with pytest.raises(RuntimeError):
        await drawer.draw([draw])
