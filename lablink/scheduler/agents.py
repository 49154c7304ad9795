"""The executor that sends each execution to its instrument's equipment agent over NATS.

A run is a core NATS request to ``lablink.agents.<equipment_id>.run``: with no agent
serving the instrument, NATS answers "no responders" at once, and the execution fails as
equipment offline within the request timeout (2 s) at worst. Once accepted, the execution's
progress and result come back through the durable ``LABLINK_REPORTS`` stream, consumed here
with a durable consumer: a result published while this process was down is delivered when
it starts again, before the engine decides what the previous process left running.

Agents say they are alive on ``lablink.reports.<equipment_id>.presence``. An instrument
whose agent falls silent for the heartbeat timeout is lost: its executions fail ("agent
lost") and the change is reported (``on_presence``) so the log records it offline.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec
import nats
import nats.errors
import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from lablink.bus.relay import NatsOptions
from lablink.equipment_agent.errors import EquipmentError
from lablink.equipment_agent.protocol import (
    ABANDONED,
    DEFAULT_HEARTBEAT_TIMEOUT_SECONDS,
    PRESENCE_FILTER,
    REPORTS_CONSUMER,
    REPORTS_FILTER,
    REPORTS_MAX_AGE_SECONDS,
    REPORTS_STREAM,
    RUN_REQUEST_TIMEOUT_SECONDS,
    Outcome,
    Presence,
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
)
from lablink.events import ExecutionError
from lablink.scheduler.executor import ExecutionOutcome, ExecutionRequest, ProgressReport
from lablink.scheduler.inprocess import ProfileLookup, resolve_profile

log = structlog.get_logger(tag="executor")

# Results nobody waits for (yet): kept for a restart's recovery, oldest dropped first.
_ORPHANS_KEPT = 10_000
_MONITOR_PERIOD_SECONDS = 0.25
_FETCH_BATCH = 100
PresenceListener = Callable[[Presence], Awaitable[None]]


@dataclass
class _Waiter:
    request: ExecutionRequest
    progress: ProgressReport
    outcome: asyncio.Future[Outcome]


@dataclass
class Sighting:
    presence: Presence
    last_seen: float  # time.monotonic()
    at: datetime  # wall clock, for the API

    @property
    def online(self) -> bool:
        return self.presence.state == "online"


def _outcome(outcome: Outcome) -> ExecutionOutcome:
    return ExecutionOutcome(status=outcome.status, result=outcome.result, error=outcome.error)


def _abandoned(outcome: Outcome) -> bool:
    return outcome.error is not None and outcome.error.type == ABANDONED


def _failed(type: str, message: str, **details: Any) -> Outcome:
    return Outcome(
        status="failed", error=ExecutionError(type=type, message=message, details=details)
    )


class AgentExecutor:
    def __init__(
        self,
        options: NatsOptions,
        *,
        profiles: ProfileLookup | None = None,
        heartbeat_timeout: float = DEFAULT_HEARTBEAT_TIMEOUT_SECONDS,
        run_timeout: float = RUN_REQUEST_TIMEOUT_SECONDS,
        on_presence: PresenceListener | None = None,
    ) -> None:
        self.options = options
        self.profiles = profiles
        self.heartbeat_timeout = heartbeat_timeout
        self.run_timeout = run_timeout
        self.on_presence = on_presence
        self.sightings: dict[str, Sighting] = {}
        self._nc: NATS | None = None
        self._js: JetStreamContext | None = None
        self._waiters: dict[str, _Waiter] = {}
        # Execution id -> its instrument, until it ends or is stopped.
        self._dispatched: dict[str, str] = {}
        self._orphans: OrderedDict[str, Outcome] = OrderedDict()
        self._sending: dict[str, asyncio.Future[Outcome | None]] = {}
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def nc(self) -> NATS:
        if self._nc is None:
            raise RuntimeError("AgentExecutor.start() was not called")
        return self._nc

    async def start(self) -> None:
        """Connect, make sure the reports stream exists, and take in every report that
        arrived while no scheduler was listening."""
        self._nc = await nats.connect(
            **self.options.connect_kwargs(),
            name="lablink-scheduler-executor",
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
        )
        self._js = js = self._nc.jetstream()
        await self._ensure_stream(js)
        sub = await js.pull_subscribe(
            REPORTS_FILTER,
            durable=REPORTS_CONSUMER,
            stream=REPORTS_STREAM,
            config=ConsumerConfig(
                ack_policy=AckPolicy.EXPLICIT,
                deliver_policy=DeliverPolicy.ALL,
                ack_wait=30,
                max_ack_pending=10_000,
            ),
        )
        await self._nc.subscribe(PRESENCE_FILTER, cb=self._on_presence)
        backlog = await self._fetch(sub, wait=0.2)
        if backlog:
            log.info("reports taken in after start", reports=backlog)
        self._tasks = [
            asyncio.create_task(self._consume(sub), name="agent reports"),
            asyncio.create_task(self._monitor(), name="agent heartbeats"),
        ]

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.close()

    async def _ensure_stream(self, js: JetStreamContext) -> None:
        try:
            await js.stream_info(REPORTS_STREAM)
        except NotFoundError:
            await js.add_stream(
                StreamConfig(
                    name=REPORTS_STREAM,
                    subjects=[REPORTS_FILTER],
                    storage=StorageType.FILE,
                    duplicate_window=600.0,
                    max_age=REPORTS_MAX_AGE_SECONDS,
                    num_replicas=self.options.replicas,
                )
            )

    # -- the executor ---------------------------------------------------------------------------

    async def execute(
        self, request: ExecutionRequest, progress: ProgressReport
    ) -> ExecutionOutcome:
        execution_id = request.execution_id
        equipment_id = request.spec.equipment_id
        try:
            settings = resolve_profile(request, self.profiles)
        except EquipmentError as exc:
            return ExecutionOutcome(
                status="failed",
                error=ExecutionError(type=exc.error_type, message=str(exc), details=exc.details),
            )
        # Registered before the request: the result may come back before the reply.
        waiter = self._wait_for(request, progress)
        try:
            command = RunCommand(
                request=request, profile_settings=None if settings is None else dict(settings)
            )
            self._dispatched[execution_id] = equipment_id
            # Shielded, like the wait below: when the engine cancels this task (timeout,
            # cancel), the request still completes and the execution stays known as
            # dispatched, so that stop() reaches the agent that may have taken it.
            sending = asyncio.ensure_future(self._send_run(equipment_id, command))
            self._sending[execution_id] = sending
            refused = await asyncio.shield(sending)
            if refused is not None:
                waiter.outcome.set_result(refused)
            return _outcome(await asyncio.shield(waiter.outcome))
        finally:
            self._waiters.pop(execution_id, None)
            if execution_id in self._sending and self._sending[execution_id].done():
                del self._sending[execution_id]
            if waiter.outcome.done():
                self._dispatched.pop(execution_id, None)

    async def _send_run(self, equipment_id: str, command: RunCommand) -> Outcome | None:
        """None once an agent has the execution; else why it failed before it started."""
        try:
            msg = await self.nc.request(
                run_subject(equipment_id), encoder.encode(command), timeout=self.run_timeout
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
        reply = msgspec.json.decode(msg.data, type=RunReply)
        if reply.status == "refused":
            return _failed("refused", f"the agent refused the execution: {reply.reason}")
        if equipment_id not in self.sightings:  # accepted before its first heartbeat
            presence = Presence(
                equipment_id=equipment_id, agent_id=reply.agent_id, kind="", state="online"
            )
            self.sightings[equipment_id] = Sighting(presence, time.monotonic(), datetime.now(UTC))
        self._seen_now(equipment_id)
        if reply.status == "duplicate":
            log.warning(
                "agent already had this execution",
                execution_id=command.request.execution_id,
                state=reply.state,
            )
        return None

    async def recover(
        self, request: ExecutionRequest, progress: ProgressReport
    ) -> Awaitable[ExecutionOutcome] | None:
        execution_id = request.execution_id
        equipment_id = request.spec.equipment_id
        orphan = self._orphans.pop(execution_id, None)
        if orphan is None:
            try:
                msg = await self.nc.request(
                    status_subject(equipment_id),
                    encoder.encode(StatusRequest(execution_id=execution_id)),
                    timeout=self.run_timeout,
                )
                status = msgspec.json.decode(msg.data, type=StatusReply)
            except (nats.errors.Error, msgspec.DecodeError):
                return None  # no agent knows of it: interrupted
            if status.state == "unknown":
                return None
            orphan = status.outcome
        if orphan is not None and _abandoned(orphan):
            return None  # the agent died under it too: nobody knows how it ended
        if orphan is not None:
            future: asyncio.Future[ExecutionOutcome] = asyncio.get_running_loop().create_future()
            future.set_result(_outcome(orphan))
            return future
        waiter = self._wait_for(request, progress)
        self._dispatched[execution_id] = equipment_id
        self._seen_now(equipment_id)

        async def follow() -> ExecutionOutcome:
            try:
                return _outcome(await asyncio.shield(waiter.outcome))
            finally:
                self._waiters.pop(execution_id, None)
                if waiter.outcome.done():
                    self._dispatched.pop(execution_id, None)

        return follow()

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
        """What the instrument's agent last said of it: kind, *IDN? identity, agent, resource
        and whether it is online (empty when no agent ever reported it)."""
        sighting = self.sightings.get(equipment_id)
        if sighting is None:
            return {}
        presence = sighting.presence
        return {
            "kind": presence.kind,
            "identity": presence.identity,
            "agent_id": presence.agent_id,
            "resource": presence.resource,
            "online": sighting.online,
            "last_seen": sighting.at.isoformat(),
        }

    def _wait_for(self, request: ExecutionRequest, progress: ProgressReport) -> _Waiter:
        waiter = _Waiter(request, progress, asyncio.get_running_loop().create_future())
        self._waiters[request.execution_id] = waiter
        return waiter

    # -- reports --------------------------------------------------------------------------------

    async def _consume(self, sub: JetStreamContext.PullSubscription) -> None:
        while True:
            try:
                await self._fetch(sub, wait=1.0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # NATS away: the consumer is durable, resume later
                log.warning("reports fetch failed", error=str(exc) or type(exc).__name__)
                await asyncio.sleep(0.5)

    async def _fetch(self, sub: JetStreamContext.PullSubscription, *, wait: float) -> int:
        """Take reports until none is waiting; returns how many."""
        taken = 0
        while True:
            try:
                msgs = await sub.fetch(_FETCH_BATCH, timeout=wait)
            # nats-py raises its own TimeoutError, or asyncio's when the deadline passes
            # between its quick first try and the long wait.
            except (TimeoutError, nats.errors.TimeoutError):
                return taken
            for msg in msgs:
                await self._take(msg)
                taken += 1
            if len(msgs) < _FETCH_BATCH:
                return taken

    async def _take(self, msg: Msg) -> None:
        try:
            report = msgspec.json.decode(msg.data, type=Report)
        except msgspec.DecodeError as exc:
            log.error("undecodable report dropped", subject=msg.subject, error=str(exc))
            await msg.ack()
            return
        self._seen_now(report.equipment_id)
        waiter = self._waiters.get(report.execution_id)
        if report.outcome is not None:
            if waiter is not None and not waiter.outcome.done():
                waiter.outcome.set_result(report.outcome)
            else:
                self._orphans[report.execution_id] = report.outcome
                while len(self._orphans) > _ORPHANS_KEPT:
                    self._orphans.popitem(last=False)
        elif waiter is not None:
            try:
                await waiter.progress(report.progress, report.message, report.data)
            except Exception:  # progress is advisory
                log.exception("progress not recorded", execution_id=report.execution_id)
        # After the hand-over: a crash before this ack re-delivers the report, and the
        # engine ignores a second end of an execution that already ended.
        await msg.ack()

    # -- presence -------------------------------------------------------------------------------

    async def _on_presence(self, msg: Msg) -> None:
        try:
            presence = msgspec.json.decode(msg.data, type=Presence)
        except msgspec.DecodeError:
            return
        before = self.sightings.get(presence.equipment_id)
        self.sightings[presence.equipment_id] = Sighting(
            presence, time.monotonic(), datetime.now(UTC)
        )
        changed = (
            before is None
            or before.presence.state != presence.state
            or before.presence.identity != presence.identity
            or before.presence.agent_id != presence.agent_id
        )
        if presence.state == "offline":
            self._fail_all(
                presence.equipment_id,
                "equipment_offline",
                f"equipment offline: {presence.reason or 'its agent went away'}",
            )
        if changed:
            await self._report_presence(presence)

    async def _monitor(self) -> None:
        while True:
            await asyncio.sleep(_MONITOR_PERIOD_SECONDS)
            now = time.monotonic()
            for equipment_id, sighting in list(self.sightings.items()):
                limit = max(self.heartbeat_timeout, 3 * sighting.presence.heartbeat_seconds)
                if not sighting.online or now - sighting.last_seen <= limit:
                    continue
                reason = (
                    f"agent lost: no heartbeat from {sighting.presence.agent_id or 'its agent'}"
                    f" for {limit:g} s"
                )
                log.warning("agent lost", equipment_id=equipment_id, reason=reason)
                lost = msgspec.structs.replace(sighting.presence, state="offline", reason=reason)
                self.sightings[equipment_id] = Sighting(lost, sighting.last_seen, sighting.at)
                self._fail_all(equipment_id, "agent_lost", reason)
                await self._report_presence(lost)

    def _fail_all(self, equipment_id: str, type: str, message: str) -> None:
        for waiter in list(self._waiters.values()):
            if (
                waiter.request.spec.equipment_id == equipment_id
                and waiter.request.execution_id in self._dispatched
                and not waiter.outcome.done()
            ):
                waiter.outcome.set_result(_failed(type, message, equipment_id=equipment_id))

    def _seen_now(self, equipment_id: str) -> None:
        sighting = self.sightings.get(equipment_id)
        if sighting is not None and sighting.online:
            sighting.last_seen = time.monotonic()

    async def _report_presence(self, presence: Presence) -> None:
        if self.on_presence is None:
            return
        try:
            await self.on_presence(presence)
        except Exception:
            log.exception("presence change not recorded", equipment_id=presence.equipment_id)
