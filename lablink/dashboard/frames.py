"""What changed in the log, worked out once for every live stream: the *frame*.

Each live stream used to ask the log for the event types in its own range once a second, in a
thread, and encode its own copy of the same messages: 20 screens, 20 range queries and 20
encodings a second on the engine's event loop, for ranges that were all the same
(BENCHMARKS.md, "Dashboard"). A frame covers the log positions ``(since, position]``: made
when a stream that has sent the newest frame's messages may send again (its throttle),
at the position the views had folded then, and following the newest, so that every stream
that sent the newest has exactly the next frame's range left. The frame's topics are looked
up once for all of them, and each message of it encoded once.

A stream whose range is another (it resumed from an older ``Last-Event-ID``, or fell behind
by more than a frame) is told of the newest frame's position too, but with the topics of its
own range, looked up for it alone: what it is told is exactly what changed since its id.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

# The topics of the log positions (after, upto]: a look-up that runs off the event loop.
Lookup = Callable[[int, int], Awaitable[list[str]]]


@dataclass(eq=False)
class Frame:
    """The changes in ``(since, position]``, made at ``made`` by the streams' clock."""

    since: int
    position: int
    made: float
    # The shared look-up, started by the first stream that needs it.
    looked_up: asyncio.Future[list[str]] | None = None
    # Each message of the frame as written, encoded once for every stream sending it.
    wire: dict[Hashable, bytes] = field(default_factory=dict)
    # What a page draws of the frame (pushed.py's cards), drawn once for every screen.
    drawn: dict[Hashable, Any] = field(default_factory=dict)

    def encoded(self, key: Hashable, encode: Callable[[], bytes]) -> bytes:
        found = self.wire.get(key)
        if found is None:
            found = self.wire[key] = encode()
        return found


class Frames:
    """The newest frame, shared by every live stream of an app."""

    def __init__(self, lookup: Lookup, *, period: float) -> None:
        self.lookup = lookup
        self.period = period
        self.newest: Frame | None = None

    def frame(self, folded: int, now: float, after: int) -> Frame | None:
        """The frame a stream that has sent everything up to ``after`` sends next, or None:
        it has sent the newest, younger than a period (the next comes when the period ends,
        so that frames are made at most once a period whatever the number of streams)."""
        if not self.ready(now, after):
            return None
        newest = self.newest
        if newest is not None and after < newest.position:
            return newest
        since = after if newest is None else newest.position
        self.newest = Frame(since=since, position=max(folded, since), made=now)
        return self.newest

    def ready(self, now: float, after: int) -> bool:
        """Whether ``frame`` has one for a stream that has sent everything up to ``after``
        (asked at each beat, beat.py, by every waiting stream: it makes nothing)."""
        newest = self.newest
        if newest is None or after < newest.position:
            return True
        return not 0 <= now - newest.made < self.period

    async def topics(self, frame: Frame, after: int) -> list[str]:
        """The topics of ``(after, frame.position]``: the frame's, looked up once for every
        stream whose range it is, or this stream's own."""
        if after != frame.since:
            return await self.lookup(after, frame.position)
        found = frame.looked_up
        if found is not None and found.done() and not _failed(found):
            # Every stream after the first: the answer, with no wait of its own.
            return found.result()
        if frame.looked_up is None or _failed(frame.looked_up):
            # The first to need it, or the one after a look-up that failed: asked again.
            frame.looked_up = asyncio.ensure_future(self.lookup(frame.since, frame.position))
        # Shielded: a screen that goes away must not cancel the others' answer.
        return await asyncio.shield(frame.looked_up)


def _failed(future: asyncio.Future[Any]) -> bool:
    return future.done() and (future.cancelled() or future.exception() is not None)
