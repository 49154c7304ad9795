"""Everything one LabLink process runs, opened in order and closed in reverse.

The store (with its projections caught up), the job repository and service, the executor
and the engine. `lablink scheduler` runs this alone; `lablink serve` adds the HTTP API.
"""

from __future__ import annotations

import asyncio
import signal
from types import TracebackType
from typing import Any

import structlog

from lablink.application import JobService
from lablink.clock import Clock, SystemClock
from lablink.logstore import open_store
from lablink.projections.jobs import read_snapshot
from lablink.repository import JobRepository
from lablink.scheduler.engine import Engine, recovery_lists
from lablink.scheduler.executor import Executor, NoOpExecutor
from lablink.settings import Settings

log = structlog.get_logger(tag="scheduler")


def make_executor(settings: Settings) -> Executor:
    if settings.executor == "noop":
        return NoOpExecutor()
    from lablink.equipment_agent.bench import BENCH_YAML, open_simulated_bench
    from lablink.scheduler.inprocess import InProcessExecutor

    return InProcessExecutor(
        open_simulated_bench(BENCH_YAML), settings.data_dir, realtime=settings.realtime
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

    async def __aenter__(self) -> Runtime:
        settings = self.settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.store = store = open_store(settings.db_path)

        def snapshot(job_id: str) -> Any:
            with store.lock:
                return read_snapshot(store.conn, job_id)

        self.jobs = JobRepository(store, snapshots=snapshot)
        self.service = JobService(
            store, self.clock, default_timezone=settings.timezone, repository=self.jobs
        )
        self.executor = self._executor or make_executor(settings)
        self.engine = Engine(store, self.clock, self.executor, jobs=self.jobs)
        with store.lock:
            active, unfinished = recovery_lists(store.conn)
        await self.engine.start(active, unfinished)
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
        await self.engine.aclose()
        await self.executor.aclose()
        self.store.close()
        log.info("scheduler stopped")


async def run_until_signalled(runtime: Runtime) -> None:
    """Run until SIGTERM or SIGINT, then close gracefully (every event is flushed)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with runtime:
        await stop.wait()
