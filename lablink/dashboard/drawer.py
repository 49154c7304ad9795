"""Where the pages' pushed parts are drawn (pushed.PageCards): in a process of their own
(draw_process.py), one drawing at a time, within a share of the time.

A job's page is its summary, executions and chart; the jobs list a 50-row table. Drawn on the
loop, each held it for tens of milliseconds, and the engine's fires waited that long. Drawn on
a thread they still held the interpreter's lock while they rendered: 20 screens of different
pages cost the engine's dispatch p99 20-31 % (BENCHMARKS.md, "Dashboard"). In a process of
their own they take none of the engine's interpreter, only a core's time, which the other
processes of the machine (the projector, nats-server) need too; so the drawings are still
paced: after a drawing that took *d*, the next starts no sooner than ``d / SHARE - d`` later,
which keeps them to ``SHARE`` of one core whatever the number of screens. Each is drawn as
the views are when it is drawn, so a screen that waited misses nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence

from litestar import Litestar

from lablink.api.context import ApiContext
from lablink.dashboard.draw_process import DrawingProcess
from lablink.dashboard.drawings import Drawing, Live, Where

# The share of one core the drawings may take, on average.
SHARE = 0.25
STATE_KEY = "dashboard_drawer"

# What draws: the drawing process, or (tests of the pacing and sharing) a twin.
Canvas = Callable[[Sequence[Drawing], Live], Awaitable[list[str]]]


class Drawer:
    def __init__(
        self,
        context: ApiContext,
        *,
        canvas: Canvas | None = None,
        share: float = SHARE,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if not 0 < share <= 1:
            raise ValueError(f"share {share!r}: must be in (0, 1]")
        self.context = context
        self.process: DrawingProcess | None = None
        if canvas is None:
            self.process = DrawingProcess(where_of(context))
            canvas = self.process.draw
        self.canvas = canvas
        self.share = share
        self.clock = clock
        self.sleep = sleep
        self._turn = asyncio.Lock()
        self._next = 0.0
        # What the drawings cost: the count and the seconds they took, and the seconds waited.
        self.drawings = 0
        self.spent = 0.0
        self.waited = 0.0

    async def draw(self, drawings: Sequence[Drawing]) -> list[str]:
        """Each of ``drawings``, in order, as the views are now."""
        async with self._turn:
            wait = self._next - self.clock()
            if wait > 0:
                self.waited += wait
                await self.sleep(wait)
            started = self.clock()
            try:
                return await self.canvas(list(drawings), live_of(self.context))
            finally:
                spent = self.clock() - started
                self.drawings += 1
                self.spent += spent
                self._next = self.clock() + spent * (1.0 / self.share - 1.0)

    async def close(self) -> None:
        if self.process is not None:
            await self.process.close()


def where_of(context: ApiContext) -> Where:
    settings = context.settings
    return Where(
        log_path=str(settings.db_path),
        views_path=str(context.views_path) if context.views_path is not None else None,
        timezone=settings.timezone,
        calibration_warn_days=settings.calibration_warn_days,
        require_calibration=settings.require_calibration,
    )


def live_of(context: ApiContext) -> Live:
    """What the drawings need of this process now: its clock, the instruments' sightings
    and queues (the log has none of them)."""
    return Live(
        now=context.clock.now(),
        sightings=context.sightings(),
        queues={eid: (depth.queued, depth.running) for eid, depth in context.queues().items()},
    )


def drawer_of(app: Litestar) -> Drawer:
    found: Drawer | None = app.state.get(STATE_KEY)
    if found is None:
        found = app.state[STATE_KEY] = Drawer(app.state["context"])
    return found


async def close_drawer(app: Litestar) -> None:
    """On the app's shutdown: the drawing process ends."""
    found: Drawer | None = app.state.get(STATE_KEY)
    if found is not None:
        del app.state[STATE_KEY]
        await found.close()
