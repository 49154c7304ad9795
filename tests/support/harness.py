"""A real engine on a real SQLite file, driven by a manual clock: for tests of the engine
and of anything built on it (``Harness``), and the real Litestar app over it
(``api_client``)."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Awaitable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from lablink.application import JobService

if TYPE_CHECKING:
    import httpx

    from lablink.bus.data_bucket import DataBucket
    from lablink.bus.relay import Relay
    from lablink.health import Health
    from lablink.scheduler.runner import Runner
from lablink.clock import ManualClock
from lablink.ids import SequentialIds
from lablink.instruments.execution import (
    ExecutionRequest,
    InstrumentTimes,
    Outcome,
    ProgressReport,
)
from lablink.logstore import LogStore, open_store
from lablink.projections.jobs import read_snapshot
from lablink.projections.reading import reading_views
from lablink.projections.runner import Projector
from lablink.repository import JobRepository
from lablink.scheduler.calibration_gate import CalibrationGate
from lablink.scheduler.engine import Engine, recovery_lists
from tests.support.views import view_rows


def read_rows(path: Path, sql: str, *args: Any) -> list[dict[str, Any]]:
    """A query on a connection of its own, rows as dicts: what a test checks in a database
    file (the views of a log: ``tests.support.views.view_rows``)."""
    conn = sqlite3.connect(path)
    try:
        cursor = conn.execute(sql, args)
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]
    finally:
        conn.close()


async def drop_engine(engine: Engine) -> None:
    """The engine dies without a graceful stop: its execution tasks die with it and its
    committer stops, as when the process is killed."""
    tasks = list(engine.tasks().values())
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await engine.committer.aclose()


class GateExecutor:
    """Executions finish at once, or (hold=True) when the test releases them."""

    holds_until_due = False

    def __init__(self) -> None:
        self.hold = False
        self.requests: list[ExecutionRequest] = []
        self.stopped: list[str] = []
        self._gates: dict[str, asyncio.Future[Outcome]] = {}
        self.gate_reached = asyncio.Event()
        self.recoverable: set[str] = set()

    async def execute(self, request: ExecutionRequest, progress: ProgressReport) -> Outcome:
        self.requests.append(request)
        await progress(0.5, "halfway", {})
        if not self.hold:
            return Outcome.ok(value=1.0, unit="V")
        gate: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._gates[request.execution_id] = gate
        self.gate_reached.set()
        return await gate

    def held(self) -> list[str]:
        return [e for e, gate in self._gates.items() if not gate.done()]

    def release(self, execution_id: str, outcome: Outcome | None = None) -> None:
        self._gates[execution_id].set_result(outcome or Outcome.ok(value=2.0))

    def fail(self, execution_id: str, error: Exception) -> None:
        """The executor raises instead of reporting an outcome."""
        self._gates[execution_id].set_exception(error)

    async def recover(
        self, request: ExecutionRequest, progress: ProgressReport
    ) -> Awaitable[Outcome] | None:
        """Executions listed in ``recoverable`` are still running somewhere: held like new
        ones, until the test releases them."""
        if request.execution_id not in self.recoverable:
            return None
        self.requests.append(request)
        gate: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._gates[request.execution_id] = gate
        return gate

    async def stop(self, execution_id: str) -> None:
        self.stopped.append(execution_id)

    async def recorded(self, execution_id: str) -> None:
        return None

    def describe_equipment(self, equipment_id: str) -> dict[str, Any]:
        return {}

    def instrument_times(self, execution_id: str) -> InstrumentTimes:
        return InstrumentTimes()  # nothing here drives an instrument

    async def aclose(self) -> None:
        return None


class Harness:
    def __init__(
        self,
        path: Path,
        clock: ManualClock,
        *,
        tz: str = "Europe/Berlin",
        profiles: bool = False,
        instruments: bool = False,
        background: bool = False,
        projector: Projector | None = None,
        require_reason: bool = False,
        require_calibration: bool = False,
        calibration_warn_days: float = 14.0,
    ) -> None:
        self.path = path
        self.clock = clock
        self.tz = tz
        # True: the shipped profiles are loaded and the job service checks profile_id.
        self.profiles = profiles
        # True: the job service checks parameters against the instruments' drivers, as
        # `lablink serve` does.
        self.instruments = instruments
        self.executor = GateExecutor()
        self.ids = SequentialIds()
        # True: the views fold in the follower's own thread, behind the log, as under
        # `lablink serve` (False: right after each commit, in the committing thread).
        self.background = background
        self.projector = projector
        # True: LABLINK_REQUIRE_REASON=1 (the job service, and the API's settings too).
        self.require_reason = require_reason
        # The calibration interlock, as `lablink serve` runs it (LABLINK_REQUIRE_CALIBRATION,
        # LABLINK_CALIBRATION_WARN_DAYS); the API over the harness gets the same settings.
        self.require_calibration = require_calibration
        self.calibration_warn_days = calibration_warn_days

    async def start(self, prefix: str = "") -> Harness:
        self.store: LogStore = open_store(self.path, self.projector, background=self.background)
        store = self.store

        def snapshot(job_id: str) -> Any:
            with reading_views(store) as views:
                return read_snapshot(views, job_id)

        self.ids = SequentialIds(prefix)
        self.jobs = JobRepository(store, snapshots=snapshot)
        check = None
        if self.profiles:
            from lablink.profile_service import StoredProfiles, load_shipped_profiles

            load_shipped_profiles(store, self.clock)
            check = StoredProfiles(store)
        known = None
        if self.instruments:
            from lablink.instrument_models import KnownInstruments

            known = KnownInstruments(store)
        self.service = JobService(
            store,
            self.clock,
            default_timezone=self.tz,
            ids=self.ids,
            repository=self.jobs,
            profiles=check,
            instruments=known,
            require_reason=self.require_reason,
        )
        self.gate = CalibrationGate(
            store,
            zone=ZoneInfo(self.tz),
            require=self.require_calibration,
            warn_days=self.calibration_warn_days,
        )
        self.engine = Engine(
            store, self.clock, self.executor, jobs=self.jobs, ids=self.ids, calibration=self.gate
        )
        with reading_views(store) as views:
            active, unfinished = recovery_lists(views)
        await self.engine.open(active, unfinished)
        await self.settle()
        return self

    async def settle(self) -> None:
        """Wait until every execution task has finished or is held at its gate."""
        while True:
            held = set(self.executor.held())
            busy: list[asyncio.Future[Any]] = [
                t for e, t in self.engine.tasks().items() if e not in held
            ]
            if not busy:
                return
            self.executor.gate_reached.clear()
            reached = asyncio.ensure_future(self.executor.gate_reached.wait())
            await asyncio.wait([*busy, reached], return_when=asyncio.FIRST_COMPLETED)
            reached.cancel()

    async def at(self, instant: datetime) -> int:
        """Move the clock to ``instant`` and process what is due, then settle."""
        self.clock.set(instant)
        count = await self.engine.tick()
        await self.settle()
        return count

    async def crash(self) -> None:
        """Drop the engine without a graceful stop (its tasks die with it)."""
        await drop_engine(self.engine)
        self.gate.close()
        self.store.close()

    async def close(self) -> None:
        for execution_id in self.executor.held():
            self.executor.release(execution_id)
        await self.engine.aclose(grace_seconds=5)
        self.gate.close()
        self.store.close()

    def rows(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        return view_rows(self.path, sql, *args)

    def executions(self, job_id: str) -> list[dict[str, Any]]:
        return self.rows(
            "SELECT execution_id, status, trigger_info, scheduled_time, missed_count, message"
            " FROM executions WHERE job_id = ? ORDER BY seq",
            job_id,
        )

    def job(self, job_id: str) -> dict[str, Any]:
        (row,) = self.rows("SELECT * FROM jobs WHERE job_id = ?", job_id)
        return row


@contextlib.asynccontextmanager
async def api_client(
    harness: Harness,
    *,
    auth: bool,
    relay: Relay | None = None,
    health: Health | None = None,
    data: DataBucket | None = None,
    dashboard: bool = False,
    runner: Runner | None = None,
    **overrides: Any,
) -> AsyncIterator[httpx.AsyncClient]:
    """The real Litestar app over the harness's engine and store, called in-process on the
    test's own event loop (Litestar's TestClient runs the app on a loop of its own, where
    the harness's engine cannot be reached). ``health``: a registry /health renders, as the
    runtime's (None: the API answers for itself). ``data``: the captures' bucket the
    downloads read. ``dashboard``: mount the web pages too, as `lablink serve` does.
    ``runner``: how run-now runs (None: the harness's engine; cluster mode's forwarding).
    ``overrides``: other ``Settings`` fields
    (``views_wait=0.5``, say)."""
    import httpx

    from lablink.api.app import create_app
    from lablink.api.context import ApiContext
    from lablink.settings import Settings

    overrides.setdefault("require_reason", harness.require_reason)
    # The test client's host: the app answers only to the hosts it is told of.
    calibration: dict[str, Any] = {
        "require_calibration": harness.require_calibration,
        "calibration_warn_days": harness.calibration_warn_days,
    }
    settings = Settings(
        data_dir=harness.path.parent,
        timezone=harness.tz,
        auth=auth,
        allowed_hosts=("testserver",),
        **{**calibration, **overrides},
    )
    context = ApiContext(
        settings=settings,
        clock=harness.clock,
        store=harness.store,
        service=harness.service,
        engine=harness.engine,
        auth_enabled=auth,
        relay=relay,
        health=health,
        data=data,
        runner=runner,
    )
    try:
        plugins = []
        if dashboard:
            from lablink.dashboard.plugin import DashboardPlugin

            plugins.append(DashboardPlugin())
        app = create_app(context, plugins=plugins)
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(
            transport=transport, base_url="http://testserver"
        ) as test_client:
            yield test_client
    finally:
        context.close()
