"""`lablink serve` as a real child process, for the end-to-end and the browser tests: its
JSON log lines to wait on, its children to check on, and a fixture that stops every server a
test started (pass or fail), with whatever it spawned. Another `lablink` command (an agent:
``command=``) runs the same way, its log read and its process stopped by the same fixture."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

LABLINK = str(Path(sys.executable).parent / "lablink")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


Process = tuple[int, str, str]  # pid, start time (clock ticks after boot), command line


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()  # state, ppid, ..., starttime at [19]


def children(pid: int) -> list[Process]:
    """The live child processes of ``pid`` (the embedded nats-server, for one)."""
    found: list[Process] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat(int(entry.name))
        if fields is not None and fields[1] == str(pid) and fields[0] != "Z":
            try:
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
            except OSError:
                continue
            found.append((int(entry.name), fields[19], command))
    return found


def alive(process: Process) -> bool:
    """Still running (not exited, not a zombie, and not a new process under a reused pid)."""
    fields = _stat(process[0])
    return fields is not None and fields[0] != "Z" and fields[19] == process[1]


class Server:
    """A `lablink serve` child whose output lines the test can wait for."""

    def __init__(
        self,
        data_dir: Path,
        port: int,
        settings: dict[str, str] | None = None,
        *,
        command: Sequence[str] | None = None,
    ) -> None:
        """``settings``: more LABLINK_* variables (LABLINK_AGENTS=off, say). ``command``:
        another `lablink` command and its arguments than `serve --port <port>` (`agent
        --config lab.toml`: ``port`` is then unused)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("LABLINK_")}
        env.update(
            LABLINK_DATA_DIR=str(data_dir),
            LABLINK_HOST="127.0.0.1",
            LABLINK_TIMEZONE="UTC",
            LABLINK_LOG_LEVEL="info",
        )
        env.update(settings or {})
        self.port = port
        # LABLINK_TLS_CERT/KEY: the server answers https only.
        self.scheme = "https" if env.get("LABLINK_TLS_CERT") else "http"
        self.proc = subprocess.Popen(
            [LABLINK, *(command or ("serve", "--port", str(port)))],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        self.spawned: list[Process] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                record = None
            if not isinstance(record, dict):
                record = {"event": "raw", "line": line.rstrip("\n")}
            self.lines.put(record)
        self.lines.put({"event": "eof", "returncode": self.proc.wait()})

    def wait_for(self, event: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                record = self.lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                raise AssertionError(f"no {event!r} within {timeout}s: {self.seen}") from None
            self.seen.append(record)
            if record.get("event") == event:
                return record
            if record.get("event") == "eof":
                raise AssertionError(f"the server exited before {event!r}: {self.seen}")

    def printed(self) -> list[str]:
        return [r["line"] for r in self.seen if r.get("event") == "raw"]

    def listening(self) -> dict[str, Any]:
        record = self.wait_for("api listening")
        assert record["url"] == f"{self.scheme}://127.0.0.1:{self.port}"
        return record

    def track(self) -> None:
        """Note the server's child processes (the embedded nats-server), to check on later."""
        self.spawned += [p for p in children(self.proc.pid) if p not in self.spawned]

    def crash(self) -> None:
        self.track()
        self.proc.send_signal(signal.SIGKILL)
        assert self.proc.wait(timeout=60) == -signal.SIGKILL

    def terminate(self) -> None:
        self.track()
        self.proc.send_signal(signal.SIGTERM)

    def cleanup(self) -> None:
        """After the test, pass or fail: stop the server, then its leftovers, by pid."""
        if self.proc.poll() is None:
            self.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        for process in self.spawned:
            if alive(process):
                os.kill(process[0], signal.SIGKILL)


def accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return False
    return True


def admin_client(data: Path, servers: list[Server]) -> tuple[str, dict[str, str]]:
    """A `lablink serve` on a free port, listening: its URL and its admin key's header."""
    port = free_port()
    server = Server(data, port)
    servers.append(server)
    server.listening()
    key = (data / "admin.key").read_text().strip()
    return f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {key}"}


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    """Every server a test starts is stopped afterwards, with whatever it spawned."""
    started: list[Server] = []
    yield started
    for server in started:
        server.cleanup()
