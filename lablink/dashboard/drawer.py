"""Where the pages' pushed parts are drawn (pushed.PageCards): off the engine's event loop, one
drawing at a time, on a thread of its own with a reader connection it keeps, and within a
share of the time.

A job's page is its summary, executions and chart; the jobs list a 50-row table. Drawn on the
loop, each held it for tens of milliseconds, and the engine's fires waited that long. Drawn on
a thread they still take the interpreter from the loop while they run Python, so the drawings
of 20 screens of 20 different jobs, each changing every second, cost the engine's dispatch
p99 a multiple of itself (BENCHMARKS.md, "Dashboard"). So the drawings are paced: after a
drawing that took *d*, the next starts no sooner than ``d / SHARE - d`` later, which keeps
them to ``SHARE`` of one core whatever the number of screens. Under such a load a page's
parts come every few seconds instead of every second; each is drawn as the views are when it
is drawn, so a screen that waited misses nothing (its next drawing shows it all).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from litestar import Litestar

from lablink.api.context import ApiContext

# The share of one core the drawings may take, on average.
SHARE = 0.1
STATE_KEY = "dashboard_drawer"

Draw = Callable[[ApiContext], str]


class Drawer:
    def __init__(
        self,
        context: ApiContext,
        *,
        share: float = SHARE,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if not 0 < share <= 1:
            raise ValueError(f"share {share!r}: must be in (0, 1]")
        self.context = context
        self.share = share
        self.clock = clock
        self.sleep = sleep
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="dashboard-draw")
        self._conn: sqlite3.Connection | None = None
        self._turn = asyncio.Lock()
        self._next = 0.0
        # What the drawings cost: the count and the seconds they took, and the seconds waited.
        self.drawings = 0
        self.spent = 0.0
        self.waited = 0.0

    async def draw(self, draws: Sequence[Draw]) -> list[str]:
        """Each of ``draws``, in order, as the views are now."""
        async with self._turn:
            wait = self._next - self.clock()
            if wait > 0:
                self.waited += wait
                await self.sleep(wait)
            started = self.clock()
            try:
                loop = asyncio.get_running_loop()
                return await loop.run_in_executor(self._executor, self._draw, list(draws))
            finally:
                spent = self.clock() - started
                self.drawings += 1
                self.spent += spent
                self._next = self.clock() + spent * (1.0 / self.share - 1.0)

    def _draw(self, draws: list[Draw]) -> list[str]:
        # On the drawing thread: the connection is opened, used and closed there.
        if self._conn is None:
            self._conn = self.context.connect_reader()
        reading = self.context.reading(self._conn)
        return [draw(reading) for draw in draws]

    def close(self) -> None:
        def closing() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        self._executor.submit(closing).result()
        self._executor.shutdown(wait=True)


def drawer_of(app: Litestar) -> Drawer:
    found: Drawer | None = app.state.get(STATE_KEY)
    if found is None:
        found = app.state[STATE_KEY] = Drawer(app.state["context"])
    return found


def close_drawer(app: Litestar) -> None:
    """On the app's shutdown: the drawing thread and its connection end."""
    found: Drawer | None = app.state.get(STATE_KEY)
    if found is not None:
        found.close()
        del app.state[STATE_KEY]
