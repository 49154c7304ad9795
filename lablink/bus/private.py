"""The private nats-server of `lablink serve`, authenticated and kept running.

Under ``data/nats/`` (0700): ``credentials.json`` and ``auth.conf`` (``bus.credentials``),
``nats-server.conf`` (``bus.serverconf``), JetStream's store, ``url`` (where it listens, for
`lablink events tail` and `lablink agent` on this machine) and ``server.pid``.

Supervised (health entry ``task.nats-server``): when the server exits, whatever the reason, it
is started again after a capped backoff, on the same port, with the same store and the same
users, so every client's reconnect finds it where it was. The relay resumes from its
checkpoint and JetStream drops what it already had (``Nats-Msg-Id``): the backlog is published
once. ``restart`` is the relay's remedy for a stream whose store failed (``bus.relay``).

Other processes of the same data directory change the users (`lablink agent` adds its own):
they rewrite ``auth.conf`` and send the server SIGHUP, which reloads it
(``reload_running_server``). nats-server forgets, on a reload, which replies a client still
owes, so an agent answering a run request at that very moment may have its reply refused; the
scheduler then asks again, and the agent's ledger answers "duplicate" without running twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path

import nats
import structlog

from lablink.bus.credentials import Credentials, write_private
from lablink.bus.options import NatsOptions
from lablink.bus.permissions import SCHEDULER
from lablink.bus.server import NatsServer
from lablink.bus.serverconf import CONFIG_FILE, embedded_config
from lablink.errors import NatsServerExited
from lablink.health import Health
from lablink.supervision import Supervisor, Watch

log = structlog.get_logger(tag="relay")

TASK = "task.nats-server"
URL_FILE = "url"
PID_FILE = "server.pid"
_FOREVER = 10 * 365 * 86400.0
RELOAD_WAIT_SECONDS = 15.0


class PrivateNats:
    """Start with ``await start()`` (the first start raises if the server cannot run at all),
    stop with ``await stop()``."""

    def __init__(
        self,
        folder: Path,
        health: Health,
        *,
        port: int = -1,
        initial_backoff: float = 0.5,
        max_backoff: float = 30.0,
    ) -> None:
        self.folder = folder
        self.credentials = Credentials.open(folder)
        self.port = port
        self.restarts = 0
        self.health = health
        # Its own supervisor, on the runtime's registry: the bus must outlive every writer
        # (the relay drains the log at shutdown), so it stops after the runtime's loops.
        self._supervisor = Supervisor(
            health, initial_backoff=initial_backoff, max_backoff=max_backoff
        )
        self._server: NatsServer | None = None
        self._restart_reason: str | None = None
        self._stopped = False

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._server.pid if self._server is not None else None

    @property
    def running(self) -> bool:
        process = self._server.process if self._server is not None else None
        return process is not None and process.returncode is None

    def options(self, user: str = SCHEDULER) -> NatsOptions:
        return self.credentials.options(self.url, user)

    async def start(self) -> PrivateNats:
        await self._spawn()
        self._supervisor.spawn(TASK, self._keep_running)
        return self

    async def _spawn(self) -> None:
        self.credentials.render()
        server = NatsServer(
            self.folder, port=self.port, config=embedded_config(self.folder, self.port)
        )
        await server.start()
        self._server = server
        self.port = server.port
        write_private(self.folder / URL_FILE, self.url + "\n")
        write_private(self.folder / PID_FILE, f"{server.pid}\n")

    async def _keep_running(self, watch: Watch) -> None:
        while True:
            if not self.running:
                await self._spawn()  # raises: the supervisor backs off and calls again
                self.restarts += 1
                log.warning("embedded nats-server restarted", url=self.url, pid=self.pid)
            watch.ok("running", url=self.url, pid=self.pid, restarts=self.restarts)
            server = self._server
            assert server is not None
            code = await self._exited_or_stopping(server, watch)
            if watch.stopping:
                return
            reason, self._restart_reason = self._restart_reason, None
            if reason is None:
                raise NatsServerExited(server.pid, code)
            log.warning("restarting the embedded nats-server", reason=reason)

    @staticmethod
    async def _exited_or_stopping(server: NatsServer, watch: Watch) -> int | None:
        assert server.process is not None
        exited = asyncio.ensure_future(server.process.wait())
        stopping = asyncio.ensure_future(watch.sleep(_FOREVER))
        try:
            await asyncio.wait([exited, stopping], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (exited, stopping):
                task.cancel()
        return server.process.returncode

    async def restart(self, reason: str) -> None:
        """Stop the server now; the supervisor starts it again at once."""
        server = self._server
        if server is None or not self.running or self._stopped:
            return
        self._restart_reason = reason
        await server.stop()

    async def reload(self, check: NatsOptions | None = None) -> None:
        """Have the running server read ``auth.conf`` again and wait until it has applied it;
        with ``check``, also until that user can connect."""
        if self._server is not None and self.running:
            await self._server.reload(RELOAD_WAIT_SECONDS)
            if check is not None:
                await wait_until_accepted(check)

    async def stop(self) -> None:
        self._stopped = True
        await self._supervisor.aclose()
        if self._server is not None:
            await self._server.stop()
        with contextlib.suppress(FileNotFoundError):
            (self.folder / PID_FILE).unlink()


async def wait_until_accepted(options: NatsOptions, wait: float = RELOAD_WAIT_SECONDS) -> None:
    """Until the server takes ``options``'s user (a reload is not instantaneous)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait

    async def quiet(exc: Exception) -> None:
        return None

    while True:
        try:
            nc = await nats.connect(
                **options.connect_kwargs(),
                connect_timeout=2,
                allow_reconnect=False,
                max_reconnect_attempts=1,
                error_cb=quiet,
            )
        except Exception:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.05)
            continue
        await nc.close()
        return


def running_server_pid(folder: Path) -> int | None:
    """The pid of the private server of ``folder`` if it runs, checked against its command
    line (a stale pid file must not have us signal some other process)."""
    try:
        pid = int((folder / PID_FILE).read_text().strip())
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    config = str(folder / CONFIG_FILE).encode()
    if not any(part.endswith(b"nats-server") for part in command) or config not in command:
        return None
    return pid


async def reload_running_server(folder: Path, check: NatsOptions | None = None) -> bool:
    """SIGHUP the private server of ``folder`` (if it runs) after its users changed; with
    ``check``, wait until that user is accepted. True when a server was told."""
    pid = running_server_pid(folder)
    if pid is None:
        return False
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        return False
    if check is not None:
        await wait_until_accepted(check)
    return True
