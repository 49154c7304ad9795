"""API keys on every request: ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``.

Roles nest: viewer (reads) < operator (jobs, runs, pause/resume, alarm acknowledgement)
< admin (profiles, equipment, keys). No key is a 401; a key whose role is too low is a 403
naming the role it needs. ``LABLINK_AUTH=off`` turns this off for a bench on loopback; every
request then acts as "local" with the admin role.
"""

from __future__ import annotations

from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler

from lablink.api.context import ApiContext
from lablink.keys import Identity, lookup

LOCAL = Identity(name="local", role="admin")


def _presented_key(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    header = connection.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip() or None
    return connection.headers.get("x-api-key") or None


def identify(connection: ASGIConnection[Any, Any, Any, Any]) -> Identity:
    context: ApiContext = connection.app.state["context"]
    if not context.auth_enabled:
        return LOCAL
    key = _presented_key(connection)
    if key is None:
        raise NotAuthorizedException(
            "an API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"
        )
    identity = lookup(context.reader, key)
    if identity is None:
        raise NotAuthorizedException("the API key is unknown or revoked")
    return identity


def role_guard(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    """Runs before every route that declares ``opt={"role": ...}``."""
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
