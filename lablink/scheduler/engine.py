"""The scheduling engine: timers in, events out.

It keeps the next fire of every enabled job (and the timeout of every running execution) in
one priority queue, and when a timer is due it asks the pure decisions in
``lablink.domain.firing`` what happened and appends that to the log through the write path's
group-commit variant (``lablink.handler``). Executions go to an Executor; what it reports
becomes events the same way.

Time comes from the injected clock. ``tick()`` processes everything due now; ``iterate()`` is
one turn of the loop (notice a clock step, retry what waits to be recorded, tick); ``start()``
runs the loop under the supervisor (``task.engine``), sleeping until the next timer but never
longer than ``IDLE_WAKEUP_SECONDS``. Tests drive ``tick()`` or ``iterate()`` with a manual
clock and never wait for a schedule in real time.

Never die, never spin, never lose a fire (issue 11):

- An append that fails (disk full, database locked) loses nothing: a fire's timer is planned
  again at its scheduled time, a timeout's too, and an outcome waits ("parked") to be
  recorded. The loop then backs off (capped, exponential), `/health` shows ``task.engine`` and
  ``scheduler`` failing with the error and since when, and after a grace period a
  ``scheduler_fault`` alarm is raised (``lablink.scheduler.faults``). When an append works
  again, parked outcomes are recorded first, then the kept fires are decided at the new now:
  fires that fell due meanwhile follow the job's misfire and coalesce rules, as after
  downtime.
- Anything else a job's timer raises (a bug) is logged with the job id, and that job alone
  is tried again later; the others fire on.
- The wall clock may be set under us. Each turn compares wall and monotonic time
  (``lablink.clock.StepDetector``); on a step, timeouts move with it, interval jobs are
  re-anchored when it went back (``job.reanchored``), every timer is planned again, and a
  ``scheduler.clock_stepped`` event records the step. See docs/scheduling.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import msgspec
import structlog

from lablink.alarm_service import AlarmService
from lablink.clock import Clock, ClockStep, StepDetector
from lablink.domain.calibration import Block
from lablink.domain.data import DataVerdict, data_stored_verdict, decide_data_stored
from lablink.domain.firing import (
    Decision,
    LateVerdict,
    decide_cancel,
    decide_finish,
    decide_fire,
    decide_interrupted,
    decide_late_result,
    decide_progress,
    decide_run_now,
    decide_timeout,
    late_result_verdict,
)
from lablink.domain.job import JobState, decide_reanchor, fold
from lablink.errors import RecordingFailed, StorageError, StreamVersionConflict
from lablink.events import (
    ClockStepped,
    ExecutionBlocked,
    ExecutionError,
    ExecutionProgressed,
    RecordedEvent,
    documented_error,
    event_type,
)
from lablink.eventstore.base import EventStore, ShowsLater, parse_instant
from lablink.eventstore.group_commit import TASK_NAME as COMMITTER_TASK
from lablink.eventstore.group_commit import GroupCommitter
from lablink.eventstore.sqlite import SQLiteEventStore
from lablink.handler import GroupCommitHandler, Handled
from lablink.health import Health, Reading
from lablink.ids import IdGenerator, RandomIds
from lablink.instruments.execution import ExecutionRequest, Outcome, ProgressReport
from lablink.projections.jobs import active_schedules, with_unfinished
from lablink.repository import JobRepository
from lablink.scheduler.calibration_gate import CalibrationGate
from lablink.scheduler.executor import Executor
from lablink.scheduler.faults import (
    DEFAULT_GRACE_SECONDS,
    SCHEDULER_STREAM,
    RecordingFault,
    SchedulerFaultAlarm,
)
from lablink.scheduler.timers import NO_LEAD, Timer, TimerQueue
from lablink.supervision import Backoff, Supervisor, Watch, describe

log = structlog.get_logger(tag="scheduler")

ACTOR = "scheduler"
MAX_RETRIES = 10
TASK_NAME = "task.engine"
PROBE_NAME = "scheduler"
# The loop wakes at least this often with nothing to do: its age shows a stall in /health
# and a clock step is noticed within it. Cheap: one wake is a few clock reads.
IDLE_WAKEUP_SECONDS = 1.0
# A turn that did nothing still sleeps this long: the loop cannot spin, whatever the clock
# says (a manual clock, or one read twice across a step).
MIN_SLEEP_SECONDS = 0.005
# The loop's age past which /health reads degraded, and failing (stalled).
SLOW_AFTER_SECONDS = 5.0
STALLED_AFTER_SECONDS = 30.0
# Timers due at once are decided in chunks of this many; each chunk goes to the group
# committer as it is decided (see ``tick``).
CHUNK_TIMERS = 100
# A tick whose oldest timer is this overdue finds the loop behind (see ``tick``).
BEHIND_AFTER = timedelta(seconds=0.1)
# A job whose timer raised something other than a storage failure is tried again after
# this backoff (its own; the other jobs fire on).
JOB_RETRY_INITIAL = 1.0
JOB_RETRY_MAX = 300.0
# An execution's end waits for the next fire to share its commit (one fsync for both) when
# that fire is due within this long; later than that, it is written at once (issue 19: four
# fsyncs an execution at 100 spread fires a second, one of them the end's own).
END_LINGER_SECONDS = 0.02
# Beyond the fire's instant: the loop takes a moment to wake, decide and submit it.
END_LINGER_SLACK_SECONDS = 0.003

Decide = Callable[[JobState], Decision]


@dataclass
class _Parked:
    """A decision that could not be recorded, waiting for the log (see ``_command``)."""

    job_id: str
    decide: Decide
    actor: str | None
    future: asyncio.Future[Decision | None]


class _Tracking:
    """The engine's own appends: how each goes makes (or ends) its recording fault."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def written(self) -> None:
        self.engine.fault.recorded()

    def failed(self, stream_id: str, error: BaseException) -> None:
        self.engine._failed(stream_id, error)


