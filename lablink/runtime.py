"""Everything one LabLink process runs, opened in order on one AsyncExitStack and closed in
reverse, also when a later step fails to start.

The data-directory lock, the store (with its projections caught up), the job repository and
service, the private nats-server and the relay (with the bus on), the executor (agents over
NATS, or the in-process bench), the engine and retention. `lablink scheduler` runs this
alone; `lablink serve` adds the HTTP API.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import os
import signal
import socket
from collections.abc import Awaitable, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import structlog

from lablink.alarm_service import AlarmService
from lablink.application import JobService
from lablink.audit.checkpoints import Checkpointer
from lablink.audit.publisher import BusCheckpoints
from lablink.audit.signing_key import ensure_signer
from lablink.backup.schedule import ScheduledBackups
from lablink.bus import access
from lablink.bus import probes as bus_probes
from lablink.bus.data_bucket import DataBucket
from lablink.bus.permissions import SCHEDULER
from lablink.bus.private import PrivateNats
from lablink.bus.relay import NatsOptions, Relay
from lablink.calibration_service import (
    CalibrationService,
    LabCalibration,
    known_equipment,
    record_lab_calibrations,
)
from lablink.clock import Clock, SystemClock
from lablink.cluster.forwarding import ClusterRunner, RunService
from lablink.cluster.presence import Presence
from lablink.datadir import claim as claim_data_dir
from lablink.datadir import secure_files
from lablink.domain.calibration import CalibrationRecord
from lablink.equipment_agent.agent import Agent
from lablink.equipment_agent.child import AgentProcess, child_environment, signal_ready
from lablink.equipment_agent.config import (
    AgentConfig,
    ConfigError,
    load_config,
    simulated_config,
)
from lablink.equipment_agent.inprocess import InProcessExecutor
from lablink.equipment_service import EquipmentService
from lablink.errors import InvalidRequest
from lablink.events import RecordedEvent
from lablink.eventstore.base import EventStore
from lablink.eventstore.jetstream import JetStreamEventStore
from lablink.eventstore.lease import LeaseRecord
from lablink.eventstore.lease_keeper import LeaseKeeper
from lablink.eventstore.probe import EventLogProbe
from lablink.eventstore.record_link import JetStreamOptions
from lablink.eventstore.sqlite import SQLiteEventStore, event_of, translated
from lablink.health import Health, Reading
from lablink.instrument_models import KnownInstruments
from lablink.instruments.execution import ProfileLookup
from lablink.logstore import open_store
from lablink.notify.config import load_channels
from lablink.notify.notifier import Notifier, start_notifier
from lablink.profile_service import StoredProfiles, load_shipped_profiles
from lablink.projections.jobs import read_snapshot
from lablink.projections.profiles import profile_lookup
from lablink.projections.reading import reading_views
from lablink.repository import JobRepository
from lablink.scheduler.agents import AgentExecutor
from lablink.scheduler.calibration_gate import CalibrationGate
from lablink.scheduler.calibration_watch import CalibrationWatch
from lablink.scheduler.engine import Engine, recovery_lists
from lablink.scheduler.executor import Executor, NoOpExecutor
from lablink.scheduler.leadership import TASK_NAME as LEASE_TASK
from lablink.scheduler.leadership import Closable, Duty, Leadership, ServiceDuty
from lablink.scheduler.retention import RetentionPass
from lablink.scheduler.runner import EngineRunner, Runner
from lablink.settings import Settings
from lablink.supervision import Supervisor

log = structlog.get_logger(tag="scheduler")

S = TypeVar("S", bound=Closable)


def freeze_startup() -> None:
    """Once a long-running process has started: everything loaded so far lives as long as
    the process, so keep the collector from walking it again and again (its pauses were tens
    of ms under load), and let it run less often."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def make_executor(
    settings: Settings, profiles: ProfileLookup | None = None, clock: Clock | None = None
) -> Executor:
    """The in-process executors; the agents executor needs the bus (see Runtime). ``clock``
    stamps the instrument's times (the scheduler's own, in-process)."""
    if settings.executor_kind == "noop":
        return NoOpExecutor()
    from lablink.equipment_agent.bench import BENCH_YAML, open_simulated_bench

    return InProcessExecutor(
        open_simulated_bench(BENCH_YAML),
        settings.data_dir,
        realtime=settings.realtime,
        profiles=profiles,
        clock=clock,
    )


