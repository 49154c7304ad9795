"""Everything one LabLink process runs, opened in order and closed in reverse.

The store (with its projections caught up), the job repository and service, the executor
and the engine. `lablink scheduler` runs this alone; `lablink serve` adds the HTTP API.
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import socket
from types import TracebackType
from typing import Any

import structlog

from lablink.alarm_service import AlarmService
from lablink.application import JobService
from lablink.bus.relay import NatsOptions, Relay
from lablink.bus.server import NatsServer
from lablink.bus.watch import URL_FILE
from lablink.clock import Clock, SystemClock
from lablink.equipment_agent.agent import Agent
from lablink.equipment_agent.config import AgentConfig, load_config, simulated_config
from lablink.equipment_service import EquipmentService
from lablink.health import Health
from lablink.eventstore.sqlite import SQLiteEventStore
from lablink.logstore import open_store
from lablink.profile_service import StoredProfiles, load_shipped_profiles
from lablink.projections.jobs import read_snapshot
from lablink.projections.profiles import profile_lookup
from lablink.repository import JobRepository
from lablink.scheduler.agents import AgentExecutor
from lablink.scheduler.engine import Engine, recovery_lists
from lablink.scheduler.executor import Executor, NoOpExecutor
from lablink.scheduler.inprocess import InProcessExecutor, ProfileLookup
from lablink.scheduler.retention import RetentionPass
from lablink.settings import Settings
from lablink.supervision import Supervisor

log = structlog.get_logger(tag="scheduler")


def make_executor(settings: Settings, profiles: ProfileLookup | None = None) -> Executor:
    """The in-process executors; the agents executor needs the bus (see Runtime)."""
    if settings.executor_kind == "noop":
        return NoOpExecutor()
    from lablink.equipment_agent.bench import BENCH_YAML, open_simulated_bench

    return InProcessExecutor(
        open_simulated_bench(BENCH_YAML),
        settings.data_dir,
        realtime=settings.realtime,
        profiles=profiles,
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

    async def __aenter__(self) -> Runtime:
        settings = self.settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.store = store = open_store(settings.db_path)

        def snapshot(job_id: str) -> Any:
            with store.lock:
                return read_snapshot(store.conn, job_id)

        self.jobs = JobRepository(store, snapshots=snapshot)
        # The profiles the guide's examples name, and a starter set per simulated instrument,
        # are in the log from the first start on (never overwriting an admin's edits).
        load_shipped_profiles(store, self.clock)
        self.service = JobService(
            store,
            self.clock,
            default_timezone=settings.timezone,
            repository=self.jobs,
            profiles=StoredProfiles(store),
        )
        self.nats_server: NatsServer | None = None
        self.relay: Relay | None = None
        self.agents: list[Agent] = []
        if settings.nats:
            await self._start_bus()
        if self._executor is not None:
            self.executor = self._executor
        elif settings.executor_kind == "agents":
            self.executor = await self._start_agents()
        else:
            self.executor = make_executor(settings, profile_lookup(store))
        self.engine = Engine(store, self.clock, self.executor, jobs=self.jobs)
        with store.lock:
            active, unfinished = recovery_lists(store.conn)
        await self.engine.start(active, unfinished)
        self.retention = RetentionPass(store, self.clock, settings.retention_days)
        await self.retention.start()
        # Everything loaded so far lives as long as the process: keep the collector from
        # walking it again and again (its pauses were tens of ms under load).
        gc.freeze()
        gc.set_threshold(50_000, 20, 100)
        log.info(
            "scheduler started",
            db=str(settings.db_path),
            timezone=settings.timezone,
            jobs=len(active),
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.supervisor.aclose()
        await self.retention.aclose()
        await self.engine.aclose()
        await self.executor.aclose()
        for agent in self.agents:
            await agent.aclose()
        if self.relay is not None:
            await self.relay.aclose()
        if self.nats_server is not None:
            await self.nats_server.stop()
        self.store.close()
        log.info("scheduler stopped")

    async def _start_bus(self) -> None:
        self.nats_server, self.relay = await start_bus(self.settings, self.store)

    async def _start_agents(self) -> AgentExecutor:
        """The executor that reaches agents over NATS, and the agents `lablink serve` runs
        itself: the simulated bench, or the instruments of LABLINK_AGENT_CONFIG."""
        settings = self.settings
        assert self.relay is not None, "the agents executor needs the bus"
        options = self.relay.options
        store = self.store

        alarms = AlarmService.on_store(store, self.clock)
        equipment = EquipmentService(store, self.clock, alarms=alarms)
        executor = AgentExecutor(
            options,
            heartbeat_timeout=settings.heartbeat_timeout,
            on_presence=equipment.on_presence,
            profiles=profile_lookup(store),
        )
        await executor.start()
        if settings.agents:
            if settings.agent_config is not None:
                config = load_config(settings.agent_config)
            else:
                config = simulated_config(settings.data_dir, realtime=settings.realtime)
            agent = Agent(config, options)
            await agent.start()
            self.agents.append(agent)
        return executor


async def start_bus(settings: Settings, store: SQLiteEventStore) -> tuple[NatsServer | None, Relay]:
    """The relay, and a private nats-server under data/nats when no URL is configured."""
    server = None
    url = settings.nats_url
    if url is None:
        server = await NatsServer(settings.data_dir / "nats").start()
        url = server.url
        # So that `lablink events tail` in another shell finds the private server.
        (settings.data_dir / "nats" / URL_FILE).write_text(url + "\n")
        log.info("embedded nats-server started", url=url, store=str(settings.data_dir / "nats"))
    options = nats_options(settings, url)
    relay = Relay(settings.db_path, options)
    relay.attach(store)
    await relay.start()
    return server, relay


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

    with runtime.store.lock:
        existing = count_keys(runtime.store.conn)
    if existing:
        return None
    _, key = create_key(
        runtime.store, name="admin", role="admin", actor="lablink serve", now=runtime.clock.now()
    )
    path = runtime.settings.data_dir / "admin.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    os.chmod(path, 0o600)
    return key


def _listening_server() -> type[Any]:
    import uvicorn

    class Server(uvicorn.Server):
        """Logs "api listening" once the socket accepts connections, not before."""

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if self.started:
                config = self.config
                log.info("api listening", url=f"http://{config.host}:{config.port}", docs="/schema")

    return Server


async def serve(settings: Settings) -> None:
    """`lablink serve`: the scheduler plus the HTTP API, until SIGTERM or SIGINT."""
    import uvicorn

    from lablink.api.app import create_app

    _Server = _listening_server()
    from lablink.api.context import ApiContext

    async with Runtime(settings) as runtime:
        if settings.auth:
            key = ensure_admin_key(runtime)
            if key is not None:
                print(
                    f"Created the admin API key (shown once, also in "
                    f"{settings.data_dir / 'admin.key'}):\n  {key}\n"
                    f"Send it as 'Authorization: Bearer <key>'.",
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
        )
        config = uvicorn.Config(
            create_app(context),
            host=settings.host,
            port=settings.port,
            log_level="warning",
            access_log=False,
            lifespan="on",
        )
        server = _Server(config)
        # uvicorn catches SIGTERM/SIGINT to stop serving, then restores the previous handlers
        # and raises the signal again. Handlers of ours that do nothing make that re-raise
        # harmless, so the engine still closes and flushes every event after the server.
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda signum, frame: None)
        try:
            await server.serve()
        finally:
            context.close()


async def run_relay(settings: Settings) -> None:
    """`lablink relay`: only the relay (and a private nats-server if no URL is set)."""
    stop = stop_on_signals()
    store = open_store(settings.db_path)
    server, relay = await start_bus(settings, store)
    log.info("relay started", url=relay.options.url, db=str(settings.db_path))
    try:
        await stop.wait()
    finally:
        await relay.aclose()
        if server is not None:
            await server.stop()
        store.close()


async def run_agent(config: AgentConfig, url: str, settings: Settings) -> None:
    """`lablink agent`: the instruments of one lab.toml, over NATS, until a signal."""
    stop = stop_on_signals()
    options = nats_options(settings, url)
    lab = config.nats
    options.user = lab.user or options.user
    options.password = lab.password or options.password
    options.credentials = lab.credentials or options.credentials
    options.tls_ca = lab.tls_ca or options.tls_ca
    options.tls_cert = lab.tls_cert or options.tls_cert
    options.tls_key = lab.tls_key or options.tls_key
    agent = Agent(config, options)
    await agent.start()
    try:
        await stop.wait()
    finally:
        await agent.aclose()
