"""Background loops that never die and never spin.

Every long-running task of a LabLink process (the engine loop, the group committer, the relay,
retention, the heartbeat watcher, the agents' consumers, the private nats-server) runs under a
``Supervisor``. When its body raises, the exception is logged with its cause, counted, shown in
`/health` as ``failing`` with the last error and since when, and the body is started again after
a capped exponential backoff. A body that returns while the supervisor is not stopping is
restarted the same way: a loop that ends by itself has stopped doing its job.

A body gets a ``Watch`` for reporting without dying: ``ok()`` when it works again (the backoff
starts over), ``await retry_after(exc)`` when it can go on after a pause in place (the engine
keeps its timers while the log cannot be written), ``degraded(reason)`` when it works with less.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import structlog

from lablink.health import Health

log = structlog.get_logger(tag="scheduler")

INITIAL_BACKOFF = 0.5
MAX_BACKOFF = 30.0


class Backoff:
    """Capped exponential delays with a little jitter, so restarts of several loops that
    failed together (a full disk) do not retry in lockstep."""

    def __init__(self, initial: float = INITIAL_BACKOFF, cap: float = MAX_BACKOFF) -> None:
        if not 0 < initial <= cap:
            raise ValueError(f"backoff: expected 0 < initial <= cap, got {initial}, {cap}")
        self.initial = initial
        self.cap = cap
        self._next = initial

    def next(self) -> float:
        delay = self._next
        self._next = min(self._next * 2, self.cap)
        return delay * random.uniform(0.9, 1.1)

    def reset(self) -> None:
        self._next = self.initial


def describe(exc: BaseException) -> str:
    """``Type: message``, with the cause when the message alone would hide it."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    cause = exc.__cause__ or exc.__context__
    if cause is not None and str(cause) and str(cause) not in text:
        text += f" (caused by {type(cause).__name__}: {cause})"
    return text


class Watch:
    """One supervised task's view of itself: what its body reports through."""

    def __init__(
        self, name: str, health: Health, stopping: asyncio.Event, backoff: Backoff
    ) -> None:
        self.name = name
        self.health = health
        self.failures = 0
        self.last_error: str | None = None
        self.failing_since: datetime | None = None
        self._stopping = stopping
        self._backoff = backoff

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def ok(self, reason: str = "", **details: Any) -> None:
        """The task works (again): the backoff starts over."""
        if self.failing_since is not None:
            log.info("task recovered", task=self.name, failures=self.failures)
        self.failing_since = None
        self._backoff.reset()
        self.health.set(self.name, "ok", reason, failures=self.failures, **details)

    def degraded(self, reason: str, **details: Any) -> None:
        self.health.set(self.name, "degraded", reason, failures=self.failures, **details)

    def failed(self, exc: BaseException) -> float:
        """Count and show a failure; returns how long to wait before the next try."""
        self.failures += 1
        self.last_error = describe(exc)
        if self.failing_since is None:
            self.failing_since = self.health.clock.now()
        delay = self._backoff.next()
        log.error(
            "task failed",
            task=self.name,
            error=self.last_error,
            failures=self.failures,
            retry_in=round(delay, 3),
            exc_info=exc,
        )
        self.health.set(
            self.name,
            "failing",
            self.last_error,
            failures=self.failures,
            last_error=self.last_error,
            retry_in=round(delay, 3),
        )
        return delay

    async def sleep(self, seconds: float, *, until: asyncio.Event | None = None) -> bool:
        """Sleep unless the supervisor stops first (or ``until`` is set: the loop's own
        close); True when the supervisor is stopping."""
        if until is None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):  # not wait_for: see bus/relay.py
                    await self._stopping.wait()
            return self.stopping
        waits = [asyncio.ensure_future(self._stopping.wait()), asyncio.ensure_future(until.wait())]
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):  # not wait_for: see bus/relay.py
                    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waits:
                waiter.cancel()
            await asyncio.gather(*waits, return_exceptions=True)
        return self.stopping

    async def retry_after(self, exc: BaseException) -> bool:
        """Record ``exc`` and wait out the backoff; True when the supervisor is stopping."""
        return await self.sleep(self.failed(exc))


Body = Callable[[Watch], Awaitable[None]]


class Supervisor:
    """Runs named bodies until ``aclose``; see the module docstring."""

    def __init__(
        self,
        health: Health,
        *,
        initial_backoff: float = INITIAL_BACKOFF,
        max_backoff: float = MAX_BACKOFF,
    ) -> None:
        self.health = health
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self._stopping = asyncio.Event()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.watches: dict[str, Watch] = {}

    def spawn(self, name: str, body: Body) -> Watch:
        if name in self._tasks:
            raise ValueError(f"a task named {name!r} is already supervised")
        watch = Watch(
            name, self.health, self._stopping, Backoff(self.initial_backoff, self.max_backoff)
        )
        self.watches[name] = watch
        self.health.set(name, "ok", "started")
        self._tasks[name] = asyncio.create_task(self._run(watch, body), name=name)
        return watch

    async def _run(self, watch: Watch, body: Body) -> None:
        while not watch.stopping:
            try:
                await body(watch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if await watch.retry_after(exc):
                    return
            else:
                if watch.stopping:
                    return
                if await watch.retry_after(RuntimeError(f"{watch.name} returned by itself")):
                    return

    async def retire(self, name: str) -> None:
        """End the body named ``name`` for good, its owner having stopped it (a body that
        stopped stays until the supervisor stops, lest it be restarted), so that the name
        may be spawned again: cluster mode makes a new engine, with its committer, each
        time its replica gains the scheduler lease."""
        task = self._tasks.pop(name, None)
        self.watches.pop(name, None)
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(task, return_exceptions=True)
        self.health.remove(name)

    async def aclose(self, grace_seconds: float = 10.0) -> None:
        """Ask every body to stop, wait up to ``grace_seconds``, then cancel the rest."""
        self._stopping.set()
        tasks = list(self._tasks.values())
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=grace_seconds)
        for task in pending:
            log.warning("task did not stop in time; cancelled", task=task.get_name())
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks, return_exceptions=True)
        for name in self._tasks:
            self.health.remove(name)
        self._tasks.clear()

    def __contains__(self, name: str) -> bool:
        return name in self._tasks
