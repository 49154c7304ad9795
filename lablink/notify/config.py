"""Notification channels: ``notifications.toml`` in the data directory, else one webhook
and/or one email channel from ``LABLINK_NOTIFY_*`` (docs/notifications.md).

A bad file stops the start with one line naming the file, the key, the value and the reason
(``NotifyConfigError``); so does setting both the file and the variables, so that nobody
wonders which of the two is in force.
"""

from __future__ import annotations

import re
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import structlog

from lablink.errors import NotifyConfigError
from lablink.settings import Settings

log = structlog.get_logger(tag="notify")

FILE_NAME = "notifications.toml"
SEVERITIES = ("info", "warning", "critical")
TRANSITIONS = ("raised", "acknowledged", "cleared")
# A channel's name is part of stream ids and of a metrics label.
NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

Kind = Literal["webhook", "email"]


@dataclass(frozen=True)
class Routing:
    """Which alarms a channel is told of; an empty list lets every value through."""

    severities: tuple[str, ...] = ()
    equipment: tuple[str, ...] = ()
    job_tags: tuple[str, ...] = ()
    transitions: tuple[str, ...] = ("raised",)


@dataclass(frozen=True)
class Webhook:
    url: str
    secret: str


@dataclass(frozen=True)
class Email:
    host: str
    sender: str
    to: tuple[str, ...]
    port: int = 587
    username: str = ""
    password: str = ""
    starttls: bool = True
    ca_file: Path | None = None


@dataclass(frozen=True)
class Channel:
    name: str
    kind: Kind
    target: Webhook | Email
    routing: Routing = field(default_factory=Routing)
    timeout: float = 10.0
    # Retries: retry_initial seconds doubling up to retry_max; give up give_up_after seconds
    # after the first attempt.
    retry_initial: float = 5.0
    retry_max: float = 600.0
    give_up_after: float = 86400.0
    # More than this many messages within a minute and further alarms go into one digest a
    # minute (docs/notifications.md, "Storms").
    storm_threshold: int = 10
    dashboard_url: str = ""


_COMMON = {
    "name",
    "kind",
    "severities",
    "equipment",
    "job_tags",
    "transitions",
    "timeout",
    "retry_initial",
    "retry_max",
    "give_up_after",
    "storm_threshold",
    "dashboard_url",
}
_KIND_KEYS = {
    "webhook": {"url", "secret"},
    "email": {"host", "port", "username", "password", "from", "to", "starttls", "ca_file"},
}


class _Reader:
    """One table of the file, read key by key; every refusal names where it is."""

    def __init__(self, where: str, prefix: str, table: dict[str, Any]) -> None:
        self.where = where
        self.prefix = prefix
        self.table = table

    def fail(self, key: str, value: Any, reason: str) -> NotifyConfigError:
        return NotifyConfigError(self.where, f"{self.prefix}{key}", value, reason)

    def text(self, key: str, default: str | None = None) -> str:
        value = self.table.get(key, default)
        if value is None:
            raise self.fail(key, None, "required")
        if not isinstance(value, str):
            raise self.fail(key, value, "expected a string")
        return value

    def number(self, key: str, default: float, low: float, high: float) -> float:
        value = self.table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(key, value, "expected a number")
        if not low <= value <= high:
            raise self.fail(key, value, f"expected {low:g} to {high:g}")
        return float(value)

    def choices(
        self, key: str, allowed: tuple[str, ...] | None, default: tuple[str, ...] = ()
    ) -> tuple[str, ...]:
        value = self.table.get(key, list(default))
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(key, value, "expected a list of strings")
        for item in value:
            if allowed is not None and item not in allowed:
                raise self.fail(key, item, f"expected one of {', '.join(allowed)}")
        return tuple(value)


