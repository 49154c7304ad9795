"""Signing in to the dashboard: an API key pasted once buys a session cookie.

The JSON API takes keys only (``Authorization``/``X-API-Key``) and no cookie, so it needs no
CSRF token. The dashboard's pages take the cookie only, and every unsafe request to them
carries a CSRF token (Litestar's ``CSRFMiddleware`` on the dashboard's router).

The session lives in the server's memory (a restart signs everyone out) and names the key it
was bought with: a key revoked since is refused on the next request, as the API refuses it.
The cookie is ``HttpOnly`` and ``SameSite=Strict``, and ``Secure`` when the request came over
TLS. That last is decided per request, which Litestar's session middleware cannot do: hence
this small store of our own over Litestar's ``MemoryStore``.
"""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

import msgspec
from litestar import Controller, Request, get, post
from litestar.connection import ASGIConnection
from litestar.datastructures import Cookie
from litestar.enums import RequestEncodingType
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.params import Body, FromQuery
from litestar.response import Redirect, Response, Template
from litestar.stores.memory import MemoryStore

from lablink.api.auth import LOCAL
from lablink.api.context import ApiContext
from lablink.api.throttle import FailedAuthentications
from lablink.keys import Identity, lookup
from lablink.projections.keys import read_key

COOKIE = "lablink_session"
# A working day and a night shift: the screen left open signs in again once a day.
SESSION_LIFETIME = timedelta(hours=12)
STATE_KEY = "dashboard_sessions"


class SignInNeeded(NotAuthorizedException):
    """A dashboard page asked for without a live session."""


class SessionRecord(msgspec.Struct, frozen=True, kw_only=True):
    key_id: str
    name: str
    role: str


class Sessions:
    """Session id → the key it was bought with, expiring after ``SESSION_LIFETIME``."""

    def __init__(self) -> None:
        self._store = MemoryStore()

    async def open(self, identity: Identity) -> str:
        token = secrets.token_urlsafe(32)
        record = SessionRecord(key_id=identity.key_id, name=identity.name, role=identity.role)
        await self._store.set(
            token,
            msgspec.json.encode(record),
            expires_in=int(SESSION_LIFETIME.total_seconds()),
        )
        return token

    async def find(self, token: str) -> SessionRecord | None:
        raw = await self._store.get(token)
        return None if raw is None else msgspec.json.decode(raw, type=SessionRecord)

    async def close(self, token: str) -> None:
        await self._store.delete(token)


def _sessions(connection: ASGIConnection[Any, Any, Any, Any]) -> Sessions:
    sessions: Sessions = connection.app.state[STATE_KEY]
    return sessions


def _context(connection: ASGIConnection[Any, Any, Any, Any]) -> ApiContext:
    context: ApiContext = connection.app.state["context"]
    return context


async def session_identity(connection: ASGIConnection[Any, Any, Any, Any]) -> Identity | None:
    """Who this browser is signed in as; None when it is not (or its key was revoked)."""
    context = _context(connection)
    if not context.auth_enabled:
        return LOCAL
    token = connection.cookies.get(COOKIE)
    if not token:
        return None
    record = await _sessions(connection).find(token)
    if record is None:
        return None
    # Read on every request, never cached: a revocation holds for the next page.
    key = read_key(context.reader, record.key_id)
    if key is None or key["revoked"]:
        await _sessions(connection).close(token)
        return None
    return Identity(name=record.name, role=key["role"], key_id=record.key_id)


async def page_guard(
    connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
) -> None:
    """Runs before every dashboard route that declares ``opt={"page_role": ...}``: no session
    → sign in; a role too low → 403, whatever the page showed."""
    needed = handler.opt.get("page_role")
    if needed is None:
        return
    identity = await session_identity(connection)
    if identity is None:
        raise SignInNeeded("sign in with an API key first")
    if not identity.allows(needed):
        raise PermissionDeniedException(
            f"this needs the {needed!r} role; you are signed in as {identity.name!r}"
            f" with the {identity.role!r} role"
        )
    connection.scope["state"]["identity"] = identity


