"""An equipment agent: the instruments of one lab PC, reachable only over NATS.

For each instrument it serves, the agent answers run, stop and status requests on
``lablink.agents.<equipment_id>.*`` and says it is alive on ``….presence`` every heartbeat.
Executions run on the instrument's own worker thread (one VISA session, one lock: see
``bench``), through the same operations as the in-process executor. Every step goes to the
durable ``LABLINK_REPORTS`` stream; the result is kept in the agent's ledger until JetStream
has acknowledged it, so neither a scheduler restart nor a NATS outage loses it.

Each instrument's run commands are handled side by side: nats-py runs one subscription's
callbacks one at a time, so each command gets a task of its own, and a burst on one
instrument is accepted in one ledger commit (``Accepts``) and answered at once, in the order
it came, rather than one disk write after another while the scheduler's request times out.
Executions then wait in their own instrument's line only (``inprocess``). Every presence
names the executions accepted for the instrument and says how many of them still wait for
it; it goes every heartbeat, and sooner (at most every ``QUEUE_ANNOUNCE_SECONDS``) when the
queue changed.

A run command received later than its job's misfire grace time after it was due (a backlog
after an outage, an agent that was frozen) is refused before anything touches the
instrument: the execution fails ``stale_command``, stating how late it came.

A capture (an acquisition's file, in the agent's own data folder) goes to the object store
bucket ``LABLINK_DATA`` before the result is sent, which then says ``stored``; the local file
is deleted once the store confirmed it. When the store cannot take it (NATS away, the bucket
not made yet), or the file is larger than ``INLINE_UPLOAD_BYTES``, the result says
``pending_upload`` and the upload is made (and retried) from the ledger until it succeeds,
then reported (``Report.stored``). An upload that can never succeed (the file is gone, or
its bytes changed since its SHA-256 was taken) is reported as lost the same way
(``StoredData.lost``), and the scheduler records the removal (reason ``lost``). See
``upload`` and docs/data.md.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext

from lablink.bus.connection import close_nats, connect_nats
from lablink.bus.options import NatsOptions
from lablink.clock import Clock, SystemClock
from lablink.equipment_agent.accepts import Accepts
from lablink.equipment_agent.bench import Bench, PortWrapper
from lablink.equipment_agent.config import AgentConfig
from lablink.equipment_agent.inprocess import InProcessExecutor, timed
from lablink.equipment_agent.ledger import Ledger, PendingUpload
from lablink.equipment_agent.reports import ReportSender
from lablink.equipment_agent.upload import (
    Uploaded,
    file_sha256,
    new_nuid,
    object_name,
    provenance_headers,
    put_file,
)
from lablink.errors import CaptureUploadError, StaleEpoch
from lablink.events import ExecutionError
from lablink.events.data import DATA_BUCKET
from lablink.instruments.context import RunContext
from lablink.instruments.execution import ExecutionRequest, Outcome
from lablink.instruments.protocol import (
    ABANDONED,
    HOLD_LIMIT_SECONDS,
    QUEUE_ANNOUNCE_SECONDS,
    STALE_COMMAND,
    Presence,
    QueueDepth,
    Report,
    RunCommand,
    RunReply,
    StatusReply,
    StatusRequest,
    StopReply,
    StopRequest,
    StoredData,
    encoder,
    presence_subject,
    run_subject,
    status_subject,
    stop_subject,
)

# A command sent ahead joins its instrument's line at most this long before it is due; its
# instrument's worker waits out the rest.
LINE_AHEAD_SECONDS = 0.1

log = structlog.get_logger(tag="agent")


# Retrying a result publish while NATS is away: from quick to once a few seconds.
_RETRY_DELAYS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0)
# Retrying pending uploads: the loop wakes at once for a new one, else after these.
_UPLOAD_RETRY_DELAYS = (0.5, 1.0, 2.0, 5.0, 10.0)
# A capture up to this size is uploaded before its result is sent (which then says
# ``stored``); a larger one would hold the execution open for its whole upload (and past its
# timeout), so its result goes at once, ``pending_upload``, and the upload follows.
INLINE_UPLOAD_BYTES = 64 * 1024**2
# How long a stopped run's report waits for the stop to let go of the instrument (for its
# instrument times) before it goes without them.
HALT_WAIT_SECONDS = 30.0
# Closing: how long the stopped runs have to keep and report their outcomes.
RUNS_SETTLE_SECONDS = 10.0


@dataclass
class _Execution:
    task: asyncio.Task[None]
    equipment_id: str
    inner: asyncio.Task[Outcome] | None = None
    stop_reason: str = ""
    # The operation's context (its instrument times), and set once a stop let go of the
    # instrument (the times are then final).
    ctx: RunContext | None = None
    halted: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class Agent:
    config: AgentConfig
    options: NatsOptions
    bench: Bench | None = None
    wrap: PortWrapper | None = None
    _nc: NATS | None = None
    _js: JetStreamContext | None = None
    _executor: InProcessExecutor | None = None
    _ledger: Ledger | None = None
    _accepts: Accepts | None = None
    _reports: ReportSender | None = None
    _subscriptions: list[Subscription] = field(default_factory=list)
    _running: dict[str, _Execution] = field(default_factory=dict)
    _heartbeat: asyncio.Task[None] | None = None
    _republisher: asyncio.Task[None] | None = None
    _uploader: asyncio.Task[None] | None = None
    _upload_wake: asyncio.Event = field(default_factory=asyncio.Event)
    # Captures being put right now (by a run, or by the retry loop): one attempt at a time.
    _uploading: set[str] = field(default_factory=set)
    inline_upload_bytes: int = INLINE_UPLOAD_BYTES
    _closing: bool = False
    # The agent's own clock: a command's lateness is measured on it, and the instrument's
    # times (when an operation began and ended on it) are read from it.
    clock: Clock = field(default_factory=SystemClock)
    # Reports of refused commands on their way to the stream.
    _refusals: set[asyncio.Task[None]] = field(default_factory=set)
    # Run commands being accepted (or refused) and answered.
    _commands: set[asyncio.Task[None]] = field(default_factory=set)
    # Each instrument's queue as its last presence said it, and which executions began on it.
    _announced: dict[str, tuple[QueueDepth, frozenset[str]]] = field(default_factory=dict)

    @property
    def agent_id(self) -> str:
        return self.config.agent_id

    async def start(self) -> None:
        if self.bench is None:
            self.bench = await asyncio.to_thread(self.config.open_bench, wrap=self.wrap)
        self._executor = InProcessExecutor(
            self.bench,
            self.config.data_dir,
            realtime=self.config.realtime,
            limits=self.config.limits,
            agent_id=self.agent_id,
            clock=self.clock,
        )
        self._ledger = Ledger(self.config.data_dir / "agents" / f"{self.agent_id}.db")
        self._accepts = Accepts(self._ledger)
        self._nc = await connect_nats(self.options, name=f"lablink-agent-{self.agent_id}")
        self._js = self._nc.jetstream()
        self._reports = ReportSender(self._jetstream, self._ledger)
        await self._settle_unfinished()
        for equipment_id in self.bench:
            for subject, handler in (
                (run_subject(equipment_id), self._on_run),
                (stop_subject(equipment_id), self._on_stop),
                (status_subject(equipment_id), self._on_status),
            ):
                self._subscriptions.append(await self._nc.subscribe(subject, cb=handler))
        await self._nc.flush()
        await self._announce()
        self._heartbeat = asyncio.create_task(self._beat(), name=f"agent {self.agent_id} heartbeat")
        self._republisher = asyncio.create_task(
            self._republish(), name=f"agent {self.agent_id} republish"
        )
        self._uploader = asyncio.create_task(
            self._retry_uploads(), name=f"agent {self.agent_id} uploads"
        )
        log.info(
            "agent started",
            agent_id=self.agent_id,
            instruments=list(self.bench),
            offline=self.bench.offline,
        )

    async def aclose(self) -> None:
        """Say goodbye, stop what runs (safe state), close the instruments."""
        self._closing = True
        for task in (
            self._heartbeat,
            self._republisher,
            self._uploader,
            *self._commands,
            *self._refusals,
        ):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for sub in self._subscriptions:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        runs = [running.task for running in self._running.values()]
        for execution_id in list(self._running):
            await self._stop(execution_id, "the agent stopped")
        if runs:
            # Each stopped run keeps its outcome in the ledger and reports it before the
            # sender and the ledger close (else the next start finds it unfinished and can
            # only say the agent stopped under it).
            await asyncio.wait(runs, timeout=RUNS_SETTLE_SECONDS)
        if self._nc is not None and self._nc.is_connected:
            with contextlib.suppress(Exception):
                await self._announce(state="offline", reason="the agent stopped")
                await self._nc.flush(timeout=2)
        if self._reports is not None:
            await self._reports.aclose()
        if self._accepts is not None:
            await self._accepts.aclose()
        if self._nc is not None:
            await close_nats(self._nc)
        if self._executor is not None:
            await self._executor.aclose()
        elif self.bench is not None:
            await asyncio.to_thread(self.bench.close)
        if self._ledger is not None:
            self._ledger.close()
        log.info("agent stopped", agent_id=self.agent_id)

    def _jetstream(self) -> JetStreamContext:
        assert self._js is not None
        return self._js

    # -- requests -------------------------------------------------------------------------------

    async def _on_run(self, msg: Msg) -> None:
        # Not awaited here: the subscription's next command would wait for this one's disk
        # write. Tasks start in the order they are made, so commands join the ledger's
        # commit, and then their instrument's line, in the order they came.
        task = asyncio.create_task(self._handle_run(msg), name="run command")
        self._commands.add(task)
        task.add_done_callback(self._handled)

    def _handled(self, task: asyncio.Task[None]) -> None:
        self._commands.discard(task)
        if task.cancelled() or task.exception() is None:
            return
        # Unanswered: the scheduler's request times out, and the execution fails
        # equipment_offline, as when this raised in the subscription's own callback.
        log.error("run command not handled", exc_info=task.exception())

    async def _handle_run(self, msg: Msg) -> None:
        equipment_id = msg.subject.split(".")[2]
        try:
            command = msgspec.json.decode(msg.data, type=RunCommand)
        except msgspec.DecodeError as exc:
            await self._reply(
                msg, RunReply(status="refused", agent_id=self.agent_id, reason=str(exc))
            )
            return
        request = command.request
        if request.spec.equipment_id != equipment_id:
            reason = f"the job is for {request.spec.equipment_id!r}, not {equipment_id!r}"
            await self._reply(
                msg, RunReply(status="refused", agent_id=self.agent_id, reason=reason)
            )
            return
        assert self._ledger is not None
        ledger = self._ledger
        epoch = command.lease_epoch
        # A thread (and a disk wait) only for a higher epoch than any seen: with one scheduler
        # (epoch 0), never; a hop to a thread per command was a measurable share of the agent.
        if ledger.epoch_is_new(epoch):
            higher = await asyncio.to_thread(ledger.see_epoch, epoch)
        else:
            higher = ledger.see_epoch(epoch)
        if higher is not None:
            refused = StaleEpoch(request.execution_id, epoch, higher)
            log.warning(
                "run command from a former scheduler leader refused",
                execution_id=request.execution_id,
                epoch=epoch,
                highest=higher,
            )
            await self._reply(
                msg, RunReply(status="refused", agent_id=self.agent_id, reason=str(refused))
            )
            return
        stale = _staleness(command, self.clock.now())
        if stale is not None:
            await self._refuse_stale(msg, request, stale)
            return
        assert self._accepts is not None
        fresh = await self._accepts.accept(request.execution_id, request.job_id, equipment_id)
        if not fresh:
            state, _ = await asyncio.to_thread(ledger.state, request.execution_id)
            log.info("duplicate run ignored", execution_id=request.execution_id, state=state)
            await self._reply(
                msg, RunReply(status="duplicate", agent_id=self.agent_id, state=state)
            )
            return
        task = asyncio.create_task(
            self._run(request, command.profile_settings, self._hold(command)),
            name=f"run {request.execution_id}",
        )
        self._running[request.execution_id] = _Execution(task=task, equipment_id=equipment_id)
        await self._reply(msg, RunReply(status="accepted", agent_id=self.agent_id))

    async def _refuse_stale(
        self, msg: Msg, request: ExecutionRequest, error: ExecutionError
    ) -> None:
        """Refuse a stale command without touching the instrument. The refusal is recorded
        in the ledger and published as the execution's result, so that it reaches the log
        even when the scheduler stopped waiting for this reply long ago."""
        assert self._ledger is not None
        outcome = Outcome(status="failed", error=error)
        fresh = await asyncio.to_thread(
            self._ledger.refuse,
            request.execution_id,
            request.job_id,
            request.spec.equipment_id,
            outcome,
        )
        if not fresh:  # seen before: say what became of it, as for any duplicate
            state, _ = await asyncio.to_thread(self._ledger.state, request.execution_id)
            await self._reply(
                msg, RunReply(status="duplicate", agent_id=self.agent_id, state=state)
            )
            return
        log.warning(
            "stale run command refused",
            execution_id=request.execution_id,
            job_id=request.job_id,
            equipment_id=request.spec.equipment_id,
            late_seconds=error.details.get("late_seconds"),
        )
        await self._reply(
            msg,
            RunReply(status="refused", agent_id=self.agent_id, reason=error.message, error=error),
        )
        task = asyncio.create_task(self._publish(request, outcome=outcome, required=True))
        self._refusals.add(task)
        task.add_done_callback(self._refusals.discard)

    async def _on_stop(self, msg: Msg) -> None:
        try:
            stop = msgspec.json.decode(msg.data, type=StopRequest)
        except msgspec.DecodeError as exc:
            await self._reply(msg, StopReply(stopped=False, error=str(exc)))
            return
        await self._reply(msg, await self._stop(stop.execution_id, stop.reason or "stopped"))

    async def _on_status(self, msg: Msg) -> None:
        try:
            query = msgspec.json.decode(msg.data, type=StatusRequest)
        except msgspec.DecodeError:
            await self._reply(msg, StatusReply(state="unknown"))
            return
        assert self._ledger is not None
        state, outcome = await asyncio.to_thread(self._ledger.state, query.execution_id)
        await self._reply(msg, StatusReply(state=state, outcome=outcome))  # type: ignore[arg-type]

    async def _reply(self, msg: Msg, reply: msgspec.Struct) -> None:
        if msg.reply:
            with contextlib.suppress(Exception):
                await msg.respond(encoder.encode(reply))

    # -- executions -----------------------------------------------------------------------------

    def _hold(self, command: RunCommand) -> datetime | None:
        """Until when a command that came before it is due waits before it begins on its
        instrument (a fire the scheduler decided ahead): its ``due_at`` on this agent's
        clock, at most ``HOLD_LIMIT_SECONDS`` from now; None: it goes at once."""
        if command.due_at is None:
            return None
        now = self.clock.now()
        if command.due_at <= now:
            return None
        return min(command.due_at, now + timedelta(seconds=HOLD_LIMIT_SECONDS))

    async def _after(
        self, until: datetime | None, operation: Coroutine[Any, Any, Outcome]
    ) -> Outcome:
        """``operation`` once this agent's clock reads ``until``. Stopped meanwhile: it
        never starts."""
        try:
            left = 0.0 if until is None else (until - self.clock.now()).total_seconds()
            if left > 0:
                await asyncio.sleep(left)
        except asyncio.CancelledError:
            operation.close()
            raise
        return await operation

    async def _run(
        self,
        request: ExecutionRequest,
        profile_settings: Mapping[str, Any] | None,
        hold: datetime | None = None,
    ) -> None:
        assert self._executor is not None
        assert self._ledger is not None
        execution_id = request.execution_id

        running = self._running[execution_id]

        async def progress(fraction: float, message: str, data: dict[str, Any]) -> None:
            # Progress comes from the operation, which has begun on the instrument by then.
            began = running.ctx.started_at if running.ctx is not None else None
            await self._publish(
                request,
                progress=fraction,
                message=message,
                data=data,
                required=False,
                instrument_started_at=began,
            )

        running.ctx = self._executor.context_for(request)
        running.ctx.not_before = hold
        # It joins its instrument's line shortly before it is due, and the worker keeps the
        # instant (``RunContext.wait_to_begin``): a command due later does not hold up the
        # line for one due sooner (a run-now) for longer than that.
        joins = None if hold is None else hold - timedelta(seconds=LINE_AHEAD_SECONDS)
        running.inner = asyncio.create_task(
            self._after(
                joins, self._executor.run(request, progress, profile_settings, ctx=running.ctx)
            )
        )
        try:
            result = await asyncio.shield(running.inner)
        except asyncio.CancelledError:
            if not running.inner.cancelled():
                raise
            # What the instrument did before the stop is on record too: its times are final
            # once the stop has let go of it (bounded: a stop that never ends still reports).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(HALT_WAIT_SECONDS):
                    await running.halted.wait()
            result = timed(
                Outcome.failed(
                    "stopped", f"stopped by the agent: {running.stop_reason or 'stopped'}"
                ),
                running.ctx,
            )
        except Exception as exc:  # never a trace in the record: a typed failure
            log.exception("operation raised", execution_id=execution_id)
            result = Outcome.failed("internal_error", f"{type(exc).__name__}: {exc}")
        if _captured(result):
            try:
                result = await self._finish_capture(request, result)
            except Exception as exc:  # the file vanished under us: the result still goes
                log.exception("capture not prepared for upload", execution_id=execution_id)
                # Never a capture the view would take for stored: no object will come.
                result = _without_capture(result, f"{type(exc).__name__}: {exc}")
                await self._keep_outcome(execution_id, result)
        else:
            await self._keep_outcome(execution_id, result)
        self._running.pop(execution_id, None)
        await self._publish(request, outcome=result, required=True)

    async def _keep_outcome(self, execution_id: str, outcome: Outcome) -> None:
        """The outcome on the ledger's disk before its report goes (the reports stream is
        acknowledged before nats-server's disk has it: the ledger is what a scheduler asks
        after an outage)."""
        assert self._accepts is not None
        try:
            await self._accepts.finish(execution_id, outcome)
        except Exception:
            # Reported all the same: the scheduler records it. The ledger still says running,
            # so its next start settles the execution as abandoned, a second end the
            # scheduler ignores.
            log.exception("outcome not kept in the ledger", execution_id=execution_id)

    # -- captures -------------------------------------------------------------------------------

    async def _finish_capture(self, request: ExecutionRequest, outcome: Outcome) -> Outcome:
        """Record the outcome with its upload pending (durably, together), try the upload
        once, and return the outcome to report: ``stored`` when the store took it."""
        assert self._ledger is not None
        execution_id = request.execution_id
        path = Path(outcome.result["file"])
        data = dict(outcome.result["data"])
        sha256 = await asyncio.to_thread(file_sha256, path)
        size = (await asyncio.to_thread(path.stat)).st_size
        name = object_name(execution_id)
        data.update(
            bucket=DATA_BUCKET,
            object=name,
            size=size,
            sha256=sha256,
            status="pending_upload",
        )
        # Replaced, not rebuilt: the instrument's times go with the result.
        pending = msgspec.structs.replace(outcome, result={**outcome.result, "data": data})
        upload = PendingUpload(
            execution_id=execution_id,
            job_id=request.job_id,
            equipment_id=request.spec.equipment_id,
            path=str(path),
            object=name,
            size=data["size"],
            sha256=sha256,
            headers=provenance_headers(data.get("provenance", {})),
            description=f"{request.job_name}: acquisition {execution_id}",
        )
        await asyncio.to_thread(self._ledger.finish_with_upload, execution_id, pending, upload)
        if size > self.inline_upload_bytes or await self._upload(upload) is None:
            self._upload_wake.set()
            return pending
        stored = msgspec.structs.replace(
            outcome, result={**outcome.result, "data": {**data, "status": "stored"}}
        )
        try:
            await asyncio.to_thread(self._ledger.finish_stored, execution_id, stored)
        except Exception:
            # The ledger keeps the pending outcome and the stored upload: it is reported
            # like any completed pending upload.
            log.exception("stored capture not recorded", execution_id=execution_id)
            return pending
        return stored

    async def _upload(self, upload: PendingUpload) -> Uploaded | None:
        """One attempt; the local file goes once the store confirmed. None when it failed
        (logged; the ledger keeps the row for the next attempt)."""
        assert self._ledger is not None
        execution_id = upload.execution_id
        if execution_id in self._uploading:
            return None
        self._uploading.add(execution_id)
        ledger = self._ledger
        nuid = new_nuid()

        async def record_attempt(nuids: list[str]) -> None:
            await asyncio.to_thread(ledger.upload_attempt, execution_id, nuids)

        try:
            if self._js is None or self._nc is None or not self._nc.is_connected:
                log.warning("capture upload waits for NATS", execution_id=execution_id)
                return None
            previous = await asyncio.to_thread(ledger.upload_nuids, execution_id)
            uploaded = await put_file(
                self._js,
                Path(upload.path),
                execution_id=execution_id,
                name=upload.object,
                nuid=nuid,
                sha256=upload.sha256,
                headers=upload.headers,
                description=upload.description,
                stale_nuids=previous,
                on_start=record_attempt,
            )
        except CaptureUploadError as exc:
            # Retrying cannot bring the bytes back. The result said (or will say)
            # pending_upload: the row stays until the loss is reported, so that the
            # scheduler records it rather than waiting for ever.
            log.error("capture cannot be uploaded", execution_id=execution_id, error=exc.reason)
            await asyncio.to_thread(ledger.upload_lost, execution_id, exc.reason)
            self._upload_wake.set()
            return None
        except Exception as exc:
            log.warning(
                "capture upload failed; it will be retried",
                execution_id=execution_id,
                error=f"{type(exc).__name__}: {exc}",
            )
            return None
        finally:
            self._uploading.discard(execution_id)
        await asyncio.to_thread(self._ledger.upload_stored, execution_id, uploaded.stored_at)
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(Path(upload.path).unlink)
        log.info(
            "capture uploaded",
            execution_id=execution_id,
            object=uploaded.object,
            size=uploaded.size,
            chunks=uploaded.chunks,
        )
        return uploaded

    async def _retry_uploads(self) -> None:
        """Uploads the ledger still holds (NATS was away, the agent died during one): put
        them, then report each once its execution's result has been acknowledged."""
        assert self._ledger is not None
        failures = 0
        while True:
            # Cleared before the pass: a wake-up during it (a result acknowledged) counts.
            self._upload_wake.clear()
            try:
                waiting = await self._upload_pass()
            except Exception:  # the loop must outlive any one row's trouble
                log.exception("pending uploads pass failed")
                waiting = True
            failures = failures + 1 if waiting else 0
            delay = _UPLOAD_RETRY_DELAYS[min(max(failures - 1, 0), len(_UPLOAD_RETRY_DELAYS) - 1)]
            # Not wait_for: on Python 3.11 it swallows a cancel that comes as the wake-up
            # does, and this loop then never ends (the agent's close waited for it for ever).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._upload_wake.wait()

    async def _upload_pass(self) -> bool:
        """One pass over the ledger's uploads; True when some still wait."""
        assert self._ledger is not None
        waiting = False
        for upload in await asyncio.to_thread(self._ledger.pending_uploads):
            if upload.execution_id in self._running:
                continue  # its run is still finishing: it tries first
            if upload.lost is not None:
                if not upload.published:
                    waiting = True  # the result goes first (the republisher has it)
                elif await self._report_stored(upload, datetime.now(UTC), lost=upload.lost):
                    await asyncio.to_thread(self._ledger.upload_done, upload.execution_id)
                else:
                    waiting = True
                continue
            if upload.stored_at is None:
                uploaded = await self._upload(upload)
                if uploaded is None:
                    waiting = True
                    continue
                stored_at = uploaded.stored_at
            else:
                stored_at = datetime.fromisoformat(upload.stored_at)
            if not upload.published:
                waiting = True  # the result goes first (the republisher has it)
                continue
            if await self._report_stored(upload, stored_at):
                await asyncio.to_thread(self._ledger.upload_done, upload.execution_id)
            else:
                waiting = True
        return waiting

    async def _report_stored(
        self, upload: PendingUpload, stored_at: datetime, *, lost: str = ""
    ) -> bool:
        assert self._ledger is not None
        report = Report(
            execution_id=upload.execution_id,
            job_id=upload.job_id,
            equipment_id=upload.equipment_id,
            agent_id=self.agent_id,
            seq=self._ledger.next_seq(upload.execution_id),
            at=datetime.now(UTC),
            stored=StoredData(
                object=upload.object,
                size=upload.size,
                sha256=upload.sha256,
                stored_at=stored_at,
                lost=lost,
            ),
        )
        return await self._publish_report(report, required=True)

    async def _stop(self, execution_id: str, reason: str) -> StopReply:
        assert self._executor is not None
        running = self._running.get(execution_id)
        if running is None or running.inner is None:
            return StopReply(stopped=False, error=f"execution {execution_id} is not running here")
        running.stop_reason = reason
        running.inner.cancel()
        try:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await running.inner
            state = await self._executor.halt(execution_id)
            if state is None:
                state = await self._executor.safe_state(running.equipment_id) or {}
        finally:
            running.halted.set()
        return StopReply(stopped=True, safe_state=state)

    async def _settle_unfinished(self) -> None:
        """Executions a previous run of this agent accepted and never finished: it died under
        them. Their instruments go to the safe state and the executions end failed."""
        assert self._ledger is not None
        assert self._executor is not None
        for item in await asyncio.to_thread(self._ledger.unfinished):
            await self._executor.safe_state(item.equipment_id, execution_id=item.execution_id)
            outcome = Outcome(
                status="failed",
                error=ExecutionError(
                    type=ABANDONED,
                    message="the agent stopped while the execution was running; "
                    "the instrument was put in its safe state when it came back",
                ),
            )
            await asyncio.to_thread(self._ledger.finish, item.execution_id, outcome)

    async def _republish(self) -> None:
        """Results kept in the ledger because JetStream never acknowledged them."""
        assert self._ledger is not None
        for item in await asyncio.to_thread(self._ledger.unpublished):
            await self._publish_report(
                Report(
                    execution_id=item.execution_id,
                    job_id=item.job_id,
                    equipment_id=item.equipment_id,
                    agent_id=self.agent_id,
                    seq=self._ledger.next_seq(item.execution_id),
                    at=datetime.now(UTC),
                    outcome=item.outcome,
                ),
                required=True,
            )

    async def _publish(
        self,
        request: ExecutionRequest,
        *,
        progress: float = 1.0,
        message: str = "",
        data: dict[str, Any] | None = None,
        outcome: Outcome | None = None,
        required: bool,
        instrument_started_at: datetime | None = None,
    ) -> None:
        assert self._ledger is not None
        seq = self._ledger.next_seq(request.execution_id)
        report = Report(
            execution_id=request.execution_id,
            job_id=request.job_id,
            equipment_id=request.spec.equipment_id,
            agent_id=self.agent_id,
            seq=seq,
            at=datetime.now(UTC),
            progress=progress,
            message=message,
            data=data or {},
            outcome=outcome,
            instrument_started_at=instrument_started_at,
        )
        await self._publish_report(report, required=required)

    async def _publish_report(self, report: Report, *, required: bool) -> bool:
        """Publish to the durable stream. Progress is advisory and tried once; a result is
        retried until JetStream acknowledges it (or the agent closes: the ledger keeps it
        for the next start). True once acknowledged."""
        assert self._reports is not None
        attempt = 0
        while True:
            try:
                # With the reports of every other execution waiting now: one batch, its
                # acknowledgements awaited together, its results marked in one commit.
                await self._reports.send(report)
            except Exception as exc:
                if not required:
                    log.warning(
                        "progress report dropped", execution_id=report.execution_id, error=str(exc)
                    )
                    return False
                if self._closing:
                    log.warning("result kept for the next start", execution_id=report.execution_id)
                    return False
                delay = _RETRY_DELAYS[min(attempt, len(_RETRY_DELAYS) - 1)]
                attempt += 1
                log.warning(
                    "result publish failed; retrying",
                    execution_id=report.execution_id,
                    error=str(exc),
                    retry_in=delay,
                )
                await asyncio.sleep(delay)
                continue
            if report.outcome is not None:
                self._upload_wake.set()  # a pending upload's report may go now
            return True

    # -- presence -------------------------------------------------------------------------------

    async def _beat(self) -> None:
        """Every heartbeat, each instrument's presence; between heartbeats, the presence of
        an instrument whose queue changed since its last one (a few a second at most)."""
        loop = asyncio.get_running_loop()
        step = min(QUEUE_ANNOUNCE_SECONDS, self.config.heartbeat_seconds)
        last = loop.time()
        while True:
            await asyncio.sleep(step)
            # Half a step early counts as on time: a sleep may end a little early.
            full = loop.time() - last >= self.config.heartbeat_seconds - step / 2
            if full:
                last = loop.time()
            with contextlib.suppress(Exception):  # NATS away: the next beat tries again
                await self._announce(changed_only=not full)

    def instrument_queues(self) -> dict[str, tuple[QueueDepth, tuple[str, ...]]]:
        """Each instrument's queue, with the executions accepted for it and not finished:
        those that have not reached the instrument's worker, or wait there, are queued; the
        others began on it (their result, a capture's upload, may still be going)."""
        assert self.bench is not None
        waiting = self._executor.waiting() if self._executor is not None else frozenset()
        queued: dict[str, int] = dict.fromkeys(self.bench, 0)
        accepted: dict[str, list[str]] = {eid: [] for eid in queued}
        for execution_id, execution in self._running.items():
            eid = execution.equipment_id
            accepted.setdefault(eid, []).append(execution_id)
            if execution.inner is None or execution_id in waiting:
                queued[eid] = queued.get(eid, 0) + 1
        return {
            eid: (
                QueueDepth(queued=queued.get(eid, 0), running=len(ids) - queued.get(eid, 0)),
                tuple(ids),
            )
            for eid, ids in accepted.items()
        }

    def _began(self) -> dict[str, dict[str, datetime]]:
        """Per instrument, the executions whose operation began on it and is not reported
        finished, with when (this agent's clock, as their results will say)."""
        began: dict[str, dict[str, datetime]] = {}
        for execution_id, execution in self._running.items():
            at = execution.ctx.started_at if execution.ctx is not None else None
            if at is not None:
                began.setdefault(execution.equipment_id, {})[execution_id] = at
        return began

    async def _announce(
        self, *, state: str = "online", reason: str = "", changed_only: bool = False
    ) -> None:
        assert self._nc is not None
        assert self.bench is not None
        kinds = {i.id: i.kind for i in self.config.instruments}
        resources = {i.id: i.resource for i in self.config.instruments}
        queues = self.instrument_queues()
        began = self._began()
        for session in self.bench.sessions():
            eid = session.equipment_id
            depth, accepted = queues.get(eid, (QueueDepth(), ()))
            started = began.get(eid, {})
            # A start is news even when the depth is not: the worker takes a run a moment
            # before its operation reads the clock.
            said = (depth, frozenset(started))
            if changed_only and self._announced.get(eid) == said:
                continue
            presence = Presence(
                equipment_id=eid,
                agent_id=self.agent_id,
                kind=kinds.get(eid, session.kind),
                state=state,  # type: ignore[arg-type]
                identity=session.identity.raw if session.identity else "",
                resource=resources.get(eid, session.resource_name),
                running=accepted,
                queued=depth.queued,
                reason=reason,
                heartbeat_seconds=self.config.heartbeat_seconds,
                started=started,
                holds=True,
            )
            await self._nc.publish(presence_subject(eid), encoder.encode(presence))
            self._announced[eid] = said
        if changed_only:
            return
        for eid, why in self.bench.offline.items():
            presence = Presence(
                equipment_id=eid,
                agent_id=self.agent_id,
                kind=kinds.get(eid, ""),
                state="offline",
                resource=resources.get(eid, ""),
                reason=why,
                heartbeat_seconds=self.config.heartbeat_seconds,
            )
            await self._nc.publish(presence_subject(eid), encoder.encode(presence))


