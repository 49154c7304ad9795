"""Run-now in cluster mode: run by the replica holding the scheduler lease, whichever replica
was asked.

Only the lease holder's engine runs (``scheduler.leadership``); a follower's was never
started. So a follower forwards a run-now over NATS request/reply on the record's
connection, to ``lablink.cluster.run`` (``bus.subjects.CLUSTER_RUN``), which only the holder
serves, and only while it holds the lease (``RunService``, a leader's duty). The holder runs
its engine's ``run_now`` (fenced, as all its appends) and answers the execution id and the
end of its local copy after the run was recorded (a position at or past the run's events);
the follower answers its client once its own views have folded that position
(read-your-writes, as for a write of its own), or 503 ``WriteUnseen`` past
``LABLINK_VIEWS_WAIT``. A refusal comes back typed and is raised again as the holder raised
it: ``JobNotFound`` (404), ``ExecutionRefused`` naming the running execution and
``CalibrationBlocked`` (409), a ``StorageError`` (503).

Nobody serving the subject (no responders: no replica holds the lease, a failover) is
``NoSchedulerLeader``, 503, nothing run; no answer within ``timeout`` is the same 503, saying
the run may have been recorded. A holder that finds it no longer holds the lease (its fenced
append refused: ``LeaseLost``, nothing written) does not answer: the new holder may be
answering the same request (both subscribed for a moment), and its answer is the one that
counts. Requests are not sent to a queue group for the same reason: a former holder paused
while still subscribed must not be the only one to get it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Literal

import msgspec
import nats.errors
import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from lablink.api.context import WriteUnseen
from lablink.bus.subjects import CLUSTER_RUN
from lablink.errors import (
    CalibrationBlocked,
    ExecutionRefused,
    JobNotFound,
    JobStateConflict,
    LabLinkError,
    LeaseLost,
    NoSchedulerLeader,
    StorageError,
)
from lablink.eventstore.jetstream import JetStreamEventStore
from lablink.projections.follower import Follower
from lablink.scheduler.runner import Runner

log = structlog.get_logger(tag="cluster")

# Past the holder's own worst case for a recorded run-now: an ack that does not come within
# the record's ack timeout (5 s), then the copy's wait (5 s).
FORWARD_TIMEOUT = 15.0

Kind = Literal[
    "job_not_found",
    "execution_refused",
    "calibration_blocked",
    "job_state",
    "storage",
    "failed",
]


class RunAsked(msgspec.Struct, frozen=True, kw_only=True):
    job_id: str
    actor: str | None = None


class RunFailure(msgspec.Struct, frozen=True, kw_only=True):
    """Why the holder did not run it: what its own API would have answered."""

    kind: Kind
    message: str
    job_id: str = ""
    running: tuple[str, ...] = ()
    reason: str = ""
    equipment_id: str = ""
    cause: str = ""
    # A storage error's own words: its class's reason, its path, how long to wait.
    storage_reason: str = ""
    path: str = ""
    retry_after: int = 0


class RunAnswer(msgspec.Struct, frozen=True, kw_only=True):
    replica: str
    position: int = 0
    execution_id: str | None = None
    failure: RunFailure | None = None


_asked_decoder = msgspec.json.Decoder(RunAsked)
_answer_decoder = msgspec.json.Decoder(RunAnswer)
_encoder = msgspec.json.Encoder()


class ForwardedStorageError(StorageError):
    """A storage error the lease holder met running a forwarded run-now, with its words."""

    def __init__(self, message: str, path: str, cause: str, reason: str, retry_after: int) -> None:
        self.path = path
        self.cause = cause
        self.reason = reason
        self.retry_after = retry_after
        OSError.__init__(self, message)


class ForwardedFailure(LabLinkError):
    """The lease holder failed a forwarded run-now for a reason of its own (logged there)."""


def failure_of(exc: Exception) -> RunFailure | None:
    """What to answer for ``exc``; None: do not answer (``LeaseLost``: see the docstring)."""
    message = str(exc)
    if isinstance(exc, LeaseLost):
        return None
    if isinstance(exc, JobNotFound):
        return RunFailure(kind="job_not_found", message=message, job_id=exc.object_id)
    if isinstance(exc, ExecutionRefused):
        return RunFailure(
            kind="execution_refused",
            message=message,
            job_id=exc.job_id,
            running=tuple(exc.blocking),
            reason=exc.reason,
        )
    if isinstance(exc, CalibrationBlocked):
        return RunFailure(
            kind="calibration_blocked",
            message=message,
            job_id=exc.job_id,
            equipment_id=exc.equipment_id,
            cause=exc.cause,
            reason=exc.reason,
        )
    if isinstance(exc, JobStateConflict):
        return RunFailure(kind="job_state", message=message, job_id=exc.job_id, reason=exc.reason)
    if isinstance(exc, StorageError):
        return RunFailure(
            kind="storage",
            message=message,
            storage_reason=exc.reason,
            path=str(exc.path),
            cause=str(exc.cause),
            retry_after=exc.retry_after,
        )
    return RunFailure(kind="failed", message=f"{type(exc).__name__}: {message}")


def raise_failure(failure: RunFailure, replica: str) -> None:
    """Raise on this replica what the holder raised."""
    kind = failure.kind
    if kind == "job_not_found":
        raise JobNotFound(failure.job_id)
    if kind == "execution_refused":
        raise ExecutionRefused(failure.job_id, failure.running, failure.reason)
    if kind == "calibration_blocked":
        raise CalibrationBlocked(
            failure.job_id, failure.equipment_id, failure.cause, failure.reason
        )
    if kind == "job_state":
        raise JobStateConflict(failure.job_id, failure.reason)
    if kind == "storage":
        raise ForwardedStorageError(
            failure.message,
            failure.path,
            failure.cause,
            failure.storage_reason or StorageError.reason,
            failure.retry_after or StorageError.retry_after,
        )
    raise ForwardedFailure(f"replica {replica!r} could not run it: {failure.message}")


class RunService:
    """The holder's side: serves ``CLUSTER_RUN`` between ``lead()`` and ``follow()`` (a
    ``Leadership`` duty), on the record's connection and loop; runs each request on the
    engine's loop, where ``lead()`` was called."""

    def __init__(
        self,
        record: JetStreamEventStore,
        *,
        replica: str,
        engine: Callable[[], Runner | None],
        position: Callable[[], int],
    ) -> None:
        self.record = record
        self.replica = replica
        self.engine = engine  # the leading engine, None once the lease is lost
        self.position = position  # the local copy's end
        self._subscription: Subscription | None = None
        self._engine_loop: asyncio.AbstractEventLoop | None = None
        self._answering: set[asyncio.Task[None]] = set()
        self.served = 0

    def __repr__(self) -> str:
        return f"RunService({CLUSTER_RUN})"

    async def lead(self) -> None:
        if self._subscription is not None:
            return
        self._engine_loop = asyncio.get_running_loop()
        self._subscription = await self.record.on_store_loop(self._subscribe())
        log.info("serving forwarded run-nows", subject=CLUSTER_RUN, replica=self.replica)

    async def follow(self) -> None:
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            await self.record.on_store_loop(self._unsubscribe(subscription))

    async def _subscribe(self) -> Subscription:
        nc: NATS = self.record.connection
        return await nc.subscribe(CLUSTER_RUN, cb=self._asked)

    @staticmethod
    async def _unsubscribe(subscription: Subscription) -> None:
        try:
            await subscription.unsubscribe()
        except nats.errors.Error as exc:  # a connection gone takes the subscription with it
            log.warning("could not stop serving forwarded run-nows", error=repr(exc))

    async def _asked(self, msg: Msg) -> None:
        # Each on its own task: one run-now waiting for a slow record does not hold others.
        task = asyncio.create_task(self._answer(msg))
        self._answering.add(task)
        task.add_done_callback(self._answering.discard)

    async def _answer(self, msg: Msg) -> None:
        try:
            asked = _asked_decoder.decode(msg.data)
        except msgspec.DecodeError as exc:
            log.warning("unreadable forwarded run-now", error=str(exc))
            return
        loop = self._engine_loop
        if loop is None or not msg.reply:
            return
        answer = await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._run(asked), loop))
        if answer is None:
            return
        try:
            await msg.respond(_encoder.encode(answer))
        except nats.errors.Error as exc:
            log.warning(
                "could not answer a forwarded run-now", job_id=asked.job_id, error=repr(exc)
            )

    async def _run(self, asked: RunAsked) -> RunAnswer | None:
        """On the engine's loop."""
        engine = self.engine()
        if engine is None:  # no longer leading: the new holder answers
            return None
        try:
            execution_id = await engine.run_now(asked.job_id, actor=asked.actor)
        except Exception as exc:
            failure = failure_of(exc)
            if failure is None:
                log.warning("forwarded run-now not run: lease lost", job_id=asked.job_id)
                return None
            if failure.kind == "failed":
                log.exception("forwarded run-now failed", job_id=asked.job_id)
            position = await asyncio.to_thread(self.position)
            return RunAnswer(replica=self.replica, position=position, failure=failure)
        self.served += 1
        position = await asyncio.to_thread(self.position)
        return RunAnswer(replica=self.replica, position=position, execution_id=execution_id)


