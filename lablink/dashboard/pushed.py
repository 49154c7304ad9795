"""The overview's live stream, ``/live/overview``: the topics of ``/live`` and, after them, the
HTML of each overview card that shows one (event ``card-<name>``; htmx's sse extension swaps it
into the card, ``sse-swap``).

A screen that fetched each card a message named made a whole request through uvicorn and the
middleware on the engine's event loop: 20 screens made about 100 a second at 1,000 fires a
second, and that, not the stream, is what cost the engine's dispatch p99 (BENCHMARKS.md,
"Dashboard"). Sent in the stream, a card costs no request at all.

Rendered once for every screen: the streams take their cards from the newest *frame*, made at
most once per throttle period at the position the views had folded then; a stream's message
says that frame's position as its id (what it covers: ``Last-Event-ID`` resumes from there and
misses nothing), and each card of a frame is rendered once per role (a viewer's card has no
write buttons). No card holds anything of one screen: its forms send the CSRF token in htmx's
header (overview.render_card).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from litestar import Controller, Litestar, Request, get
from litestar.response import ServerSentEvent, ServerSentEventMessage

from lablink.dashboard import overview
from lablink.dashboard.live import THROTTLE_SECONDS, stream
from lablink.dashboard.requests import VIEW
from lablink.dashboard.session import signed_in

STATE_KEY = "overview_frames"


def event_of(card: str) -> str:
    """The SSE event a card is sent as (the card's ``sse-swap`` in overview.html)."""
    return f"card-{card}"


@dataclass
class Frame:
    """The cards as of one moment: ``position`` folded, ``made`` by the streams' clock."""

    position: int
    made: float
    html: dict[tuple[str, bool], str] = field(default_factory=dict)


class Frames:
    """The newest frame, shared by every overview stream of the app; ``render(card,
    can_write)`` draws a card as it is now."""

    def __init__(self, render: Callable[[str, bool], str]) -> None:
        self.render = render
        self.newest: Frame | None = None

    def frame(self, folded: int, now: float, *, after: int | None = None) -> Frame:
        """The newest frame while it is younger than the throttle period (and covers more
        than ``after``), else a new one at ``folded``."""
        found = self.newest
        if (
            found is None
            or not 0 <= now - found.made < THROTTLE_SECONDS
            or (after is not None and found.position <= after)
        ):
            found = self.newest = Frame(position=folded, made=now)
        return found

    def html(self, frame: Frame, card: str, can_write: bool) -> str:
        key = (card, can_write)
        drawn = frame.html.get(key)
        if drawn is None:
            drawn = frame.html[key] = self.render(card, can_write)
        return drawn


def frames_of(app: Litestar) -> Frames:
    found: Frames | None = app.state.get(STATE_KEY)
    if found is None:
        found = app.state[STATE_KEY] = Frames(
            lambda card, can_write: overview.render_card(app, card, can_write)
        )
    return found


class OverviewCards:
    """live.Pushed for one screen: the cards of the shared frames, as its role sees them."""

    def __init__(self, frames: Frames, *, can_write: bool) -> None:
        self.frames = frames
        self.can_write = can_write

    def upto(self, folded: int, after: int, now: float) -> int:
        return self.frames.frame(folded, now, after=after).position

    def messages(
        self, topics: Sequence[str], position: int, folded: int, now: float
    ) -> list[ServerSentEventMessage]:
        named = set(topics)
        if not named:
            return []
        frame = self.frames.frame(folded, now)
        return [
            ServerSentEventMessage(
                event=event_of(card),
                data=self.frames.html(frame, card, self.can_write),
                id=str(position),
            )
            for card, shows in overview.SHOWS.items()
            if named.intersection(shows)
        ]


class OverviewLiveController(Controller):
    path = "/live/overview"
    include_in_schema = False

    @get("/", opt=VIEW)
    async def live(self, request: Request[Any, Any, Any]) -> ServerSentEvent:
        can_write = signed_in(request).allows("operator")
        return stream(request, OverviewCards(frames_of(request.app), can_write=can_write))
