"""Live updates: Server-Sent Events that say which parts of the pages changed.

The stream follows the event log by position, the same positions the bus carries: each
message's id is the position the views had folded when it was sent (or, on a stream that
pushes HTML, a little before: the position its shared rendering covers), so a browser that
reconnects (``Last-Event-ID``) is told of everything after it and misses nothing. A message
names a topic (``jobs``, ``schedules``, ``executions``, ``alarms``, ``equipment``); the page's
htmx elements listening for that topic fetch their fragment again, except where the page's own
stream sends the new HTML after the topic (``Pushed``: the overview's cards, pushed.py).
Messages are sent at most once per ``THROTTLE_SECONDS`` per connection whatever the rate of
events, so 1,000 fires a second cost a browser one refresh a second, not a thousand. A
comment line every ``KEEPALIVE_SECONDS`` keeps proxies from closing an idle stream (Litestar
2.25 sends no ping of its own).

What is not an event of the log (an agent's last heartbeat, /health) changes too: ``tick`` is
sent every ``TICK_SECONDS`` so that the parts showing it refresh.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Protocol

from litestar import Controller, Request, get
from litestar.response import ServerSentEvent, ServerSentEventMessage

from lablink.api.context import ApiContext
from lablink.dashboard.requests import whole_number
from lablink.dashboard.session import session_identity
from lablink.eventstore.sqlite import LogReader

THROTTLE_SECONDS = 1.0
KEEPALIVE_SECONDS = 15.0
TICK_SECONDS = 30.0
# How often the folded position is looked at: an attribute read, no I/O.
POLL_SECONDS = 0.25

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

    def upto(self, folded: int, after: int, now: float) -> int:
        """The position a message sent now covers: more than ``after``, at most ``folded``."""
        ...

    def messages(
        self, topics: Sequence[str], position: int, folded: int, now: float
    ) -> list[ServerSentEventMessage]:
        """The parts showing ``topics``, as messages with the id ``position``."""
        ...


async def changes(
    context: ApiContext,
    after: int,
    *,
    clock: Any = time.monotonic,
    still_allowed: Callable[[], Awaitable[bool]] | None = None,
    pushed: Pushed | None = None,
) -> AsyncIterator[ServerSentEventMessage]:
    """Topic messages for each change after ``after``, throttled, with keep-alives and ticks;
    each followed by what ``pushed`` sends for it.

    ``still_allowed`` is asked at each tick: a session that ended (signed out, expired, its
    key revoked) ends the stream, so a screen left open learns it must sign in again (its
    next fetch is sent to the sign-in page) instead of hearing of changes it may not see."""
    position = after
    last_sent = last_tick = last_written = clock()
    conn = context.connect_reader()
    try:
        yield ServerSentEventMessage(event="hello", data=str(position), id=str(position))
        while not context.closing:
            await asyncio.sleep(POLL_SECONDS)
            now = clock()
            folded = folded_position(context)
            if folded > position and now - last_sent >= THROTTLE_SECONDS:
                upto = folded if pushed is None else pushed.upto(folded, position, now)
                types = await asyncio.to_thread(changed_types, conn, position, upto)
                position = upto
                topics = topics_of(types)
                for topic in topics:
                    yield ServerSentEventMessage(event=topic, data=str(position), id=str(position))
                    last_written = now
                if pushed is not None:
                    for message in pushed.messages(topics, position, folded, now):
                        yield message
                last_sent = now
            if now - last_tick >= TICK_SECONDS:
                if still_allowed is not None and not await still_allowed():
                    return
                yield ServerSentEventMessage(event="tick", data=str(position), id=str(position))
                if pushed is not None:
                    for message in pushed.messages(["tick"], position, folded, now):
                        yield message
                last_tick = last_written = now
            if now - last_written >= KEEPALIVE_SECONDS:
                yield ServerSentEventMessage(comment="keep-alive")
                last_written = now
    finally:
        conn.close()


def stream(request: Request[Any, Any, Any], pushed: Pushed | None = None) -> ServerSentEvent:
    """The stream of changes for this request's session, from its Last-Event-ID or now."""
    context: ApiContext = request.app.state["context"]

    async def still_allowed() -> bool:
        return await session_identity(request) is not None

    return ServerSentEvent(
        changes(
            context,
            start_position(request, context),
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
