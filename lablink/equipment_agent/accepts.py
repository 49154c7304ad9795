"""Run commands accepted together, and the outcomes reached meanwhile, share one disk wait.

Every command is in the ledger, on the disk, before its instrument is touched (the guarantee
that a redelivered command never drives an instrument twice). Commands that arrive while an
accept is being written wait for the next commit, and all of them go in it: one sync for a
batch, not one per command, when many instruments are busy at once (a group commit).

Every outcome is on the disk too before its report goes out (the reports stream is only a
copy; see ``ledger``). An outcome does not need the disk at once: while commands come closer
together than ``linger`` (the last two accepts' gap), it waits up to ``linger`` for the next
accept and goes in its commit, and with no accept by then it is written on its own. At a
steady rate of commands the outcomes cost no sync of their own; when commands are further
apart, an outcome is written at once (waiting would only delay its report).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lablink.equipment_agent.ledger import Ledger
from lablink.instruments.execution import Outcome

Command = tuple[str, str, str]  # execution id, job id, equipment id

# How long an outcome waits for an accept to share its commit: at 100 commands a second
# (10 ms apart) nearly every outcome finds one; alone, its report leaves this much later.
FINISH_LINGER_SECONDS = 0.02


@dataclass
class _Finish:
    execution_id: str
    outcome: Outcome
    deadline: float
    done: asyncio.Future[None]


class Accepts:
    def __init__(
        self,
        ledger: Ledger,
        *,
        linger: float = FINISH_LINGER_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ledger = ledger
        self.linger = linger
        # When the last accept came, and how long before it the one before had come.
        self._monotonic = monotonic
        self._last_accept: float | None = None
        self._gap: float | None = None
        self._waiting: list[tuple[Command, asyncio.Future[bool]]] = []
        self._finishing: list[_Finish] = []
        self._arrived = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None

    async def accept(self, execution_id: str, job_id: str, equipment_id: str) -> bool:
        """Once the command is durable: False when this execution id was seen before."""
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        now = self._monotonic()
        if self._last_accept is not None:
            self._gap = now - self._last_accept
        self._last_accept = now
        self._waiting.append(((execution_id, job_id, equipment_id), done))
        self._arrived.set()
        self._start_writer()
        return await done

    async def finish(self, execution_id: str, outcome: Outcome) -> None:
        """Once the outcome is durable (with the next accept's commit, or on its own: after
        ``linger``, or at once when commands come further apart); raises what kept the
        ledger from writing it."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        busy = self._gap is not None and self._gap <= self.linger
        deadline = loop.time() + (self.linger if busy else 0.0)
        self._finishing.append(_Finish(execution_id, outcome, deadline, done))
        self._start_writer()
        await done

    async def aclose(self) -> None:
        """Write what waits now (outcomes no longer linger) and return once it is written."""
        self.linger = 0.0
        for finish in self._finishing:
            finish.deadline = 0.0
        self._arrived.set()
        writer = self._writer
        if writer is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await writer

    def _start_writer(self) -> None:
        if self._writer is None:
            self._writer = asyncio.create_task(self._write(), name="ledger accepts")

    async def _write(self) -> None:
        loop = asyncio.get_running_loop()
        accepts: list[tuple[Command, asyncio.Future[bool]]] = []
        finishes: list[_Finish] = []
        try:
            while self._waiting or self._finishing:
                if not self._waiting:
                    # Only outcomes: they wait for company until the oldest one's deadline.
                    self._arrived.clear()
                    delay = self._finishing[0].deadline - loop.time()
                    if delay > 0:
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(delay):
                                await self._arrived.wait()
                accepts, self._waiting = self._waiting, []
                finishes, self._finishing = self._finishing, []
                try:
                    fresh = await asyncio.to_thread(
                        self._ledger.commit,
                        [command for command, _ in accepts],
                        [(f.execution_id, f.outcome) for f in finishes],
                    )
                except Exception as exc:  # each waiter sees the ledger's error as its own
                    for done in _futures(accepts, finishes):
                        if not done.done():
                            done.set_exception(exc)
                    continue
                for (_, accepted), result in zip(accepts, fresh, strict=True):
                    if not accepted.done():
                        accepted.set_result(result)
                for finish in finishes:
                    if not finish.done.done():
                        finish.done.set_result(None)
        finally:
            self._writer = None
            # Cancelled (the agent closes): nobody is told a command was accepted, or an
            # outcome kept, that the ledger may not hold.
            for done in _futures([*accepts, *self._waiting], [*finishes, *self._finishing]):
                if not done.done():
                    done.cancel()
            self._waiting = []
            self._finishing = []


def _futures(
    accepts: list[tuple[Command, asyncio.Future[bool]]], finishes: list[_Finish]
) -> list[asyncio.Future[Any]]:
    return [*(done for _, done in accepts), *(finish.done for finish in finishes)]
