"""What changed is worked out once per frame for every live stream (frames.py): real SSE
clients (httpx streaming from uvicorn on a loopback port, over the harness's engine) on
``/live`` and ``/live/overview``, the log's real type look-up counted as it is called; a
stream resuming from an older ``Last-Event-ID`` is told exactly the topics of its own range."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx
import pytest

from lablink.dashboard.frames import Frames
from lablink.dashboard.live import THROTTLE_SECONDS
from lablink.dashboard.pushed import Cards
from lablink.eventstore.sqlite import LogReader
from tests.dashboard.test_overview import raise_alarm
from tests.dashboard.test_overview_stream import WAIT, Message, job, messages
from tests.support.harness import Harness
from tests.support.series import served

SCREENS = 20


class Lookups:
    """The log's real ``types_between``, noting each range it is asked for (from the streams'
    worker threads)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.ranges: list[tuple[int, int]] = []
        real = LogReader.types_between

        def noted(reader: LogReader, after: int, upto: int) -> set[str]:
            self.ranges.append((after, upto))
            return real(reader, after, upto)

        monkeypatch.setattr(LogReader, "types_between", noted)


@contextlib.asynccontextmanager
async def opened(
    web: httpx.AsyncClient, path: str, last_event_id: str | None = None
) -> AsyncIterator[tuple[Message, AsyncIterator[Message]]]:
    headers = {} if last_event_id is None else {"Last-Event-ID": last_event_id}
    async with web.stream("GET", path, headers=headers) as response:
        assert response.status_code == 200
        stream = messages(response)
        hello = await asyncio.wait_for(anext(stream), WAIT)
        assert hello.event == "hello"
        yield hello, stream


async def reach(stream: AsyncIterator[Message], position: int, last: str) -> list[Message]:
    """The topic messages up to the first ``last`` whose id reaches ``position`` (cards
    skipped)."""
    seen: list[Message] = []

    async def read() -> list[Message]:
        async for message in stream:
            if message.event.startswith("card-"):
                continue
            seen.append(message)
            if message.event == last and int(message.id or 0) >= position:
                return seen
        raise AssertionError(f"the stream ended: {[(m.event, m.id) for m in seen]}")

    try:
        return await asyncio.wait_for(read(), WAIT)
    except TimeoutError:
        got = [(m.event, m.id) for m in seen]
        raise AssertionError(f"no {last!r} at {position}: {got}") from None


def at(found: list[Message], position: int) -> list[str]:
    return [m.event for m in found if m.id == str(position)]