def record_options(settings: Settings) -> JetStreamOptions:
    """Where cluster mode's record is: LABLINK_NATS_URL's servers, as the scheduler's user."""
    assert settings.nats_url is not None
    return JetStreamOptions(
        servers=tuple(url.strip() for url in settings.nats_url.split(",") if url.strip()),
        user=settings.nats_user,
        password=settings.nats_password,
        credentials=settings.nats_credentials,
        tls_ca=settings.nats_tls_ca,
        tls_cert=settings.nats_tls_cert,
        tls_key=settings.nats_tls_key,
        replicas=settings.nats_replicas,
    )


def nats_options(settings: Settings, url: str) -> NatsOptions:
    return NatsOptions(
        url=url,
        user=settings.nats_user,
        password=settings.nats_password,
        credentials=settings.nats_credentials,
        tls_ca=settings.nats_tls_ca,
        tls_cert=settings.nats_tls_cert,
        tls_key=settings.nats_tls_key,
        replicas=settings.nats_replicas,
    )


class Runtime:
    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock | None = None,
        executor: Executor | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        self._executor = executor
        # What every component says of itself (`/health`), and the supervisor every
        # background loop runs under.
        self.health = Health(self.clock)
        self.supervisor = Supervisor(self.health)
        # Cluster mode: told each time the engine changes (gaining or losing the lease).
        self.on_engine: list[Callable[[Engine], None]] = []

    async def __aenter__(self) -> Runtime:
        # Each part is entered into one exit stack as it opens, so that a start failing at
        # any step closes, in reverse, everything opened before it (as APScheduler 4's
        # schedulers do); a started runtime keeps the stack for __aexit__.
        async with contextlib.AsyncExitStack() as stack:
            active = await self._open(stack)
            self._stack = stack.pop_all()
        freeze_startup()
        log.info(
            "scheduler started",
            db=str(self.settings.db_path),
            timezone=self.settings.timezone,
            jobs=active,
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stack.aclose()
        log.info("scheduler stopped")

    async def _open(self, stack: contextlib.AsyncExitStack) -> int:
        """Open every part, each entered into ``stack``; returns the number of active jobs.

        Closing runs in reverse: retention, the engine, the supervisor, the executor, the
        agents, the relay, the nats-server, the store, the data-directory lock."""
        settings = self.settings
        # One scheduler per data directory (and one publisher when the bus is on): a second
        # start exits here, before it opens anything (lablink/datadir.py).
        self.claim = claim_data_dir(settings.data_dir, scheduler=True, relay=settings.nats)
        stack.callback(self.claim.release)
        # A bad notifications.toml stops the start here, before anything runs.
        channels = load_channels(settings)
        record: JetStreamEventStore | None = None
        if settings.cluster:
            # The record is the cluster's stream; this file is its copy (views, replay and
            # the audit read it unchanged), caught up with the record before the views are
            # folded and before anything decides.
            record = JetStreamEventStore(
                settings.db_path, record_options(settings), clock=self.clock
            )
        try:
            with translated(settings.db_path):  # a start that cannot write exits with one line
                # The views follow the log in a process (or a thread) of their own: nothing
                # but the log is on the fire path (lablink/projections/follower.py).
                self.store = store = open_store(
                    settings.db_path,
                    background=True,
                    fold_process=settings.projector == "process",
                )
        except BaseException:
            if record is not None:
                record.close()
            raise
        stack.callback(store.close)
        self.leadership: Leadership | None = None
        self.record = record
        if record is not None:
            store.record = record
            record.subscribe(store.announce)
            # What the feed copied between the views' opening and this subscription.
            tail = store.read_rows(max(0, store.last_position() - 1), 1)
            if tail:
                store.announce([event_of(tail[-1])])
            self.health.probe("record", self._record_probe)
        # Where a notifier's first start begins: nothing this start raises is skipped.
        opened_at = store.last_position()
        store.clock = self.clock  # when the event log's writes started failing
        secure_files(settings.data_dir)
        self.health.probe("event_log", EventLogProbe(store, settings.data_dir))
        self.health.probe("projector", store.views.probe)

        def snapshot(job_id: str) -> Any:
            with reading_views(store) as views:
                return read_snapshot(views, job_id)

        self.jobs = JobRepository(store, snapshots=snapshot)
        if record is not None:
            # Jobs changed on other replicas (created, paused) reach this one's engine.
            record.subscribe(self._heard)
        # The profiles the guide's examples name, and a starter set per simulated instrument,
        # are in the log from the first start on (never overwriting an admin's edits).
        load_shipped_profiles(store, self.clock)
        self.service = JobService(
            store,
            self.clock,
            default_timezone=settings.timezone,
            repository=self.jobs,
            profiles=StoredProfiles(store),
            # A job's parameters are checked against its instrument's driver when saved.
            instruments=KnownInstruments(store),
            require_reason=settings.require_reason,
        )
        self.nats_server: PrivateNats | None = None
        self.relay: Relay | None = None
        self.data: DataBucket | None = None
        self.agents: list[Agent] = []
        self.agent_process: AgentProcess | None = None
        if settings.nats:
            # Cluster mode: every replica's relay follows until its replica gains the lease
            # (one relay publishes per cluster; ``bus.relay``).
            self.nats_server, self.relay = await start_bus(
                settings, store, self.health, shared_stream=record is not None
            )
            if self.nats_server is not None:
                stack.push_async_callback(self.nats_server.stop)
            stack.push_async_callback(self.relay.aclose)
            # The captures' bucket, as the scheduler's user: downloads and retention.
            self.data = DataBucket(self.relay.options)
            stack.push_async_callback(self.data.aclose)
        # The agents close after the executor, and the supervisor's tasks (the executor's
        # reports and heartbeats among them) stop before it closes its connection.
        stack.push_async_callback(self._close_agents)
        if self._executor is not None:
            self.executor = self._executor
        elif settings.executor_kind == "agents":
            self.executor = self._agents_executor()
        else:
            self.executor = make_executor(settings, profile_lookup(store), self.clock)
        stack.push_async_callback(self.executor.aclose)
        stack.push_async_callback(self.supervisor.aclose)
        # Signed checkpoints of the log (task.audit): closed after the engine, so that the
        # last one signs everything this run recorded.
        await self._start_checkpoints(stack)
        if self._executor is None and isinstance(self.executor, AgentExecutor):
            await self._start_agents(self.executor)
        # The calibration interlock: the certificates of LABLINK_AGENT_CONFIG's lab.toml are
        # on record before the engine decides its first fire.
        self.calibrations = self._calibrations()
        self.calibration_gate = CalibrationGate(
            store,
            zone=ZoneInfo(settings.timezone),
            require=settings.require_calibration,
            warn_days=settings.calibration_warn_days,
        )
        stack.callback(self.calibration_gate.close)
        # The engine's loop and its group committer run under the runtime's supervisor
        # (task.engine, task.committer), as does retention (task.retention). The engine
        # closes before the supervisor: its executions' outcomes still need the committer
        # (and the agents) that the supervisor's other tasks keep running.
        # Run-now as the API asks for it: this process's engine, or in cluster mode the lease
        # holder's (forwarded from a follower).
        self.runner: Runner = EngineRunner(lambda: self.engine)
        if self.record is not None:
            await self._start_leadership(stack, self.record)
        else:
            self.engine = await self._start_engine(store)
            stack.push_async_callback(self.engine.aclose)
        with reading_views(store) as views:
            active, _ = recovery_lists(views)

        # Retention and calibration_due warnings append to the record: in cluster mode only
        # the leader runs them (scheduler.leadership.ServiceDuty), as it fires.
        async def retention() -> RetentionPass:
            self.retention = RetentionPass(
                store,
                self.clock,
                settings.retention_days,
                data=self.data,
                max_bytes=settings.data_max_bytes,
            )
            await self.retention.start(self.supervisor)
            return self.retention

        # calibration_due warnings, LABLINK_CALIBRATION_WARN_DAYS ahead (task.calibration).
        async def calibration_watch() -> CalibrationWatch:
            self.calibration_watch = CalibrationWatch(
                store, self.clock, self.calibrations, warn_days=settings.calibration_warn_days
            )
            await self.calibration_watch.start(self.supervisor)
            return self.calibration_watch

        await self._leader_only(stack, "retention", retention)
        await self._leader_only(stack, "calibration watch", calibration_watch)
        # The daily backup of the log, when LABLINK_BACKUP_DIR is set (task.backup).
        self.backups: ScheduledBackups | None = None
        if settings.backup_dir is not None:
            self.backups = ScheduledBackups(
                store,
                self.clock,
                settings.backup_dir,
                settings.backup_keep,
                alarms=AlarmService.on_store(store, self.clock),
            )
            stack.push_async_callback(self.backups.aclose)
            await self.backups.start(self.supervisor)

        # Alarm notifications follow the log (task.notify, task.notify.<channel>). In cluster
        # mode only the leader sends them: one email per alarm, not one per replica.
        async def notifier() -> Notifier | None:
            return await start_notifier(
                settings, store, self.clock, self.health, channels, first_start_at=opened_at
            )

        self.notifier = await self._leader_only(stack, "notifier", notifier)
        return len(active)

    async def _leader_only(
        self,
        stack: contextlib.AsyncExitStack,
        name: str,
        start: Callable[[], Awaitable[S | None]],
    ) -> S | None:
        """Single node: start the service now (closed with the runtime). Cluster mode: a
        duty of the lease holder, made on each gain and closed on each loss (None now)."""
        if self.leadership is not None:
            duty = ServiceDuty(name, start)
            stack.push_async_callback(duty.follow)
            await self.leadership.add_duty(duty)
            return None
        service = await start()
        if service is not None:
            stack.push_async_callback(service.aclose)
        return service

    def _heard(self, events: list[RecordedEvent]) -> None:
        """The record's events, as this replica's copy takes them: each job's to the jobs'
        repository (its cache, the engine's plan)."""
        by_job: dict[str, list[RecordedEvent]] = {}
        for recorded in events:
            job_id = getattr(recorded.event, "job_id", None)
            if isinstance(job_id, str) and self.jobs.stream_id(job_id) == recorded.stream_id:
                by_job.setdefault(job_id, []).append(recorded)
        for job_id, recorded_events in by_job.items():
            self.jobs.heard(job_id, recorded_events)

    def _make_engine(self, store: EventStore) -> Engine:
        return Engine(
            store,
            self.clock,
            self.executor,
            jobs=self.jobs,
            supervisor=self.supervisor,
            alarms=AlarmService.on_store(self.store, self.clock),
            fault_grace_seconds=self.settings.scheduler_fault_grace,
            calibration=self.calibration_gate,
            fire_lead=self.settings.fire_lead,
        )

    async def _start_engine(self, store: EventStore) -> Engine:
        """An engine started with the recovery of a restart: unfinished runs interrupted,
        every active job planned by its misfire and coalesce rules."""
        engine = self._make_engine(store)
        try:
            with reading_views(self.store) as views:
                active, unfinished = recovery_lists(views)
            await engine.start(active, unfinished)
        except BaseException:
            await engine.aclose()
            raise
        if isinstance(self.executor, AgentExecutor):  # after recovery: see its docstring
            await self.executor.follow_late_results(
                engine.record_late_result, engine.record_data_stored
            )
            self.executor.follow_progress(engine.record_progress)
        return engine

    async def _start_leadership(
        self, stack: contextlib.AsyncExitStack, record: JetStreamEventStore
    ) -> None:
        """Cluster mode: the engine runs while this replica holds the scheduler lease. Until
        then ``self.engine`` is one that was never started (a follower's: the API reads its
        empty plan). ``on_engine`` callbacks hear each change (the API's context)."""
        settings = self.settings
        self.engine = self._make_engine(self.store)
        keeper = LeaseKeeper(
            record.lease_link(settings.replica, settings.lease_seconds),
            replica=settings.replica,
            ttl=settings.lease_seconds,
        )
        idle = self.engine
        executor = self.executor if isinstance(self.executor, AgentExecutor) else None
        if executor is not None:
            # The epoch of the last lease gained: agents refuse lower ones.
            executor.lease_epoch = lambda: keeper.last_epoch

        async def start_engine(lease: LeaseRecord) -> Engine:
            # The views hold everything the former leader recorded before this one decides.
            await record.on_store_loop(record.caught_up())
            await asyncio.to_thread(self.store.settled)
            if executor is not None:
                # The agents' reports, from one replica at a time: this one's recovery looks
                # for its executions' results among those nobody took yet.
                await executor.lead()
            return await self._start_engine(record.fenced(keeper.fence))

        def changed(engine: Engine | None) -> None:
            self.engine = engine if engine is not None else idle
            for callback in self.on_engine:
                callback(self.engine)

        def leading() -> Engine | None:
            return self.leadership.engine if self.leadership is not None else None

        # The leader's other duties: the one relay of the cluster, and serving run-nows
        # asked of followers (lablink/cluster/forwarding.py).
        self.run_service = RunService(
            record, replica=settings.replica, engine=leading, position=self.store.last_position
        )
        duties: list[Duty] = [self.run_service]
        if self.relay is not None:
            duties.append(self.relay)
        if executor is not None:  # led as the engine starts; followed as this replica steps down
            duties.append(executor)
        self.runner = ClusterRunner(
            record, leading=leading, views=self.store.views, views_wait=settings.views_wait
        )
        self.leadership = Leadership(keeper, start_engine, on_engine=changed, duties=duties)
        task = asyncio.create_task(keeper.run(), name=LEASE_TASK)
        # This replica in LABLINK_REPLICAS for `lablink cluster status`: on the record's
        # connection and loop (the figures it reads are numbers held in memory).
        presence = Presence(
            record.connection,
            settings.replica,
            settings.public_url or settings.server_url,
            copied=lambda: record.seen_position,
            folded=lambda: self.store.views.position,
            role=lambda: "leader" if keeper.holding else "follower",
            replicas=settings.nats_replicas,
        )
        await record.on_store_loop(presence.start())

        async def stop() -> None:
            with contextlib.suppress(Exception):
                await record.on_store_loop(presence.stop())
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

        stack.push_async_callback(stop)
        self.health.probe("lease", self._lease_probe)

    def _lease_probe(self) -> Reading:
        """Holder or follower, the epoch, the last renewal's age."""
        assert self.leadership is not None
        return Reading(state="ok", details=self.leadership.status())

    def _record_probe(self) -> Reading:
        """The local copy against the record: its lag (the copy_status of the store)."""
        assert self.record is not None
        copy = self.record.copy_status()
        details = dataclasses.asdict(copy)
        if copy.error or copy.recorded is None:
            reason = copy.error or "the record's servers do not answer"
            return Reading(state="degraded", reason=reason, details=details)
        return Reading(state="ok", details=details)

    def _calibrations(self) -> CalibrationService:
        """The calibration service of this process, after recording the certificates of
        LABLINK_AGENT_CONFIG's lab.toml the log does not hold yet (idempotent: a restart
        records nothing again). A certificate the rules refuse stops the start, naming its
        key in the file."""
        settings = self.settings
        config = load_config(settings.agent_config) if settings.agent_config else None
        configured = [i.id for i in config.instruments] if config is not None else []
        service = CalibrationService(
            self.store,
            self.clock,
            zone=ZoneInfo(settings.timezone),
            require_reason=settings.require_reason,
            known=known_equipment(self.store, configured),
            alarms=AlarmService.on_store(self.store, self.clock),
        )
        if config is None or settings.agent_config is None:
            return service
        entries = [
            LabCalibration(
                equipment_id=instrument.id,
                record=CalibrationRecord(
                    certificate=entry.certificate,
                    performed=entry.performed,
                    due=entry.due,
                    by=entry.by,
                ),
                key=entry.key,
            )
            for instrument in config.instruments
            for entry in instrument.calibrations
        ]
        try:
            recorded = record_lab_calibrations(service, entries)
        except InvalidRequest as exc:
            first = exc.errors[0]
            raise ConfigError(
                str(settings.agent_config), first.field, first.value, first.reason
            ) from None
        if recorded:
            log.info("lab.toml calibrations recorded", certificates=recorded)
        return service

    async def _start_checkpoints(self, stack: contextlib.AsyncExitStack) -> None:
        settings = self.settings
        sink: BusCheckpoints | None = None
        if self.relay is not None:
            sink = BusCheckpoints(self.relay.options, replicas=settings.nats_replicas)
            stack.push_async_callback(sink.aclose)
        self.checkpoints = Checkpointer(
            self.store,
            self.clock,
            ensure_signer(settings.data_dir),
            every_events=settings.checkpoint_events,
            every=timedelta(minutes=settings.checkpoint_minutes),
            sink=sink,
        )
        stack.push_async_callback(self.checkpoints.aclose)
        await self.checkpoints.start(self.supervisor)

    async def _close_agents(self) -> None:
        for agent in self.agents:
            await agent.aclose()
        if self.agent_process is not None:
            await self.agent_process.aclose()

    def _agents_executor(self) -> AgentExecutor:
        """The executor that reaches agents over NATS (started by ``_start_agents``)."""
        assert self.relay is not None, "the agents executor needs the bus"
        store = self.store
        alarms = AlarmService.on_store(store, self.clock)
        equipment = EquipmentService(store, self.clock, alarms=alarms)
        return AgentExecutor(
            self.relay.options,
            heartbeat_timeout=self.settings.heartbeat_timeout,
            on_presence=equipment.on_presence,
            profiles=profile_lookup(store),
            supervisor=self.supervisor,
            clock=self.clock,
        )

    async def _start_agents(self, executor: AgentExecutor) -> None:
        """Start the agents executor, and the agent `lablink serve` runs itself: the
        simulated bench, or the instruments of LABLINK_AGENT_CONFIG; in this process, or
        (LABLINK_EMBEDDED_AGENT=process) as a `lablink agent` child of its own."""
        settings = self.settings
        # Cluster mode: only the lease holder takes the agents' reports (``_start_leadership``).
        await executor.start(reports=self.record is None)
        if not settings.agents:
            return
        if settings.agent_config is not None:
            # Read here in both modes: a mistake in the file stops the start with its key.
            config = load_config(settings.agent_config)
        else:
            config = simulated_config(settings.data_dir, realtime=settings.realtime)
        if settings.embedded_agent == "process":
            # Its NATS user is made by the child itself, as `lablink agent --data-dir` makes
            # it: the same agent-<id> user of the private server as in process.
            self.agent_process = AgentProcess(
                self.supervisor,
                config=settings.agent_config,
                data_dir=settings.data_dir,
                env=child_environment(os.environ, realtime=settings.realtime),
            )
            await self.agent_process.start()
            return
        agent = Agent(
            config, await embedded_agent_options(self.nats_server, config, executor.options)
        )
        # Listed before it starts: an agent that fails part-way (its instruments open,
        # its connection not) is closed with the rest.
        self.agents.append(agent)
        await agent.start()


async def start_bus(
    settings: Settings,
    store: SQLiteEventStore,
    health: Health | None = None,
    *,
    shared_stream: bool = False,
) -> tuple[PrivateNats | None, Relay]:
    """The relay, and a private nats-server under data/nats when no URL is configured: with
    its own users (``bus.credentials``), supervised (``task.nats-server``), and restarted by
    the relay if its stream stops taking events (``bus.relay``). Registers the ``relay`` and
    ``nats`` health probes in ``health``."""
    health = health if health is not None else Health(SystemClock())
    # A relay that fails to start stops the server started for it.
    async with contextlib.AsyncExitStack() as stack:
        server = None
        if settings.nats_url is None:
            server = await PrivateNats(access.private_folder(settings.data_dir), health).start()
            stack.push_async_callback(server.stop)
            options = server.options(SCHEDULER)
            options.replicas = settings.nats_replicas
            log.info("embedded nats-server started", url=server.url, store=str(server.folder))
        else:
            options = nats_options(settings, settings.nats_url)
        relay = Relay(
            settings.db_path,
            options,
            views_path=settings.views_path,
            health=health,
            on_stuck=server.restart if server is not None else None,
            shared_stream=shared_stream,
        )
        stack.push_async_callback(relay.aclose)
        bus_probes.register(health, relay.status)
        relay.attach(store)
        await relay.start()
        stack.pop_all()
    return server, relay


async def embedded_agent_options(
    server: PrivateNats | None, config: AgentConfig, options: NatsOptions
) -> NatsOptions:
    """How the agent `lablink serve` runs itself connects: as its own ``agent-<id>`` user of
    the private server, else (an external NATS) with the configured credentials."""
    if server is None:
        return options
    return await access.agent_options(
        NatsOptions(url=server.url),
        server.folder,
        config.agent_id,
        (i.id for i in config.instruments),
    )


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def run_until_signalled(runtime: Runtime) -> None:
    """Run until SIGTERM or SIGINT, then close gracefully (every event is flushed)."""
    stop = stop_on_signals()
    async with runtime:
        await stop.wait()


def ensure_admin_key(runtime: Runtime) -> str | None:
    """On the first start with auth on, create an admin key, write it to data/admin.key
    (mode 0600) and return it so it can be printed once. Later starts return None."""
    from lablink.keys import count_keys, create_key

    # The keys view folds behind the log: count only once it shows every key recorded (a
    # stale count of none would make a second admin key).
    if not runtime.store.settled():
        raise runtime.store.views.behind(runtime.store.views.head)
    with reading_views(runtime.store) as views:
        # Revoked keys count: revoking every key must not make a new admin key appear.
        existing = count_keys(views, include_revoked=True)
    if existing:
        return None
    _, key = create_key(
        runtime.store, name="admin", role="admin", actor="lablink serve", now=runtime.clock.now()
    )
    runtime.store.settled()  # the key works (the API finds it) once this returns
    path = runtime.settings.data_dir / "admin.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    os.chmod(path, 0o600)
    return key


def _listening_server(on_shutdown: Callable[[], None] = lambda: None) -> type[Any]:
    """``on_shutdown`` runs when the server starts to stop, before it waits for open
    responses: endless ones (the dashboard's live streams) must end by themselves."""
    import uvicorn

    class Server(uvicorn.Server):
        """Logs "api listening" once the socket accepts connections, not before; stops
        serving on SIGTERM or SIGINT (a second SIGINT: at once), as uvicorn does, but
        does not raise the signal again afterwards: the runtime around the server still
        closes, flushing every event."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.handle_exit, sig, None)
            yield

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            on_shutdown()
            await super().shutdown(sockets)

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if self.started:
                config = self.config
                scheme = "https" if config.ssl_certfile else "http"
                log.info(
                    "api listening",
                    url=f"{scheme}://{config.host}:{config.port}",
                    docs="/schema",
                    dashboard="/",
                )

    return Server


async def serve(settings: Settings) -> None:
    """`lablink serve`: the scheduler plus the HTTP API, until SIGTERM or SIGINT."""
    import uvicorn

    from lablink.api.app import create_app
    from lablink.api.context import ApiContext
    from lablink.api.hosts import is_loopback
    from lablink.dashboard.plugin import DashboardPlugin
    from lablink.errors import UnsafeBind

    # Without keys anyone who reaches the port is admin: only this machine may.
    if not settings.auth and not is_loopback(settings.host):
        raise UnsafeBind(settings.host)

    scheme = "https" if settings.tls_cert else "http"
    async with Runtime(settings) as runtime:
        if settings.auth:
            key = ensure_admin_key(runtime)
            if key is not None:
                print(
                    f"Created the admin API key (shown once, also in "
                    f"{settings.data_dir / 'admin.key'}):\n  {key}\n"
                    f"Sign in with it at {scheme}://{settings.host}:{settings.port}/"
                    " (the dashboard),"
                    f" or send it as 'Authorization: Bearer <key>' to the API.",
                    flush=True,
                )
        else:
            log.warning("API keys are off (LABLINK_AUTH=off): every request acts as admin")
        context = ApiContext(
            settings=settings,
            clock=runtime.clock,
            store=runtime.store,
            service=runtime.service,
            engine=runtime.engine,
            auth_enabled=settings.auth,
            relay=runtime.relay,
            health=runtime.health,
            data=runtime.data,
            runner=runtime.runner,
        )
        # Cluster mode: the engine is a new one each time this replica gains the lease.
        runtime.on_engine.append(lambda engine: setattr(context, "engine", engine))
        _Server = _listening_server(context.close_streams)
        config = uvicorn.Config(
            create_app(context, plugins=[DashboardPlugin(settings.data_dir)]),
            host=settings.host,
            port=settings.port,
            log_level="warning",
            access_log=False,
            lifespan="on",
            # Past this a response still open at SIGTERM is cancelled: the runtime must close.
            timeout_graceful_shutdown=10,
            # HTTPS when LABLINK_TLS_CERT/KEY are set (Settings checks both or neither).
            ssl_certfile=settings.tls_cert,
            ssl_keyfile=settings.tls_key,
        )
        server = _Server(config)
        try:
            await server.serve()
        finally:
            context.close()


async def run_relay(settings: Settings) -> None:
    """`lablink relay`: only the relay (and a private nats-server if no URL is set)."""
    stop = stop_on_signals()
    async with contextlib.AsyncExitStack() as stack:
        # Beside a `lablink scheduler` with LABLINK_NATS=off, not beside another publisher.
        claim = claim_data_dir(settings.data_dir, scheduler=False, relay=True)
        stack.callback(claim.release)
        store = open_store(settings.db_path)
        stack.callback(store.close)
        server, relay = await start_bus(settings, store)
        if server is not None:
            stack.push_async_callback(server.stop)
        stack.push_async_callback(relay.aclose)
        log.info("relay started", url=relay.options.url, db=str(settings.db_path))
        await stop.wait()


async def run_agent(
    config: AgentConfig,
    url: str,
    settings: Settings,
    private: Path | None = None,
    *,
    ready_fd: int | None = None,
) -> None:
    """`lablink agent`: the instruments of one lab.toml, over NATS, until a signal.

    Credentials: the file's ``[nats]``, else LABLINK_NATS_*, else (``private``: the URL is that
    of the private server of this data directory) the agent's own user there, made the first
    time. ``ready_fd``: a pipe written once the agent has started (serve's agent process)."""
    stop = stop_on_signals()
    # What the file's [nats] sets wins over LABLINK_NATS_*; its url is the caller's ``url``.
    lab = {k: v for k, v in dataclasses.asdict(config.nats).items() if k != "url" and v}
    options = dataclasses.replace(nats_options(settings, url), **lab)
    options = await access.agent_options(
        options, private, config.agent_id, (i.id for i in config.instruments)
    )
    agent = Agent(config, options)
    await agent.start()
    # As for serve: the collector's walks of what start-up loaded held every instrument's
    # worker up (a command kept for its instant waits on the GIL): instrument-start p99
    # 80-100 ms at 1,000 commands a second, 11 without.
    freeze_startup()
    try:
        if ready_fd is not None:
            signal_ready(ready_fd)
        await stop.wait()
    finally:
        await agent.aclose()
