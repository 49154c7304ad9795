"""The embedded agent as a process of its own (``LABLINK_EMBEDDED_AGENT=process``).

`lablink serve` runs the agent of its simulated bench (or of LABLINK_AGENT_CONFIG's lab.toml)
as a child: ``python -m lablink.cli agent --simulated`` (or ``--config``), the command a lab
PC runs, so the agent gets a core and a GIL of its own. The child finds the bus as any
`lablink agent --data-dir` does: LABLINK_NATS_*, else the private server's URL file and its
own ``agent-<id>`` user (made, and the server reloaded, the first time).

Both sides of the parent–child contract are here:

- **Ready.** The child writes one byte to an inherited pipe (``--ready-fd``) once its agent
  has started (connected, subscribed, announced). Until then, and while it is down, the
  supervised task ``task.agent`` is failing; then ``ok``, with the child's ``pid``.
- **Supervised.** A child that exits while serve runs is logged with its exit code and
  started again after the supervisor's capped backoff. The backoff starts over only once a
  child has stayed up ``STABLE_SECONDS``: a child that dies right after starting does not
  restart every half second.
- **Dies with serve.** At serve's stop: SIGTERM, up to ``STOP_GRACE_SECONDS`` to close
  (running executions stopped in their safe state), then SIGKILL. When serve dies without
  stopping (SIGKILL), the kernel sends the child SIGTERM (``PR_SET_PDEATHSIG``, as for the
  private nats-server in ``bus/server.py``).
- **Output.** The child writes to serve's own stdout and stderr: one JSON line per record.
- **Signals.** The child runs in a session of its own: a Ctrl-C at serve's terminal reaches
  serve only, which then stops the child in its order (after the executor), not both at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys
import time
from collections.abc import Awaitable, Mapping
from pathlib import Path
from typing import TypeVar

import structlog

from lablink.errors import LabLinkError
from lablink.supervision import Supervisor, Watch

log = structlog.get_logger(tag="scheduler")

TASK = "task.agent"
# How long a child may take from its start to its agent started (imports, the bench opened,
# NATS reached); past it the child is killed and started again.
READY_TIMEOUT_SECONDS = 60.0
# How long a stopping child may take to stop its executions and say goodbye.
STOP_GRACE_SECONDS = 10.0
# Up this long, a child has started well: its next exit restarts it after the first delay.
STABLE_SECONDS = 30.0

T = TypeVar("T")

PR_SET_PDEATHSIG = 1
# Looked up before any fork: the child, between fork and exec, only calls it (a dlopen there
# could wait forever on a lock another of serve's threads held at the fork).
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when serve dies, even by SIGKILL. The kernel sends
    it when the *thread* that forked ends: the event loop's, which lives as long as serve."""
    if _prctl is not None:
        _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class AgentProcessExited(LabLinkError, RuntimeError):
    """The agent's child process ``pid`` exited by itself with ``returncode`` (negative: the
    signal that killed it), before it said it was ready or while it ran."""

    def __init__(self, pid: int, returncode: int, *, ready: bool) -> None:
        self.pid = pid
        self.returncode = returncode
        self.ready = ready
        when = "" if ready else " before it was ready"
        super().__init__(f"the agent process (pid {pid}) exited{when} with {exit_text(returncode)}")


class AgentProcessNotReady(LabLinkError, TimeoutError):
    """The agent's child process ``pid`` did not say it was ready within ``seconds``."""

    def __init__(self, pid: int, seconds: float) -> None:
        self.pid = pid
        self.seconds = seconds
        super().__init__(f"the agent process (pid {pid}) was not ready within {seconds:g} s")


def exit_text(returncode: int) -> str:
    """``code 1``, or ``signal SIGKILL`` for a child a signal ended."""
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"code {returncode}"


def agent_command(
    *, config: Path | None, data_dir: Path, ready_fd: int, python: str = sys.executable
) -> list[str]:
    """The child's command line: the agent of ``config``, else of the simulated bench."""
    which = ["--config", str(config.resolve())] if config is not None else ["--simulated"]
    return [
        python,
        "-m",
        "lablink.cli",
        "agent",
        *which,
        "--data-dir",
        str(data_dir.resolve()),
        "--ready-fd",
        str(ready_fd),
    ]


def child_environment(base: Mapping[str, str], *, realtime: bool) -> dict[str, str]:
    """The child's environment: serve's own, and its realtime setting (which may have come
    from an option rather than LABLINK_REALTIME)."""
    env = dict(base)
    env["LABLINK_REALTIME"] = "1" if realtime else "0"
    return env


def signal_ready(fd: int) -> None:
    """In the child, once its agent has started: tell the parent (see ``AgentProcess``)."""
    try:
        os.write(fd, b"1")
    finally:
        os.close(fd)


