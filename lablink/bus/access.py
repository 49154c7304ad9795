"""Which NATS user a LabLink client of this machine connects as.

Configured credentials always win (LABLINK_NATS_USER / _PASSWORD / _CREDENTIALS, a lab.toml's
``[nats]``): that is how an external cluster is reached. Otherwise, when the URL is that of the
private server of a data directory (``data/nats/url``), the client takes its own user from
``data/nats/credentials.json``: the subscriber for `lablink events tail` and `lablink alarms
watch`, ``agent-<agent_id>`` for an agent (added, and the running server reloaded, the first
time that agent starts or when its instruments change).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from lablink.bus.credentials import Credentials
from lablink.bus.options import NatsOptions
from lablink.bus.permissions import SUBSCRIBER
from lablink.bus.private import URL_FILE, reload_running_server

PRIVATE_FOLDER = "nats"


def private_folder(data_dir: Path) -> Path:
    return data_dir / PRIVATE_FOLDER


def resolve(explicit: str | None, data_dir: Path) -> tuple[str, Path | None]:
    """The URL to use, and the private server's folder when it is that server's."""
    if explicit:
        return explicit, None
    folder = private_folder(data_dir)
    path = folder / URL_FILE
    try:
        return path.read_text().strip(), folder
    except FileNotFoundError:
        raise FileNotFoundError(
            f"no NATS URL: set LABLINK_NATS_URL, or start `lablink serve` (it writes {path})"
        ) from None
    except PermissionError as exc:
        raise FileNotFoundError(f"cannot read {path}: {exc.strerror}") from exc


def _configured(options: NatsOptions) -> bool:
    return bool(options.user or options.credentials)


def subscriber_options(options: NatsOptions, folder: Path | None) -> NatsOptions:
    """``options``, as the private server's read-only user when nothing else is set."""
    if folder is None or _configured(options):
        return options
    credentials = Credentials.find(folder)
    if credentials is None:
        return options
    user = credentials.user(SUBSCRIBER)
    return options.as_user(user.name, user.password)


async def agent_options(
    options: NatsOptions, folder: Path | None, agent_id: str, instruments: Iterable[str]
) -> NatsOptions:
    """``options``, as agent ``agent_id``'s own user of the private server when nothing
    else is set; its user is written (and the running server reloaded) when new."""
    if folder is None or _configured(options):
        return options
    credentials = Credentials.find(folder)
    if credentials is None:
        return options
    user, changed = credentials.ensure_agent(agent_id, instruments)
    mine = options.as_user(user.name, user.password)
    if changed:
        await reload_running_server(folder, check=mine)
    return mine
