"""Read-your-writes over views that fold behind the log.

The views are folded after the append, by the projector's thread (``projections/follower``).
So that a client that writes and then reads sees its write, exactly as when the views were
folded in the append's transaction:

- a request reads only once the views have folded everything committed when it arrived;
- a write answers only once the views have folded everything committed when it finished
  (its own events among them).

Each wait is bounded (``LABLINK_VIEWS_WAIT``); past it, or while folding fails, the answer is
503 naming how far behind the views are; for a write, it also says whether the write was
recorded (the wait after it) or not attempted (the wait before it). The health probes and
the OpenAPI document do not wait: they must answer when the views cannot.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec
from litestar import Request
from litestar.enums import ScopeType

from lablink.api.context import ApiContext, WriteUnseen
from lablink.projections.follower import Follower, ViewsBehind

if TYPE_CHECKING:
    from litestar.types import ASGIApp, Message, Receive, Scope, Send

_READS = frozenset({"GET", "HEAD", "OPTIONS"})
# The dashboard's vendored files neither: they are not views.
_NEVER_WAIT = ("/health", "/schema", "/static/")


def _views(request: Request[Any, Any, Any]) -> tuple[Follower, float] | None:
    context: ApiContext | None = request.app.state.get("context")
    if context is None or context.views is None:
        return None
    if request.url.path.startswith(_NEVER_WAIT):
        return None
    return context.views, context.settings.views_wait


class WriteRefused(ViewsBehind):
    """The views were behind when a write arrived: it was not attempted. Its 503 says so: it
    may be sent again as it is."""


async def before_request(request: Request[Any, Any, Any]) -> None:
    """Read only what includes every write committed before this request."""
    found = _views(request)
    if found is None:
        return
    try:
        await found[0].caught_up(found[1])
    except ViewsBehind as exc:
        if request.method in _READS:
            raise
        # A client must tell this 503 (nothing written) from a write's own (recorded).
        raise WriteRefused(exc.position, exc.folded, exc.lag_seconds) from exc


# A route whose handler waits for the views itself after its write and tells a lag in its own
# words (the dashboard's pages), in its ``opt``: the answer is left as the handler made it.
SETTLES_ITSELF = "settles_itself"


class SettleWrites:
    """ASGI middleware: a write's answer leaves once the views show it (``after_request`` is
    not told the request, and the handler's answer is already built by then)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP or scope.get("method") in _READS:
            await self.app(scope, receive, send)
            return
        handler = scope.get("route_handler")
        if handler is not None and handler.opt.get(SETTLES_ITSELF):
            await self.app(scope, receive, send)
            return
        request: Request[Any, Any, Any] = Request(scope)
        found = _views(request)
        if found is None:
            await self.app(scope, receive, send)
            return
        replaced = False

        async def settled_send(message: Message) -> None:
            nonlocal replaced
            if replaced:
                return  # the handler's own body, after its answer was replaced
            if message["type"] == "http.response.start" and message["status"] < 400:
                try:
                    await found[0].caught_up(found[1])
                except ViewsBehind as exc:
                    replaced = True
                    unseen = WriteUnseen(exc.position, exc.folded, exc.lag_seconds)
                    await _send_behind(send, unseen)
                    return
            await send(message)

        await self.app(scope, receive, settled_send)


async def _send_behind(send: Send, exc: ViewsBehind) -> None:
    body = msgspec.json.encode(behind_body(exc))
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", b"1"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


def behind_body(exc: ViewsBehind) -> dict[str, Any]:
    """The 503 of a request the views could not serve in time (the error envelope)."""
    reason = (
        f"the views are {exc.position - exc.folded} events ({exc.lag_seconds:.1f} s) behind the log"
    )
    detail = f"views behind: {exc}"
    if isinstance(exc, WriteRefused):
        detail += "; nothing was written"
    elif isinstance(exc, WriteUnseen):
        detail += "; the write was recorded, the views cannot show it yet"
    return {
        "success": False,
        "status_code": 503,
        "detail": detail,
        "errors": [{"field": "views", "value": exc.position, "reason": reason}],
    }
