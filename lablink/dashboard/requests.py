"""What the dashboard's handlers share in reading a request: the API's context, the roles a
route asks for, whole numbers, bounded text and cursors from a query, and the wait after a
write (read-your-writes) that never turns a recorded write into an error.

A query value is the client's: anything it holds is a 400 beside its field, never a 500."""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.response import Response, Template
from markupsafe import escape

from lablink.api.consistency import WriteRefused
from lablink.api.context import ApiContext, WriteUnseen
from lablink.dashboard.session import signed_in
from lablink.errors import InvalidRequest
from lablink.projections.follower import ViewsBehind

# The role a route asks for (opt of a route; checked by the dashboard's guard).
VIEW = {"page_role": "viewer"}
OPERATE = {"page_role": "operator"}
# SQLite's largest integer: a larger cursor cannot be a position (and would not bind).
LAST_POSITION = 2**63 - 1
# Said when a write was recorded but the views had not shown it within the wait.
LAGGING = "The change was recorded; the page cannot show it yet — reload in a moment."


def context(request: Request[Any, Any, Any]) -> ApiContext:
    found: ApiContext = request.app.state["context"]
    return found


def whole_number(text: str | None, *, most: int = LAST_POSITION) -> int | None:
    """``text`` as a whole number from 0 to ``most``, or None: ASCII digits only ("²" and
    "٣" pass ``str.isdigit`` but not ``int``), at most 19 of them."""
    if not text or len(text) > 19 or not text.isascii() or not text.isdigit():
        return None
    number = int(text)
    return number if number <= most else None


def text(name: str, value: str | None) -> str | None:
    """A filter's text, stripped; blank is None; longer than 200 characters is refused."""
    value = (value or "").strip()
    if len(value) > 200:
        raise InvalidRequest.one(name, value[:40] + "…", "must be at most 200 characters")
    return value or None


def cursor(name: str, value: str | None, reason: str) -> int | None:
    """A page's cursor (a log position) from its link: blank is None, else a whole number."""
    value = (value or "").strip()
    if not value:
        return None
    number = whole_number(value)
    if number is None:
        raise InvalidRequest.one(name, value[:40], reason)
    return number


async def seen(context: ApiContext) -> str | None:
    """After a write: wait (bounded) until the views show it. None when they do; else the
    notice to show (the write is recorded, sending it again would repeat it)."""
    try:
        await context.caught_up()
    except ViewsBehind:
        return LAGGING
    return None


def recorded(request: Request[Any, Any, Any], back: str, page: str = "jobs") -> Template:
    """The page for a write the views cannot show yet: said so, with a way on."""
    return Template(
        template_name="write_recorded.html",
        context={"identity": signed_in(request), "page": page, "notice": LAGGING, "back": back},
    )


def views_behind_page(request: Request[Any, Any, Any], exc: ViewsBehind) -> Response[Any]:
    """The views lag the log past the wait a request allows (``LABLINK_VIEWS_WAIT``): a page
    saying what happened to the request, never the API's JSON. Raised before a dashboard
    route ran (the read-your-writes wait of api/consistency.py) or by a read inside it."""
    if isinstance(exc, WriteUnseen):
        notice = LAGGING
    elif isinstance(exc, WriteRefused):
        notice = (
            "Nothing was written: the views are behind the log"
            f" ({exc.position - exc.folded} events). Send it again in a moment."
        )
    else:
        notice = (
            f"The views are {exc.position - exc.folded} events behind the log"
            f" ({exc.lag_seconds:.1f} s): reload in a moment."
        )
    identity = request.scope.get("state", {}).get("identity")
    if request.headers.get("hx-request"):
        return Response(
            content=f'<p class="notice" role="status">{escape(notice)}</p>',
            media_type="text/html",
            status_code=503,
            headers={"Retry-After": "1"},
        )
    return Template(
        template_name="write_recorded.html",
        context={
            "identity": identity,
            "page": "",
            "notice": notice,
            "back": request.url.path if request.method == "GET" else "/",
            "title": "Not shown yet",
        },
        status_code=503,
        headers={"Retry-After": "1"},
    )
