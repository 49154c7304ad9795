"""The reports stream is a copy of the agents' ledgers: nats-server acknowledges a report
before its disk has it, every outcome is on the ledger's disk before its report goes, and a
scheduler that finds NATS back asks the agents for the results it still waits for. An
upload's word, of which the stream is the only copy, goes to a stream that waits for the
disk. A real nats-server, a real agent on the simulated bench, the scheduler's executor."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import nats
import pytest
from nats.js.api import PersistMode

from lablink.bus.options import NatsOptions
from lablink.bus.server import NatsServer
from lablink.equipment_agent.agent import Agent
from lablink.equipment_agent.ledger import Ledger
from lablink.equipment_agent.reports import ReportSender
from lablink.instruments.execution import Outcome
from lablink.instruments.protocol import (
    REPORTS_STREAM,
    UPLOADS_STREAM,
    Report,
    StoredData,
)
from lablink.scheduler.agents import AgentExecutor
from tests.support.agent_lab import bench_config
from tests.support.bench import copy_bench, execution_request
from tests.support.eventually import eventually

pytestmark = pytest.mark.nats

EQUIPMENT = "power_supply_1"


async def no_progress(fraction: float, message: str, data: dict[str, Any]) -> None:
    return None


async def messages(url: str, stream: str) -> int:
    nc = await nats.connect(url)
    try:
        return int((await nc.jetstream().stream_info(stream)).state.messages)
    finally:
        await nc.close()


def agent_for(tmp_path: Path, url: str) -> Agent:
    config = bench_config(copy_bench(tmp_path / "bench"), tmp_path / "data")
    return Agent(config, NatsOptions(url=url))


async def test_reports_are_acknowledged_before_the_disk_and_uploads_after(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    scheduler = AgentExecutor(NatsOptions(url=nats_server.url), heartbeat_timeout=60)
    await scheduler.start()
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        modes = {
            name: (await js.stream_info(name)).config.persist_mode
            for name in (REPORTS_STREAM, UPLOADS_STREAM)
        }
        assert modes == {REPORTS_STREAM: PersistMode.ASYNC, UPLOADS_STREAM: None}
        # An upload's word goes to its own stream; a result to the reports stream.
        ledger = Ledger(tmp_path / "agent.db")
        ledger.accept("exec_1", "job_1", EQUIPMENT)
        sender = ReportSender(lambda: js, ledger)
        base: dict[str, Any] = {
            "execution_id": "exec_1",
            "job_id": "job_1",
            "equipment_id": EQUIPMENT,
            "agent_id": "agent-1",
            "at": datetime.now(UTC),
        }
        await sender.send(
            Report(**base, seq=1, outcome=Outcome(status="completed", result={"value": 1}))
        )
        stored = StoredData(object="o", size=1, sha256="0" * 64, stored_at=datetime.now(UTC))
        await sender.send(Report(**base, seq=2, stored=stored))
        counts = {
            name: int((await js.stream_info(name)).state.messages)
            for name in (REPORTS_STREAM, UPLOADS_STREAM)
        }
        assert counts == {REPORTS_STREAM: 1, UPLOADS_STREAM: 1}
        ledger.close()
    finally:
        await nc.close()
        await scheduler.aclose()


async def test_an_outcome_is_on_the_ledger_before_its_report_goes(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    agent = agent_for(tmp_path, nats_server.url)
    await agent.start()
    ledger = agent._ledger
    assert isinstance(ledger, Ledger)
    # The ledger's commits of outcomes wait until the test lets them go.
    release = threading.Event()
    holding: list[int] = []
    commit = ledger.commit

    def held(
        commands: Sequence[tuple[str, str, str]], outcomes: Sequence[tuple[str, Outcome]]
    ) -> list[bool]:
        if outcomes:
            holding.append(len(outcomes))
            release.wait(timeout=120)
        return commit(commands, outcomes)

    ledger.commit = held  # type: ignore[method-assign]
    scheduler = AgentExecutor(NatsOptions(url=nats_server.url), heartbeat_timeout=60)
    await scheduler.start()
    try:
        run = execution_request(EQUIPMENT, "measurement", {"command": "get_voltage"})
        execution = asyncio.ensure_future(scheduler.execute(run, no_progress))
        await eventually(lambda: holding, what="the outcome's commit under way")
        # Its outcome is not on the disk yet: no report of it went.
        assert await messages(nats_server.url, REPORTS_STREAM) == 0
        assert not execution.done()
        release.set()
        outcome = await asyncio.wait_for(execution, 60)
        assert outcome.status == "completed", outcome
        assert ledger.state(run.execution_id) == ("finished", outcome_without_dispatch(outcome))
    finally:
        release.set()
        await scheduler.aclose()
        await agent.aclose()


def outcome_without_dispatch(outcome: Outcome) -> Outcome:
    """The agent's outcome: the executor adds when the command left."""
    return msgspec.structs.replace(outcome, dispatched_at=None)


