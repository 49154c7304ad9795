"""A scheduler that reaches its instruments through agents over a real nats-server, on a real
SQLite file, for tests of the agents path.

``AgentLab`` is the scheduler side (store, job service, engine, ``AgentExecutor``, the
equipment write path), driven by a manual clock; agents are started next to it in-process
(``start_agent``) or as `lablink agent` processes from a lab.toml (``write_lab_toml``).
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from lablink.alarm_service import AlarmService
from lablink.api.app import create_app
from lablink.api.context import ApiContext
from lablink.application import JobService
from lablink.bus.relay import NatsOptions
from lablink.clock import ManualClock
from lablink.equipment_agent.agent import Agent
from lablink.equipment_agent.bench import PortWrapper
from lablink.equipment_agent.config import AgentConfig, InstrumentConfig
from lablink.equipment_service import EquipmentService
from lablink.events import FINAL_STATUSES
from lablink.eventstore.sqlite import SQLiteEventStore
from lablink.instruments.execution import ProfileLookup
from lablink.instruments.protocol import REPORTS_ACK_WAIT_SECONDS
from lablink.instruments.simulated import SIMULATED_BENCH
from lablink.logstore import open_store
from lablink.projections.jobs import read_snapshot
from lablink.projections.reading import reading_views
from lablink.repository import JobRepository
from lablink.scheduler.agents import AgentExecutor
from lablink.scheduler.engine import Engine, recovery_lists
from lablink.settings import Settings
from lablink.supervision import Supervisor
from tests.support.eventually import eventually
from tests.support.harness import drop_engine
from tests.support.views import view_rows

FINAL = tuple(sorted(FINAL_STATUSES))


def bench_config(
    bench_yaml: Path,
    data_dir: Path,
    *,
    agent_id: str = "bench-agent",
    realtime: bool = False,
    heartbeat_seconds: float = 0.2,
    only: tuple[str, ...] | None = None,
) -> AgentConfig:
    """The guide's simulated instruments (or ``only`` some) on a private copy of bench.yaml."""
    return AgentConfig(
        agent_id=agent_id,
        instruments=tuple(
            InstrumentConfig(id=eid, kind=kind, resource=resource, backend=str(bench_yaml))
            for eid, (kind, resource) in SIMULATED_BENCH.items()
            if only is None or eid in only
        ),
        data_dir=data_dir,
        realtime=realtime,
        heartbeat_seconds=heartbeat_seconds,
    )


def write_lab_toml(path: Path, config: AgentConfig, nats_url: str) -> Path:
    """The lab.toml `lablink agent --config` reads, for ``config`` (its ``nats.user`` too)."""
    lines = [
        "[agent]",
        f'id = "{config.agent_id}"',
        f"heartbeat_seconds = {config.heartbeat_seconds}",
        f'data_dir = "{config.data_dir}"',
        f"realtime = {'true' if config.realtime else 'false'}",
        "",
        "[nats]",
        f'url = "{nats_url}"',
    ]
    if config.nats.user is not None:  # its password: LABLINK_NATS_PASSWORD, as deploy/lab.toml
        lines.append(f'user = "{config.nats.user}"')
    for inst in config.instruments:
        lines += [
            "",
            "[[instruments]]",
            f'id = "{inst.id}"',
            f'kind = "{inst.kind}"',
            f'resource = "{inst.resource}"',
            f'backend = "{inst.backend}"',
            f"timeout_ms = {inst.timeout_ms}",
        ]
    path.write_text("\n".join(lines) + "\n")
    return path


LABLINK = str(Path(sys.executable).parent / "lablink")


