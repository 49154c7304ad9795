"""The API in a browser's world: which Host names it answers to, and which Origins may change
anything.

A web page the operator visits can send requests to ``127.0.0.1:8000`` (simple requests need
no CORS preflight), and a DNS name it controls can be re-pointed at 127.0.0.1 (DNS rebinding)
so that its scripts read the answers too. Two checks close both doors, on every request and
before any route runs:

- the ``Host`` header must name this server: the names of the bound address (the localhost
  names when bound to loopback), widened by ``LABLINK_ALLOWED_HOSTS``; otherwise 400;
- a state-changing request (POST, PUT, PATCH, DELETE) that carries an ``Origin`` must come
  from one of those hosts; otherwise 403. Without an Origin (curl, scripts, the LabLink
  client) it passes: browsers always send one on such requests.

Litestar's ``AllowedHostsConfig`` describes the list and its middleware matches it (the whole
Host header, port included, which is why every name is listed with and without the port).
"""

from __future__ import annotations

import ipaddress
import socket
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import msgspec
import structlog
from litestar.config.allowed_hosts import AllowedHostsConfig
from litestar.datastructures import MutableScopeHeaders
from litestar.enums import ScopeType
from litestar.middleware.allowed_hosts import AllowedHostsMiddleware
from litestar.response.base import ASGIResponse

from lablink.settings import Settings

if TYPE_CHECKING:
    from litestar.types import ASGIApp, Receive, Scope, Send

log = structlog.get_logger(tag="api")

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]", "::1")
# Binding to one of these listens on every interface.
WILDCARD_BINDS = ("", "0.0.0.0", "::", "[::]")
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1): only this machine can
    connect. A wildcard or any other name is not."""
    bare = host.strip().strip("[]").lower()
    if bare == "localhost":
        return True
    try:
        return ipaddress.ip_address(bare).is_loopback
    except ValueError:
        return False


def _bracketed(host: str) -> str:
    """An IPv6 literal as a Host header carries it: in brackets."""
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return host
    return f"[{address}]" if address.version == 6 else str(address)


def _machine_names() -> set[str]:
    """This machine's names and addresses, for a server bound to every interface."""
    names = {socket.gethostname(), socket.getfqdn()}
    try:
        for *_, sockaddr in socket.getaddrinfo(socket.gethostname(), None):
            names.add(str(sockaddr[0]))
    except OSError:
        # No resolver entry for our own name: the names alone, and LABLINK_ALLOWED_HOSTS.
        pass
    return {name for name in names if name}


def _with_port(host: str, port: int) -> list[str]:
    """A name as Host headers carry it: bare (the scheme's default port) and with the bound
    port. A name that already gives its port stays as it is, and so does a bare IPv6 literal
    (its bracketed form is listed beside it)."""
    if host == "*":
        return [host]
    if host.startswith("["):
        return [host] if "]:" in host else [host, f"{host}:{port}"]
    if ":" in host:
        return [host]
    return [host, f"{host}:{port}"]


def allowed_hosts(settings: Settings) -> list[str]:
    """The Host header values this server answers to, port included and omitted."""
    bound = settings.host.strip()
    if bound.lower() in WILDCARD_BINDS:
        names = {*LOOPBACK_NAMES, *_machine_names()}
    elif is_loopback(bound):
        names = {*LOOPBACK_NAMES, bound}
    else:
        names = {bound}
    names |= set(settings.allowed_hosts)
    listed: set[str] = set()
    for name in names:
        name = name.lower()
        for variant in {name, _bracketed(name)}:
            listed.update(_with_port(variant, settings.port))
    return sorted(listed)


class BrowserGuard(AllowedHostsMiddleware):
    """Litestar's allowed-hosts middleware, answering in LabLink's error shape (``detail``
    names the host), plus the Origin check on state-changing requests."""

    def __init__(self, app: ASGIApp, config: AllowedHostsConfig) -> None:
        super().__init__(app, config)
        self.hosts = config.allowed_hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = MutableScopeHeaders(scope=scope)
        host = headers.get("host")
        matcher = self.allowed_hosts_regex
        if matcher is not None and (host is None or not matcher.fullmatch(host.lower())):
            log.warning("request refused: host not allowed", host=host, path=scope.get("path"))
            await _refuse(
                400,
                f"host {host!r} is not one this server answers to; allowed: "
                f"{', '.join(self.hosts)} (LABLINK_ALLOWED_HOSTS adds more)",
                "Host",
                host,
                "not an allowed host",
            )(scope, receive, send)
            return
        origin = headers.get("origin")
        if (
            origin is not None
            and scope["type"] == ScopeType.HTTP
            and scope.get("method", "GET") in UNSAFE_METHODS
            and matcher is not None
            and not matcher.fullmatch(_origin_host(origin))
        ):
            log.warning(
                "request refused: foreign origin",
                origin=origin,
                method=scope.get("method"),
                path=scope.get("path"),
            )
            await _refuse(
                403,
                f"cross-origin request refused: Origin {origin!r} is not an allowed host "
                "(LABLINK_ALLOWED_HOSTS adds more)",
                "Origin",
                origin,
                "not an allowed host",
            )(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _origin_host(origin: str) -> str:
    """``http://localhost:8000`` → ``localhost:8000``; ``null`` (a sandboxed page, a file)
    and anything unparsable → "" (which no allowed host matches)."""
    try:
        netloc = urlsplit(origin.strip()).netloc
    except ValueError:
        return ""
    # An Origin carries no user info; if one does, it is not a browser's, and not ours.
    return "" if "@" in netloc else netloc.lower()


def _refuse(status: int, detail: str, field: str, value: str | None, reason: str) -> ASGIResponse:
    body = {
        "success": False,
        "status_code": status,
        "detail": detail,
        "errors": [{"field": field, "value": value, "reason": reason}],
    }
    return ASGIResponse(
        body=msgspec.json.encode(body), status_code=status, media_type="application/json"
    )


def browser_guard_config(settings: Settings) -> AllowedHostsConfig:
    hosts = allowed_hosts(settings)
    # "*" in LABLINK_ALLOWED_HOSTS switches both checks off (documented as unsafe).
    return AllowedHostsConfig(allowed_hosts=hosts, www_redirect=False)
