"""Live updates: Server-Sent Events that say which parts of the pages changed.

The stream follows the event log by position, the same positions the bus carries: each
message's id is the position of the *frame* it sends (frames.py: what changed up to the
position the views had folded when the frame was made, worked out once for every stream of
the app), so a browser that reconnects (``Last-Event-ID``) is told of everything after it
and misses nothing. A message names a topic (``jobs``, ``schedules``, ``executions``,
``alarms``, ``equipment``); the page's htmx elements listening for that topic fetch their
fragment again, except where the page's own stream sends the new HTML after the topic
(``Pushed``: the overview's cards, pushed.py).
Messages are sent at most once per ``THROTTLE_SECONDS`` per connection whatever the rate of
events, so 1,000 fires a second cost a browser one refresh a second, not a thousand. A
comment line every ``KEEPALIVE_SECONDS`` keeps proxies from closing an idle stream (Litestar
2.25 sends no ping of its own).

What is not an event of the log (an agent's last heartbeat, /health) changes too: ``tick`` is
sent every ``TICK_SECONDS`` so that the parts showing it refresh. It is sent when the clock
enters a new period of ``TICK_SECONDS`` (a stream's first at the first such start at least
``TICK_SECONDS`` after its own), so at the same pass for every stream of the app: the
overview's cards of a tick are drawn once for all the screens, not once for each screen as
its own 30 s came round.

No stream polls on its own: one poller for the app (the *beat*, beat.py) looks at the folded
position every ``POLL_SECONDS`` and wakes only the streams that have something to send, all
at the same pass, and the streams of a kind that send a frame send one pass of it, built and
encoded once (``frame_pass``).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import sqlite3
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from litestar import Controller, Litestar, Request, get
from litestar.response import ServerSentEvent, ServerSentEventMessage

from lablink.api.context import ApiContext
from lablink.dashboard.beat import Beat, Pulse
from lablink.dashboard.frames import Frame, Frames, Lookup
from lablink.dashboard.requests import whole_number
from lablink.dashboard.session import session_identity
from lablink.eventstore.sqlite import LogReader

THROTTLE_SECONDS = 1.0
KEEPALIVE_SECONDS = 15.0
TICK_SECONDS = 30.0
# How often the beat (beat.py) looks at the folded position for every stream of the app: an
# attribute read, no I/O.
POLL_SECONDS = 0.25
FRAMES_KEY = "live_frames"
T = TypeVar("T")
BEAT_KEY = "live_beat"

# Which page parts each kind of event changes (the prefix of the event's type). ``jobs``: a
# job or what it last did changed (every fire); ``schedules``: only what a job will do (its
# configuration, paused or not): what the next-24-h timeline draws. At 1,000 fires a second
# the timeline listening to ``jobs`` was recomputed every second for every screen, and that
# alone cost the engine's loop more than the target allows (BENCHMARKS.md, "Dashboard").
TOPICS: dict[str, tuple[str, ...]] = {
    "job.": ("jobs", "schedules"),
    "execution.": ("executions", "jobs"),
    "executions.": ("executions",),
    "alarm.": ("alarms",),
    "equipment.": ("equipment",),
    "profile.": ("equipment",),
    "scheduler.": ("jobs", "schedules"),
}


def topics_of(types: set[str]) -> list[str]:
    found: set[str] = set()
    for kind in types:
        for prefix, topics in TOPICS.items():
            if kind.startswith(prefix):
                found.update(topics)
    return sorted(found)


def changed_types(conn: sqlite3.Connection, after: int, upto: int) -> set[str]:
    """The event types recorded in (after, upto]."""
    return LogReader(conn).types_between(after, upto)


def read_topics(connect: Callable[[], sqlite3.Connection], after: int, upto: int) -> list[str]:
    """The topics of (after, upto], on a connection of the call's own: the frames' look-ups
    run in worker threads, at most one a second (frames.py), so none is held between them."""
    conn = connect()
    try:
        return topics_of(changed_types(conn, after, upto))
    finally:
        conn.close()


def lookup_of(context: ApiContext) -> Lookup:
    async def lookup(after: int, upto: int) -> list[str]:
        return await asyncio.to_thread(read_topics, context.connect_reader, after, upto)

    return lookup


def frames_of(app: Litestar) -> Frames:
    """The frames shared by every stream of the app, ``/live`` and ``/live/overview``."""
    found: Frames | None = app.state.get(FRAMES_KEY)
    if found is None:
        context: ApiContext = app.state["context"]
        found = app.state[FRAMES_KEY] = Frames(lookup_of(context), period=THROTTLE_SECONDS)
    return found


def beat_of(app: Litestar) -> Beat:
    """The one poller of every stream of the app (beat.py), on the monotonic clock."""
    found: Beat | None = app.state.get(BEAT_KEY)
    if found is None:
        found = app.state[BEAT_KEY] = beat_for(app.state["context"])
    return found


def beat_for(context: ApiContext, clock: Callable[[], float] = time.monotonic) -> Beat:
    return Beat(
        lambda: folded_position(context),
        lambda: context.closing,
        every=POLL_SECONDS,
        clock=clock,
    )


def folded_position(context: ApiContext) -> int:
    if context.views is not None:
        return context.views.position
    return context.store.last_position()


def start_position(request: Request[Any, Any, Any], context: ApiContext) -> int:
    """Where a stream starts: after the browser's Last-Event-ID when it reconnects, else now."""
    now = folded_position(context)
    given = whole_number(request.headers.get("last-event-id", "").strip())
    return now if given is None else min(given, now)