def signed_in(request: Request[Any, Any, Any]) -> Identity:
    """The identity ``page_guard`` found for this request."""
    identity: Identity | None = request.scope.get("state", {}).get("identity")
    return identity if identity is not None else LOCAL


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a path on this server, never another site."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    if any(char.isspace() or ord(char) < 0x20 for char in target):
        # A browser drops tabs and newlines from an address: "/\t/elsewhere" would be "//...".
        return "/"
    return target


def to_sign_in(request: Request[Any, Any, Any], exc: SignInNeeded) -> Response[Any]:
    """A page → the sign-in form, then back; an htmx request → a full-page redirect."""
    # The page as asked for, filters and all, encoded as one value of ``next``. An htmx
    # request asked for a part of a page: back to the page it was part of (htmx names it).
    path, query = request.url.path, request.url.query
    htmx = bool(request.headers.get("hx-request"))
    if htmx and (current := request.headers.get("hx-current-url")):
        shown = urlsplit(current)
        path, query = shown.path or "/", shown.query
    target = "/signin?next=" + quote(safe_next(path + (f"?{query}" if query else "")), safe="/")
    if htmx:
        return Response(content="", status_code=401, headers={"HX-Redirect": target})
    return Redirect(path=target, status_code=303)


def forbidden_page(
    request: Request[Any, Any, Any], exc: PermissionDeniedException
) -> Response[Any]:
    return Template(
        template_name="forbidden.html",
        # Only who the guard found: a refusal before it (a bad CSRF token) shows no one.
        context={"reason": exc.detail, "identity": request.scope.get("state", {}).get("identity")},
        status_code=403,
    )


class SignInForm(msgspec.Struct, kw_only=True):
    key: str = ""
    next: str = "/"


class SessionController(Controller):
    path = "/"
    include_in_schema = False

    @get("/signin")
    async def sign_in_form(
        self, request: Request[Any, Any, Any], next: FromQuery[str] = "/"
    ) -> Response[Any]:
        if await session_identity(request) is not None:
            return Redirect(path=safe_next(next), status_code=303)
        return Template(template_name="signin.html", context={"next": safe_next(next)})

    @post("/signin", status_code=303)
    async def sign_in(
        self,
        request: Request[Any, Any, Any],
        data: Annotated[SignInForm, Body(media_type=RequestEncodingType.URL_ENCODED)],
    ) -> Response[Any]:
        context = _context(request)
        target = safe_next(data.next)
        if not context.auth_enabled:
            return Redirect(path=target, status_code=303)
        throttle: FailedAuthentications = request.app.state["auth_failures"]
        client = request.client.host if request.client is not None else "unknown"
        wait = throttle.retry_after(client)
        if wait is not None:
            return _refused(
                f"too many failed sign-ins from {client}: try again in {wait} s", target, 429
            )
        key = data.key.strip()
        match = lookup(context.reader, key) if key else None
        if match is None or match.revoked:
            throttle.failed(client)
            reason = (
                "paste an API key"
                if not key
                else f"the API key {match.key_id!r} has been revoked"
                if match is not None
                else "the API key is unknown or revoked"
            )
            return _refused(reason, target, 401)
        token = await _sessions(request).open(match.identity())
        response: Response[Any] = Redirect(path=target, status_code=303)
        response.set_cookie(_cookie(request, token, int(SESSION_LIFETIME.total_seconds())))
        return response

    @post("/signout", status_code=303)
    async def sign_out(self, request: Request[Any, Any, Any]) -> Response[Any]:
        token = request.cookies.get(COOKIE)
        if token:
            await _sessions(request).close(token)
        response: Response[Any] = Redirect(path="/signin", status_code=303)
        response.set_cookie(_cookie(request, "", 0))
        return response


def _refused(reason: str, target: str, status: int) -> Response[Any]:
    return Template(
        template_name="signin.html",
        context={"next": target, "error": reason},
        status_code=status,
    )


def _cookie(request: Request[Any, Any, Any], value: str, max_age: int) -> Cookie:
    return Cookie(
        key=COOKIE,
        value=value,
        max_age=max_age,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
