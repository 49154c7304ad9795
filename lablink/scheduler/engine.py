"""The scheduling engine: timers in, events out.

It keeps the next fire of every enabled job (and the timeout of every running execution) in
one priority queue, and when a timer is due it asks the pure decisions in
``lablink.domain.firing`` what happened and appends that to the log through the group
committer. Executions go to an Executor; what it reports becomes events the same way.

Time comes from the injected clock. ``tick()`` processes everything due now; ``start()`` runs
a loop that sleeps until the next timer, so tests drive ``tick()`` with a manual clock and
never wait for a schedule in real time.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Awaitable, Callable, Coroutine
from datetime import datetime, timedelta
from typing import Any

import structlog

from lablink.clock import Clock
from lablink.domain.firing import (
    Decision,
    decide_cancel,
    decide_finish,
    decide_fire,
    decide_interrupted,
    decide_run_now,
    decide_timeout,
)
from lablink.domain.job import JobState
from lablink.errors import StreamVersionConflict
from lablink.events import (
    ExecutionError,
    ExecutionProgressed,
    RecordedEvent,
    event_type,
    stamp,
)
from lablink.eventstore.base import EventStore, parse_instant
from lablink.eventstore.group_commit import GroupCommitter
from lablink.ids import IdGenerator, RandomIds
from lablink.repository import JobRepository
from lablink.scheduler.executor import (
    ExecutionOutcome,
    ExecutionRequest,
    Executor,
    ProgressReport,
)
from lablink.scheduler.timers import Timer, TimerQueue

log = structlog.get_logger(tag="scheduler")

ACTOR = "scheduler"
MAX_RETRIES = 10
IDLE_WAKEUP_SECONDS = 60.0

Decide = Callable[[JobState], Decision]


class Engine:
    def __init__(
        self,
        store: EventStore,
        clock: Clock,
        executor: Executor,
        *,
        jobs: JobRepository,
        ids: IdGenerator | None = None,
        actor: str = ACTOR,
    ) -> None:
        self.store = store
        self.clock = clock
        self.executor = executor
        self.jobs = jobs
        self.ids = ids or RandomIds()
        self.actor = actor
        self.timers = TimerQueue()
        self.committer = GroupCommitter(store)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._job_locks: dict[str, asyncio.Lock] = {}
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._unsubscribe: Callable[[], None] | None = None
        self._event_loop: asyncio.AbstractEventLoop | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    async def open(
        self, active_jobs: list[tuple[str, datetime | None]], unfinished_jobs: list[str]
    ) -> None:
        """Recover from the log's state and plan every enabled job; no timer loop yet.

        ``active_jobs`` pairs each enabled job with its next fire as the jobs view has it, so
        start-up plans 100,000 jobs without loading their states; each state is loaded when
        its timer goes off and the fire is decided from the job's own events.

        ``unfinished_jobs`` had executions running, pending or queued when the previous
        process stopped: those executions are interrupted (queued ones may then start).
        """
        self._event_loop = asyncio.get_running_loop()
        await self.committer.__aenter__()
        self._unsubscribe = self.jobs.subscribe(self._on_change)
        if unfinished_jobs:
            log.info("recovering unfinished executions", jobs=len(unfinished_jobs))
        await asyncio.gather(*(self._recover(job_id) for job_id in unfinished_jobs))
        now = self.clock.now()
        for job_id, when in active_jobs:
            self.timers.plan_fire(job_id, when or now)
        for job_id in unfinished_jobs:
            self.plan(job_id)
        log.info("engine open", planned=len(self.timers))

    async def _recover(self, job_id: str) -> None:
        """Ask the executor about each execution the previous process left running: those it
        knows of (an agent still runs them or reported their end) are followed to their end;
        the others, and every pending one, are interrupted."""
        state = self.jobs.load(job_id).state
        requests = [self._request(state, eid) for eid in state.running if state.spec is not None]
        found = await asyncio.gather(
            *(self.executor.recover(r, self._progress(r)) for r in requests),
            return_exceptions=True,
        )
        keep: dict[str, Awaitable[ExecutionOutcome]] = {}
        for request, outcome in zip(requests, found, strict=True):
            if isinstance(outcome, BaseException):
                log.error("recovery failed", execution_id=request.execution_id, error=str(outcome))
            elif outcome is not None:
                keep[request.execution_id] = outcome
        now = self.clock.now()
        reason = "the scheduler stopped while the execution was running"
        equipment = self._equipment(state)
        await self._command(
            job_id,
            lambda s: decide_interrupted(s, now, reason, keep=keep, equipment=equipment),
        )
        for request in requests:
            if request.execution_id in keep:
                log.info("execution recovered", execution_id=request.execution_id)
                started_at = state.started.get(request.execution_id, now)
                self._track(
                    request, started_at, self._finish_with(request, keep[request.execution_id])
                )

    async def start(
        self, active_jobs: list[tuple[str, datetime | None]], unfinished_jobs: list[str]
    ) -> None:
        await self.open(active_jobs, unfinished_jobs)
        self._loop_task = asyncio.create_task(self._run(), name="scheduler-engine")

    async def aclose(self, grace_seconds: float = 10.0) -> None:
        """Stop firing; let running executions finish for up to ``grace_seconds``; then
        flush every event. Executions still running are left for the next start to mark
        interrupted."""
        self._stopping = True
        self._wake.set()
        if self._loop_task is not None:
            await self._loop_task
        if self._tasks:
            _, pending = await asyncio.wait(list(self._tasks.values()), timeout=grace_seconds)
            for task in pending:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*pending, return_exceptions=True)
        if self._unsubscribe is not None:
            self._unsubscribe()
        await self.committer.aclose()

    async def _run(self) -> None:
        while not self._stopping:
            due = self.timers.next_due()
            delay = IDLE_WAKEUP_SECONDS if due is None else (due - self.clock.now()).total_seconds()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):  # not wait_for: see bus/relay.py
                        await self._wake.wait()
                self._wake.clear()
                continue
            await self.tick()

    # -- planning -------------------------------------------------------------------------------

    def plan(self, job_id: str) -> None:
        """(Re)plan a job's next fire from its state; a job due for completion fires now."""
        state = self.jobs.load(job_id).state
        when = state.next_fire_time()
        if when is None and state.status == "active":
            when = self.clock.now()  # decide_fire will complete it
        self.timers.plan_fire(job_id, when if state.status == "active" else None)
        self._wake.set()

    def _on_change(self, job_id: str, recorded: list[RecordedEvent]) -> None:
        # Called after any append through the repository, possibly from another thread.
        if self._event_loop is None or self._stopping:
            return
        if recorded and all(r.actor == self.actor for r in recorded):
            return  # our own appends re-plan inline
        try:
            current = asyncio.get_running_loop()
        except RuntimeError:
            current = None
        if current is self._event_loop:
            self.plan(job_id)
        else:
            self._event_loop.call_soon_threadsafe(self.plan, job_id)

    # -- processing -----------------------------------------------------------------------------

    async def tick(self) -> int:
        """Process every timer due now; returns how many."""
        now = self.clock.now()
        due = self.timers.pop_due(now)
        if due:
            await asyncio.gather(*(self._handle(timer, now) for timer in due))
        return len(due)

    async def _handle(self, timer: Timer, now: Any) -> None:
        if timer.kind == "fire":
            await self._command(timer.job_id, lambda s: decide_fire(s, now, self.ids.execution_id))
            self.plan(timer.job_id)
        elif timer.execution_id is not None:
            execution_id = timer.execution_id
            decision = await self._command(
                timer.job_id,
                lambda s: decide_timeout(s, execution_id, now, self._equipment(s)),
            )
            if decision is not None and decision.events:
                await self._stop(execution_id)

    async def _command(
        self, job_id: str, decide: Decide, actor: str | None = None
    ) -> Decision | None:
        """Load, decide, append with the version read; on a version conflict, reload and
        decide again. Starts whatever executions the decision started.

        One command per job at a time: a fire and the end of the previous execution would
        otherwise both append at the same version, and the loser would go round again.
        """
        lock = self._job_locks.get(job_id)
        if lock is None:
            lock = self._job_locks[job_id] = asyncio.Lock()
        async with lock:
            return await self._command_locked(job_id, decide, actor)

    async def _command_locked(
        self, job_id: str, decide: Decide, actor: str | None
    ) -> Decision | None:
        for _ in range(MAX_RETRIES):
            loaded = self.jobs.load(job_id)
            decision = decide(loaded.state)
            if not decision.events:
                return decision
            now = self.clock.now()
            try:
                recorded = await self.committer.append(
                    job_id, loaded.version, stamp(decision.events, actor or self.actor, now)
                )
            except StreamVersionConflict:
                self.jobs.forget(job_id)
                continue
            self.jobs.recorded(job_id, decision.state, recorded)
            for event in decision.events:
                log.debug(
                    event_type(event),
                    job_id=job_id,
                    execution_id=getattr(event, "execution_id", None),
                )
            for started in decision.started:
                self._dispatch(decision.state, started.execution_id, started.started_at)
            return decision
        log.error("job stream kept changing; decision dropped", job_id=job_id)
        return None

    # -- executions -----------------------------------------------------------------------------

    async def run_now(self, job_id: str, actor: str | None = None) -> str:
        """Run now (HTTP POST …/run). Raises ExecutionRefused if the policy says no."""
        execution_id = self.ids.execution_id()
        now = self.clock.now()
        await self._command(job_id, lambda s: decide_run_now(s, now, execution_id), actor)
        return execution_id

    async def cancel(self, job_id: str, execution_id: str, reason: str = "cancelled") -> bool:
        now = self.clock.now()
        decision = await self._command(
            job_id, lambda s: decide_cancel(s, execution_id, now, reason)
        )
        if decision is None or not decision.events:
            return False
        await self._stop(execution_id)
        return True

    def _request(self, state: JobState, execution_id: str) -> ExecutionRequest:
        spec = state.spec
        assert spec is not None
        scheduled_time, trigger_info = state.requests.get(
            execution_id, (state.started.get(execution_id, self.clock.now()), "scheduled")
        )
        return ExecutionRequest(
            execution_id=execution_id,
            job_id=state.job_id,
            job_name=spec.name,
            spec=spec,
            scheduled_time=scheduled_time,
            trigger_info=trigger_info,
        )

    def _dispatch(self, state: JobState, execution_id: str, started_at: datetime) -> None:
        request = self._request(state, execution_id)
        outcome = self.executor.execute(request, self._progress(request))
        self._track(request, started_at, self._finish_with(request, outcome))

    def _track(
        self, request: ExecutionRequest, started_at: datetime, work: Coroutine[Any, Any, None]
    ) -> None:
        execution_id = request.execution_id
        self.timers.add_timeout(
            request.job_id,
            execution_id,
            started_at + timedelta(seconds=request.spec.timeout_seconds),
        )
        self._wake.set()
        task = asyncio.create_task(work, name=f"execution {execution_id}")
        self._tasks[execution_id] = task
        task.add_done_callback(lambda _: self._forget_task(execution_id))

    def _forget_task(self, execution_id: str) -> None:
        self._tasks.pop(execution_id, None)
        self.timers.cancel_timeout(execution_id)

    def _progress(self, request: ExecutionRequest) -> ProgressReport:
        async def progress(fraction: float, message: str, data: dict[str, Any]) -> None:
            event = ExecutionProgressed(
                job_id=request.job_id,
                execution_id=request.execution_id,
                progress=fraction,
                message=message,
                data=data,
            )
            await self._command(
                request.job_id,
                lambda s: Decision([event] if request.execution_id in s.running else [], s),
            )

        return progress

    async def _finish_with(
        self, request: ExecutionRequest, pending: Awaitable[ExecutionOutcome]
    ) -> None:
        try:
            outcome = await pending
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # recorded as a failed execution, never lost
            log.exception("executor raised", execution_id=request.execution_id)
            outcome = ExecutionOutcome(
                status="failed",
                error=ExecutionError(type=type(exc).__name__, message=str(exc) or repr(exc)),
            )
        now = self.clock.now()
        await self._command(
            request.job_id,
            lambda s: decide_finish(
                s,
                request.execution_id,
                now,
                result=outcome.result,
                error=outcome.error if outcome.status == "failed" else None,
                # Only a failure can raise an alarm: a success needs no description.
                equipment=self._equipment(s) if outcome.status == "failed" else None,
            ),
        )

    async def _stop(self, execution_id: str) -> None:
        task = self._tasks.pop(execution_id, None)
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.executor.stop(execution_id)

    def _equipment(self, state: JobState) -> dict[str, Any]:
        """What the executor knows of the job's instrument, for the alarm a failure raises
        (the guide's "equipment information")."""
        if state.spec is None:
            return {}
        return self.executor.describe_equipment(state.spec.equipment_id)

    def tasks(self) -> dict[str, asyncio.Task[None]]:
        """The execution tasks in flight, by execution id."""
        return dict(self._tasks)


def recovery_lists(
    conn: sqlite3.Connection,
) -> tuple[list[tuple[str, datetime | None]], list[str]]:
    """(active jobs with their next fire, job ids with unfinished executions), from the
    jobs view: a fold of the log, caught up when the store was opened."""
    active = [
        (job_id, parse_instant(when) if when else None)
        for job_id, when in conn.execute(
            "SELECT job_id, next_run_time FROM jobs WHERE status = 'active'"
        )
    ]
    unfinished = [
        r[0]
        for r in conn.execute("SELECT job_id FROM jobs WHERE running_count > 0 OR queued_count > 0")
    ]
    return active, unfinished
