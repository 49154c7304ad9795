"""API keys on every request: ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``.

Roles nest: viewer (reads) < operator (jobs, runs, pause/resume, alarm acknowledgement)
< admin (profiles, equipment, keys). No key is a 401; a key whose role is too low is a 403
naming the role it needs. ``LABLINK_AUTH=off`` turns this off for a bench on loopback; every
request then acts as "local" with the admin role.

A wrong key (never issued, or revoked) is a 401, logged with the client's address and the
key's id (revoked) or first characters (unknown), never the key. Too many from one address
and it gets 429 for a while (see throttle.py).
"""

from __future__ import annotations

from typing import Any

import structlog
from litestar.connection import ASGIConnection
from litestar.exceptions import (
    NotAuthorizedException,
    PermissionDeniedException,
    TooManyRequestsException,
)
from litestar.handlers.base import BaseRouteHandler

from lablink.api.context import ApiContext
from lablink.api.throttle import FailedAuthentications
from lablink.keys import Identity, KeyUsage, lookup, shown_prefix

LOCAL = Identity(name="local", role="admin")
log = structlog.get_logger(tag="api")


def _presented_key(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    header = connection.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip() or None
    return connection.headers.get("x-api-key") or None


def _client(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    client = connection.client
    return client.host if client is not None else "unknown"


def identify(connection: ASGIConnection[Any, Any, Any, Any]) -> Identity:
    state = connection.app.state
    context: ApiContext = state["context"]
    if not context.auth_enabled:
        return LOCAL
    key = _presented_key(connection)
    if key is None:
        raise NotAuthorizedException(
            "an API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"
        )
    throttle: FailedAuthentications = state["auth_failures"]
    client = _client(connection)
    wait = throttle.retry_after(client)
    if wait is not None:
        raise TooManyRequestsException(
            f"too many failed authentications from {client}: try again in {wait} s",
            headers={"Retry-After": str(wait)},
        )
    match = lookup(context.reader, key)
    if match is None or match.revoked:
        failures = throttle.failed(client)
        # A revoked key is named by its id; an unknown one only by its first characters.
        named = {"key_id": match.key_id} if match is not None else {"key_prefix": shown_prefix(key)}
        log.warning(
            "authentication failed",
            reason="revoked key" if match is not None else "unknown key",
            **named,
            client=client,
            path=connection.url.path,
            failures=failures,
            max_failures=throttle.max_failures,
        )
        if failures >= throttle.max_failures:
            log.warning(
                "authentication throttled",
                client=client,
                failures=failures,
                retry_after=throttle.retry_after(client),
            )
        if match is not None:
            raise NotAuthorizedException(f"the API key {match.key_id!r} has been revoked")
        raise NotAuthorizedException("the API key is unknown or revoked")
    usage: KeyUsage = state["key_usage"]
    usage.seen(match.key_id)
    return match.identity()


async def role_guard(
    connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
) -> None:
    """Runs before every route that declares ``opt={"role": ...}``. A coroutine: Litestar runs
    a plain function guard in a worker thread, a thread hop per request (11 % of the
    server's time on the statistics call under load, BENCHMARKS.md "HTTP API", 2026-12-05)."""
    needed = handler.opt.get("role")
    if needed is None:
        return
    identity = identify(connection)
    if not identity.allows(needed):
        raise PermissionDeniedException(
            f"insufficient permissions: this needs the {needed!r} role;"
            f" key {identity.name!r} has {identity.role!r}"
        )
    connection.scope["state"]["identity"] = identity


def actor(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    identity: Identity | None = connection.scope.get("state", {}).get("identity")
    return identity.name if identity is not None else LOCAL.name
