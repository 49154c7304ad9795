"""The pages' own streams (pushed.PageCards): the screens showing the same page share each
frame's drawing of its parts, drawn once even when the drawing waits (in the drawing
process) and the streams asked for it at the same pass; a page of another kind is drawn for
itself; a part is sent only on the topics it shows. Driven by the real store and engine of
the harness, on a clock moved by hand (test_overview.Ticks). The sharing and the pacing are
shown with a canvas that waits for the test (``Drawings``); the drawing process itself
draws the real parts, from the views, with the engine's clock, in the last tests."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from lablink.api.context import ApiContext
from lablink.api.queries import get_job
from lablink.dashboard.chart import DEFAULT_RANGE
from lablink.dashboard.draw_process import DrawingFailed
from lablink.dashboard.drawer import Drawer
from lablink.dashboard.drawings import Drawing, Live, environment
from lablink.dashboard.frames import Frames
from lablink.dashboard.job_detail import executions, summary
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
    """A canvas (drawer.Canvas) that notes each drawing and waits for ``release`` before it
    is done."""

    def __init__(self) -> None:
        self.drawn: list[str] = []
        self.release = asyncio.Event()

    def card(self, name: str, *topics: str) -> Card:
        return Card(frozenset(topics), Drawing(name))

    async def __call__(self, drawings: Sequence[Drawing], live: Live) -> list[str]:
        found = []
        for drawing in drawings:
            self.drawn.append(drawing.name)
            await self.release.wait()
            found.append(f"<p>{drawing.name} {len(self.drawn)}</p>")
        return found


async def test_screens_of_one_page_share_its_drawing_and_other_pages_draw_their_own(
    harness: Harness, context: ApiContext
) -> None:
    ticks = Ticks()
    beat = beat_for(context, ticks)
    frames = Frames(lookup_of(context), period=THROTTLE_SECONDS)
    drawings = Drawings()
    drawer = Drawer(context, canvas=drawings, share=1.0)

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
    drawer = Drawer(context, canvas=drawings, share=1.0)
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

    async def slow(drawings: Sequence[Drawing], live: Live) -> list[str]:
        moments.now += len(drawings)  # each drawing takes a second
        return ["<p>slow</p>" for _ in drawings]

    drawer = Drawer(context, canvas=slow, share=0.25, clock=moments, sleep=moments.sleep)
    one = [Drawing("slow")]
    assert await drawer.draw(one) == ["<p>slow</p>"]
    assert moments.slept == []
    # A second of drawing at a quarter of the time: the next waits three.
    assert await drawer.draw(one * 2) == ["<p>slow</p>", "<p>slow</p>"]
    assert moments.slept == [3.0]
    # Two seconds: six; but time that passed anyway counts.
    moments.now += 4.0
    await drawer.draw(one)
    assert moments.slept == [3.0, 2.0]
    assert drawer.drawings == 3
    assert drawer.spent == 4.0
    assert drawer.waited == 5.0


def fragment(context: ApiContext, name: str, values: dict[str, Any]) -> str:
    """A fragment drawn in this process, by the templates the drawing process uses."""
    html: str = environment().get_template(f"fragments/{name}.html").render(**values)
    return html


async def test_the_drawing_process_draws_the_parts_from_the_views_with_the_engines_clock(
    harness: Harness, context: ApiContext
) -> None:
    job_id = harness.service.create_job(job("First"), "alice")
    harness.service.pause_job(job_id, "alice")
    # Paused: its next runs are worked out from now, the engine's clock (a manual one here,
    # far from the drawing process's own).
    shown = await eventually(
        lambda: get_job(context.reader, job_id), until=lambda j: j is not None and not j["enabled"]
    )
    assert shown is not None
    drawer = Drawer(context, share=1.0)
    try:
        summary_html, executions_html, gone = await drawer.draw(
            [
                Drawing("job", (job_id, "summary", DEFAULT_RANGE, None)),
                Drawing("job", (job_id, "executions", DEFAULT_RANGE, None)),
                Drawing("job", ("no-such-job", "summary", DEFAULT_RANGE, None)),
            ]
        )
        assert drawer.process is not None
        pid = drawer.process.pid
        assert pid is not None
        assert pid != os.getpid()
        # What the request path draws for the same job, on the same clock.
        assert summary_html == fragment(context, "job_summary", summary(context, shown))
        assert executions_html == fragment(
            context, "job_executions", {**executions(context, job_id, None), "job": shown}
        )
        assert "no-such-job" in gone
        next_runs = summary(context, shown)["next_runs"]
        assert next_runs
        assert next_runs[0] in summary_html

        # A drawing that fails is named, and the process goes on.
        with pytest.raises(DrawingFailed, match="part 'bogus'"):
            await drawer.draw([Drawing("job", (job_id, "bogus", DEFAULT_RANGE, None))])
        assert drawer.process.pid == pid

        # A process killed by its pid is started again for the next drawing.
        os.kill(pid, signal.SIGKILL)
        again = await drawer.draw([Drawing("job", (job_id, "summary", DEFAULT_RANGE, None))])
        assert again == [summary_html]
        assert drawer.process.starts == 2
        assert drawer.process.pid != pid
    finally:
        await drawer.close()
    with pytest.raises(DrawingFailed, match="closed"):
        await drawer.draw([Drawing("equipment_list")])


async def test_drawings_on_the_real_clock_wait_their_turn_and_the_process_ends_on_close(
    context: ApiContext,
) -> None:
    drawer = Drawer(context, share=0.5)
    try:
        first, second = await asyncio.gather(
            drawer.draw([Drawing("equipment_list")]), drawer.draw([Drawing("equipment_list")])
        )
        assert first == second
        assert drawer.drawings == 2
        assert drawer.waited > 0
        assert drawer.process is not None
        child = drawer.process.pid
        assert child is not None
    finally:
        await drawer.close()
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)