class Pushed(Protocol):
    """What a page's stream sends beside its topics: the new HTML of the parts they name.
    ``kind``: what the messages depend on beside the topics and the frame (the role the
    cards are drawn for): the streams of one kind that send the same topics of a frame send
    one pass, built once (``frame_pass``)."""

    kind: Hashable

    async def messages(
        self, topics: Sequence[str], position: int, frame: Frame | None, folded: int, now: float
    ) -> list[ServerSentEventMessage]:
        """The parts showing ``topics``, as messages with the id ``position``: drawn as of
        ``frame`` (once for every screen), or, for a tick (``frame`` None), as of now."""
        ...


@dataclass
class Batch(ServerSentEventMessage):
    """The messages of one pass, written as one: a pass of the overview's stream is two
    topics and four cards, and each message a send through Litestar and uvicorn of its own
    (a socket write each) was most of what a stream cost the loop. Each message of a frame is
    encoded once for every stream that sends it (Frame.encoded)."""

    parts: tuple[ServerSentEventMessage, ...] = ()
    wire: bytes = b""

    def encode(self) -> bytes:
        return self.wire


def batch(parts: Sequence[ServerSentEventMessage], frame: Frame | None = None) -> Batch:
    def encoded(message: ServerSentEventMessage) -> bytes:
        if frame is None:
            return message.encode()
        key = (message.event, message.id, message.comment, message.data)
        return frame.encoded(key, message.encode)

    return Batch(parts=tuple(parts), wire=b"".join(encoded(m) for m in parts))


KEEPALIVE = batch([ServerSentEventMessage(comment="keep-alive")])


async def frame_pass(
    frame: Frame,
    topics: Sequence[str],
    pushed: Pushed | None,
    folded: int,
    now: float,
) -> Batch | None:
    """What a stream sends of ``frame``: its topics, then what ``pushed`` sends for them;
    built once per frame for every stream of a kind sending the same topics (None: nothing)."""
    key = ("pass", None if pushed is None else pushed.kind, tuple(topics))

    async def build() -> Batch | None:
        position = frame.position
        parts = [
            ServerSentEventMessage(event=topic, data=str(position), id=str(position))
            for topic in topics
        ]
        if pushed is not None:
            parts += await pushed.messages(topics, position, frame, folded, now)
        return batch(parts, frame) if parts else None

    return await _once(frame.drawn, key, build)


async def tick_pass(pulse: Pulse, position: int, pushed: Pushed | None) -> Batch:
    """A tick and what ``pushed`` sends for it, as of the pass of the beat that woke the
    stream: built once for every stream of a kind that it woke at ``position``."""
    key = ("tick", None if pushed is None else pushed.kind, position)

    async def build() -> Batch:
        parts = [ServerSentEventMessage(event="tick", data=str(position), id=str(position))]
        if pushed is not None:
            parts += await pushed.messages(["tick"], position, None, pulse.folded, pulse.now)
        return batch(parts)

    return await _once(pulse.drawn, key, build)


async def _once(drawn: dict[Hashable, Any], key: Hashable, build: Callable[[], Awaitable[T]]) -> T:
    """``build()`` once for every stream that asks for ``key`` of a frame or a pulse: the
    streams the beat woke together ask at the same pass, and a part drawn on a thread (a
    chart) would otherwise be drawn once per stream that asked before the first was done."""
    found: asyncio.Future[T] | None = drawn.get(key)
    if found is None:
        found = drawn[key] = asyncio.ensure_future(build())
    # Shielded: a screen that goes away does not cancel what the others wait for.
    return await asyncio.shield(found)