@pytest.mark.slow
async def test_twenty_streams_cause_one_type_lookup_per_frame(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    lookups = Lookups(monkeypatch)
    async with (
        served(harness, auth=False, dashboard=True) as url,
        httpx.AsyncClient(base_url=url, timeout=WAIT) as web,
        contextlib.AsyncExitStack() as screens,
    ):
        start = harness.store.last_position()
        # Half the page's topics alone (every page but the overview), half the overview's.
        paths = ["/live", "/live/overview"] * (SCREENS // 2)
        streams = []
        for path in paths:
            hello, stream = await screens.enter_async_context(opened(web, path))
            assert hello.id == str(start)
            streams.append(stream)

        sent: list[list[Message]] = [[] for _ in streams]
        targets = []
        for name in ("First", "Second", "Third"):
            harness.service.create_job(job(name), "alice")
            target = harness.store.last_position()
            targets.append(target)
            got = await asyncio.gather(*(reach(s, target, "schedules") for s in streams))
            for mine, found in zip(sent, got, strict=True):
                mine.extend(found)

    # One look-up per frame, for all 20 streams: the frames follow one another from where the
    # streams started to the last change (a change folded in two steps makes two frames).
    assert lookups.ranges, "no look-up at all"
    uptos = [upto for _, upto in lookups.ranges]
    assert len(uptos) == len(set(uptos)), lookups.ranges
    assert len(lookups.ranges) < SCREENS
    assert lookups.ranges[0][0] == start
    for (_, before), (after, _) in zip(lookups.ranges, lookups.ranges[1:], strict=False):
        assert after == before, lookups.ranges
    assert uptos[-1] == targets[-1]
    # Each stream's messages say the frames' positions, and each change reached every one.
    for found in sent:
        assert {int(m.id or 0) for m in found} <= set(uptos)
        for target in targets:
            assert at(found, target) == ["jobs", "schedules"]


@pytest.mark.slow
async def test_a_resuming_stream_is_told_exactly_the_topics_of_its_own_range(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    lookups = Lookups(monkeypatch)
    async with (
        served(harness, auth=False, dashboard=True) as url,
        httpx.AsyncClient(base_url=url, timeout=WAIT) as web,
    ):
        start = harness.store.last_position()
        async with opened(web, "/live") as (_, following):
            alarm_id = await raise_alarm(harness)
            raised = harness.store.last_position()
            await reach(following, raised, "schedules")
            answer = await web.post(f"/api/alarms/{alarm_id}/acknowledge", json={})
            assert answer.status_code == 200, answer.text
            acked = harness.store.last_position()
            # The newest frame: the acknowledgement alone.
            assert at(await reach(following, acked, "alarms"), acked) == ["alarms"]
        assert lookups.ranges[-1] == (raised, acked)

        # Back with an id from before the alarm: its own range, looked up for it alone.
        async with opened(web, "/live", last_event_id=str(start)) as (hello, resumed):
            assert hello.id == str(start)
            got = await reach(resumed, acked, "schedules")
        assert at(got, acked) == ["alarms", "executions", "jobs", "schedules"]
        assert lookups.ranges[-1] == (start, acked)

        # Back with the id the newest frame follows: the frame's topics, no look-up of its own.
        count = len(lookups.ranges)
        async with opened(web, "/live", last_event_id=str(raised)) as (_, aligned):
            first = await reach(aligned, acked, "alarms")
            harness.service.create_job(job("After"), "alice")
            later = harness.store.last_position()
            first += await reach(aligned, later, "schedules")
        assert at(first, acked) == ["alarms"]
        assert at(first, later) == ["jobs", "schedules"]
        assert lookups.ranges[count:] == [(acked, later)]


async def test_frames_follow_one_another_and_are_made_at_most_once_a_period() -> None:
    asked: list[tuple[int, int]] = []

    async def lookup(after: int, upto: int) -> list[str]:
        asked.append((after, upto))
        return [f"{after}-{upto}"]

    frames = Frames(lookup, period=THROTTLE_SECONDS)
    first = frames.frame(10, now=100.0, after=5)
    assert first is not None
    assert (first.since, first.position) == (5, 10)
    # Every stream that has not sent it gets it, whatever its age: 20 of them, one look-up.
    answers = await asyncio.gather(*(frames.topics(first, 5) for _ in range(SCREENS)))
    assert answers == [["5-10"]] * SCREENS
    assert asked == [(5, 10)]
    assert frames.frame(12, now=105.0, after=5) is first
    # A stream from elsewhere (resumed from an older id): the newest frame, its own topics.
    assert frames.frame(12, now=100.5, after=2) is first
    assert await frames.topics(first, 2) == ["2-10"]
    # A stream that has sent it (or connected since) waits for the period to end...
    assert frames.frame(12, now=100.9, after=10) is None
    assert frames.frame(12, now=100.9, after=11) is None
    # ...then makes the next, which follows the first.
    second = frames.frame(15, now=101.0, after=10)
    assert second is not None
    assert (second.since, second.position) == (10, 15)
    assert frames.frame(15, now=101.2, after=11) is second
    assert await frames.topics(second, 11) == ["11-15"]
    assert asked == [(5, 10), (2, 10), (11, 15)]


async def test_a_failed_shared_lookup_is_asked_again_by_the_next_stream() -> None:
    calls = 0

    async def lookup(after: int, upto: int) -> list[str]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError("disk I/O error")
        return ["jobs"]

    frames = Frames(lookup, period=THROTTLE_SECONDS)
    frame = frames.frame(10, now=0.0, after=5)
    assert frame is not None
    with pytest.raises(OSError, match="disk"):
        await frames.topics(frame, 5)
    assert await frames.topics(frame, 5) == ["jobs"]


def test_every_screen_takes_its_cards_from_one_rendering_per_frame_and_role() -> None:
    drawn: list[tuple[str, bool]] = []

    def render(card: str, can_write: bool) -> str:
        drawn.append((card, can_write))
        return f"{card} {can_write} {len(drawn)}"

    async def lookup(after: int, upto: int) -> list[str]:
        return []

    frames = Frames(lookup, period=THROTTLE_SECONDS)
    cards = Cards(render)
    first = frames.frame(10, now=100.0, after=5)
    assert first is not None
    html = {cards.html(first, "running", True) for _ in range(SCREENS)}
    assert len(html) == 1
    assert cards.html(first, "running", False) != html.pop()  # a viewer's is its own
    assert drawn == [("running", True), ("running", False)]
    second = frames.frame(20, now=101.0, after=10)
    assert second is not None
    cards.html(second, "running", True)
    assert drawn[-1] == ("running", True)
    assert len(drawn) == 3
    # A tick's cards: once per folded position and clock second.
    ticked = {cards.html(None, "health", True, folded=20, now=130.2) for _ in range(SCREENS)}
    assert len(ticked) == 1
    cards.html(None, "health", True, folded=20, now=131.0)
    assert len(drawn) == 5
