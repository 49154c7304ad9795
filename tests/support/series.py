"""A job's series driven through the real engine with the manual clock: each fire's
execution finishes with a result the test chose, so the series read back can be compared with
what was recorded."""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

from lablink.bus.data_bucket import DataBucket
from lablink.eventstore.base import format_instant
from lablink.instruments.execution import ExecutionRequest, Outcome, ProgressReport
from tests.support.harness import GateExecutor, Harness

MEASUREMENT: dict[str, Any] = {
    "name": "Hourly voltage",
    "schedule_type": "measurement",
    "equipment_id": "power_supply_1",
    "parameters": {"command": "get_voltage"},
    "trigger_type": "interval",
    "interval_hours": 1,
}
STATE_CAPTURE: dict[str, Any] = {
    "name": "Daily state",
    "schedule_type": "state_capture",
    "equipment_id": "power_supply_1",
    "parameters": {},
    "trigger_type": "interval",
    "interval_hours": 1,
}

ACQUISITION: dict[str, Any] = {
    "name": "Weekly capture",
    "schedule_type": "acquisition",
    "equipment_id": "scope_1",
    "parameters": {"duration": 1, "sample_rate": 1000, "channels": [1]},
    "trigger_type": "interval",
    "interval_hours": 1,
}


def voltage(n: int) -> float:
    """Values no rounding survives by accident: 17 significant digits, some negative."""
    return 5.0 + math.sin(n) / 3.0


def measured(n: int) -> Outcome:
    return Outcome.ok(
        equipment_id="power_supply_1",
        command="get_voltage",
        measurement="voltage",
        value=voltage(n),
        unit="V",
    )


def captured(n: int) -> Outcome:
    return Outcome.ok(
        equipment_id="power_supply_1",
        kind="power_supply",
        identity={"manufacturer": "SIM", "model": "PSU", "serial": "1", "firmware": "1"},
        settings={
            "voltage": {"value": 5.0, "unit": "V", "writable": True},
            "output": {"value": n % 2 == 0, "unit": "", "writable": True},
        },
        measurements={
            "voltage": {"value": voltage(n), "unit": "V"},
            "current": {"value": n / 1000, "unit": "A"},
        },
    )


class ScriptedExecutor(GateExecutor):
    """Execution number n (from 0) ends with ``outcome(n)``."""

    def __init__(self, outcome: Callable[[int], Outcome]) -> None:
        super().__init__()
        self.outcome = outcome

    async def execute(self, request: ExecutionRequest, progress: ProgressReport) -> Outcome:
        self.requests.append(request)
        return self.outcome(len(self.requests) - 1)


async def fire(h: Harness, job_id: str, count: int) -> list[str]:
    """``count`` fires of an hourly job, clock stepped from fire to fire; returns the
    scheduled times (as the views store them)."""
    times: list[str] = []
    for _ in range(count):
        planned = h.engine.timers.planned(job_id)
        assert planned is not None
        await h.at(planned)
        times.append(format_instant(planned))
    return times


@contextlib.asynccontextmanager
async def served(
    harness: Harness, *, auth: bool = True, data: DataBucket | None = None, dashboard: bool = False
) -> AsyncIterator[str]:
    """The real app over the harness's engine, served by uvicorn on a free loopback port on
    the test's own loop: for real clients (``lablink results``, curl) in child processes, or
    a stream that never ends (httpx's in-process transport waits for a response's end).
    ``dashboard``: mount the web pages too, as `lablink serve` does."""
    import uvicorn

    from lablink.api.app import create_app
    from lablink.api.context import ApiContext
    from lablink.settings import Settings

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    settings = Settings(data_dir=harness.path.parent, timezone=harness.tz, auth=auth, port=port)
    context = ApiContext(
        settings=settings,
        clock=harness.clock,
        store=harness.store,
        service=harness.service,
        engine=harness.engine,
        auth_enabled=auth,
        data=data,
    )
    plugins = []
    if dashboard:
        from lablink.dashboard.plugin import DashboardPlugin

        plugins.append(DashboardPlugin())
    config = uvicorn.Config(
        create_app(context, plugins=plugins),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="off",
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if serving.done():
                serving.result()
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await serving
        context.close()
