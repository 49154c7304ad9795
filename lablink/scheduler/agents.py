"""The executor that sends each execution to its instrument's equipment agent over NATS.

A run is a core NATS request to ``lablink.agents.<equipment_id>.run``: with no agent
serving the instrument, NATS answers "no responders" at once, and the execution fails as
equipment offline within the request timeout (2 s) at worst. Once accepted, the execution's
progress and result come back through the ``LABLINK_REPORTS`` stream, consumed here with a
durable consumer: a result published while this process was down is delivered when it
starts again, before the engine decides what the previous process left running. The stream
is a copy of the agents' ledgers (acknowledged before nats-server's disk has a report; each
outcome is on its ledger's disk before it is reported): when NATS comes back after this
process lost it, each execution still waiting asks its agent (``status``) for what a
nats-server that stopped may have lost (``_ask_waiting``), as a restart's recovery does.

A report counts only on its own instrument's subject (``lablink.reports.<equipment_id>.…``)
and for the execution's own instrument and job: anything else is refused with a warning.

Agents say they are alive on ``lablink.reports.<equipment_id>.presence``
(``lablink.scheduler.presence``). An instrument whose agent falls silent for the heartbeat
timeout is lost: its executions fail ("agent lost") and the change is reported
(``on_presence``) so the log records it offline. A result that still comes for an execution
that ended that way (or timed out, was cancelled or interrupted) is handed to the recorder
given to ``follow_late_results``: it is kept as a late result.

Each execution's waiter completes exactly once: the first word (the agent's refusal, its
result, or the loss of its heartbeat) stands and later ones change nothing.

Progress reports are advisory and many (an acquisition sends about 20): those of one fetch
(up to ``_FETCH_BATCH``) go to the recorder given to ``follow_progress``
(``Engine.record_progress``) together, one group commit for all of them, and are acknowledged
once it is durable. An execution's progress is recorded before its result is handed on. A
progress report, or the instrument's presence, also says when the operation began on the
instrument: a run that times out there is recorded with it (``instrument_times``).

In cluster mode every replica runs an executor, and the durable consumer is one for the
cluster: a pull consumer hands each report to whichever executor fetches it, so only the lease
holder's may fetch. A replica's executor starts following (``start(reports=False)``): it
takes no report until ``lead`` (before its engine's recovery, which needs the backlog), and
stops taking them at ``follow`` (its engine is closing). A follower that took a report would
acknowledge a result the leader's execution waits for (it has no waiter for it), and that
execution would wait until its timeout.

An acquisition's capture goes to the object store bucket ``LABLINK_DATA``, which ``start``
creates (agents may only use it). When the agent's result says the upload is still
``pending_upload``, the agent's later report with ``stored`` set is handed to the recorder
given to ``follow_late_results`` (``Engine.record_data_stored``): ``ExecutionDataStored``,
once; or, when the agent says the upload can never be made, ``ExecutionDataRemoved`` (reason
``lost``). An object whose upload completes after its data was recorded removed (retention
pruned its execution meanwhile) is deleted here: nothing else names it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import msgspec
import nats
import nats.errors
import nats.js.errors
import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from lablink.bus.connection import asked_again, close_nats, connect_nats, ensure_stream
from lablink.bus.data_bucket import ensure_data_bucket
from lablink.bus.options import NatsOptions
from lablink.bus.pull import BatchPull
from lablink.clock import Clock, SystemClock
from lablink.events import DATA_BUCKET, ERROR_TYPES, ExecutionError, ExecutionProgressed
from lablink.health import Health
from lablink.instruments.errors import EquipmentError
from lablink.instruments.execution import (
    ExecutionRequest,
    InstrumentTimes,
    Outcome,
    ProfileLookup,
    ProgressBatch,
    ProgressReport,
    resolve_profile,
)
from lablink.instruments.protocol import (
    ABANDONED,
    DEFAULT_HEARTBEAT_TIMEOUT_SECONDS,
    HOLD_LIMIT_SECONDS,
    PRESENCE_FILTER,
    REPORTS_ACK_WAIT_SECONDS,
    REPORTS_CONSUMER,
    REPORTS_FILTER,
    REPORTS_MAX_AGE_SECONDS,
    REPORTS_STREAM,
    RUN_REQUEST_TIMEOUT_SECONDS,
    UPLOADS_CONSUMER,
    UPLOADS_FILTER,
    UPLOADS_STREAM,
    QueueDepth,
    Report,
    RunCommand,
    RunReply,
    StatusReply,
    StatusRequest,
    StopReply,
    StopRequest,
    encoder,
    run_subject,
    status_subject,
    stop_subject,
    subject_equipment,
)
from lablink.scheduler.presence import PresenceListener, Presences, Sighting
from lablink.supervision import Supervisor, Watch

log = structlog.get_logger(tag="executor")

# Results nobody waits for (yet): kept for a restart's recovery, oldest dropped first.
_ORPHANS_KEPT = 10_000
_MONITOR_PERIOD_SECONDS = 0.25
_FETCH_BATCH = 100
# While closed under a supervisor that still runs: how often a parked loop looks again.
_PARKED_SECONDS = 60.0
# After NATS came back, how long executions whose agent does not answer yet ask again, and
# the pause between two rounds.
_ASK_AGAIN_SECONDS = 30.0
_ASK_PAUSE_SECONDS = 1.0


class LateResults(Protocol):
    """Records a result no execution waited for (``Engine.record_late_result``); returns
    the verdict: ``late`` (recorded), ``running`` (its execution still runs), ``foreign``
    or ``unknown`` (nothing recorded)."""

    async def __call__(
        self,
        job_id: str,
        execution_id: str,
        outcome: Outcome,
        *,
        equipment_id: str,
        agent_id: str = "",
        reported_at: datetime | None = None,
    ) -> str: ...


class DataStoredRecorder(Protocol):
    """Records an agent's word that a pending capture is in the object store, or (``lost``:
    why) that it never will be (``Engine.record_data_stored``); returns ``stored``, ``lost``,
    ``removed`` (its data was recorded removed meanwhile: the object is to go), ``running``
    (its result is not recorded yet), ``foreign`` or ``unknown``."""

    async def __call__(
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
    ) -> str: ...


def _orphan_key(report: Report) -> str:
    return f"{report.execution_id}#data" if report.stored is not None else report.execution_id


@dataclass
class _Waiter:
    request: ExecutionRequest
    progress: ProgressReport
    outcome: asyncio.Future[Outcome]
    # When its operation began on the instrument, once its agent said so (a progress
    # report, or the instrument's presence).
    instrument_started_at: datetime | None = None

    def settle(self, outcome: Outcome) -> bool:
        """Complete the wait, once: False (and nothing changes) when it already was."""
        if self.outcome.done():
            return False
        self.outcome.set_result(outcome)
        return True


@dataclass
class _Fetched:
    """The progress reports of one fetch not recorded yet (recorded together, then
    acknowledged), and the executions they are for."""

    reports: list[tuple[Msg, _Waiter, Report]] = field(default_factory=list)
    executions: set[str] = field(default_factory=set)

    def add(self, msg: Msg, waiter: _Waiter, report: Report) -> None:
        self.reports.append((msg, waiter, report))
        self.executions.add(report.execution_id)

    def take(self) -> list[tuple[Msg, _Waiter, Report]]:
        taken, self.reports = self.reports, []
        self.executions.clear()
        return taken


@dataclass
class _Feed:
    """A stream of reports this executor consumes with a durable consumer: the reports
    (``LABLINK_REPORTS``, a copy: acknowledged before nats-server's disk has it) or the
    uploads' words (``LABLINK_UPLOADS``, the only copy). A fetch holds ``fetching``, so that
    ``follow`` can wait for the last one."""

    task: str
    stream: str
    filter: str
    consumer: str
    copy: bool
    sub: BatchPull | None = None
    fetching: asyncio.Lock = field(default_factory=asyncio.Lock)


def _abandoned(outcome: Outcome) -> bool:
    return outcome.error is not None and outcome.error.type == ABANDONED


def _failed(type: str, message: str, **details: Any) -> Outcome:
    return Outcome(
        status="failed", error=ExecutionError(type=type, message=message, details=details)
    )


class AgentExecutor:
    # A fire decided ahead is sent at once with its due time, and its agent holds it until
    # then (``Presence.holds``); for an agent that does not say it holds, it waits here.
    holds_until_due = True

    def __init__(
        self,
        options: NatsOptions,
        *,
        profiles: ProfileLookup | None = None,
        heartbeat_timeout: float = DEFAULT_HEARTBEAT_TIMEOUT_SECONDS,
        run_timeout: float = RUN_REQUEST_TIMEOUT_SECONDS,
        on_presence: PresenceListener | None = None,
        supervisor: Supervisor | None = None,
        health: Health | None = None,
        clock: Clock | None = None,
        ack_wait: float = REPORTS_ACK_WAIT_SECONDS,
    ) -> None:
        self.options = options
        # How long JetStream waits for a report's acknowledgement before it offers the report
        # again (the durable consumer's, set when it is made).
        self.ack_wait = ack_wait
        # Cluster mode: the lease epoch of this replica's engine, carried by each run command
        # so that agents refuse a former leader's (0: one scheduler, no lease).
        self.lease_epoch: Callable[[], int] = lambda: 0
        self.profiles = profiles
        self.run_timeout = run_timeout
        # The scheduler's clock, to tell how late an execution already is when it is sent.
        self.clock = clock or SystemClock()
        # Without a supervisor of the runtime's, the loops run under one of our own.
        self._own_supervisor = supervisor is None
        self.health = health or (supervisor.health if supervisor else Health(self.clock))
        self.supervisor = supervisor or Supervisor(self.health)
        self.presences = Presences(
            heartbeat_timeout=heartbeat_timeout,
            health=self.health,
            on_gone=self._fail_all,
            on_change=on_presence,
        )
        self._nc: NATS | None = None
        self._js: JetStreamContext | None = None
        self._feeds = (
            _Feed("task.reports", REPORTS_STREAM, REPORTS_FILTER, REPORTS_CONSUMER, copy=True),
            _Feed("task.uploads", UPLOADS_STREAM, UPLOADS_FILTER, UPLOADS_CONSUMER, copy=False),
        )
        self._waiters: dict[str, _Waiter] = {}
        # Execution id -> its instrument, until it ends or is stopped.
        self._dispatched: dict[str, str] = {}
        self._orphans: OrderedDict[str, Report] = OrderedDict()
        # Results handed to their waiting execution, not yet on the engine's record: each
        # acknowledged once it is (``recorded``), so a scheduler that dies in between gets
        # the report again.
        self._unrecorded: OrderedDict[str, Msg] = OrderedDict()
        self._sending: dict[str, asyncio.Future[Outcome | None]] = {}
        self._late: LateResults | None = None
        self._data_stored: DataStoredRecorder | None = None
        self._progress: ProgressBatch | None = None
        self._closed = False
        # After NATS came back: the executions still waiting ask their agents (see
        # ``_ask_waiting``).
        self._asking: asyncio.Task[None] | None = None
        # Set while this executor takes reports (always, but for a cluster's follower: see
        # the module).
        self._taking = asyncio.Event()

    @property
    def sightings(self) -> dict[str, Sighting]:
        return self.presences.sightings

    def queue_depths(self) -> dict[str, QueueDepth]:
        """Each online instrument's queue as its agent last said (its presence: every
        heartbeat, sooner when the queue changed). Live, never from the log."""
        return {eid: s.presence.queue for eid, s in self.sightings.items() if s.online}

    @property
    def heartbeat_timeout(self) -> float:
        return self.presences.heartbeat_timeout

    @heartbeat_timeout.setter
    def heartbeat_timeout(self, seconds: float) -> None:
        self.presences.heartbeat_timeout = seconds

    @property
    def nc(self) -> NATS:
        if self._nc is None:
            raise RuntimeError("AgentExecutor.start() was not called")
        return self._nc

    async def start(self, *, reports: bool = True) -> None:
        """Connect, make sure the reports stream exists, and take in every report that
        arrived while no scheduler was listening. ``reports=False`` (a cluster's replica):
        take none until ``lead``."""
        self._nc = await connect_nats(
            self.options, name="lablink-scheduler-executor", reconnected_cb=self._reconnected
        )
        self._js = self._nc.jetstream()
        for feed in self._feeds:
            feed.sub = await self._subscribe(feed)
        await ensure_data_bucket(self._js, replicas=self.options.replicas)
        await self._nc.subscribe(PRESENCE_FILTER, cb=self._on_presence)
        if reports:
            await self.lead()
        for feed in self._feeds:
            self.supervisor.spawn(feed.task, functools.partial(self._consume, feed))
        self.supervisor.spawn("task.heartbeats", self._monitor)

    async def lead(self) -> None:
        """Take reports from now on, beginning with those that came while nobody took them
        (before the engine's recovery, which looks for its executions' results among them).
        Nothing when taking them already."""
        if self._taking.is_set():
            return
        self._taking.set()
        backlog = 0
        for feed in self._feeds:
            async with feed.fetching:
                if feed.sub is None:
                    feed.sub = await self._subscribe(feed)
                backlog += await self._fetch(feed.sub, wait=0.2)
        if backlog:
            log.info("reports taken in after start", reports=backlog)

    async def follow(self) -> None:
        """Take no more reports (a cluster's replica that lost the lease: the new holder
        takes them); returns once a fetch under way has ended. Results and uploads no longer
        go to the former engine's recorders."""
        self._taking.clear()
        async with self._feeds[0].fetching, self._feeds[1].fetching:
            self._late = None
            self._data_stored = None
            self._progress = None

    async def follow_late_results(
        self, record: LateResults, stored: DataStoredRecorder | None = None
    ) -> None:
        """From now on, results no execution waits for go to ``record`` (and completed
        uploads to ``stored``). Call it once the engine has recovered: the reports that came
        before and that no recovery claimed are handed over at once."""
        self._late = record
        self._data_stored = stored
        for key, report in list(self._orphans.items()):
            if await self._hand_over(report) != "running":
                self._orphans.pop(key, None)

    def follow_progress(self, record: ProgressBatch) -> None:
        """From now on, the progress reports of one fetch go to ``record`` together
        (``Engine.record_progress``: one group commit, not one per report). Until then each
        goes through its execution's own progress callback."""
        self._progress = record

    async def aclose(self) -> None:
        self._closed = True
        if self._asking is not None:
            self._asking.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._asking
        if self._own_supervisor:
            await self.supervisor.aclose()
        self.presences.forget_health()
        if self._nc is not None:
            await close_nats(self._nc)

    async def _subscribe(self, feed: _Feed) -> BatchPull:
        """The feed's durable consumer, made or bound as configured, and a ``BatchPull``
        on it (nats-py's own fetch takes a turn of the loop per message: see bus/pull.py)."""
        assert self._js is not None
        await ensure_stream(
            self._js,
            feed.stream,
            [feed.filter],
            replicas=self.options.replicas,
            max_age=REPORTS_MAX_AGE_SECONDS,
            copy=feed.copy,
        )
        js = self._js
        bound = await asked_again(
            lambda: js.pull_subscribe(
                feed.filter,
                durable=feed.consumer,
                stream=feed.stream,
                config=ConsumerConfig(
                    ack_policy=AckPolicy.EXPLICIT,
                    deliver_policy=DeliverPolicy.ALL,
                    ack_wait=self.ack_wait,
                    max_ack_pending=10_000,
                ),
            ),
            consumer=feed.consumer,
        )
        # Its inbox is never asked for anything: the fetches go through the BatchPull's.
        await bound.unsubscribe()
        return await BatchPull(self.nc, feed.stream, feed.consumer).start()

    # -- the executor ---------------------------------------------------------------------------

    async def execute(self, request: ExecutionRequest, progress: ProgressReport) -> Outcome:
        execution_id = request.execution_id
        equipment_id = request.spec.equipment_id
        try:
            settings = resolve_profile(request, self.profiles)
        except EquipmentError as exc:
            return Outcome(
                status="failed",
                error=ExecutionError(type=exc.error_type, message=str(exc), details=exc.details),
            )
        ahead = (request.scheduled_time - self.clock.now()).total_seconds()
        if (
            request.trigger_info == "scheduled"
            and ahead > 0
            and not self._agent_holds(equipment_id)
        ):
            await asyncio.sleep(min(ahead, HOLD_LIMIT_SECONDS))
        # Registered before the request: the result may come back before the reply.
        waiter = self._wait_for(request, progress)
        try:
            command = RunCommand(
                request=request,
                profile_settings=None if settings is None else dict(settings),
                due_at=self._due_at(request),
                misfire_grace_time=request.spec.misfire_grace_time,
                lease_epoch=self.lease_epoch(),
            )
            self._dispatched[execution_id] = equipment_id
            # Shielded, like the wait below: when the engine cancels this task (timeout,
            # cancel), the request still completes and the execution stays known as
            # dispatched, so that stop() reaches the agent that may have taken it.
            sent: list[datetime] = []
            sending = asyncio.ensure_future(self._send_run(equipment_id, command, sent))
            self._sending[execution_id] = sending
            refused = await asyncio.shield(sending)
            # The heartbeat watcher may have ended the wait while the request was out.
            if refused is not None:
                waiter.settle(refused)
            outcome = await asyncio.shield(waiter.outcome)
            # The agent's outcome has its own times; when the command left is ours.
            return msgspec.structs.replace(outcome, dispatched_at=sent[0]) if sent else outcome
        finally:
            self._waiters.pop(execution_id, None)
            if execution_id in self._sending and self._sending[execution_id].done():
                del self._sending[execution_id]
            if waiter.outcome.done():
                self._dispatched.pop(execution_id, None)

    def _agent_holds(self, equipment_id: str) -> bool:
        """Whether the instrument's agent said it holds a command sent ahead until it is due
        (its presence); an agent not seen yet is not trusted to."""
        sighting = self.presences.sightings.get(equipment_id)
        return sighting is not None and sighting.presence.holds

    def _due_at(self, request: ExecutionRequest) -> datetime:
        """When the execution is due to start, on this host's wall clock (the agent's
        reference for refusing stale commands, and for holding one sent ahead). A scheduled
        fire is due at its scheduled time (ahead: later than now, and its agent waits for
        it); a run-now, a catch-up or a queued run that starts now is due now."""
        sent = datetime.now(UTC)
        if request.trigger_info != "scheduled":
            return sent
        late = self.clock.now() - request.scheduled_time
        if late <= timedelta(seconds=request.spec.misfire_grace_time):
            return sent - late
        return sent  # started later by its conflict policy (queue)

    async def _send_run(
        self, equipment_id: str, command: RunCommand, sent: list[datetime]
    ) -> Outcome | None:
        """None once an agent has the execution; else why it failed before it started.
        ``sent`` gets the instant the request is published (the execution's dispatch)."""
        payload = encoder.encode(command)
        sent.append(self.clock.now())
        try:
            msg = await self.nc.request(
                run_subject(equipment_id), payload, timeout=self.run_timeout
            )
        except nats.errors.NoRespondersError:
            return _failed(
                "equipment_offline",
                f"equipment offline: no agent serves {equipment_id}",
                equipment_id=equipment_id,
            )
        except nats.errors.TimeoutError:
            return _failed(
                "equipment_offline",
                f"equipment offline: the agent of {equipment_id} did not answer within "
                f"{self.run_timeout:g} s",
                equipment_id=equipment_id,
            )
        except nats.errors.Error as exc:
            return _failed(
                "equipment_offline",
                f"equipment offline: NATS is unavailable ({type(exc).__name__})",
                equipment_id=equipment_id,
            )
        try:
            reply = msgspec.json.decode(msg.data, type=RunReply)
        except msgspec.DecodeError as exc:
            return _failed("refused", f"the agent's reply could not be read: {exc}")
        if reply.status == "refused":
            if reply.error is not None and reply.error.type in ERROR_TYPES:
                return Outcome(status="failed", error=reply.error)
            return _failed("refused", f"the agent refused the execution: {reply.reason}")
        self.presences.accepted_by(equipment_id, reply.agent_id)
        if reply.status == "duplicate":
            log.warning(
                "agent already had this execution",
                execution_id=command.request.execution_id,
                state=reply.state,
            )
        return None

    async def recover(
        self, request: ExecutionRequest, progress: ProgressReport
    ) -> Awaitable[Outcome] | None:
        execution_id = request.execution_id
        equipment_id = request.spec.equipment_id
        report = self._orphans.pop(execution_id, None)
        orphan = report.outcome if report is not None else None
        if orphan is None:
            status = await self._status(equipment_id, execution_id)
            if status is None or status.state == "unknown":
                return None  # no agent knows of it: interrupted
            orphan = status.outcome
        if orphan is not None and _abandoned(orphan):
            return None  # the agent died under it too: nobody knows how it ended
        if orphan is not None:
            future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
            future.set_result(orphan)
            return future
        waiter = self._wait_for(request, progress)
        self._dispatched[execution_id] = equipment_id
        self.presences.seen_now(equipment_id)

        async def follow() -> Outcome:
            try:
                return await asyncio.shield(waiter.outcome)
            finally:
                self._waiters.pop(execution_id, None)
                if waiter.outcome.done():
                    self._dispatched.pop(execution_id, None)

        return follow()

    async def _status(self, equipment_id: str, execution_id: str) -> StatusReply | None:
        """What the agent of ``equipment_id`` knows of ``execution_id`` (its ledger), or None
        when no agent answers."""
        try:
            msg = await self.nc.request(
                status_subject(equipment_id),
                encoder.encode(StatusRequest(execution_id=execution_id)),
                timeout=self.run_timeout,
            )
            return msgspec.json.decode(msg.data, type=StatusReply)
        except (nats.errors.Error, msgspec.DecodeError):
            return None

    async def _reconnected(self) -> None:
        # nats-py awaits this callback before it goes on: the asking runs on its own.
        if self._closed:
            return
        if self._asking is not None and not self._asking.done():
            self._asking.cancel()
        self._asking = asyncio.create_task(self._ask_waiting(), name="results asked again")

    async def _ask_waiting(self) -> None:
        """NATS came back: a nats-server that stopped may have lost reports it had
        acknowledged (the reports stream is a copy, see the module). Each execution still
        waiting for its result asks its agent, whose ledger has every outcome it reported
        (on disk before the report went); for ``_ASK_AGAIN_SECONDS``, as the agents find NATS
        back too, the executions whose agent did not answer ask again."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _ASK_AGAIN_SECONDS
        answered: set[str] = set()
        while not self._closed:
            waiting = [
                (execution_id, waiter)
                for execution_id, waiter in list(self._waiters.items())
                if execution_id not in answered
                and not waiter.outcome.done()
                and (self._sending.get(execution_id) is None or self._sending[execution_id].done())
            ]
            if not waiting:
                return
            statuses = await asyncio.gather(
                *(self._status(w.request.spec.equipment_id, eid) for eid, w in waiting)
            )
            for (execution_id, waiter), status in zip(waiting, statuses, strict=True):
                if status is None:
                    continue  # its agent is not back yet: asked again
                answered.add(execution_id)
                outcome = status.outcome
                if status.state != "finished" or outcome is None or _abandoned(outcome):
                    continue  # still running (its report will come), or its agent's to tell
                if waiter.settle(outcome):
                    log.warning(
                        "result taken from its agent: its report did not come",
                        execution_id=execution_id,
                        equipment_id=waiter.request.spec.equipment_id,
                        status=outcome.status,
                    )
            if loop.time() >= deadline:
                return
            await asyncio.sleep(_ASK_PAUSE_SECONDS)

    async def recorded(self, execution_id: str) -> None:
        """The engine has the execution's end on record: its result's report is acknowledged
        (nothing when there is none waiting: an in-process outcome, a recovery's)."""
        msg = self._unrecorded.pop(execution_id, None)
        if msg is None:
            return
        try:
            await msg.ack()
        except Exception as exc:  # offered again after the ack wait: a duplicate, ignored
            log.warning("result not acknowledged", execution_id=execution_id, error=str(exc))

    async def stop(self, execution_id: str) -> None:
        sending = self._sending.pop(execution_id, None)
        if sending is not None:  # cancelled while asking: let the request finish first
            await asyncio.wait([sending], timeout=self.run_timeout + 1)
            if sending.done() and not sending.cancelled() and sending.result() is not None:
                self._dispatched.pop(execution_id, None)  # no agent took it
        equipment_id = self._dispatched.pop(execution_id, None)
        if equipment_id is None:
            return
        try:
            msg = await self.nc.request(
                stop_subject(equipment_id),
                encoder.encode(StopRequest(execution_id=execution_id, reason="timed out")),
                timeout=30,
            )
            reply = msgspec.json.decode(msg.data, type=StopReply)
        except (nats.errors.Error, msgspec.DecodeError) as exc:
            log.error(
                "stop not confirmed by the agent",
                execution_id=execution_id,
                equipment_id=equipment_id,
                error=type(exc).__name__,
            )
            return
        log.info(
            "agent stopped the execution",
            execution_id=execution_id,
            stopped=reply.stopped,
            safe_state=reply.safe_state,
            error=reply.error,
        )

    def describe_equipment(self, equipment_id: str) -> dict[str, Any]:
        """What the instrument's agent last said of it (see ``Presences.describe``)."""
        return self.presences.describe(equipment_id)

    def instrument_times(self, execution_id: str) -> InstrumentTimes:
        """When the execution's operation began on its instrument, as its agent said it in a
        progress report or a presence (within ``QUEUE_ANNOUNCE_SECONDS`` of the start). Its
        end comes only with its result: an execution still waited for has none."""
        waiter = self._waiters.get(execution_id)
        if waiter is None:
            return InstrumentTimes()
        return InstrumentTimes(started_at=waiter.instrument_started_at)

    def _wait_for(self, request: ExecutionRequest, progress: ProgressReport) -> _Waiter:
        waiter = _Waiter(request, progress, asyncio.get_running_loop().create_future())
        self._waiters[request.execution_id] = waiter
        return waiter

    # -- reports --------------------------------------------------------------------------------

    async def _consume(self, feed: _Feed, watch: Watch) -> None:
        """Supervised (``task.reports``, ``task.uploads``): a failure other than an idle wait
        restarts this body after the supervisor's backoff, with a fresh subscription (the
        stream may have gone with a nats-server that lost its store)."""
        while not watch.stopping:
            if self._closed:
                await watch.sleep(_PARKED_SECONDS)
                continue
            if not self._taking.is_set():
                watch.ok("following: the lease holder takes the reports")
                await watch.sleep(_PARKED_SECONDS, until=self._taking)
                continue
            try:
                async with feed.fetching:
                    if not self._taking.is_set():  # ``follow`` came while this waited
                        continue
                    if feed.sub is None:
                        feed.sub = await self._subscribe(feed)
                    await self._fetch(feed.sub, wait=1.0)
            except Exception:
                if self._closed:
                    continue
                sub, feed.sub = feed.sub, None
                if sub is not None:
                    with contextlib.suppress(Exception):
                        await sub.close()
                raise
            await self._retry_orphans()
            watch.ok(waiting=len(self._waiters), orphans=len(self._orphans))

    async def _fetch(self, sub: BatchPull, *, wait: float) -> int:
        """Take reports until none is waiting; returns how many."""
        taken = 0
        while True:
            try:
                msgs = await sub.fetch(_FETCH_BATCH, wait)
            except TimeoutError:  # none came within ``wait``
                return taken
            fetched = _Fetched()
            for msg in msgs:
                await self._take(msg, fetched)
                taken += 1
            await self._record_progress(fetched)
            if len(msgs) < _FETCH_BATCH:
                return taken

    async def _record_progress(self, fetched: _Fetched) -> None:
        """The fetch's progress reports so far, recorded together in the order they came,
        then acknowledged (once durable). Progress is advisory: one that cannot be recorded
        is logged and acknowledged all the same."""
        reports = fetched.take()
        if not reports:
            return
        if self._progress is not None:
            try:
                await self._progress([_progressed(waiter, report) for _, waiter, report in reports])
            except Exception:
                log.exception("progress not recorded", reports=len(reports))
        else:
            for _, waiter, report in reports:
                try:
                    await waiter.progress(report.progress, report.message, report.data)
                except Exception:
                    log.exception("progress not recorded", execution_id=report.execution_id)
        for msg, _, _ in reports:
            await msg.ack()

    async def _take(self, msg: Msg, fetched: _Fetched) -> None:
        try:
            report = msgspec.json.decode(msg.data, type=Report)
        except msgspec.DecodeError as exc:
            log.error("undecodable report dropped", subject=msg.subject, error=str(exc))
            await msg.ack()
            return
        waiter = self._waiters.get(report.execution_id)
        refusal = _refusal(msg.subject, report, waiter)
        if refusal is not None:
            log.warning(
                "report refused",
                reason=refusal,
                subject=msg.subject,
                execution_id=report.execution_id,
                equipment_id=report.equipment_id,
                agent_id=report.agent_id,
            )
            await msg.ack()  # forged or misrouted: never recorded, never redelivered
            return
        self.presences.seen_now(report.equipment_id)
        is_progress = report.stored is None and report.outcome is None
        if not is_progress and report.execution_id in fetched.executions:
            # Its progress goes to the log before its end is handed on: once the end is
            # recorded, the execution no longer runs and its progress would be dropped.
            await self._record_progress(fetched)
        if report.stored is not None:
            if self._late is None:
                self._keep_orphan(report)
            else:
                try:
                    verdict = await self._hand_over(report)
                except Exception:
                    # Not acknowledged: JetStream offers it again after its ack wait.
                    log.exception("stored upload not recorded", execution_id=report.execution_id)
                    return
                if verdict == "running":
                    self._keep_orphan(report)
        elif report.outcome is not None:
            # A waiter already ended (its agent was lost while its run request was out)
            # takes no second outcome: the result is late, as if nobody waited.
            if waiter is not None and waiter.settle(report.outcome):
                # Acknowledged once the engine has the end on record (``recorded``): a
                # crash before that (a process killed, the machine's power) leaves the
                # report in the stream for the next start, not only in the agent's ledger.
                self._unrecorded[report.execution_id] = msg
                while len(self._unrecorded) > _ORPHANS_KEPT:
                    # Never recorded (a decision dropped): JetStream offers it again after
                    # its ack wait, and it goes the late results' way then.
                    self._unrecorded.popitem(last=False)
                return
            elif self._late is None:
                self._keep_orphan(report)
            else:
                # Offered again (its execution's end was not recorded with it: a timeout
                # came first, or the decision was dropped): the copy held for it is moot.
                self._unrecorded.pop(report.execution_id, None)
                try:
                    verdict = await self._hand_late(report)
                except Exception:
                    # Not acknowledged: JetStream offers it again after its ack wait.
                    log.exception("late result not recorded", execution_id=report.execution_id)
                    return
                if verdict == "running":  # its end is not recorded yet: try again later
                    self._keep_orphan(report)
        elif waiter is not None:
            if waiter.instrument_started_at is None:
                waiter.instrument_started_at = report.instrument_started_at
            fetched.add(msg, waiter, report)
            return  # acknowledged once recorded, with the fetch's other progress
        # After the hand-over: a crash before this ack re-delivers the report, and the
        # engine ignores a second end of an execution that already ended.
        await msg.ack()

    async def _retry_orphans(self) -> None:
        """Results kept because their execution's end was not recorded yet when they came
        (the agent lost while the engine was still writing it): hand them over again."""
        if self._late is None or not self._orphans:
            return
        for key, report in list(self._orphans.items())[:_FETCH_BATCH]:
            if report.execution_id in self._waiters:
                continue
            try:
                verdict = await self._hand_over(report)
            except Exception:
                log.exception("late report not recorded", execution_id=report.execution_id)
                return
            if verdict != "running":
                self._orphans.pop(key, None)

    def _keep_orphan(self, report: Report) -> None:
        self._orphans[_orphan_key(report)] = report
        while len(self._orphans) > _ORPHANS_KEPT:
            self._orphans.popitem(last=False)

    async def _hand_over(self, report: Report) -> str:
        """A result, or a completed upload, that no waiter takes: to its recorder."""
        if report.stored is not None:
            return await self._hand_stored(report)
        return await self._hand_late(report)

    async def _hand_stored(self, report: Report) -> str:
        """The agent's word that a pending capture is now in the object store."""
        stored = report.stored
        assert stored is not None
        if self._data_stored is None:
            log.warning("stored upload ignored: no recorder", execution_id=report.execution_id)
            return "unknown"
        verdict = await self._data_stored(
            report.job_id,
            report.execution_id,
            equipment_id=report.equipment_id,
            object=stored.object,
            size=stored.size,
            sha256=stored.sha256,
            stored_at=stored.stored_at,
            agent_id=report.agent_id,
            lost=stored.lost,
        )
        fields = {
            "execution_id": report.execution_id,
            "job_id": report.job_id,
            "equipment_id": report.equipment_id,
            "agent_id": report.agent_id,
            "object": stored.object,
        }
        if verdict == "stored":
            log.info("capture upload recorded", **fields)
        elif verdict == "lost":
            log.error("capture lost by its agent: recorded removed", reason=stored.lost, **fields)
        elif verdict == "removed" and not stored.lost:
            # Its removal was recorded while the upload was pending: nothing names the object
            # now, and nothing else would ever delete it.
            await self._delete_object(stored.object)
            log.info("capture deleted: its data was removed before its upload came", **fields)
        elif verdict == "foreign":
            log.warning("report refused: the job drives another instrument", **fields)
        elif verdict == "unknown":
            log.info("stored upload ignored: nothing awaits it", **fields)
        return verdict

    async def _delete_object(self, name: str) -> None:
        """Delete the capture ``name`` from the bucket (gone already: nothing to do). A NATS
        failure raises: the report is not acknowledged and comes again."""
        assert self._js is not None
        store = await self._js.object_store(DATA_BUCKET)
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await store.delete(name)

    async def _hand_late(self, report: Report) -> str:
        """Give a result no execution waits for to the late-result recorder; log what it
        was. Its verdict is returned (``running``: keep it for a recovery)."""
        assert self._late is not None
        assert report.outcome is not None
        verdict = await self._late(
            report.job_id,
            report.execution_id,
            report.outcome,
            equipment_id=report.equipment_id,
            agent_id=report.agent_id,
            reported_at=report.at,
        )
        fields = {
            "execution_id": report.execution_id,
            "job_id": report.job_id,
            "equipment_id": report.equipment_id,
            "agent_id": report.agent_id,
            "status": report.outcome.status,
        }
        if verdict == "late":
            log.warning("late result recorded: the execution had already ended", **fields)
        elif verdict == "foreign":
            log.warning("report refused: the job drives another instrument", **fields)
        elif verdict == "unknown":
            log.info("result ignored: its execution already has its outcome", **fields)
        return verdict

    # -- presence -------------------------------------------------------------------------------

    async def _on_presence(self, msg: Msg) -> None:
        """A presence message: to ``Presences``; the starts it names are noted on their
        executions (kept once said: the next presence no longer names an operation that
        ended, though its result may still be on its way)."""
        await self.presences.on_message(msg)
        equipment_id = subject_equipment(msg.subject)
        sighting = self.sightings.get(equipment_id)
        if sighting is None:
            return
        for execution_id, began in sighting.presence.started.items():
            waiter = self._waiters.get(execution_id)
            if (
                waiter is not None
                and waiter.instrument_started_at is None
                and waiter.request.spec.equipment_id == equipment_id
            ):
                waiter.instrument_started_at = began

    async def _monitor(self, watch: Watch) -> None:
        """Supervised (``task.heartbeats``): instruments whose agent fell silent are lost."""
        while not watch.stopping:
            if await watch.sleep(_PARKED_SECONDS if self._closed else _MONITOR_PERIOD_SECONDS):
                return
            if not self._closed:
                await self.presences.check()
                watch.ok(instruments=len(self.sightings))

    def _fail_all(self, equipment_id: str, type: str, message: str) -> None:
        """The instrument's agent is gone: every execution waiting on it ends, once."""
        for waiter in list(self._waiters.values()):
            if (
                waiter.request.spec.equipment_id == equipment_id
                and waiter.request.execution_id in self._dispatched
            ):
                waiter.settle(_failed(type, message, equipment_id=equipment_id))


def _progressed(waiter: _Waiter, report: Report) -> ExecutionProgressed:
    return ExecutionProgressed(
        job_id=waiter.request.job_id,
        execution_id=report.execution_id,
        progress=report.progress,
        message=report.message,
        data=report.data,
    )


def _refusal(subject: str, report: Report, waiter: _Waiter | None) -> str | None:
    """Why a report cannot count, or None: it must come on its own instrument's subject,
    for its own execution, and match the instrument and job of the execution it ends."""
    parts = subject.split(".")
    on = subject_equipment(subject)
    if on != report.equipment_id:
        return f"a report for {report.equipment_id!r} on the subject of {on!r}"
    if len(parts) < 5 or parts[4] != report.execution_id:
        return f"a report for {report.execution_id} on another execution's subject"
    if waiter is not None:
        request = waiter.request
        if request.spec.equipment_id != report.equipment_id:
            return (
                f"execution {report.execution_id} runs on {request.spec.equipment_id!r},"
                f" not {report.equipment_id!r}"
            )
        if request.job_id != report.job_id:
            return f"execution {report.execution_id} belongs to {request.job_id}"
    return None