def _captured(outcome: Outcome) -> bool:
    """A completed acquisition with a file on this agent's disk."""
    return (
        outcome.status == "completed"
        and isinstance(outcome.result.get("data"), dict)
        and isinstance(outcome.result.get("file"), str)
    )


def _without_capture(outcome: Outcome, reason: str) -> Outcome:
    """``outcome`` saying its capture never reached the upload: data status ``none``, and why."""
    data = {**outcome.result["data"], "status": "none", "lost": reason}
    return msgspec.structs.replace(outcome, result={**outcome.result, "data": data})


def _staleness(command: RunCommand, now: datetime) -> ExecutionError | None:
    """The ``stale_command`` error when ``command`` came later than its job's misfire grace
    time after it was due; None when it may run."""
    request = command.request
    due = command.due_at or request.scheduled_time
    grace = (
        command.misfire_grace_time
        if command.misfire_grace_time is not None
        else request.spec.misfire_grace_time
    )
    late = (now - due).total_seconds()
    if late <= grace:
        return None
    how_late = str(timedelta(seconds=round(late)))
    return ExecutionError(
        type=STALE_COMMAND,
        message=f"stale command: received {how_late} after it was due at {due.isoformat()},"
        f" beyond misfire_grace_time={grace:g}s; the instrument was not touched",
        details={
            "equipment_id": request.spec.equipment_id,
            "due_at": due.isoformat(),
            "received_at": now.isoformat(),
            "late_seconds": round(late, 3),
            "misfire_grace_time": grace,
            "trigger_info": request.trigger_info,
        },
    )