async def passes(
    context: ApiContext,
    after: int,
    *,
    frames: Frames | None = None,
    beat: Beat | None = None,
    clock: Callable[[], float] = time.monotonic,
    still_allowed: Callable[[], Awaitable[bool]] | None = None,
    pushed: Pushed | None = None,
) -> AsyncGenerator[Batch, None]:
    """The messages of ``changes``, a batch per pass: what the stream writes. The stream
    sleeps until the beat (``beat``, else one of its own on ``clock``) finds it has something
    to send: a frame it has not sent once its throttle period is over, a tick, a keep-alive."""
    # A stream alone (the tests of one stream): frames and a beat of its own.
    shared = frames if frames is not None else Frames(lookup_of(context), period=THROTTLE_SECONDS)
    poller = beat if beat is not None else beat_for(context, clock)
    position = after
    last_sent = last_written = poller.clock()
    next_tick = math.ceil((last_sent + TICK_SECONDS) / TICK_SECONDS) * TICK_SECONDS
    yield batch([ServerSentEventMessage(event="hello", data=str(position), id=str(position))])

    def due(folded: int, now: float) -> bool:
        """Asked by the beat at each of its passes: whether this stream has work now."""
        return (
            (
                folded > position
                and now - last_sent >= THROTTLE_SECONDS
                and shared.ready(now, position)
            )
            or now >= next_tick
            or now - last_written >= KEEPALIVE_SECONDS
        )

    while not context.closing:
        pulse = await poller.until(due)
        if pulse.closing:
            return
        now, folded = pulse.now, pulse.folded
        frame = None
        if folded > position and now - last_sent >= THROTTLE_SECONDS:
            frame = shared.frame(folded, now, position)
        if frame is not None:
            topics = await shared.topics(frame, position)
            position = frame.position
            sent = await frame_pass(frame, topics, pushed, folded, now)
            if sent is not None:
                yield sent
                last_written = now
            last_sent = now
        if now >= next_tick:
            if still_allowed is not None and not await still_allowed():
                return
            yield await tick_pass(pulse, position, pushed)
            next_tick = (math.floor(now / TICK_SECONDS) + 1) * TICK_SECONDS
            last_written = now
        if now - last_written >= KEEPALIVE_SECONDS:
            yield KEEPALIVE
            last_written = now


async def changes(
    context: ApiContext,
    after: int,
    *,
    frames: Frames | None = None,
    beat: Beat | None = None,
    clock: Callable[[], float] = time.monotonic,
    still_allowed: Callable[[], Awaitable[bool]] | None = None,
    pushed: Pushed | None = None,
) -> AsyncIterator[ServerSentEventMessage]:
    """Topic messages for each change after ``after``, throttled, with keep-alives and ticks;
    each followed by what ``pushed`` sends for it.

    ``frames``: what changed, worked out once for every stream that shares them (frames.py);
    a stream's messages say the position of the frame it sent (what it covers). ``beat``:
    the poller that wakes the streams sharing it when they have something to send (beat.py).
    Without, the stream has frames and a beat of its own, on ``clock``.

    ``still_allowed`` is asked at each tick: a session that ended (signed out, expired, its
    key revoked) ends the stream, so a screen left open learns it must sign in again (its
    next fetch is sent to the sign-in page) instead of hearing of changes it may not see."""
    found = passes(
        context,
        after,
        frames=frames,
        beat=beat,
        clock=clock,
        still_allowed=still_allowed,
        pushed=pushed,
    )
    async with contextlib.aclosing(found):
        async for sent in found:
            for message in sent.parts:
                yield message


def stream(request: Request[Any, Any, Any], pushed: Pushed | None = None) -> ServerSentEvent:
    """The stream of changes for this request's session, from its Last-Event-ID or now, a
    write per pass (``Batch``), on the frames shared by every stream of the app."""
    context: ApiContext = request.app.state["context"]

    async def still_allowed() -> bool:
        return await session_identity(request) is not None

    return ServerSentEvent(
        passes(
            context,
            start_position(request, context),
            frames=frames_of(request.app),
            beat=beat_of(request.app),
            still_allowed=still_allowed,
            pushed=pushed,
        ),
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


class LiveController(Controller):
    path = "/live"
    include_in_schema = False

    @get("/", opt={"page_role": "viewer"})
    async def live(self, request: Request[Any, Any, Any]) -> ServerSentEvent:
        return stream(request)
