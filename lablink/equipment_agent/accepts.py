"""Run commands accepted together share one disk wait.

Every command is in the ledger, on the disk, before its instrument is touched (the guarantee
that a redelivered command never drives an instrument twice). Commands that arrive while an
accept is being written wait for the next commit, and all of them go in it: one sync for a
batch, not one per command, when many instruments are busy at once (a group commit).
"""

from __future__ import annotations

import asyncio

from lablink.equipment_agent.ledger import Ledger

Command = tuple[str, str, str]  # execution id, job id, equipment id


class Accepts:
    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger
        self._waiting: list[tuple[Command, asyncio.Future[bool]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def accept(self, execution_id: str, job_id: str, equipment_id: str) -> bool:
        """Once the command is durable: False when this execution id was seen before."""
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiting.append(((execution_id, job_id, equipment_id), done))
        if self._writer is None:
            self._writer = asyncio.create_task(self._write(), name="ledger accepts")
        return await done

    async def _write(self) -> None:
        batch: list[tuple[Command, asyncio.Future[bool]]] = []
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                try:
                    fresh = await asyncio.to_thread(
                        self._ledger.accept_many, [command for command, _ in batch]
                    )
                except Exception as exc:  # each waiter sees the ledger's error as its own
                    for _, done in batch:
                        if not done.done():
                            done.set_exception(exc)
                    continue
                for (_, done), result in zip(batch, fresh, strict=True):
                    if not done.done():
                        done.set_result(result)
        finally:
            self._writer = None
            # Cancelled (the agent closes): nobody is told a command was accepted that the
            # ledger may not hold.
            for _, done in [*batch, *self._waiting]:
                if not done.done():
                    done.cancel()
            self._waiting = []