async def test_a_result_nats_server_lost_is_asked_of_the_agent_once_nats_is_back(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    """nats-server acknowledged the report and lost it (what a crash before its flush does;
    here the report is purged, then the server restarted): the execution still waiting asks
    the agent, whose ledger has the outcome, once the executor is connected again."""
    agent = agent_for(tmp_path, nats_server.url)
    await agent.start()
    # A follower's executor (cluster mode) takes no report: the report waits in the stream,
    # where the test can lose it before anyone takes it.
    scheduler = AgentExecutor(NatsOptions(url=nats_server.url), heartbeat_timeout=60)
    await scheduler.start(reports=False)
    restarted: NatsServer | None = None
    try:
        run = execution_request(EQUIPMENT, "measurement", {"command": "get_voltage"})
        execution = asyncio.ensure_future(scheduler.execute(run, no_progress))
        await eventually(
            lambda: agent._ledger.unpublished() if agent._ledger else None,
            until=lambda rows: rows == [],
            what="the result acknowledged by JetStream",
        )
        await eventually(lambda: messages(nats_server.url, REPORTS_STREAM), until=lambda n: n > 0)
        nc = await nats.connect(nats_server.url)
        await nc.jetstream().purge_stream(REPORTS_STREAM)
        await nc.close()
        port = nats_server.port
        await nats_server.stop()
        restarted = await NatsServer(tmp_path / "nats", port=port).start()
        outcome = await asyncio.wait_for(execution, 120)
        assert outcome.status == "completed", outcome
        assert "value" in outcome.result
        assert await messages(restarted.url, REPORTS_STREAM) == 0  # it came from the ledger
    finally:
        await scheduler.aclose()
        await agent.aclose()
        if restarted is not None:
            await restarted.stop()


async def test_an_agent_closing_keeps_and_reports_the_outcome_of_the_run_it_stopped(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    """The agent stops its running execution as it closes; the stopped run's outcome must be
    in the ledger (and reported) before the ledger closes, however slowly the run's task
    gets there (here: 0.3 s late, as on a loaded machine), or the next start finds the
    execution unfinished and can only say the agent stopped under it."""
    config = bench_config(copy_bench(tmp_path / "bench"), tmp_path / "data", realtime=True)
    agent = Agent(config, NatsOptions(url=nats_server.url))
    await agent.start()
    accepts = agent._accepts
    assert accepts is not None
    finish = accepts.finish

    async def late_finish(execution_id: str, outcome: Outcome) -> None:
        await asyncio.sleep(0.3)
        await finish(execution_id, outcome)

    accepts.finish = late_finish  # type: ignore[method-assign]
    scheduler = AgentExecutor(NatsOptions(url=nats_server.url), heartbeat_timeout=60)
    await scheduler.start(reports=False)  # the report stays in the stream, to be counted
    run = execution_request(
        "load_1",
        "command",
        {"command": "run_load_test", "parameters": {"duration": 30, "current": 1.0}},
    )
    execution = asyncio.ensure_future(scheduler.execute(run, no_progress))
    try:
        await eventually(lambda: run.execution_id in agent._running, what="the run under way")
        await eventually(
            lambda: agent._running[run.execution_id].inner is not None, what="its operation"
        )
        await agent.aclose()
        ledger = Ledger(tmp_path / "data" / "agents" / f"{config.agent_id}.db")
        state, outcome = ledger.state(run.execution_id)
        ledger.close()
        assert state == "finished"
        assert outcome is not None
        assert outcome.error is not None
        assert outcome.error.type == "stopped"
        assert await messages(nats_server.url, REPORTS_STREAM) >= 1
    finally:
        await scheduler.aclose()
        execution.cancel()
