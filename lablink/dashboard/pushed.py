"""The pages' own live streams: the topics of ``/live`` and, after them, the HTML of each part
of the page that shows one (event ``card-<name>``; htmx's sse extension swaps it into the part,
``sse-swap``). The overview's, ``/live/overview``, here; a job's, ``/live/job/{id}``, and the
equipment pages', ``/live/equipment[/{id}]``, beside their pages (``PageCards``).

A screen that fetched each card a message named made a whole request through uvicorn and the
middleware on the engine's event loop: 20 screens made about 100 a second at 1,000 fires a
second, and that, not the stream, is what cost the engine's dispatch p99 (BENCHMARKS.md,
"Dashboard"). Sent in the stream, a card costs no request at all.

Rendered once for every screen: the streams send the cards of the *frame* whose topics they
send (frames.py, shared with ``/live``), each card of a frame rendered once per role (a
viewer's card has no write buttons) and encoded once; a tick's cards, once per role, clock
second and folded position. No card holds anything of one screen: its forms send the CSRF
token in htmx's header (overview.render_card).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from litestar import Controller, Litestar, Request, get
from litestar.response import ServerSentEvent, ServerSentEventMessage

from lablink.dashboard import overview
from lablink.dashboard.drawer import Drawer
from lablink.dashboard.drawings import Drawing
from lablink.dashboard.frames import Frame
from lablink.dashboard.live import stream
from lablink.dashboard.requests import VIEW
from lablink.dashboard.session import signed_in

STATE_KEY = "overview_cards_drawn"


def event_of(card: str) -> str:
    """The SSE event a card is sent as (the card's ``sse-swap`` in overview.html)."""
    return f"card-{card}"


class Cards:
    """The overview's cards for every screen of an app; ``render(card, can_write)`` draws a
    card as it is now."""

    def __init__(self, render: Callable[[str, bool], str]) -> None:
        self.render = render
        # A tick's drawings: (folded, clock second) and the cards drawn then.
        self.ticked: tuple[tuple[int, int], dict[Hashable, Any]] | None = None

    def html(
        self, frame: Frame | None, card: str, can_write: bool, *, folded: int = 0, now: float = 0
    ) -> str:
        """A card drawn once per frame and role, or for a tick (``frame`` None), once per
        folded position, clock second and role."""
        if frame is not None:
            drawn = frame.drawn
        else:
            moment = (folded, int(now))
            if self.ticked is None or self.ticked[0] != moment:
                self.ticked = (moment, {})
            drawn = self.ticked[1]
        key = (card, can_write)
        found: str | None = drawn.get(key)
        if found is None:
            found = drawn[key] = self.render(card, can_write)
        return found


def cards_of(app: Litestar) -> Cards:
    found: Cards | None = app.state.get(STATE_KEY)
    if found is None:
        found = app.state[STATE_KEY] = Cards(
            lambda card, can_write: overview.render_card(app, card, can_write)
        )
    return found


class OverviewCards:
    """live.Pushed for one screen: the shared cards, as its role sees them."""

    def __init__(self, cards: Cards, *, can_write: bool) -> None:
        self.cards = cards
        self.can_write = can_write
        # The screens of one role send the same cards of a frame (live.frame_pass).
        self.kind: Hashable = ("overview", can_write)

    async def messages(
        self, topics: Sequence[str], position: int, frame: Frame | None, folded: int, now: float
    ) -> list[ServerSentEventMessage]:
        named = set(topics)
        if not named:
            return []
        return [
            ServerSentEventMessage(
                event=event_of(card),
                data=self.cards.html(frame, card, self.can_write, folded=folded, now=now),
                id=str(position),
            )
            for card, shows in overview.SHOWS.items()
            if named.intersection(shows)
        ]


@dataclass(frozen=True)
class Card:
    """A part of a page its stream sends anew when a message names one of ``topics``: the
    HTML ``drawing`` makes as the views are now, the same for every screen of the page. It
    is drawn in the drawing process (drawings.py)."""

    topics: frozenset[str]
    drawing: Drawing


class PageCards:
    """live.Pushed for a page whose parts are the same for every screen showing it (a job's
    page at a chart range and executions page, the equipment pages, the jobs list at a
    query): ``kind`` names the page and what its parts depend on, so the streams of screens
    showing the same page share each frame's drawing (live.frame_pass) and 20 screens of a
    job cost one drawing, where their fetches cost four requests each. The parts are drawn
    by the app's drawer (drawer.py): in a process of their own, paced."""

    def __init__(self, drawer: Drawer, kind: Hashable, cards: Mapping[str, Card]) -> None:
        self.drawer = drawer
        self.kind = kind
        self.cards = cards

    async def messages(
        self, topics: Sequence[str], position: int, frame: Frame | None, folded: int, now: float
    ) -> list[ServerSentEventMessage]:
        named = set(topics)
        wanted = [(name, card) for name, card in self.cards.items() if named & card.topics]
        if not wanted:
            return []
        drawn = await self.drawer.draw([card.drawing for _, card in wanted])
        return [
            ServerSentEventMessage(event=event_of(name), data=html, id=str(position))
            for (name, _), html in zip(wanted, drawn, strict=True)
        ]


class OverviewLiveController(Controller):
    path = "/live/overview"
    include_in_schema = False

    @get("/", opt=VIEW)
    async def live(self, request: Request[Any, Any, Any]) -> ServerSentEvent:
        can_write = signed_in(request).allows("operator")
        return stream(request, OverviewCards(cards_of(request.app), can_write=can_write))
