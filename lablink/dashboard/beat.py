"""The live streams' one poller: the *beat*.

Each live stream used to sleep a quarter of a second and look at the folded position on its
own: 20 screens woke the engine's event loop 80 times a second, each wake-up resuming the
stream's task through Litestar's and uvicorn's layers to find, three times in four, nothing
to send (BENCHMARKS.md, "Dashboard"). The beat is one task per app that looks every
``every`` seconds (the clock and the folded position: an attribute read, no I/O) and wakes
only the streams that have something to do then: each waits with a predicate of its own
(``until``), asked at each pass of the beat, so that a stream with nothing to send, no tick
and no keep-alive due is not woken at all. Every stream woken by a pass is given the same
clock reading and position, so that the screens send the same frame at the same pass
(frames.py).

The task runs while a stream waits and ends when none does (an app without screens has no
task; the last screen gone, it is cancelled). A pass that finds the app closing wakes
every stream (``Pulse.closing``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

# Due: given the folded position and the clock's reading, whether a stream has work now.
Due = Callable[[int, float], bool]


@dataclass(frozen=True)
class Pulse:
    """What the pass that woke a stream saw; one for every stream it woke, which may keep
    there what they all send of it (``drawn``: a tick's messages, live.tick_pass)."""

    folded: int
    now: float
    closing: bool = False
    drawn: dict[Hashable, Any] = field(default_factory=dict, compare=False)


class Beat:
    """One poller for every live stream of an app. ``folded`` reads the views' position,
    ``closing`` whether the app is closing; ``clock`` is the streams' monotonic clock."""

    def __init__(
        self,
        folded: Callable[[], int],
        closing: Callable[[], bool],
        *,
        every: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.folded = folded
        self.closing = closing
        self.every = every
        self.clock = clock
        self._waiting: dict[asyncio.Future[Pulse], Due] = {}
        self._task: asyncio.Task[None] | None = None
        # Passes run, and streams woken (the tests' and the benchmark's counts).
        self.passes = 0
        self.woken = 0

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def until(self, due: Due) -> Pulse:
        """The first pass at which ``due(folded, now)`` holds, or the app closes."""
        future: asyncio.Future[Pulse] = asyncio.get_running_loop().create_future()
        self._waiting[future] = due
        if not self.running:
            self._task = asyncio.create_task(self._run(), name="live-beat")
        try:
            return await future
        finally:
            # Woken, failed or cancelled (the screen went away): no longer waiting. The last
            # screen gone, the beat stops at once rather than after its sleep.
            left = self._waiting.pop(future, None) is not None
            if left and not self._waiting and self._task is not None:
                self._task.cancel()
                self._task = None

    async def _run(self) -> None:
        while self._waiting:
            await asyncio.sleep(self.every)
            try:
                self._pass()
            except Exception as exc:
                # Handed to the waiting streams, which end with it (as each did on its own).
                for future in list(self._waiting):
                    if not future.done():
                        future.set_exception(exc)
                self._waiting.clear()

    def _pass(self) -> None:
        self.passes += 1
        if not self._waiting:
            return
        now = self.clock()
        folded = self.folded()
        closing = self.closing()
        pulse: Pulse | None = None
        for future, due in list(self._waiting.items()):
            if future.done():
                continue
            if closing or due(folded, now):
                pulse = pulse or Pulse(folded=folded, now=now, closing=closing)
                future.set_result(pulse)
                del self._waiting[future]
                self.woken += 1
