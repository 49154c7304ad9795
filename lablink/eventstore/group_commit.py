"""Group commit: appends that arrive together share one transaction (one fsync).

Callers ``await committer.submit(request)`` (the engine's write path, ``lablink.handler``) or
``await committer.append(...)``; while one batch is being written in a worker thread
the next requests queue up, so under load batches grow by themselves and durability
(synchronous=FULL) stops capping throughput. Each request is still checked against its own
stream version, and gets its own outcome.

In a running LabLink the writing loop is a supervised task (``task.committer``, see
``lablink.supervision``): if it ever raised, the queue would survive it and the loop would be
started again after a backoff. A failed write is never the loop's failure: it is handed to
the callers of that batch, who decide what to do (the engine keeps its fires and retries).

A request may ``linger``: wait up to that long for company before it is written. The engine
lets an execution's recorded end wait for its next fire when that is due within milliseconds:
both share one commit and one fsync, where each would otherwise take its own (an end comes a
few milliseconds after its fire, between two fires when 100 jobs a second are spread over the
second). A request that does not linger takes every waiting one with it, and ``hurry`` writes
them at once (a command waits for a job lock that a lingering request holds).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import cast

from lablink.errors import StreamVersionConflict
from lablink.events import NewEvent, RecordedEvent
from lablink.eventstore.base import AppendOutcome, AppendRequest, EventStore
from lablink.supervision import Supervisor, Watch

TASK_NAME = "task.committer"


class _Group:
    """The outcomes of requests submitted together (``submit_all``): one future for all of
    them, resolved once the last is written, so a chunk of fires costs the event loop one
    wake-up instead of one per fire."""

    __slots__ = ("future", "left", "outcomes")

    def __init__(self, future: asyncio.Future[list[AppendOutcome | BaseException]], n: int):
        self.future = future
        self.outcomes: list[AppendOutcome | BaseException | None] = [None] * n
        self.left = n

    def settle(self, index: int, outcome: AppendOutcome | BaseException) -> None:
        self.outcomes[index] = outcome
        self.left -= 1
        if self.left == 0 and not self.future.done():
            # Every place is filled once ``left`` reaches 0.
            self.future.set_result(cast(list[AppendOutcome | BaseException], self.outcomes))


# Where a request's outcome goes: its own future, or its place in a group.
_Slot = asyncio.Future[AppendOutcome] | tuple[_Group, int]
# A request, where its outcome goes, and the loop time by which it is to be written (0.0: at
# once).
_Pending = tuple[AppendRequest, _Slot, float]


class CommitterStopped(RuntimeError):
    def __init__(self) -> None:
        super().__init__("the group committer is not running")


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


class GroupCommitter:
    def __init__(self, store: EventStore, *, max_batch: int = 2000) -> None:
        self.store = store
        self.max_batch = max_batch
        self._pending: list[_Pending] = []
        self._wakeup = asyncio.Event()
        self._drained = asyncio.Event()
        self._watch: Watch | None = None
        self._task: asyncio.Task[None] | None = None
        self._started = False
        self._looping = False
        self._closing = False
        self._hurry = False
        self.batches = 0  # transactions written, for tests and metrics

    def start(self, supervisor: Supervisor, name: str = TASK_NAME) -> Watch:
        """Run the writing loop under ``supervisor``; after ``aclose``, the same body takes
        appends again."""
        self._started = True
        self._closing = False
        self._drained.clear()
        if self._watch is not None and name in supervisor:
            return self._watch  # the same body takes appends again
        self._watch = supervisor.spawn(name, self.run)
        return self._watch

    async def __aenter__(self) -> GroupCommitter:
        """Run the writing loop as a plain task (scripts and benchmarks that hold one)."""
        self._started = True
        self._task = asyncio.create_task(self._loop(), name="group-commit")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def run(self, watch: Watch) -> None:
        """The supervised body: the loop; once closed, it waits to be started again or for
        the supervisor to stop (a body that returns by itself would be restarted)."""
        while not watch.stopping:
            if not self._closing:
                await self._loop()
                continue
            await watch.sleep(0.1)  # closed: until started again or the supervisor stops

    async def aclose(self) -> None:
        """Write everything already queued, then stop."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
            self._task = None
        elif self._looping:
            await self._drained.wait()
        else:
            # Nobody runs the loop (it is between a failure and its restart, or its
            # supervisor stopped first): what is queued is written here.
            await self._drain()

    @property
    def running(self) -> bool:
        return self._started and not self._closing

    async def append(
        self, stream_id: str, expected_version: int, events: Sequence[NewEvent]
    ) -> list[RecordedEvent]:
        """Append, or raise StreamVersionConflict having written nothing."""
        outcome = await self.submit(
            AppendRequest(stream_id=stream_id, expected_version=expected_version, events=events)
        )
        if isinstance(outcome, StreamVersionConflict):
            raise outcome
        return outcome

    async def submit(self, request: AppendRequest) -> AppendOutcome:
        """The request's own outcome in the next batch: its events, or its conflict."""
        if not self.running:
            raise CommitterStopped()
        future: asyncio.Future[AppendOutcome] = asyncio.get_running_loop().create_future()
        self._pending.append((request, future, 0.0))
        self._wakeup.set()
        return await future

    async def submit_all(
        self, requests: Sequence[AppendRequest], *, linger: float = 0.0
    ) -> list[AppendOutcome | BaseException]:
        """Each request's outcome, in order, once every one of them is written: its events,
        its conflict, or the error that kept it from being written (a failed write fails
        only the requests it held). ``linger``: seconds they may wait for other requests to
        share their commit (see the module)."""
        if not self.running:
            raise CommitterStopped()
        if not requests:
            return []
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[AppendOutcome | BaseException]] = loop.create_future()
        group = _Group(future, len(requests))
        due = loop.time() + linger if linger > 0 else 0.0
        self._pending.extend(
            (request, (group, index), due) for index, request in enumerate(requests)
        )
        self._wakeup.set()
        return await future

    def hurry(self) -> None:
        """Write the lingering requests now."""
        if self._pending:
            self._hurry = True
            self._wakeup.set()

    async def _loop(self) -> None:
        self._looping = True
        try:
            while True:
                if not self._pending and not self._closing:
                    await self._wakeup.wait()
                self._wakeup.clear()
                if await self._lingered():
                    continue
                if self._pending:
                    await self._write_next()
                if self._closing and not self._pending:
                    self._drained.set()
                    return
        finally:
            self._looping = False

    async def _lingered(self) -> bool:
        """When every waiting request may still linger: wait for company, or for the first
        of them to be due, then True (the loop looks again)."""
        if not self._pending or self._closing or self._hurry:
            return False
        due = 0.0
        for _, _, when in self._pending:
            if when == 0.0:
                return False
            due = when if due == 0.0 else min(due, when)
        loop = asyncio.get_running_loop()
        if due <= loop.time():
            return False
        handle = loop.call_at(due, self._wakeup.set)
        try:
            await self._wakeup.wait()
        finally:
            handle.cancel()
        return True

    async def _write_next(self) -> None:
        batch, self._pending = (
            self._pending[: self.max_batch],
            self._pending[self.max_batch :],
        )
        if not self._pending:
            self._hurry = False
        await self._write(batch)

    async def _drain(self) -> None:
        while self._pending:
            await self._write_next()

    async def _write(self, batch: list[_Pending]) -> None:
        requests = [request for request, _, _ in batch]
        outcomes: list[AppendOutcome | _Failed] = []
        try:
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
        except BaseException as exc:
            # Cancelled mid-write (a stop that ran out of grace): no caller may wait for
            # ever on an answer, though whether the write landed is unknown.
            for _, slot, _ in batch:
                if isinstance(slot, tuple):
                    group = slot[0]
                    if group.future.done():
                        continue
                    if isinstance(exc, asyncio.CancelledError):
                        group.future.cancel()
                    else:
                        group.future.set_exception(exc)
                elif slot.done():
                    continue
                elif isinstance(exc, asyncio.CancelledError):
                    slot.cancel()
                else:
                    slot.set_exception(exc)
            raise
        for (_, slot, _), outcome in zip(batch, outcomes, strict=True):
            if isinstance(slot, tuple):
                group, index = slot
                group.settle(index, outcome.error if isinstance(outcome, _Failed) else outcome)
            elif slot.done():
                continue
            elif isinstance(outcome, _Failed):
                slot.set_exception(outcome.error)
            else:
                slot.set_result(outcome)
