"""The private bus's users and their generated passwords, kept in ``data/nats/``.

``credentials.json`` (0600, in a 0700 folder) holds one entry per user: ``scheduler``,
``subscriber`` and one ``agent-<agent_id>`` per equipment agent that ever served from this data
directory, with the instruments it may use. It is made on the first start and kept across
restarts; ``auth.conf`` (the nats-server users, ``lablink.bus.serverconf``) is rendered from it.

Any LabLink process of this data directory finds its user here: `lablink serve` (scheduler and
its own agent), `lablink agent` (which adds its user the first time, or when its instruments
change, and has the running server reload), `lablink events tail`, `lablink alarms watch`,
``examples/dashboard.py``. Whoever can read this folder can use the bus; that is why it is
private to LabLink's OS user, like the event log.

Writes are whole-file replacements under an exclusive ``flock``, so two processes adding
agents at once both land, and a reader never sees half a file.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import structlog

from lablink.bus.options import NatsOptions
from lablink.bus.permissions import SCHEDULER, SUBSCRIBER, Role, agent_user
from lablink.bus.serverconf import AUTH_FILE, ConfUser, embedded_auth, literal
from lablink.errors import BusCredentialsError

log = structlog.get_logger(tag="relay")

CREDENTIALS_FILE = "credentials.json"
LOCK_FILE = "credentials.lock"
DIR_MODE = 0o700
FILE_MODE = 0o600
PASSWORD_BYTES = 32  # 256 bits, as url-safe base64


class BusUser(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    role: Role
    password: str
    instruments: tuple[str, ...] = ()


class _File(msgspec.Struct, kw_only=True):
    version: int = 1
    users: dict[str, BusUser] = msgspec.field(default_factory=dict)


def new_password() -> str:
    return secrets.token_urlsafe(PASSWORD_BYTES)


def private_folder(folder: Path) -> Path:
    """``folder`` made (or tightened to) 0700: it holds passwords and the bus's store."""
    folder.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    if folder.stat().st_mode & 0o077:
        os.chmod(folder, DIR_MODE)
    return folder


def write_private(path: Path, text: str) -> None:
    """Replace ``path`` with ``text``, mode 0600 from the first byte, atomically."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, FILE_MODE)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise


class Credentials:
    """The users of the private server of one data directory (``data/nats``)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / CREDENTIALS_FILE

    @classmethod
    def open(cls, folder: Path) -> Credentials:
        """The folder's credentials, made on first use: scheduler and subscriber users."""
        credentials = cls(private_folder(folder))
        with credentials._locked():
            data = credentials._read()
            changed = False
            defaults: tuple[tuple[str, Role], ...] = (
                (SCHEDULER, "scheduler"),
                (SUBSCRIBER, "subscriber"),
            )
            for name, role in defaults:
                if name not in data.users:
                    data.users[name] = BusUser(name=name, role=role, password=new_password())
                    changed = True
            if changed:
                credentials._write(data)
                log.info("bus credentials created", path=str(credentials.path))
            elif not (folder / AUTH_FILE).exists():
                credentials._render(data)
        return credentials

    @classmethod
    def find(cls, folder: Path) -> Credentials | None:
        """The folder's credentials if a private server ever ran there, else None."""
        credentials = cls(folder)
        return credentials if credentials.path.exists() else None

    # -- reading --------------------------------------------------------------------------------

    def users(self) -> dict[str, BusUser]:
        return dict(self._read().users)

    def user(self, name: str) -> BusUser:
        found = self._read().users.get(name)
        if found is None:
            raise BusCredentialsError(str(self.path), f"no user {name!r} in it")
        return found

    def options(self, url: str, name: str) -> NatsOptions:
        """How ``name`` connects to the private server at ``url``."""
        user = self.user(name)
        return NatsOptions(url=url, user=user.name, password=user.password)

    # -- changes --------------------------------------------------------------------------------

    def ensure_agent(self, agent_id: str, instruments: Iterable[str]) -> tuple[BusUser, bool]:
        """The user of agent ``agent_id``, added, or given the instruments it serves now.
        Returns the user and whether anything changed (the running server must reload)."""
        name = agent_user(agent_id)
        wanted = tuple(sorted(set(instruments)))
        with self._locked():
            data = self._read()
            found = data.users.get(name)
            if found is not None and found.role == "agent" and found.instruments == wanted:
                return found, False
            user = BusUser(
                name=name,
                role="agent",
                password=found.password if found is not None else new_password(),
                instruments=wanted,
            )
            data.users[name] = user
            self._write(data)
        log.info("bus user for agent written", user=name, instruments=list(wanted))
        return user, True

    def rotate(self, names: Iterable[str] = ()) -> list[str]:
        """New passwords for ``names`` (every user when empty); returns who got one."""
        with self._locked():
            data = self._read()
            chosen = list(names) or sorted(data.users)
            unknown = [n for n in chosen if n not in data.users]
            if unknown:
                raise BusCredentialsError(
                    str(self.path), f"no user {unknown[0]!r} (users: {', '.join(data.users)})"
                )
            for name in chosen:
                data.users[name] = msgspec.structs.replace(
                    data.users[name], password=new_password()
                )
            self._write(data)
        log.info("bus passwords rotated", users=chosen)
        return chosen

    def render(self) -> None:
        """Write ``auth.conf`` again from the users (before a server starts)."""
        with self._locked():
            self._render(self._read())

    # -- the files ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self.folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing drops the lock

    def _read(self) -> _File:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return _File()
        except OSError as exc:
            raise BusCredentialsError(str(self.path), f"cannot be read: {exc.strerror}") from exc
        try:
            return msgspec.json.decode(raw, type=_File)
        except msgspec.ValidationError as exc:
            raise BusCredentialsError(str(self.path), f"is not LabLink's: {exc}") from exc
        except msgspec.DecodeError as exc:
            raise BusCredentialsError(str(self.path), f"is not valid JSON: {exc}") from exc

    def _write(self, data: _File) -> None:
        text = json.dumps(msgspec.to_builtins(data), indent=2, sort_keys=True) + "\n"
        write_private(self.path, text)
        self._render(data)

    def _render(self, data: _File) -> None:
        users = [
            ConfUser(u.name, u.role, literal(u.password), u.instruments)
            for u in data.users.values()
        ]
        write_private(self.folder / AUTH_FILE, embedded_auth(users))


def as_dict(user: BusUser) -> dict[str, Any]:
    """A user without its password, for listings."""
    return {"name": user.name, "role": user.role, "instruments": list(user.instruments)}
