"""The drawing process, seen from the engine's process: started on the first drawing, asked one
drawing at a time over its stdin and stdout (drawings.py has the wire, draw_main.py the other side),
started again when it died.

A plain child interpreter (``python -c`` running ``draw_main.main``), as the projector's
(projections/fold_process.py): fork would copy this process's connections and threads. It
runs in a session of its own (a Ctrl-C at the terminal is the parent's to handle) and ends
when its stdin does, so a parent killed outright leaves no drawing process behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Sequence

import msgspec

from lablink.dashboard.drawings import LENGTH, Ask, Drawing, Drawn, Live, Where, frame
from lablink.errors import LabLinkError

log = logging.getLogger(__name__)

COMMAND = "from lablink.dashboard.draw_main import main; main()"
# How long a closing process gets to finish its drawing and exit before it is killed.
CLOSE_SECONDS = 5.0


class DrawingFailed(LabLinkError):
    """A page's parts could not be drawn: the drawing raised, or the process died twice."""


class DrawingProcess:
    def __init__(self, where: Where) -> None:
        self.where = where
        self._child: asyncio.subprocess.Process | None = None
        self._asks = msgspec.msgpack.Encoder()
        self._answers = msgspec.msgpack.Decoder(Drawn)
        self.closed = False
        # How often a process was started (the first, and each after one died).
        self.starts = 0

    @property
    def pid(self) -> int | None:
        return self._child.pid if self._child is not None else None

    async def draw(self, drawings: Sequence[Drawing], live: Live) -> list[str]:
        """Each of ``drawings`` as the views are now; a process that died is started again
        and asked once more."""
        if self.closed:
            raise DrawingFailed("the dashboard's drawing process is closed")
        body = self._asks.encode(Ask(list(drawings), live))
        try:
            answer = await self._ask(body)
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            log.warning("the dashboard's drawing process ended (%s): starting it again", exc)
            await self._reap()
            try:
                answer = await self._ask(body)
            except (ConnectionError, asyncio.IncompleteReadError) as again:
                await self._reap()
                raise DrawingFailed(
                    f"the dashboard's drawing process ended twice in one drawing: {again}"
                ) from again
        if answer.error is not None:
            raise DrawingFailed(f"drawing {[d.name for d in drawings]}: {answer.error}")
        return answer.html

    async def _ask(self, body: bytes) -> Drawn:
        child = await self._started()
        assert child.stdin is not None
        assert child.stdout is not None
        try:
            child.stdin.write(frame(body))
            await child.stdin.drain()
            (size,) = LENGTH.unpack(await child.stdout.readexactly(LENGTH.size))
            return self._answers.decode(await child.stdout.readexactly(size))
        except asyncio.CancelledError:
            # Its answer would be read as the next drawing's: that process is done with.
            self._child = None
            with contextlib.suppress(ProcessLookupError):
                child.kill()
            raise

    async def _started(self) -> asyncio.subprocess.Process:
        if self._child is not None and self._child.returncode is None:
            return self._child
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            COMMAND,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        assert child.stdin is not None
        child.stdin.write(frame(msgspec.msgpack.encode(self.where)))
        self._child = child
        self.starts += 1
        return child

    async def _reap(self) -> None:
        child, self._child = self._child, None
        if child is None:
            return
        with contextlib.suppress(ProcessLookupError):
            child.kill()
        await child.wait()

    async def close(self) -> None:
        """Its stdin ends, so it exits; killed if it has not within CLOSE_SECONDS."""
        self.closed = True
        child, self._child = self._child, None
        if child is None:
            return
        assert child.stdin is not None
        with contextlib.suppress(ConnectionError):
            child.stdin.close()
        try:
            await asyncio.wait_for(child.wait(), CLOSE_SECONDS)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                child.kill()
            await child.wait()