class AgentProcess:
    """`lablink agent` as serve's supervised child: ``await start()`` (the first child, ready,
    and its supervision), then ``await aclose()`` once the supervisor has stopped."""

    def __init__(
        self,
        supervisor: Supervisor,
        *,
        config: Path | None,
        data_dir: Path,
        env: Mapping[str, str],
    ) -> None:
        """``config``: the lab.toml; None for the simulated bench. ``env``: the child's."""
        self._supervisor = supervisor
        self._config = config
        self._data_dir = data_dir
        self._env = dict(env)
        self._proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        """The first child, ready: a child that cannot start stops serve's start, as an
        in-process agent that cannot start does."""
        await self._spawn()
        self._supervisor.spawn(TASK, self._keep)

    async def aclose(self) -> None:
        """Stop the child: SIGTERM, then SIGKILL after ``STOP_GRACE_SECONDS``."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
        try:
            async with asyncio.timeout(STOP_GRACE_SECONDS):
                await proc.wait()
        except TimeoutError:
            log.warning(
                "agent process did not stop in time; killed",
                pid=proc.pid,
                grace_seconds=STOP_GRACE_SECONDS,
            )
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        log.info("agent process stopped", pid=proc.pid, returncode=proc.returncode)

    async def _keep(self, watch: Watch) -> None:
        """The supervised body: (re)start the child, then wait for its exit, which raises
        (the supervisor logs it, shows it failing and restarts after its backoff)."""
        proc = self._proc
        if proc is None:
            proc = await _unless_stopping(watch, self._spawn())
            if proc is None:
                return  # stopping: aclose stops the child a late spawn left
        started = time.monotonic()
        # Not watch.ok(): that would start the backoff over for a child yet to prove itself.
        watch.health.set(watch.name, "ok", "running", failures=watch.failures, pid=proc.pid)
        returncode = await _unless_stopping(watch, self._exit(watch, proc))
        if returncode is None:
            return  # stopping: the child stops after the executor (aclose), as an agent does
        self._proc = None
        log.error(
            "agent process exited",
            pid=proc.pid,
            returncode=returncode,
            exit=exit_text(returncode),
            ran_seconds=round(time.monotonic() - started, 3),
        )
        raise AgentProcessExited(proc.pid, returncode, ready=True)

    async def _exit(self, watch: Watch, proc: asyncio.subprocess.Process) -> int:
        """The child's exit code; once it has stayed up long enough, the backoff restarts."""
        try:
            async with asyncio.timeout(STABLE_SECONDS):
                return await proc.wait()
        except TimeoutError:
            watch.ok("running", pid=proc.pid)
        return await proc.wait()

    async def _spawn(self) -> asyncio.subprocess.Process:
        """A new child, once it says its agent has started; killed if it does not."""
        read_fd, write_fd = os.pipe()
        try:
            command = agent_command(config=self._config, data_dir=self._data_dir, ready_fd=write_fd)
            try:
                proc = await asyncio.create_subprocess_exec(
                    *command,
                    env=self._env,
                    stdin=asyncio.subprocess.DEVNULL,  # its own session: no terminal to read
                    pass_fds=(write_fd,),
                    start_new_session=True,
                    preexec_fn=_die_with_parent,
                )
            finally:
                os.close(write_fd)  # the child's copy alone: its exit closes the pipe
            self._proc = proc  # from here on, aclose stops it whatever happens below
            log.info("agent process started", pid=proc.pid, command=command[3:])
            fd, read_fd = read_fd, -1  # _read_one closes it, whatever happens
            ready = await _read_one(fd, READY_TIMEOUT_SECONDS)
        except BaseException:
            if read_fd >= 0:
                os.close(read_fd)
            raise
        if ready is None:
            await self.aclose()
            raise AgentProcessNotReady(proc.pid, READY_TIMEOUT_SECONDS)
        if not ready:
            self._proc = None
            returncode = await proc.wait()
            log.error(
                "agent process exited before it was ready",
                pid=proc.pid,
                returncode=returncode,
                exit=exit_text(returncode),
            )
            raise AgentProcessExited(proc.pid, returncode, ready=False)
        log.info("agent process ready", pid=proc.pid)
        return proc


async def _read_one(fd: int, seconds: float) -> bytes | None:
    """One byte from the pipe ``fd`` (closed afterwards): ``b""`` when the writer closed it
    without writing (the child exited), None when nothing came within ``seconds``."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", buffering=0)
    )
    try:
        async with asyncio.timeout(seconds):
            return await reader.read(1)
    except TimeoutError:
        return None
    finally:
        transport.close()


async def _unless_stopping(watch: Watch, work: Awaitable[T]) -> T | None:
    """``work``'s result, or None when the supervisor stops first (``work`` is cancelled)."""
    task = asyncio.ensure_future(work)
    stopped = asyncio.ensure_future(_stopped(watch))
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    return None if task.cancelled() else task.result()


async def _stopped(watch: Watch) -> None:
    while not await watch.sleep(3600):
        pass
