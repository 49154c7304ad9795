"""How a LabLink process connects to NATS: the server(s), who it is, and its reply inbox.

Every user but the scheduler may subscribe only to its own inbox, ``_INBOX.<user>.>`` (see
``lablink.bus.permissions``): otherwise an agent could read the replies meant for others (the
JetStream deliveries of `lablink events tail` go to an inbox too) and forge answers to the
scheduler's requests. So a client that knows its user name takes that inbox prefix; nats-py
builds every reply subject, JetStream acks included, under it.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit, urlunsplit

DEFAULT_INBOX = "_INBOX"


def redact(url: str) -> str:
    """``url`` (one or several, comma-separated) without any ``user:password@``."""
    shown = []
    for one in url.split(","):
        parts = urlsplit(one.strip())
        host = parts.hostname or ""
        if parts.port is not None:
            host = f"{host}:{parts.port}"
        shown.append(urlunsplit(parts._replace(netloc=host)) if parts.username else one.strip())
    return ",".join(shown)


def inbox_prefix(user: str | None) -> str:
    """The reply inbox prefix of ``user`` (nats-py's default for an anonymous client)."""
    return f"{DEFAULT_INBOX}.{user}" if user else DEFAULT_INBOX


@dataclass
class NatsOptions:
    url: str
    user: str | None = None
    password: str | None = None
    credentials: str | None = None  # a .creds file
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    replicas: int = 1
    # None: derived from ``user`` (``inbox_prefix``).
    inbox: str | None = None

    @property
    def servers(self) -> list[str]:
        return [u.strip() for u in self.url.split(",") if u.strip()]

    def connect_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "servers": self.servers,
            "inbox_prefix": self.inbox or inbox_prefix(self.user),
        }
        if self.user:
            kwargs.update(user=self.user, password=self.password)
        if self.credentials:
            kwargs["user_credentials"] = self.credentials
        if self.tls_ca or self.tls_cert:
            context = ssl.create_default_context(cafile=self.tls_ca)
            if self.tls_cert:
                context.load_cert_chain(self.tls_cert, self.tls_key)
            kwargs["tls"] = context
        return kwargs

    def as_user(self, user: str, password: str) -> NatsOptions:
        """The same servers and TLS, as another user (a .creds file no longer applies)."""
        return replace(self, user=user, password=password, credentials=None, inbox=None)

    def redacted(self) -> str:
        """For logs and errors: the URL and the user, never the password."""
        url = redact(self.url)
        return f"{url} as {self.user}" if self.user else url
