"""In cluster mode only the lease holder's executor takes the agents' reports (issue 18).

Every replica runs an agents executor, and the reports' durable consumer is one for the
cluster: a follower that fetched would acknowledge results the leader's executions wait for,
and those would wait until their timeout. A following executor takes none; one that leads
takes what came meanwhile. A scheduler and an agent over a real nats-server, a second
executor beside them as the other replica's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest

from lablink.bus.server import NatsServer
from lablink.clock import ManualClock
from lablink.instruments.protocol import REPORTS_CONSUMER, REPORTS_STREAM
from lablink.scheduler.agents import AgentExecutor
from tests.support.agent_lab import AgentLab, bench_config
from tests.support.bench import copy_bench
from tests.support.eventually import eventually

pytestmark = pytest.mark.nats

MEASURE = {
    "schedule_type": "measurement",
    "equipment_id": "power_supply_1",
    "parameters": {"command": "get_voltage"},
}


@pytest.fixture
async def lab(
    tmp_path: Path, nats_server: NatsServer, clock: ManualClock
) -> AsyncIterator[AgentLab]:
    lab = await AgentLab(tmp_path / "scheduler.db", nats_server.url, clock).start()
    config = bench_config(
        copy_bench(tmp_path / "bench"), tmp_path / "data", only=("power_supply_1",)
    )
    await lab.start_agent(config)
    try:
        yield lab
    finally:
        await lab.close()


@pytest.fixture
async def follower(lab: AgentLab) -> AsyncIterator[AgentExecutor]:
    """The other replica's executor, on the same consumer, following."""
    executor = AgentExecutor(lab.options, clock=lab.clock)
    await executor.start(reports=False)
    try:
        yield executor
    finally:
        await executor.aclose()


async def pending_reports(url: str) -> int:
    """Reports in the stream that no executor has fetched yet."""
    nc = await nats.connect(url)
    try:
        info = await nc.jetstream().consumer_info(REPORTS_STREAM, REPORTS_CONSUMER)
        return int(info.num_pending or 0)
    finally:
        await nc.close()


async def test_a_following_executor_takes_none_of_the_leaders_reports(
    lab: AgentLab, follower: AgentExecutor
) -> None:
    for _ in range(6):
        row = await lab.run(MEASURE, within=30)
        assert row["status"] == "completed", row
    # It never fetched: a result it took would be kept here, as nobody's.
    assert not follower._orphans

    # Having led for a while, it follows again: the leader's results still all come home.
    await follower.lead()
    await follower.follow()
    for _ in range(3):
        row = await lab.run(MEASURE, within=30)
        assert row["status"] == "completed", row
    assert not follower._orphans


async def test_reports_that_came_while_following_are_taken_on_leading(
    lab: AgentLab, nats_server: NatsServer
) -> None:
    await lab.executor.follow()
    execution_id = await lab.engine.run_now(lab.create(MEASURE))
    # The agent's reports wait in the stream, the execution still runs.
    await eventually(lambda: pending_reports(nats_server.url), until=lambda n: n >= 1)
    assert (await lab.until(execution_id, ("running",)))["status"] == "running"

    await lab.executor.lead()
    row = await lab.finished(execution_id, within=30)
    assert row["status"] == "completed", row