async def spawn_agent(toml: Path) -> asyncio.subprocess.Process:
    """`lablink agent --config toml` as a child process, with none of this process's
    LABLINK_* settings (the caller waits for it and kills it)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABLINK_")}
    return await asyncio.create_subprocess_exec(
        LABLINK,
        "agent",
        "--config",
        str(toml),
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


class AgentLab:
    def __init__(
        self,
        path: Path,
        nats_url: str,
        clock: ManualClock,
        *,
        heartbeat_timeout: float = 5.0,
        run_timeout: float = 2.0,
        profiles: ProfileLookup | None = None,
        supervisor: Supervisor | None = None,
        ack_wait: float = REPORTS_ACK_WAIT_SECONDS,
    ) -> None:
        self.path = path
        self.ack_wait = ack_wait
        self.supervisor = supervisor
        self.options = NatsOptions(url=nats_url)
        self.clock = clock
        self.heartbeat_timeout = heartbeat_timeout
        self.run_timeout = run_timeout
        self.profiles = profiles
        self.agents: list[Agent] = []
        self.processes: list[asyncio.subprocess.Process] = []

    async def start(self) -> AgentLab:
        self.store: SQLiteEventStore = open_store(self.path)
        store = self.store

        def snapshot(job_id: str) -> Any:
            with reading_views(store) as views:
                return read_snapshot(views, job_id)

        self.jobs = JobRepository(store, snapshots=snapshot)
        self.service = JobService(store, self.clock, default_timezone="UTC", repository=self.jobs)

        self.alarms = AlarmService.on_store(store, self.clock)
        self.equipment = EquipmentService(store, self.clock, alarms=self.alarms)
        self.executor = AgentExecutor(
            self.options,
            profiles=self.profiles,
            heartbeat_timeout=self.heartbeat_timeout,
            run_timeout=self.run_timeout,
            on_presence=self.equipment.on_presence,
            supervisor=self.supervisor,
            clock=self.clock,
            ack_wait=self.ack_wait,
        )
        await self.executor.start()
        self.engine = Engine(store, self.clock, self.executor, jobs=self.jobs)
        with reading_views(store) as views:
            active, unfinished = recovery_lists(views)
        await self.engine.open(active, unfinished)
        await self.executor.follow_late_results(
            self.engine.record_late_result, self.engine.record_data_stored
        )
        self.executor.follow_progress(self.engine.record_progress)
        return self

    async def start_agent(self, config: AgentConfig, *, wrap: PortWrapper | None = None) -> Agent:
        agent = Agent(config, self.options, wrap=wrap)
        await agent.start()
        self.agents.append(agent)
        await self.online(*(i.id for i in config.instruments))
        return agent

    async def start_agent_process(
        self, config: AgentConfig, toml: Path
    ) -> asyncio.subprocess.Process:
        """`lablink agent --config toml` as a child process (the caller kills it); returns
        once the scheduler has seen its instruments' heartbeats."""
        write_lab_toml(toml, config, self.options.url)
        process = await spawn_agent(toml)
        self.processes.append(process)
        await self.online(*(i.id for i in config.instruments), within=30)
        return process

    async def online(self, *equipment_ids: str, within: float = 60) -> None:
        """Wait until the scheduler has seen each instrument's heartbeat."""

        def offline() -> list[str]:
            sightings = self.executor.sightings
            return [e for e in equipment_ids if not ((s := sightings.get(e)) and s.online)]

        await eventually(offline, until=lambda left: not left, timeout=within, what="online")

    def create(self, body: Mapping[str, Any], actor: str = "tester") -> str:
        job: dict[str, Any] = {
            "name": "agent test",
            "trigger_type": "interval",
            "interval_hours": 1,
            "enabled": False,
            **body,
        }
        return self.service.create_job(job, actor)

    async def run(self, body: Mapping[str, Any], *, within: float = 30) -> dict[str, Any]:
        """Create a disabled job, run it now, and wait for its execution to end."""
        job_id = self.create(body)
        execution_id = await self.engine.run_now(job_id)
        return await self.finished(execution_id, within=within)

    async def finished(self, execution_id: str, *, within: float = 30) -> dict[str, Any]:
        return await self.until(execution_id, FINAL, within=within)

    async def until(
        self, execution_id: str, statuses: tuple[str, ...], *, within: float = 60
    ) -> dict[str, Any]:
        def row() -> dict[str, Any] | None:
            rows = self.rows("SELECT * FROM executions WHERE execution_id = ?", execution_id)
            return rows[0] if rows else None

        found = await eventually(
            row,
            until=lambda r: r is not None and r["status"] in statuses,
            timeout=within,
            what=f"{execution_id} in {statuses}",
        )
        assert found is not None
        return found

    async def at(self, instant: datetime) -> int:
        self.clock.set(instant)
        return await self.engine.tick()

    def api_context(self, data_dir: Path) -> ApiContext:
        """The API over this lab's store, service and engine (auth off, host "test")."""
        settings = Settings(data_dir=data_dir, timezone="UTC", auth=False, allowed_hosts=("test",))
        return ApiContext(
            settings=settings,
            clock=self.clock,
            store=self.store,
            service=self.service,
            engine=self.engine,
            auth_enabled=False,
        )

    async def api_get(self, data_dir: Path, *paths: str) -> list[httpx.Response]:
        """GET each of ``paths`` from the real Litestar app over this lab, in order."""
        context = self.api_context(data_dir)
        try:
            transport = httpx.ASGITransport(app=create_app(context))  # type: ignore[arg-type]
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                return [await client.get(path) for path in paths]
        finally:
            context.close()

    def rows(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        return view_rows(self.path, sql, *args)

    def events(self, stream_id: str) -> list[Any]:
        return [r.event for r in self.store.read_stream(stream_id)]

    async def crash(self) -> None:
        """The scheduler dies: no goodbye, its tasks and connection just stop."""
        await drop_engine(self.engine)
        await self.executor.aclose()
        self.store.close()

    async def close(self) -> None:
        stuck = []
        for process in self.processes:
            if process.returncode is None:
                process.terminate()
                try:
                    async with asyncio.timeout(30):
                        await process.wait()
                except TimeoutError:  # named below instead of a silent 120 s teardown hang
                    process.kill()
                    await process.wait()
                    stuck.append(process.pid)
        await self.engine.aclose(grace_seconds=5)
        await self.executor.aclose()
        for agent in self.agents:
            await agent.aclose()
        self.agents.clear()
        self.store.close()
        assert not stuck, f"lablink agent {stuck} did not stop within 30 s of SIGTERM"
