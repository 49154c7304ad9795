"""The in-process executor: the engine drives a bench in its own process, no agents, no NATS.

Each execution runs as one blocking operation (``operations``) on its
instrument's worker thread, so it holds the instrument for its whole length and nothing else
talks to that instrument meanwhile. Progress reported on the worker is relayed to the engine
in order. Everything the instrument or the parameters cause comes back as a failed outcome
with a typed error; an unexpected exception is logged with its trace and reported by name.
Every outcome carries the instants the operation began and ended on the instrument, read on
its worker from this executor's clock (``RunContext.now``).

Each instrument has its own line: executions wait for their own instrument only, however deep
another's backlog is. ``queue_depths`` says how many wait for each and how many are on it
(``queues.Lines``). Stopping an execution that never reached its instrument touches nothing;
stopping one on it puts the instrument in its safe state right after the stopped operation,
ahead of the executions still waiting (``queues.Ahead``).

Over the simulated bench (the default) instrument time is simulated: a 600 s capture or a
60 s load test completes at once. Pass ``realtime=True`` for real instruments.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import structlog

from lablink.clock import Clock, SystemClock
from lablink.equipment_agent.acquisition import DEFAULT_MAX_SAMPLES_PER_CHANNEL, CaptureLimits
from lablink.equipment_agent.bench import (
    BENCH_YAML,
    Bench,
    InstrumentSession,
    PortWrapper,
    open_simulated_bench,
)
from lablink.equipment_agent.operations import OperationOptions, run_operation
from lablink.equipment_agent.queues import Ahead, Lines
from lablink.events import ExecutionError
from lablink.instruments.context import Job, RunContext
from lablink.instruments.errors import EquipmentError, EquipmentOffline
from lablink.instruments.execution import (
    ExecutionRequest,
    InstrumentTimes,
    Outcome,
    ProfileLookup,
    ProgressReport,
    resolve_profile,
)
from lablink.instruments.instrument import Instrument
from lablink.instruments.protocol import QueueDepth

log = structlog.get_logger(tag="executor")

T = TypeVar("T")

_Report = tuple[float, str, dict[str, Any]]


@dataclass
class _Running:
    session: InstrumentSession
    ctx: RunContext
    # Its operation on the instrument's worker, once submitted.
    work: Future[Any] | None = None


class InProcessExecutor:
    holds_until_due = False  # it starts what it is given: the engine holds a fire decided ahead

    def __init__(
        self,
        bench: Bench,
        data_dir: Path,
        *,
        max_samples_per_channel: int = DEFAULT_MAX_SAMPLES_PER_CHANNEL,
        realtime: bool = False,
        profiles: ProfileLookup | None = None,
        limits: CaptureLimits | None = None,
        agent_id: str = "",
        clock: Clock | None = None,
    ) -> None:
        if max_samples_per_channel < 1:
            raise ValueError("max_samples_per_channel must be at least 1")
        self.bench = bench
        self.options = OperationOptions(
            data_dir=Path(data_dir),
            max_samples_per_channel=max_samples_per_channel,
            limits=limits or CaptureLimits(),
            agent_id=agent_id,
        )
        self.realtime = realtime
        self.profiles = profiles
        # Stamps the instrument's times (an agent's clock, or the scheduler's in-process).
        self.clock = clock or SystemClock()
        # Kept until the execution ends normally or stop() is called: the engine cancels the
        # execute() task first and only then asks stop() to make the instrument safe.
        self._running: dict[str, _Running] = {}
        self._lines = Lines()
        self._ahead = Ahead()

    @classmethod
    def simulated(
        cls,
        data_dir: Path,
        *,
        bench_yaml: Path = BENCH_YAML,
        wrap: PortWrapper | None = None,
        max_samples_per_channel: int = DEFAULT_MAX_SAMPLES_PER_CHANNEL,
        profiles: ProfileLookup | None = None,
        clock: Clock | None = None,
    ) -> InProcessExecutor:
        """The guide's six instruments on pyvisa-sim."""
        return cls(
            open_simulated_bench(bench_yaml, wrap=wrap),
            data_dir,
            max_samples_per_channel=max_samples_per_channel,
            profiles=profiles,
            clock=clock,
        )

    async def execute(self, request: ExecutionRequest, progress: ProgressReport) -> Outcome:
        try:
            settings = self._profile(request)
        except EquipmentError as exc:
            return _failed(exc)
        outcome = await self.run(request, progress, settings)
        # Without an agent there is no bus and no object store: the capture stays in the
        # data folder, named by the result's ``file`` (docs/data.md, "Where captures go").
        outcome.result.pop("data", None)
        return outcome

    async def recover(
        self, request: ExecutionRequest, progress: ProgressReport
    ) -> Awaitable[Outcome] | None:
        return None  # an operation dies with the process that ran it

    def context_for(self, request: ExecutionRequest) -> RunContext:
        """A context for ``run`` that its caller keeps (the instrument times of a run it
        stops are read from it)."""
        return RunContext(
            equipment_id=request.spec.equipment_id, realtime=self.realtime, now=self.clock.now
        )

    async def run(
        self,
        request: ExecutionRequest,
        progress: ProgressReport,
        profile_settings: Mapping[str, Any] | None,
        *,
        ctx: RunContext | None = None,
    ) -> Outcome:
        """Run with the profile's settings already resolved (an agent gets them with the
        command)."""
        execution_id = request.execution_id
        try:
            session = self.bench.session(request.spec.equipment_id)
        except EquipmentError as exc:
            return _failed(exc)
        job = self._job(request, profile_settings)
        if ctx is None:
            ctx = self.context_for(request)
        running = self._running[execution_id] = _Running(session, ctx)
        options = dataclasses.replace(self.options, resource=session.resource_name)
        operation = partial(_operate, job=job, ctx=ctx, options=options)
        try:
            result = await self._on_worker(running, execution_id, progress, operation)
        except asyncio.CancelledError:
            ctx.cancel.set()
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # the engine's cancel: the entry stays for stop()
            # Not our task's cancel: the bench closed under a queued operation.
            self._running.pop(execution_id, None)
            return timed(
                _failed(EquipmentOffline(session.equipment_id, "the bench was closed")), ctx
            )
        except EquipmentError as exc:
            self._running.pop(execution_id, None)
            return timed(_failed(exc), ctx)
        except Exception as exc:
            self._running.pop(execution_id, None)
            log.exception("operation raised", execution_id=execution_id)
            return timed(Outcome.failed("internal_error", f"{type(exc).__name__}: {exc}"), ctx)
        self._running.pop(execution_id, None)
        return timed(Outcome(status="completed", result=result), ctx)

    def queue_depths(self) -> dict[str, QueueDepth]:
        """Every instrument's line now: executions waiting for it, and on it."""
        return self._lines.depths(self.bench)

    def waiting(self) -> frozenset[str]:
        """The executions handed over that wait for their instrument (none of their I/O
        began yet)."""
        return self._lines.waiting()

    def describe_equipment(self, equipment_id: str) -> dict[str, Any]:
        """The instrument as this process opened it (for failure alarms)."""
        try:
            session = self.bench.session(equipment_id)
        except EquipmentError as exc:
            return {"online": False, "reason": str(exc)}
        return {
            "kind": session.kind,
            "identity": session.identity.raw if session.identity else "",
            "resource": session.resource_name,
            "online": True,
        }

    def instrument_times(self, execution_id: str) -> InstrumentTimes:
        """As its worker stamped them so far (nothing while it waits for its instrument)."""
        running = self._running.get(execution_id)
        if running is None:
            return InstrumentTimes()
        return InstrumentTimes(running.ctx.started_at, running.ctx.ended_at)

    async def stop(self, execution_id: str) -> None:
        await self.halt(execution_id)

    async def recorded(self, execution_id: str) -> None:
        return None  # the outcome was returned, nothing held for it

    async def halt(self, execution_id: str) -> dict[str, Any] | None:
        """Stop the execution and put its instrument in the safe state; the state applied,
        or None when the execution was not running here or the safe state failed. An
        execution still waiting for its instrument leaves the line and touches nothing: {}
        (a safe state then would land in the middle of other jobs' work, behind them all)."""
        running = self._running.pop(execution_id, None)
        if running is None:
            return None
        running.ctx.cancel.set()
        # True only for an operation the worker never took (or one cancelled already).
        if running.work is None or running.work.cancel():
            log.info(
                "stopped before it reached the instrument",
                equipment_id=running.session.equipment_id,
                execution_id=execution_id,
            )
            return {}
        return await self.safe_state(running.session.equipment_id, execution_id=execution_id)

    async def safe_state(
        self, equipment_id: str, *, execution_id: str | None = None
    ) -> dict[str, Any] | None:
        # Right after the operation on the instrument now (a stopped one ends at its next
        # check), ahead of the executions waiting for it; the submit below runs it when
        # nothing else is queued.
        try:
            session = self.bench.session(equipment_id)
        except EquipmentError as exc:
            log.error("safe state failed", equipment_id=equipment_id, error=str(exc))
            return None
        applied: Future[dict[str, Any]] = self._ahead.push(equipment_id, _safe_state)
        try:
            nudge = session.submit(partial(self._ahead.run, equipment_id))
            # The worker shut down before taking it: nothing will apply the safe state.
            nudge.add_done_callback(lambda done: done.cancelled() and applied.cancel())
            state = await asyncio.wrap_future(applied)
        except asyncio.CancelledError:
            if not applied.cancelled():
                raise
            log.error("safe state failed", equipment_id=equipment_id, error="the bench closed")
            return None
        except EquipmentError as exc:
            applied.cancel()
            log.error("safe state failed", equipment_id=equipment_id, error=str(exc))
            return None
        log.info(
            "safe state applied", equipment_id=equipment_id, execution_id=execution_id, **state
        )
        return state

    async def aclose(self) -> None:
        # Outputs stay as they are: closing the scheduler must not switch a bench off.
        for running in self._running.values():
            running.ctx.cancel.set()
        self._running.clear()
        await asyncio.to_thread(self.bench.close)
        self._ahead.cancel_all()

    def _profile(self, request: ExecutionRequest) -> Mapping[str, Any] | None:
        return resolve_profile(request, self.profiles)

    def _job(self, request: ExecutionRequest, settings: Mapping[str, Any] | None) -> Job:
        spec = request.spec
        return Job(
            execution_id=request.execution_id,
            job_id=request.job_id,
            job_name=request.job_name,
            equipment_id=spec.equipment_id,
            schedule_type=spec.schedule_type,
            parameters=spec.parameters,
            profile_id=spec.profile_id,
            profile_settings=settings,
            scheduled_time=request.scheduled_time,
        )

    async def _on_worker(
        self,
        running: _Running,
        execution_id: str,
        progress: ProgressReport,
        operation: Callable[[Instrument], T],
    ) -> T:
        """Run ``operation`` on the instrument's worker (after anything sent ahead of it),
        relaying its progress in order; in the instrument's line until it ends there."""
        session, ctx = running.session, running.ctx
        equipment_id = session.equipment_id
        loop = asyncio.get_running_loop()
        reports: asyncio.Queue[_Report | None] = asyncio.Queue()

        def report(fraction: float, message: str, data: dict[str, Any]) -> None:
            loop.call_soon_threadsafe(reports.put_nowait, (fraction, message, data))

        def in_line(inst: Instrument) -> T:
            self._ahead.run(equipment_id, inst)
            if ctx.not_before is not None:
                # Sent ahead: its time is kept here, on the worker, not by the event loop
                # (a burst of commands there must not make it late).
                ctx.wait_to_begin()
                self._ahead.run(equipment_id, inst)
            self._lines.start(execution_id)
            try:
                return operation(inst)
            finally:
                self._lines.end(execution_id)

        ctx.report = report
        self._lines.wait(execution_id, equipment_id)
        try:
            work: Future[T] = session.submit(in_line)
            running.work = work
        except BaseException:
            self._lines.end(execution_id)
            raise

        def left(done: Future[T]) -> None:
            if done.cancelled():  # never taken by the worker (stopped, the bench closed)
                self._lines.end(execution_id)

        work.add_done_callback(left)
        future = asyncio.wrap_future(work)
        # Scheduled after every report the worker made, so the queue ends with it.
        future.add_done_callback(lambda _: reports.put_nowait(None))
        try:
            while (item := await reports.get()) is not None:
                try:
                    await progress(*item)
                except Exception:  # progress is advisory; the operation goes on
                    log.exception("progress report failed", equipment_id=session.equipment_id)
            return await future
        finally:
            if not work.done():
                ctx.cancel.set()
                # Leaves the worker's queue at once if it is still there (halt tells by it).
                work.cancel()
                future.cancel()


def _operate(
    inst: Instrument, *, job: Job, ctx: RunContext, options: OperationOptions
) -> dict[str, Any]:
    return run_operation(inst, job, ctx, options)


def _safe_state(inst: Instrument) -> dict[str, Any]:
    return inst.safe_state()


def timed(outcome: Outcome, ctx: RunContext | None) -> Outcome:
    """``outcome`` with the instrument's times the operation took (none if it never touched
    the instrument)."""
    if ctx is None:
        return outcome
    return msgspec.structs.replace(
        outcome, instrument_started_at=ctx.started_at, instrument_ended_at=ctx.ended_at
    )


def _failed(exc: EquipmentError) -> Outcome:
    return Outcome(
        status="failed",
        result=exc.result,
        error=ExecutionError(
            type=exc.error_type, message=str(exc), code=exc.code, details=exc.details
        ),
    )
