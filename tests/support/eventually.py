"""The one way a test waits for something: poll a condition until it holds, within a
generous deadline.

A slow machine (two cores at load 17) makes things take longer, never makes them false; so a
test never sleeps a fixed time and hopes, it polls the condition it needs. On timeout the
failure says what was awaited and the last value seen, which is what one needs to tell a hang
from a wrong answer.

``eventually`` is for async tests (the condition may be a coroutine function),
``eventually_sync`` for sync ones (a child process, a blocking HTTP client).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import linecache
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar, overload

T = TypeVar("T")

# Long enough for a loaded 2-core machine; pytest-timeout (120 s) still ends a real hang.
TIMEOUT = 60.0
INTERVAL = 0.05


class NotYet(AssertionError):
    """The condition did not hold within the deadline (an assertion failure for pytest)."""


def describe(condition: Callable[..., object]) -> str:
    """A lambda's own source (``lambda n: n >= 3``), else the function's name: what the test
    waited for."""
    name = str(getattr(condition, "__qualname__", repr(condition)))
    code = getattr(condition, "__code__", None)
    if not name.endswith("<lambda>") or code is None:
        return name
    # The body's extent from its instructions' positions: exact even when a line holds two
    # lambdas (a condition and its ``until``).
    spans = [
        (line, col, end_line, end_col)
        for line, end_line, col, end_col in code.co_positions()
        if None not in (line, end_line, col, end_col) and (line, col) != (end_line, end_col)
    ]
    lines = linecache.getlines(code.co_filename)
    if not spans or not lines:
        return name
    first, start = min((line, col) for line, col, _, _ in spans)
    last, end = max((end_line, end_col) for _, _, end_line, end_col in spans)
    text = "".join(lines[first - 1 : last])
    body = text[start : len(text) - len(lines[last - 1]) + end]
    arguments = ", ".join(code.co_varnames[: code.co_argcount])
    return f"lambda{' ' if arguments else ''}{arguments}: {' '.join(body.split())}"


class _Wait:
    """One wait: its deadline, the last value seen, and the failure it ends in."""

    def __init__(
        self,
        condition: Callable[[], object],
        until: Callable[[Any], object] | None,
        what: str | Callable[[], str] | None,
        timeout: float,
        ignoring: tuple[type[BaseException], ...],
    ) -> None:
        self.condition = condition
        self.until = until
        self.what = what
        self.timeout = timeout
        self.ignoring = ignoring
        self.deadline = time.monotonic() + timeout
        self.last: object = None

    def settled(self, value: object) -> bool:
        if self.until(value) if self.until is not None else value:
            return True
        self.last = value
        return False

    @contextlib.contextmanager
    def attempt(self) -> Iterator[None]:
        """An exception the test named is "not yet", and the last value seen."""
        try:
            yield
        except self.ignoring as exc:
            self.last = exc

    def overdue(self) -> None:
        if time.monotonic() <= self.deadline:
            return
        what = self.what() if callable(self.what) else self.what
        if what is None:
            what = describe(self.condition)
            if self.until is not None:
                what = f"{what}, until {describe(self.until)}"
        raise NotYet(f"not within {self.timeout:g} s: {what}; last value seen: {self.last!r}")


@overload
async def eventually(
    condition: Callable[[], Awaitable[T]],
    *,
    timeout: float = ...,  # noqa: ASYNC109
    interval: float = ...,
    what: str | Callable[[], str] | None = ...,
    ignoring: tuple[type[BaseException], ...] = ...,
    until: Callable[[T], object] | None = ...,
) -> T: ...


@overload
async def eventually(
    condition: Callable[[], T],
    *,
    timeout: float = ...,  # noqa: ASYNC109
    interval: float = ...,
    what: str | Callable[[], str] | None = ...,
    ignoring: tuple[type[BaseException], ...] = ...,
    until: Callable[[T], object] | None = ...,
) -> T: ...


async def eventually(
    condition: Callable[[], Any],
    *,
    # Not asyncio.timeout: on expiry the failure must carry the last value seen.
    timeout: float = TIMEOUT,  # noqa: ASYNC109
    interval: float = INTERVAL,
    what: str | Callable[[], str] | None = None,
    ignoring: tuple[type[BaseException], ...] = (),
    until: Callable[[Any], object] | None = None,
) -> Any:
    """Poll ``condition`` (a function, or a coroutine function) until it returns a truthy
    value, and return that value. With ``until``, the condition is a probe: poll until
    ``until(value)`` holds (the failure then shows the probe's last value, e.g. a count).
    ``what`` names what is awaited; a function there is asked only on failure (e.g. for a
    child's output so far).
    An exception of a type in ``ignoring`` counts as "not yet"; any other propagates at once
    (a child that died fails fast)."""
    wait = _Wait(condition, until, what, timeout, ignoring)
    while True:
        with wait.attempt():
            value = condition()
            if inspect.isawaitable(value):
                value = await value
            if wait.settled(value):
                return value
        wait.overdue()
        await asyncio.sleep(interval)


def eventually_sync(
    condition: Callable[[], T],
    *,
    timeout: float = TIMEOUT,
    interval: float = INTERVAL,
    what: str | Callable[[], str] | None = None,
    ignoring: tuple[type[BaseException], ...] = (),
    until: Callable[[T], object] | None = None,
) -> T:
    """``eventually`` for sync code: blocks the thread between polls."""
    wait = _Wait(condition, until, what, timeout, ignoring)
    while True:
        with wait.attempt():
            value = condition()
            if wait.settled(value):
                return value
        wait.overdue()
        time.sleep(interval)
