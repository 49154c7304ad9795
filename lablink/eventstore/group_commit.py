"""Group commit: appends that arrive together share one transaction (one fsync).

Callers ``await committer.append(...)``; while one batch is being written in a worker thread
the next requests queue up, so under load batches grow by themselves and durability
(synchronous=FULL) stops capping throughput. Each request is still checked against its own
stream version, and gets its own outcome.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from lablink.errors import StreamVersionConflict
from lablink.events import NewEvent, RecordedEvent
from lablink.eventstore.base import AppendOutcome, AppendRequest, EventStore

_Pending = tuple[AppendRequest, asyncio.Future[list[RecordedEvent]]]


class _Failed:
    def __init__(self, error: Exception) -> None:
        self.error = error


class GroupCommitter:
    def __init__(self, store: EventStore, *, max_batch: int = 2000) -> None:
        self.store = store
        self.max_batch = max_batch
        self._pending: list[_Pending] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.batches = 0  # transactions written, for tests and metrics

    async def __aenter__(self) -> GroupCommitter:
        self._task = asyncio.create_task(self._run(), name="group-commit")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Write everything already queued, then stop."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def append(
        self, stream_id: str, expected_version: int, events: Sequence[NewEvent]
    ) -> list[RecordedEvent]:
        if self._closing or self._task is None:
            raise RuntimeError("the group committer is not running")
        future: asyncio.Future[list[RecordedEvent]] = asyncio.get_running_loop().create_future()
        request = AppendRequest(
            stream_id=stream_id, expected_version=expected_version, events=events
        )
        self._pending.append((request, future))
        self._wakeup.set()
        return await future

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                batch, self._pending = (
                    self._pending[: self.max_batch],
                    self._pending[self.max_batch :],
                )
                await self._write(batch)
            if self._closing:
                return

    async def _write(self, batch: list[_Pending]) -> None:
        requests = [request for request, _ in batch]
        outcomes: list[AppendOutcome | _Failed] = []
        try:
            outcomes.extend(await asyncio.to_thread(self.store.append_batch, requests))
            self.batches += 1
        except Exception:
            # One bad request (say, a duplicate event id) must not fail its neighbours:
            # write them one by one so each caller gets its own answer.
            outcomes = []
            for request in requests:
                try:
                    outcomes.extend(await asyncio.to_thread(self.store.append_batch, [request]))
                    self.batches += 1
                except Exception as exc:  # handed to the caller, not swallowed
                    outcomes.append(_Failed(exc))
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if future.done():
                continue
            if isinstance(outcome, _Failed):
                future.set_exception(outcome.error)
            elif isinstance(outcome, StreamVersionConflict):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