@dataclass(slots=True)
class _Finishing:
    """An execution's end waiting for the next batch of ends (see ``_finish``): its job's
    lock is held from the moment it was queued."""

    job_id: str
    decide: Decide
    lock: asyncio.Lock
    future: asyncio.Future[Decision | _Again | None]


class _Again:
    """The batch could not record it: its finisher goes the one-by-one way (``_command``),
    which parks it while the log refuses writes."""


AGAIN = _Again()


@dataclass
class _PendingStep:
    """A clock step being handled: interval jobs still to re-anchor, then its record."""

    step: ClockStep
    jobs: list[str]
    planned: int
    reanchored: int = 0
    done: set[str] = field(default_factory=set)


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
        supervisor: Supervisor | None = None,
        alarms: AlarmService | None = None,
        fault_grace_seconds: float = DEFAULT_GRACE_SECONDS,
        calibration: CalibrationGate | None = None,
        fire_lead: float = 0.0,
    ) -> None:
        self.store = store
        # How long before its time a fire of an idle job may be decided and recorded, so
        # that its command is ready at its time (see ``_fire_time``); 0: decided at its time.
        self.fire_lead = timedelta(seconds=fire_lead)
        # The calibration interlock (None: every run is dispatched, as before it existed).
        self.calibration = calibration
        self.clock = clock
        self.executor = executor
        self.jobs = jobs
        self.ids = ids or RandomIds()
        self.actor = actor
        self.timers = TimerQueue()
        self.end_linger_within = END_LINGER_SECONDS
        self.end_linger_slack = END_LINGER_SLACK_SECONDS
        self.committer = GroupCommitter(store)
        self.writer = GroupCommitHandler(self.committer, clock, retries=MAX_RETRIES)
        self._tracking = _Tracking(self)
        # The runtime's supervisor, or one of our own (tests, benchmarks, scripts).
        self._own_supervisor = supervisor is None
        self.supervisor = supervisor if supervisor is not None else Supervisor(Health(clock))
        self.health = self.supervisor.health
        self.fault = RecordingFault(clock)
        if alarms is None and isinstance(store, SQLiteEventStore):
            alarms = AlarmService.on_store(store, clock)
        self.fault_alarm = (
            SchedulerFaultAlarm(store, clock, alarms, self.fault, grace_seconds=fault_grace_seconds)
            if alarms is not None
            else None
        )
        self.steps = StepDetector(clock)
        self._pending_steps: list[_PendingStep] = []
        self._parked: list[_Parked] = []
        self._job_failures: dict[str, Backoff] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        # When each running execution was handed to the executor: its dispatch when the
        # executor does not say (in-process, no-op), or when it ends without the executor's
        # word (timed out, cancelled).
        self._handed: dict[str, datetime] = {}
        self._job_locks: dict[str, asyncio.Lock] = {}
        # Ends of executions queued for the next batch (``_finish``), and the batches'
        # tasks, kept referenced until they end.
        self._finishing: list[_Finishing] = []
        self._finish_batches: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        # Until when the loop sleeps (None: it is turning): a timer planned earlier wakes it.
        self._sleeping_until: datetime | None = None
        # The last tick found a timer overdue by more than BEHIND_AFTER: no fire is decided
        # ahead meanwhile (``tick``).
        self._behind = False
        self._stopped = asyncio.Event()
        self._loop_done = asyncio.Event()
        self._watch: Watch | None = None
        self._last_turn = clock.monotonic()
        self.turns = 0  # turns of the loop (iterate), for tests and metrics
        self._stopping = False
        self._closed = False
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
        self.committer.start(self.supervisor)
        self._unsubscribe = self.jobs.subscribe(self._on_change)
        self.steps.check()  # the first reading: steps are measured from here
        self._last_turn = self.clock.monotonic()
        self.health.probe(PROBE_NAME, self.probe)
        if unfinished_jobs:
            log.info("recovering unfinished executions", jobs=len(unfinished_jobs))
        await asyncio.gather(*(self._recover(job_id) for job_id in unfinished_jobs))
        now = self.clock.now()
        for job_id, when in active_jobs:
            # With the lead: a job found busy when its timer is taken waits for its time.
            self.timers.plan_fire(job_id, when or now, self.fire_lead)
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
        keep: dict[str, Awaitable[Outcome]] = {}
        for request, outcome in zip(requests, found, strict=True):
            if isinstance(outcome, BaseException):
                log.error("recovery failed", execution_id=request.execution_id, error=str(outcome))
            elif outcome is not None:
                keep[request.execution_id] = outcome
        now = self.clock.now()
        reason = "the scheduler stopped while the execution was running"
        equipment = self._equipment(state)
        # Not parked: no loop runs yet to retry it, and a start that cannot record must say so.
        interrupted = await self._command(
            job_id,
            lambda s: decide_interrupted(
                s, now, reason, keep=keep, equipment=equipment, blocked=self._turn_blocked(s, now)
            ),
            park=False,
        )
        if interrupted is not None:
            await self._blocked_alarm(interrupted)
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
        """Open, then run the loop under the supervisor as ``task.engine``."""
        await self.open(active_jobs, unfinished_jobs)
        self.start_loop()

    def start_loop(self) -> Watch:
        """Run the loop (after ``open``) under the supervisor as ``task.engine``."""
        self._watch = self.supervisor.spawn(TASK_NAME, self._body)
        return self._watch

    async def aclose(self, grace_seconds: float = 10.0) -> None:
        """Stop firing; let running executions finish for up to ``grace_seconds``; then
        flush every event. Executions still running are left for the next start to mark
        interrupted. Closing twice is harmless."""
        if self._closed:
            return
        self._closed = True
        self._stopping = True
        self._stopped.set()
        self._wake.set()
        if self._watch is not None:
            await self._loop_done.wait()
        await self._drain_tasks(grace_seconds)
        pending = [task for task in self._tasks.values() if not task.done()]
        for task in pending:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*pending, return_exceptions=True)
        for parked in self._parked:
            # The log could not take them before the stop: the next start interrupts their
            # executions, as after a crash.
            if not parked.future.done():
                parked.future.cancel()
        self._parked.clear()
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        await self.committer.aclose()
        self.health.remove(PROBE_NAME)
        if self._own_supervisor:
            await self.supervisor.aclose()
        else:
            # Their names are free for the next engine under this supervisor (cluster mode:
            # one each time the lease is gained).
            await self.supervisor.retire(TASK_NAME)
            await self.supervisor.retire(COMMITTER_TASK)

    async def _drain_tasks(self, grace_seconds: float) -> None:
        """Let running executions end for up to ``grace_seconds``, recording their outcomes;
        stop waiting early when all that is left waits for a log that refuses writes."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_seconds
        while True:
            busy = [task for task in self._tasks.values() if not task.done()]
            if not busy:
                return
            if self._parked:
                try:
                    await self._flush_parked()
                except RecordingFailed:
                    if len(busy) <= self.waiting_to_record:
                        return
            left = deadline - loop.time()
            if left <= 0:
                return
            await asyncio.wait(busy, timeout=min(left, 0.5))

    # -- the loop -------------------------------------------------------------------------------

    async def _body(self, watch: Watch) -> None:
        """``task.engine``: turn, then sleep until the next timer (at most a second). A turn
        that cannot record backs off; anything else it raises goes to the supervisor, which
        logs it and starts the body again (the timers live on in the engine)."""
        self._loop_done.clear()
        try:
            while not self._stopping and not watch.stopping:
                try:
                    processed = await self.turn()
                except RecordingFailed as exc:
                    if await self._pause(watch.failed(exc), watch):
                        break
                    continue
                if watch.failing_since is not None:
                    watch.ok("recording again")
                await self._sleep(processed)
        finally:
            self._loop_done.set()
        # Stopped by aclose: stay until the supervisor stops (a body that returns is restarted).
        while not watch.stopping:
            await watch.sleep(3600)

    async def turn(self) -> int:
        """``iterate``, then raise or clear the ``scheduler_fault`` alarm as the outcome
        says; what the loop does between its sleeps."""
        try:
            return await self.iterate()
        finally:
            await self._check_fault()

    @property
    def waiting_to_record(self) -> int:
        """Decisions (outcomes, late results) waiting for the log to take them."""
        return sum(1 for parked in self._parked if not parked.future.done())

    async def iterate(self) -> int:
        """One turn of the loop, without its sleep: notice a clock step, record what waits to
        be recorded, then process every timer due now. Returns how many timers were due.

        Raises ``RecordingFailed`` when the log cannot be written; nothing is lost (see the
        module docstring), the caller waits and turns again.
        """
        self._last_turn = self.clock.monotonic()
        self.turns += 1
        step = self.steps.check()
        if step is not None:
            self._clock_stepped(step)
        await self._handle_steps()
        await self._flush_parked()
        processed = await self.tick()
        if self.fault.failing:
            # Nothing is left that could not be recorded (kept fires and outcomes would have
            # raised above): whatever failed is behind us, even if no append was needed.
            self.fault.recorded()
        return processed

    async def _check_fault(self) -> None:
        if self.fault_alarm is None:
            return
        try:
            await self.fault_alarm.check()
        except Exception:  # the alarm is a report: it must never stop the loop
            log.exception("scheduler_fault alarm check failed")

    async def _sleep(self, processed: int) -> None:
        due = self.timers.next_due()
        delay = IDLE_WAKEUP_SECONDS
        now = self.clock.now()
        if due is not None:
            delay = min(delay, (due - now).total_seconds())
        if delay <= 0:
            if processed:
                return  # more is due: turn again at once, there is work
            delay = MIN_SLEEP_SECONDS
        self._sleeping_until = now + timedelta(seconds=delay)
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):  # not wait_for: see bus/relay.py
                    await self._wake.wait()
        finally:
            self._sleeping_until = None
        self._wake.clear()

    async def _pause(self, seconds: float, watch: Watch) -> bool:
        """Wait out a backoff (real time, whatever the injected clock), turning the alarm
        check every second; True when stopping."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while not (self._stopping or watch.stopping):
            left = deadline - loop.time()
            if left <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(left, IDLE_WAKEUP_SECONDS)):
                    await self._stopped.wait()
            self._last_turn = self.clock.monotonic()
            await self._check_fault()
        return True

    def probe(self) -> Reading:
        """The ``scheduler`` health entry: the loop's age, planned jobs, running executions;
        failing when the loop is stalled or cannot record."""
        age = self.clock.monotonic() - self._last_turn
        details: dict[str, Any] = {
            "last_iteration_age_seconds": round(age, 3),
            "planned_jobs": len(self.timers),
            "running_executions": len(self._tasks),
            "waiting_to_record": self.waiting_to_record,
        }
        fault = self.fault
        if fault.failing:
            assert fault.since is not None
            details.update(
                failing_since=fault.since.isoformat(),
                failures=fault.failures,
                last_error=fault.last_error,
            )
            return Reading(
                state="failing",
                reason=f"cannot record to the event log since {fault.since.isoformat()}: "
                f"{fault.last_error}",
                details=details,
            )
        if self._watch is not None and not self._stopping:
            if age > STALLED_AFTER_SECONDS:
                return Reading(
                    state="failing",
                    reason=f"the scheduler loop has not turned for {age:.0f} s",
                    details=details,
                )
            if age > SLOW_AFTER_SECONDS:
                return Reading(
                    state="degraded",
                    reason=f"the scheduler loop last turned {age:.0f} s ago",
                    details=details,
                )
        return Reading(state="ok", details=details)

    # -- clock steps ----------------------------------------------------------------------------

    def _clock_stepped(self, step: ClockStep) -> None:
        log.warning(
            "wall clock stepped",
            seconds=round(step.seconds, 6),
            wall_before=step.wall_before.isoformat(),
            wall_after=step.wall_after.isoformat(),
        )
        # A timeout counts elapsed time: it moves with the clock, either way.
        self.timers.shift_timeouts(step.delta)
        planned = self.timers.planned_jobs()
        # Back: interval jobs keep their elapsed-time rhythm (re-anchored); forward: the
        # fires now due follow the misfire rules, as after downtime.
        jobs = planned if step.seconds < 0 else []
        self._pending_steps.append(_PendingStep(step=step, jobs=jobs, planned=len(planned)))

    async def _handle_steps(self) -> None:
        while self._pending_steps:
            pending = self._pending_steps[0]
            step = pending.step
            for job_id in pending.jobs:
                if job_id in pending.done:
                    continue
                decision = await self._command(job_id, _reanchoring(step), park=False)
                pending.done.add(job_id)
                if decision is not None and decision.events:
                    pending.reanchored += 1
            for job_id in self.timers.planned_jobs():
                self.plan(job_id)
            event = ClockStepped(
                step_seconds=step.seconds,
                wall_before=step.wall_before,
                wall_after=step.wall_after,
                planned_jobs=pending.planned,
                reanchored_jobs=pending.reanchored,
            )
            await self.writer.record(SCHEDULER_STREAM, [event], self.actor, tracker=self._tracking)
            self._pending_steps.pop(0)

    # -- planning -------------------------------------------------------------------------------

    def plan(self, job_id: str) -> None:
        """(Re)plan a job's next fire from its state; a job due for completion fires now."""
        try:
            state = self.jobs.load(job_id).state
        except Exception as exc:
            # The log cannot be read now: look again shortly (the fire decides from the
            # job's events, so a timer too early does no harm).
            log.warning("could not plan job; trying again", job_id=job_id, error=describe(exc))
            self.timers.plan_fire(job_id, self.clock.now() + timedelta(seconds=JOB_RETRY_INITIAL))
            self._wake.set()
            return
        when = state.next_fire_time()
        if when is None and state.status == "active":
            when = self.clock.now()  # decide_fire will complete it
        lead = self.fire_lead if _idle(state) and not self._behind else NO_LEAD
        self.timers.plan_fire(job_id, when if state.status == "active" else None, lead)
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
        """Process every timer due now; returns how many.

        Every due timer is handled, whatever happens to its neighbours; if the log could not
        be written for some, their timers are kept and the first such failure is raised
        (``RecordingFailed``) once all were tried.
        """
        now = self.clock.now()
        due = self.timers.pop_due(now)
        # Behind its timers (overloaded): deciding ahead would only add work (holds, timers
        # moved back and forth) to a loop that cannot keep up; fires are decided at their
        # time until it catches up.
        self._behind = bool(due) and due[0].when < now - BEHIND_AFTER
        if due:
            handling: list[asyncio.Task[RecordingFailed | None]] = []
            try:
                for begin in range(0, len(due), CHUNK_TIMERS):
                    chunk = due[begin : begin + CHUNK_TIMERS]
                    fires = [timer for timer in chunk if timer.kind == "fire"]
                    if fires:
                        handling.append(asyncio.create_task(self._fire_all(fires, now)))
                    handling.extend(
                        asyncio.create_task(self._handle(timer, now))
                        for timer in chunk
                        if timer.kind != "fire"
                    )
                    # Let this chunk decide and reach the group committer before the next is
                    # decided: the committer takes it alone, and its commands leave as soon
                    # as it is durable while the loop decides the next chunk (record, then
                    # act, chunk by chunk: an aligned tick of 1,000 fires does not wait for
                    # all of them).
                    await asyncio.sleep(0)
                failures = await asyncio.gather(*handling)
            except BaseException:
                for task in handling:  # as gather would: cancelled with the tick
                    task.cancel()
                raise
            failed = next((f for f in failures if f is not None), None)
            if failed is not None:
                raise failed
        return len(due)

    async def _fire_all(self, timers: list[Timer], now: datetime) -> RecordingFailed | None:
        """A chunk of due fires through the write path together (``_decide_all``),
        dispatched once durable. The same decision, record and dispatch as ``_handle`` makes
        for one fire, without a task, a lock wait and a committer future per fire: what the
        loop spent most of its time on with 1,000 jobs due at once (BENCHMARKS.md, "Loop
        cost per fire"). A job whose lock is held or whose stream moved meanwhile goes the
        one-by-one way."""
        fire = self._fire_decision(now)
        places = await self._decide_all([(timer.job_id, fire) for timer in timers], track=True)
        failed: RecordingFailed | None = None
        alone: list[Timer] = []
        for timer, outcome in zip(timers, places, strict=True):
            job_id = timer.job_id
            if isinstance(outcome, Decision):
                self._job_failures.pop(job_id, None)
                self.plan(job_id)
                if self.calibration is not None:
                    await self._blocked_alarm(outcome)
            elif outcome is None or isinstance(outcome, StreamVersionConflict):
                alone.append(timer)  # decided again, on what the stream holds then
            elif isinstance(outcome, RecordingFailed):
                self._keep(timer)
                failed = failed or outcome
            else:
                self._timer_failed(timer, now, outcome)
        for one in await asyncio.gather(*(self._handle(timer, now) for timer in alone)):
            failed = failed or one
        return failed

    async def _decide_all(
        self,
        commands: list[tuple[str, Callable[[JobState, datetime], Decision]]],
        *,
        track: bool,
    ) -> list[Decision | Exception | None]:
        """Several jobs' commands decided in one pass and appended with one wait
        (``GroupCommitHandler.handle_all``); the executions they start are handed on. Each
        place holds its decision, or what kept it from being recorded (a
        ``StreamVersionConflict`` when the stream moved: nothing written), or None when the
        job's lock was held (an outcome or a client's command being recorded): the caller
        sends those the one-by-one way."""
        places: list[Decision | Exception | None] = [None] * len(commands)
        taken: list[int] = []
        locks: list[asyncio.Lock] = []
        for index, (job_id, _) in enumerate(commands):
            lock = self._lock(job_id)
            if lock.locked():
                continue
            await lock.acquire()  # free: taken at once, without a turn of the loop
            locks.append(lock)
            taken.append(index)
        try:
            appended = await self._append_all([commands[index] for index in taken], track=track)
            for index, place in zip(taken, appended, strict=True):
                places[index] = place
        finally:
            for lock in locks:
                lock.release()
        return places

    async def _append_all(
        self,
        commands: list[tuple[str, Callable[[JobState, datetime], Decision]]],
        *,
        track: bool,
        linger: float = 0.0,
    ) -> list[Decision | Exception]:
        """Commands of jobs whose locks the caller holds, appended with one wait
        (``GroupCommitHandler.handle_all``, ``linger`` as there); the executions they start
        are handed on. Each place holds its decision or what kept it from being recorded."""
        results = await self.writer.handle_all(
            self.jobs,
            commands,
            self.actor,
            tracker=self._tracking if track else None,
            linger=linger,
        )
        places: list[Decision | Exception] = []
        for (job_id, _), result in zip(commands, results, strict=True):
            if isinstance(result, Handled):
                decision = Decision(result.events, result.state)
                self._started(job_id, decision)
                places.append(decision)
            else:
                places.append(result)
        return places

    def _fire_decision(self, now: datetime) -> Callable[[JobState, datetime], Decision]:
        def decide(state: JobState, _: datetime) -> Decision:
            at = self._fire_time(state, now)
            return decide_fire(state, at, self.ids.execution_id, self._blocked(state, at))

        return decide

    def _lead_again(self, job_id: str, state: JobState) -> None:
        """A job idle again (its run ended) may have its next fire decided ahead: its timer,
        planned at its time while the run went on, moves to the lead before it."""
        if self.fire_lead and _idle(state) and not self._behind:
            when = self.timers.planned(job_id)
            if when is not None:
                self.timers.plan_fire(job_id, when, self.fire_lead)
                sleeping = self._sleeping_until
                if sleeping is not None and when - self.fire_lead < sleeping:
                    self._wake.set()  # the loop sleeps past the new time (turning: it will see)

    def _fire_time(self, state: JobState, now: datetime) -> datetime:
        """The instant a fire is decided at: ``now``, or the fire's own time when it falls
        within the lead and nothing of the job runs, waits or queues. Decided ahead, the
        fire is recorded as fired at its time and its command is handed on to start then
        (``_dispatch``): the decision and its durable record are done before the fire's
        instant instead of after it. A busy job's fire is decided at its time (its conflict
        policy then sees what runs at that instant), so a run that the policy queues never
        starts before its time."""
        if self.fire_lead:
            first = state.next_fire_time()
            if first is not None and now < first <= now + self.fire_lead and _idle(state):
                return first
        return now

    async def _handle(self, timer: Timer, now: datetime) -> RecordingFailed | None:
        job_id = timer.job_id
        try:
            if timer.kind == "fire":
                fire = self._fire_decision(now)
                fired = await self._command(job_id, lambda s: fire(s, now), park=False)
                self._job_failures.pop(job_id, None)
                self.plan(job_id)
                if fired is not None:
                    await self._blocked_alarm(fired)
                return None
            execution_id = timer.execution_id
            assert execution_id is not None
            # Asked before the stop: what the executor knows of the instrument now.
            times = self.executor.instrument_times(execution_id)
            decision = await self._command(
                job_id,
                lambda s: decide_timeout(
                    s,
                    execution_id,
                    now,
                    self._equipment(s),
                    dispatched_at=self._handed.get(execution_id),
                    blocked=self._turn_blocked(s, now),
                    instrument_started_at=times.started_at,
                    instrument_ended_at=times.ended_at,
                ),
                park=False,
            )
            if decision is not None:
                await self._blocked_alarm(decision)
        except RecordingFailed as exc:
            self._keep(timer)
            return exc
        except Exception as exc:
            self._timer_failed(timer, now, exc)
            return None
        if decision is not None and decision.events:
            try:
                await self._stop(execution_id)
            except Exception:
                log.exception("could not stop a timed-out execution", execution_id=execution_id)
        return None

    def _timer_failed(self, timer: Timer, now: datetime, exc: Exception) -> None:
        """A timer whose handling raised (not the log): this job is tried again after a
        backoff of its own, its neighbours go on."""
        backoff = self._job_failures.setdefault(
            timer.job_id, Backoff(JOB_RETRY_INITIAL, JOB_RETRY_MAX)
        )
        delay = backoff.next()
        log.error(
            "timer failed; this job is tried again later",
            job_id=timer.job_id,
            kind=timer.kind,
            retry_in=round(delay, 3),
            exc_info=exc,
        )
        self._keep(timer, now + timedelta(seconds=delay))

    def _blocked(self, state: JobState, now: datetime) -> Block | None:
        """Why the job's instrument may not be used at ``now`` (None: it may)."""
        if self.calibration is None or state.spec is None:
            return None
        return self.calibration.block(state.spec.equipment_id, now)

    def _turn_blocked(self, state: JobState, now: datetime) -> Block | None:
        """For runs waiting in the line (conflict policy queue): whether the instrument may be
        used now, when one of them may get its turn (asked only then: most jobs queue none)."""
        return self._blocked(state, now) if state.queued else None

    async def _blocked_alarm(self, decision: Decision) -> None:
        """A fire recorded blocked raises the instrument's calibration_blocked alarm, once
        while it stays blocked. A report: failing to record it never fails the fire (the
        next blocked run tries again)."""
        blocked = next((e for e in decision.events if isinstance(e, ExecutionBlocked)), None)
        if blocked is None or self.calibration is None:
            return
        spec = decision.state.spec
        try:
            await self.calibration.raise_alarm(
                self.writer,
                blocked,
                job_name=spec.name if spec is not None else "",
                actor=self.actor,
                tracker=self._tracking,
            )
        except Exception as exc:
            log.warning(
                "calibration_blocked alarm not recorded",
                equipment_id=blocked.equipment_id,
                error=describe(exc),
            )

    def _keep(self, timer: Timer, when: datetime | None = None) -> None:
        """A timer whose decision was not recorded goes back into the queue, so it is tried
        again (at its own time: still due, so on the next turn after the backoff)."""
        if timer.kind == "fire":
            # Unless something planned the job meanwhile (paused, updated, deleted).
            if self.timers.planned(timer.job_id) is None:
                self.timers.plan_fire(timer.job_id, when or timer.when)
        elif timer.execution_id in self._tasks:
            self.timers.add_timeout(timer.job_id, timer.execution_id, when or timer.when)

    async def _command(
        self, job_id: str, decide: Decide, actor: str | None = None, *, park: bool = True
    ) -> Decision | None:
        """Load, decide, append with the version read; on a version conflict, reload and
        decide again. Starts whatever executions the decision started.

        One command per job at a time: a fire and the end of the previous execution would
        otherwise both append at the same version, and the loser would go round again.

        When the log cannot be written, ``park=True`` (an outcome, a late result: facts that
        must not be lost) waits, outside the job's lock, until the loop records it;
        ``park=False`` (a fire, a timeout, a request from the API) raises ``RecordingFailed``
        and the caller keeps its own work.
        """
        try:
            return await self._command_once(job_id, decide, actor)
        except RecordingFailed:
            if not park or self._stopping:
                raise
        future: asyncio.Future[Decision | None] = asyncio.get_running_loop().create_future()
        self._parked.append(_Parked(job_id, decide, actor, future))
        log.warning("decision waits until the log can be written", job_id=job_id)
        return await future

    async def _command_once(
        self, job_id: str, decide: Decide, actor: str | None, *, track: bool = True
    ) -> Decision | None:
        lock = self._lock(job_id)
        if lock.locked():
            # Its holder may be an end lingering in the committer for company: this command
            # must not wait out the linger as well.
            self.committer.hurry()
        async with lock:
            return await self._command_locked(job_id, decide, actor, track)

    def _lock(self, job_id: str) -> asyncio.Lock:
        lock = self._job_locks.get(job_id)
        if lock is None:
            lock = self._job_locks[job_id] = asyncio.Lock()
        return lock

    async def _command_locked(
        self, job_id: str, decide: Decide, actor: str | None, track: bool
    ) -> Decision | None:
        """Through the write path; ``track``: the engine's own work, whose failures and
        successes make the fault (a client's request is answered instead)."""
        try:
            handled = await self.writer.handle(
                self.jobs,
                job_id,
                lambda state, _: decide(state),
                actor or self.actor,
                tracker=self._tracking if track else None,
            )
        except StreamVersionConflict:
            log.error("job stream kept changing; decision dropped", job_id=job_id)
            return None
        decision = Decision(handled.events, handled.state)
        self._started(job_id, decision)
        return decision

    def _started(self, job_id: str, decision: Decision) -> None:
        """Hand on the executions a recorded decision started (still under the job's lock)."""
        if log.is_enabled_for(logging.DEBUG):  # three events a fire: not even their arguments
            for event in decision.events:
                log.debug(
                    event_type(event),
                    job_id=job_id,
                    execution_id=getattr(event, "execution_id", None),
                )
        for started in decision.started:
            self._dispatch(decision.state, started.execution_id, started.started_at)

    def _failed(self, stream_id: str, exc: BaseException) -> None:
        if not self.fault.failing:
            # Once per fault: with many jobs due, every one of them fails the same way.
            log.error(
                "could not record; fires are kept until the log can be written",
                stream_id=stream_id,
                error=describe(exc),
            )
        self.fault.failed(exc)

    async def _flush_parked(self) -> None:
        """Record the decisions that waited for the log, oldest first."""
        while self._parked:
            parked = self._parked[0]
            if not parked.future.done():
                try:
                    decision = await self._command_once(parked.job_id, parked.decide, parked.actor)
                except RecordingFailed:
                    raise  # still waiting; the loop backs off and comes back
                except Exception as exc:
                    parked.future.set_exception(exc)
                else:
                    parked.future.set_result(decision)
            self._parked.pop(0)

    # -- executions -----------------------------------------------------------------------------

    async def run_now(self, job_id: str, actor: str | None = None) -> str:
        """Run now (HTTP POST …/run). Raises ExecutionRefused if the policy says no, and the
        storage error when the log cannot be written (HTTP 503)."""
        execution_id = self.ids.execution_id()
        now = self.clock.now()
        await self._client_command(
            job_id, lambda s: decide_run_now(s, now, execution_id, self._blocked(s, now)), actor
        )
        return execution_id

    async def cancel(self, job_id: str, execution_id: str, reason: str = "cancelled") -> bool:
        now = self.clock.now()
        decision = await self._client_command(
            job_id,
            lambda s: decide_cancel(
                s,
                execution_id,
                now,
                reason,
                dispatched_at=self._handed.get(execution_id),
                blocked=self._turn_blocked(s, now),
            ),
        )
        if decision is None or not decision.events:
            return False
        await self._blocked_alarm(decision)
        await self._stop(execution_id)
        return True

    async def _client_command(
        self, job_id: str, decide: Decide, actor: str | None = None
    ) -> Decision | None:
        """A command a client waits for: a failure to record is answered at once, as the
        storage error itself (the API's 503), not kept."""
        try:
            decision = await self._command_once(job_id, decide, actor, track=False)
        except RecordingFailed as exc:
            if isinstance(exc.cause, StorageError):
                raise exc.cause from exc
            raise
        if decision is not None and decision.events and isinstance(self.store, ShowsLater):
            # Batched with fires, it may have been answered before this replica's reads show
            # it: the client reads it next (read-your-writes), and a forwarded run-now's
            # answer names the position that holds it.
            await asyncio.to_thread(self.store.wait_visible)
        return decision

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
        ahead = (started_at - self.clock.now()).total_seconds()
        if ahead > 0 and not self.executor.holds_until_due:
            work = self._finish_with(request, self._held(request, started_at))
        else:
            outcome = self.executor.execute(request, self._progress(request))
            work = self._finish_with(request, outcome, handing=True)
        self._track(request, started_at, work)

    async def _held(self, request: ExecutionRequest, due: datetime) -> Outcome:
        """A fire decided ahead, handed to an executor that starts what it is given at once:
        handed on at its time (a timer that woke a hair early waits out the rest, a few
        times at most: never for a clock that does not move)."""
        for _ in range(3):
            left = (due - self.clock.now()).total_seconds()
            if left <= 0:
                break
            await asyncio.sleep(left)
        self._handed[request.execution_id] = self.clock.now()
        return await self.executor.execute(request, self._progress(request))

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
        task.add_done_callback(lambda done: self._forget_task(execution_id, done))

    def _forget_task(self, execution_id: str, task: asyncio.Task[None]) -> None:
        self._tasks.pop(execution_id, None)
        self._handed.pop(execution_id, None)
        self.timers.cancel_timeout(execution_id)
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "execution's outcome not recorded",
                execution_id=execution_id,
                error=describe(task.exception() or Exception()),
            )

    def _progress(self, request: ExecutionRequest) -> ProgressReport:
        async def progress(fraction: float, message: str, data: dict[str, Any]) -> None:
            event = ExecutionProgressed(
                job_id=request.job_id,
                execution_id=request.execution_id,
                progress=fraction,
                message=message,
                data=data,
            )
            await self._progress_of(request.job_id, [event])

        return progress

    async def record_progress(self, reports: Sequence[ExecutionProgressed]) -> None:
        """Many executions' progress at once (an agent executor's fetch of reports), in the
        order given: each job's reports in one decision, every job's append in one group
        commit, as a chunk of due fires is (``_decide_all``). Returns once they are durable.
        Progress is a courtesy: what cannot be recorded is logged, never raised."""
        by_job: dict[str, list[ExecutionProgressed]] = {}
        for report in reports:
            by_job.setdefault(report.job_id, []).append(report)
        commands = [(job_id, _progress_decision(events)) for job_id, events in by_job.items()]
        # Not tracked: a lost progress report is no fault of the schedule.
        places = await self._decide_all(commands, track=False)
        for (job_id, events), place in zip(by_job.items(), places, strict=True):
            if place is None or isinstance(place, StreamVersionConflict):
                await self._progress_of(job_id, events)  # waits for the job's lock
            elif isinstance(place, RecordingFailed):
                _progress_lost(events, place)
            elif isinstance(place, Exception):  # a bug: this job's reports only
                log.error("progress not recorded", job_id=job_id, exc_info=place)

    async def _progress_of(self, job_id: str, events: list[ExecutionProgressed]) -> None:
        """One job's progress reports through the write path on their own."""
        try:
            await self._command_once(
                job_id, lambda s: decide_progress(s, events), None, track=False
            )
        except RecordingFailed as exc:
            # Progress is a courtesy: it must not fail the execution it reports on.
            _progress_lost(events, exc)

    async def _finish_with(
        self, request: ExecutionRequest, pending: Awaitable[Outcome], *, handing: bool = False
    ) -> None:
        """Wait for the outcome and record it. ``handing``: ``pending`` is the executor's
        coroutine, not started yet; it starts (the execution is handed on) at the await."""
        if handing:
            self._handed[request.execution_id] = self.clock.now()
        try:
            outcome = await pending
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # recorded as a failed execution, never lost
            # A runtime exception's class is no error type: the record says executor_error
            # (one of ERROR_TYPES), the log keeps the traceback.
            log.exception("executor raised", execution_id=request.execution_id)
            outcome = Outcome(
                status="failed",
                error=ExecutionError(
                    type="executor_error",
                    message=f"the executor raised {type(exc).__name__}: {str(exc) or repr(exc)}",
                    details={"exception": type(exc).__name__},
                ),
            )
        if outcome.status == "failed":
            error = documented_error(outcome.error)
            if error is not outcome.error:
                log.error(
                    "executor reported an undocumented error type",
                    execution_id=request.execution_id,
                    reported=None if outcome.error is None else outcome.error.type,
                )
                outcome = msgspec.structs.replace(outcome, error=error)
        now = self.clock.now()
        dispatched_at = outcome.dispatched_at or self._handed.get(request.execution_id)
        finished = await self._finish(
            request.job_id,
            lambda s: decide_finish(
                s,
                request.execution_id,
                now,
                result=outcome.result,
                error=outcome.error if outcome.status == "failed" else None,
                # Only a failure can raise an alarm: a success needs no description.
                equipment=self._equipment(s) if outcome.status == "failed" else None,
                dispatched_at=dispatched_at,
                instrument_started_at=outcome.instrument_started_at,
                instrument_ended_at=outcome.instrument_ended_at,
                blocked=self._turn_blocked(s, now),
            ),
        )
        if finished is not None:
            self._lead_again(request.job_id, finished.state)
            await self.executor.recorded(request.execution_id)
            await self._blocked_alarm(finished)

    async def _finish(self, job_id: str, decide: Decide) -> Decision | None:
        """Record an execution's end with the other ends that came in the same turn of the
        event loop: one pass through the write path and one wait for them all
        (``GroupCommitHandler.handle_all``), as a chunk's fires go. With 1,000 jobs due at
        once, their 1,000 ends arrive together, and one command each was the loop's other
        half of the cost per fire.

        The job's lock is taken at once, when the end is queued: an end that came before a
        tick is recorded before that tick decides the job's next fire (the policies judge
        what is still running). A job whose lock is held goes the one-by-one way."""
        lock = self._lock(job_id)
        if lock.locked() or self._stopping:
            return await self._command(job_id, decide)
        await lock.acquire()  # free: taken at once, without a turn of the loop
        future: asyncio.Future[Decision | _Again | None] = (
            asyncio.get_running_loop().create_future()
        )
        self._finishing.append(_Finishing(job_id, decide, lock, future))
        if len(self._finishing) == 1:
            # Its first step runs after every callback ready now: the ends that arrive in
            # this turn of the event loop join the batch.
            task = asyncio.create_task(self._record_finishes(), name="engine finishes")
            self._finish_batches.add(task)
            task.add_done_callback(self._finish_batches.discard)
        result = await future
        if isinstance(result, _Again):
            return await self._command(job_id, decide)
        return result

    async def _record_finishes(self) -> None:
        batch, self._finishing = self._finishing, []
        held = {id(entry): entry for entry in batch}

        def settle(entry: _Finishing, result: Decision | _Again | Exception | None) -> None:
            held.pop(id(entry)).lock.release()
            if entry.future.done():
                return
            if isinstance(result, Exception):
                entry.future.set_exception(result)
            else:
                entry.future.set_result(result)

        try:
            results = await self._append_all(
                [(entry.job_id, _with_time(entry.decide)) for entry in batch],
                track=True,
                linger=self._end_linger(),
            )
            for entry, result in zip(batch, results, strict=True):
                if isinstance(result, Decision):
                    settle(entry, result)
                elif isinstance(result, StreamVersionConflict):
                    # The stream moved (a client's change): decided again on what it holds
                    # now, still under the lock, so no fire comes between.
                    try:
                        decision_or_none = await self._command_locked(
                            entry.job_id, entry.decide, None, True
                        )
                    except RecordingFailed:
                        settle(entry, AGAIN)
                    else:
                        settle(entry, decision_or_none)
                elif isinstance(result, RecordingFailed):
                    settle(entry, AGAIN)
                else:
                    settle(entry, result)
        except BaseException as exc:  # cancelled mid-write, or the write path broke
            for entry in held.values():
                if entry.future.done():
                    continue
                if isinstance(exc, Exception):
                    entry.future.set_exception(exc)
                else:
                    entry.future.cancel()
            raise
        finally:
            for entry in held.values():
                entry.lock.release()

    def _end_linger(self) -> float:
        """How long ends may wait for the next fire's commit: until it is due (and the loop
        has had a moment to submit it), when that is within ``END_LINGER_SECONDS``."""
        due = self.timers.next_due()
        if due is None:
            return 0.0
        wait = (due - self.clock.now()).total_seconds()
        if wait > self.end_linger_within or self._stopping:
            return 0.0
        return max(wait, 0.0) + self.end_linger_slack

    async def record_late_result(
        self,
        job_id: str,
        execution_id: str,
        outcome: Outcome,
        *,
        equipment_id: str,
        agent_id: str = "",
        reported_at: datetime | None = None,
    ) -> LateVerdict:
        """A result no execution waited for (see ``decide_late_result``): recorded when its
        execution ended without it; the verdict says what it was."""
        verdict: list[LateVerdict] = ["unknown"]
        error = documented_error(outcome.error) if outcome.status == "failed" else None

        def decide(state: JobState) -> Decision:
            verdict[0] = late_result_verdict(state, execution_id, equipment_id)
            return decide_late_result(
                state,
                execution_id,
                now,
                equipment_id=equipment_id,
                status=outcome.status,
                result=outcome.result,
                error=error,
                agent_id=agent_id,
                reported_at=reported_at,
                instrument_started_at=outcome.instrument_started_at,
                instrument_ended_at=outcome.instrument_ended_at,
            )

        now = self.clock.now()
        await self._command(job_id, decide)
        return verdict[0]

    async def record_data_stored(
        self,
        job_id: str,
        execution_id: str,
        *,
        equipment_id: str,
        object: str,
        size: int,
        sha256: str,
        stored_at: datetime,
        agent_id: str = "",
        lost: str = "",
    ) -> DataVerdict:
        """An agent's word that a capture whose upload was pending is in the object store, or
        (``lost``: why) that it can never be (see ``domain.data``): recorded once; the verdict
        says what it was."""
        verdict: list[DataVerdict] = ["unknown"]

        def decide(state: JobState) -> Decision:
            verdict[0] = data_stored_verdict(state, execution_id, equipment_id, lost=bool(lost))
            return decide_data_stored(
                state,
                execution_id,
                equipment_id=equipment_id,
                object=object,
                size=size,
                sha256=sha256,
                stored_at=stored_at,
                agent_id=agent_id,
                lost=lost,
            )

        await self._command(job_id, decide)
        return verdict[0]

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


