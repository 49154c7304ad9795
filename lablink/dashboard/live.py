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
sent every ``TICK_SECONDS`` so that the parts showing it refresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from litestar import Controller, Litestar, Request, get
from litestar.response import ServerSentEvent, ServerSentEventMessage

from lablink.api.context import ApiContext
from lablink.dashboard.frames import Frame, Frames, Lookup
from lablink.dashboard.requests import whole_number
from lablink.dashboard.session import session_identity
from lablink.eventstore.sqlite import LogReader

THROTTLE_SECONDS = 1.0
KEEPALIVE_SECONDS = 15.0
TICK_SECONDS = 30.0
# How often the folded position is looked at: an attribute read, no I/O.
POLL_SECONDS = 0.25
FRAMES_KEY = "live_frames"

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
    """What a page's stream sends beside its topics: the new HTML of the parts they name."""

    def messages(
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


async def passes(
    context: ApiContext,
    after: int,
    *,
    frames: Frames | None = None,
    clock: Any = time.monotonic,
    still_allowed: Callable[[], Awaitable[bool]] | None = None,
    pushed: Pushed | None = None,
) -> AsyncGenerator[Batch, None]:
    """The messages of ``changes``, a batch per pass of its loop: what the stream writes."""
    if frames is None:
        # A stream alone (the tests of one stream): frames of its own.
        frames = Frames(lookup_of(context), period=THROTTLE_SECONDS)
    position = after
    last_sent = last_tick = last_written = clock()
    yield batch([ServerSentEventMessage(event="hello", data=str(position), id=str(position))])
    while not context.closing:
        await asyncio.sleep(POLL_SECONDS)
        now = clock()
        folded = folded_position(context)
        frame = None
        if folded > position and now - last_sent >= THROTTLE_SECONDS:
            frame = frames.frame(folded, now, position)
        if frame is not None:
            topics = await frames.topics(frame, position)
            position = frame.position
            parts = [
                ServerSentEventMessage(event=topic, data=str(position), id=str(position))
                for topic in topics
            ]
            if pushed is not None:
                parts += pushed.messages(topics, position, frame, folded, now)
            if parts:
                yield batch(parts, frame)
                last_written = now
            last_sent = now
        if now - last_tick >= TICK_SECONDS:
            if still_allowed is not None and not await still_allowed():
                return
            parts = [ServerSentEventMessage(event="tick", data=str(position), id=str(position))]
            if pushed is not None:
                parts += pushed.messages(["tick"], position, None, folded, now)
            yield batch(parts)
            last_tick = last_written = now
        if now - last_written >= KEEPALIVE_SECONDS:
            yield batch([ServerSentEventMessage(comment="keep-alive")])
            last_written = now


async def changes(
    context: ApiContext,
    after: int,
    *,
    frames: Frames | None = None,
    clock: Any = time.monotonic,
    still_allowed: Callable[[], Awaitable[bool]] | None = None,
    pushed: Pushed | None = None,
) -> AsyncIterator[ServerSentEventMessage]:
    """Topic messages for each change after ``after``, throttled, with keep-alives and ticks;
    each followed by what ``pushed`` sends for it.

    ``frames``: what changed, worked out once for every stream that shares them (frames.py);
    a stream's messages say the position of the frame it sent (what it covers). Without,
    the stream has frames of its own.

    ``still_allowed`` is asked at each tick: a session that ended (signed out, expired, its
    key revoked) ends the stream, so a screen left open learns it must sign in again (its
    next fetch is sent to the sign-in page) instead of hearing of changes it may not see."""
    found = passes(
        context,
        after,
        frames=frames,
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