def _url(reader: _Reader, key: str, value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise reader.fail(key, value, "expected an http:// or https:// URL")
    return value


def _channel(where: str, index: int, table: Any, defaults: dict[str, Any]) -> Channel:
    if not isinstance(table, dict):
        raise NotifyConfigError(where, f"channel[{index}]", table, "expected a table")
    reader = _Reader(where, f"channel[{index}].", table)
    kind = reader.text("kind")
    if kind not in _KIND_KEYS:
        raise reader.fail("kind", kind, "expected webhook or email")
    unknown = sorted(set(table) - _COMMON - _KIND_KEYS[kind])
    if unknown:
        raise reader.fail(unknown[0], table[unknown[0]], f"not a setting of a {kind} channel")
    name = reader.text("name")
    if not NAME.fullmatch(name):
        raise reader.fail("name", name, "expected 1 to 64 of A-Z a-z 0-9 _ -")
    target: Webhook | Email
    if kind == "webhook":
        secret = reader.text("secret")
        if len(secret) < 16:
            raise reader.fail("secret", "***", "expected at least 16 characters")
        target = Webhook(url=_url(reader, "url", reader.text("url")), secret=secret)
    else:
        to = reader.choices("to", None)
        if not to:
            raise reader.fail("to", [], "expected at least one address")
        starttls = table.get("starttls", True)
        if not isinstance(starttls, bool):
            raise reader.fail("starttls", starttls, "expected true or false")
        ca_file = table.get("ca_file")
        if ca_file is not None and not (isinstance(ca_file, str) and Path(ca_file).is_file()):
            raise reader.fail("ca_file", ca_file, "expected the path of a readable file")
        username = reader.text("username", "")
        if username and not starttls:
            # A password sent in clear over the network: refused rather than warned about.
            raise reader.fail("starttls", starttls, "a login needs STARTTLS")
        target = Email(
            host=reader.text("host"),
            port=int(reader.number("port", 587, 1, 65535)),
            username=username,
            password=reader.text("password", ""),
            sender=reader.text("from"),
            to=to,
            starttls=starttls,
            ca_file=Path(ca_file) if ca_file else None,
        )
    dashboard = reader.text("dashboard_url", defaults.get("dashboard_url", ""))
    if dashboard:
        _url(reader, "dashboard_url", dashboard)
    retry_initial = reader.number("retry_initial", 5.0, 0.01, 86400)
    transitions = reader.choices("transitions", TRANSITIONS, ("raised",))
    if not transitions:
        raise reader.fail("transitions", [], "expected at least one transition")
    return Channel(
        name=name,
        kind=kind,  # type: ignore[arg-type]  # checked against _KIND_KEYS above
        target=target,
        routing=Routing(
            severities=reader.choices("severities", SEVERITIES),
            equipment=reader.choices("equipment", None),
            job_tags=reader.choices("job_tags", None),
            transitions=transitions,
        ),
        timeout=reader.number("timeout", 10.0, 0.1, 300),
        retry_initial=retry_initial,
        retry_max=reader.number("retry_max", 600.0, retry_initial, 86400),
        give_up_after=reader.number("give_up_after", 86400.0, 1, 30 * 86400),
        storm_threshold=int(reader.number("storm_threshold", 10, 1, 10_000)),
        dashboard_url=dashboard,
    )


def parse_channels(where: str, document: dict[str, Any]) -> list[Channel]:
    """The channels of a parsed notifications.toml (``where``: its path, for messages)."""
    unknown = sorted(set(document) - {"channel", "dashboard_url"})
    if unknown:
        raise NotifyConfigError(where, unknown[0], document[unknown[0]], "not a setting")
    tables = document.get("channel", [])
    if not isinstance(tables, list):
        raise NotifyConfigError(where, "channel", tables, "expected [[channel]] tables")
    defaults = _Reader(where, "", document)
    shared = {"dashboard_url": defaults.text("dashboard_url", "")}
    if shared["dashboard_url"]:
        _url(defaults, "dashboard_url", shared["dashboard_url"])
    channels = [_channel(where, i, table, shared) for i, table in enumerate(tables)]
    seen: set[str] = set()
    for index, channel in enumerate(channels):
        if channel.name in seen:
            raise NotifyConfigError(
                where, f"channel[{index}].name", channel.name, "another channel has this name"
            )
        seen.add(channel.name)
    return channels


def load_file(path: Path) -> list[Channel]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise NotifyConfigError(str(path), "(file)", None, exc.strerror or str(exc)) from exc
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise NotifyConfigError(str(path), "(syntax)", None, str(exc)) from exc
    channels = parse_channels(str(path), document)
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning(
            "notifications.toml holds secrets and others may read it: chmod 600",
            file=str(path),
            mode=oct(stat.S_IMODE(mode)),
        )
    return channels


def from_settings(settings: Settings) -> list[Channel]:
    """The channels LABLINK_NOTIFY_* describe (none when unset)."""
    channels: list[Channel] = []
    table: dict[str, Any]
    if settings.notify_webhook_url:
        table = {
            "name": "webhook",
            "kind": "webhook",
            "url": settings.notify_webhook_url,
            "secret": settings.notify_webhook_secret or "",
        }
        channels.append(_from_env(table, "LABLINK_NOTIFY_WEBHOOK_"))
    if settings.notify_email_host:
        table = {
            "name": "email",
            "kind": "email",
            "host": settings.notify_email_host,
            "port": settings.notify_email_port,
            "from": settings.notify_email_from or "",
            "to": [a.strip() for a in (settings.notify_email_to or "").split(",") if a.strip()],
        }
        if settings.notify_email_user:
            table["username"] = settings.notify_email_user
            table["password"] = settings.notify_email_password or ""
        channels.append(_from_env(table, "LABLINK_NOTIFY_EMAIL_"))
    return channels


def _from_env(table: dict[str, Any], prefix: str) -> Channel:
    try:
        return _channel("environment", 0, table, {})
    except NotifyConfigError as exc:
        # Name the variable rather than the key of a file nobody wrote.
        variable = prefix + exc.key.removeprefix("channel[0].").upper()
        variable = variable.replace("EMAIL_USERNAME", "EMAIL_USER")
        raise NotifyConfigError("environment", variable, exc.value, exc.reason) from None


def load_channels(settings: Settings) -> list[Channel]:
    """The channels in force: the data directory's notifications.toml, else LABLINK_NOTIFY_*."""
    path = settings.data_dir / FILE_NAME
    from_env = from_settings(settings)
    if not path.exists():
        return from_env
    if from_env:
        raise NotifyConfigError(
            str(path),
            "(file)",
            str(path),
            "LABLINK_NOTIFY_* are set too: configure channels in one place only",
        )
    return load_file(path)