def _idle(state: JobState) -> bool:
    """Nothing of the job runs, waits to start or queues: its next fire may be decided
    ahead (``Engine._fire_time``)."""
    return not (state.running or state.pending or state.queued)


def _with_time(decide: Decide) -> Callable[[JobState, datetime], Decision]:
    """A decision as the write path calls it (the engine's decisions hold their own time)."""

    def decided(state: JobState, _: datetime) -> Decision:
        return decide(state)

    return decided


def _progress_decision(
    events: list[ExecutionProgressed],
) -> Callable[[JobState, datetime], Decision]:
    return _with_time(lambda state: decide_progress(state, events))


def _progress_lost(events: list[ExecutionProgressed], exc: RecordingFailed) -> None:
    log.warning(
        "progress not recorded",
        execution_ids=sorted({e.execution_id for e in events}),
        reports=len(events),
        error=describe(exc.cause),
    )


def _reanchoring(step: ClockStep) -> Decide:
    def decide(state: JobState) -> Decision:
        events = decide_reanchor(state, step.delta, step.wall_after)
        return Decision(events, fold(state, events))

    return decide


def recovery_lists(
    conn: sqlite3.Connection,
) -> tuple[list[tuple[str, datetime | None]], list[str]]:
    """(active jobs with their next fire, job ids with unfinished executions), from the
    jobs view: a fold of the log, caught up when the store was opened."""
    active = [
        (job_id, parse_instant(when) if when else None) for job_id, when in active_schedules(conn)
    ]
    return active, with_unfinished(conn)