class ClusterRunner:
    """Run-now on a replica in cluster mode (``scheduler.runner.Runner``): this replica's
    engine while it holds the lease, else forwarded to the holder."""

    def __init__(
        self,
        record: JetStreamEventStore,
        *,
        leading: Callable[[], Runner | None],
        views: Follower | None,
        views_wait: float,
        timeout: float = FORWARD_TIMEOUT,
    ) -> None:
        self.record = record
        self.leading = leading
        self.views = views
        self.views_wait = views_wait
        self.timeout = timeout
        self.forwarded = 0

    async def run_now(self, job_id: str, actor: str | None = None) -> str:
        engine = self.leading()
        if engine is not None:
            try:
                return await engine.run_now(job_id, actor=actor)
            except LeaseLost as exc:
                raise NoSchedulerLeader(CLUSTER_RUN, f"this replica lost it: {exc}") from exc
        answer = await self.forward(job_id, actor)
        self.forwarded += 1
        await self._seen(answer.position)
        if answer.failure is not None:
            raise_failure(answer.failure, answer.replica)
        if answer.execution_id is None:
            raise ForwardedFailure(f"replica {answer.replica!r} answered no execution id")
        return answer.execution_id

    async def forward(self, job_id: str, actor: str | None) -> RunAnswer:
        """Ask the holder; its answer, or ``NoSchedulerLeader``."""
        payload = _encoder.encode(RunAsked(job_id=job_id, actor=actor))
        try:
            reply: Msg = await self.record.on_store_loop(self._request(payload))
        except nats.errors.NoRespondersError:
            raise NoSchedulerLeader(CLUSTER_RUN, f"no replica serves {CLUSTER_RUN}") from None
        except (TimeoutError, nats.errors.TimeoutError):
            raise NoSchedulerLeader(
                CLUSTER_RUN, f"no answer on {CLUSTER_RUN}", timeout=self.timeout
            ) from None
        except nats.errors.Error as exc:
            raise NoSchedulerLeader(CLUSTER_RUN, f"the cluster is out of reach: {exc!r}") from exc
        try:
            return _answer_decoder.decode(reply.data)
        except msgspec.DecodeError as exc:
            raise ForwardedFailure(f"unreadable answer on {CLUSTER_RUN}: {exc}") from exc

    async def _request(self, payload: bytes) -> Msg:
        nc: NATS = self.record.connection
        return await nc.request(CLUSTER_RUN, payload, timeout=self.timeout)

    async def _seen(self, position: int) -> None:
        """Once this replica's views show ``position`` (its copy brings it, then the fold)."""
        views = self.views
        if views is None or position <= 0:
            return
        if not await views.wait(position, self.views_wait):
            raise WriteUnseen(position, views.position, views.lag_seconds())
