"""A result's report stays unacknowledged in JetStream until the engine has its execution's
end on record (``AgentExecutor.recorded``): a scheduler that dies in between is offered the
report again, and its restart's recovery takes it, instead of it living on only in the
agent's ledger. A real nats-server; the agent's side is played on the wire (it accepts the
command and publishes its result as an agent does), since the executor is what is tested."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import nats
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from lablink.bus.options import NatsOptions
from lablink.bus.server import NatsServer
from lablink.clock import ManualClock
from lablink.instruments.execution import ExecutionRequest, Outcome
from lablink.instruments.protocol import (
    REPORTS_CONSUMER,
    REPORTS_STREAM,
    Report,
    RunCommand,
    RunReply,
    encoder,
    report_subject,
    run_subject,
)
from lablink.scheduler.agents import AgentExecutor
from tests.support.agent_lab import AgentLab, bench_config
from tests.support.bench import copy_bench, execution_request
from tests.support.eventually import eventually

pytestmark = pytest.mark.nats

EQUIPMENT = "multimeter_1"
RESULT = {"value": 1.5, "unit": "V"}


async def no_progress(fraction: float, message: str, data: dict[str, Any]) -> None:
    return None


@pytest.fixture
async def agent_side(nats_server: NatsServer) -> AsyncIterator[NATS]:
    """Accepts every run command for the multimeter and publishes its result to the reports
    stream, as an agent does."""
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()

    async def run(msg: Msg) -> None:
        command = msgspec.json.decode(msg.data, type=RunCommand)
        request = command.request
        await msg.respond(encoder.encode(RunReply(status="accepted", agent_id="wire")))
        report = Report(
            execution_id=request.execution_id,
            job_id=request.job_id,
            equipment_id=EQUIPMENT,
            agent_id="wire",
            seq=1,
            at=datetime.now(UTC),
            progress=1.0,
            outcome=Outcome(status="completed", result=RESULT),
        )
        await js.publish(
            report_subject(EQUIPMENT, request.execution_id, 1),
            encoder.encode(report),
            headers={"Nats-Msg-Id": f"{request.execution_id}:1"},
        )

    await nc.subscribe(run_subject(EQUIPMENT), cb=run)
    try:
        yield nc
    finally:
        await nc.close()


def executor(server: NatsServer) -> AgentExecutor:
    # A short ack wait: JetStream offers an unacknowledged report again after it.
    return AgentExecutor(NatsOptions(url=server.url), heartbeat_timeout=60, ack_wait=1.0)


async def unacknowledged(nc: NATS) -> int:
    info = await nc.jetstream().consumer_info(REPORTS_STREAM, REPORTS_CONSUMER)
    return int(info.num_ack_pending or 0)


def request() -> ExecutionRequest:
    return execution_request(EQUIPMENT, "measurement", {"command": "get_voltage"})


async def test_a_result_is_acknowledged_once_the_engine_says_it_is_recorded(
    nats_server: NatsServer, agent_side: NATS
) -> None:
    scheduler = executor(nats_server)
    await scheduler.start()
    try:
        run = request()
        outcome = await scheduler.execute(run, no_progress)
        assert outcome.status == "completed"
        assert outcome.result == RESULT
        # Handed to the execution, not yet on record: still the stream's to offer again.
        assert await unacknowledged(agent_side) == 1
        await scheduler.recorded(run.execution_id)
        await eventually(lambda: unacknowledged(agent_side), until=lambda n: n == 0)
        await scheduler.recorded(run.execution_id)  # a second word changes nothing
    finally:
        await scheduler.aclose()


async def test_a_scheduler_that_dies_before_the_record_gets_the_result_again(
    nats_server: NatsServer, agent_side: NATS
) -> None:
    first = executor(nats_server)
    await first.start()
    run = request()
    try:
        outcome = await first.execute(run, no_progress)
        assert outcome.result == RESULT
    finally:
        await first.aclose()  # dies before its engine recorded the end

    again = executor(nats_server)
    await again.start()
    try:
        # No agent answers for the execution's status here: only the stream can tell.
        recovered = await eventually(
            lambda: again.recover(run, no_progress), what="the result offered again", timeout=60
        )
        assert recovered is not None
        assert (await recovered).result == RESULT
    finally:
        await again.aclose()


async def test_the_engine_lets_go_of_a_result_once_its_end_is_in_the_log(
    tmp_path: Path, nats_server: NatsServer, clock: ManualClock
) -> None:
    """Through a real agent and the engine: once the execution's end is in the log, the
    engine tells the executor, and the report is acknowledged (none left pending)."""
    # An hour's ack wait: JetStream does not offer the report again during the test, so only
    # the engine's word can acknowledge it.
    lab = await AgentLab(tmp_path / "scheduler.db", nats_server.url, clock, ack_wait=3600).start()
    await lab.start_agent(bench_config(copy_bench(tmp_path / "bench"), tmp_path / "data"))
    nc = await nats.connect(nats_server.url)
    try:
        row = await lab.run(
            {
                "schedule_type": "measurement",
                "equipment_id": "power_supply_1",
                "parameters": {"command": "get_voltage"},
            }
        )
        assert row["status"] == "completed", row
        await eventually(lambda: unacknowledged(nc), until=lambda n: n == 0)
    finally:
        await nc.close()
        await lab.close()


async def test_a_result_the_former_lease_holder_never_recorded_goes_to_the_new_one(
    nats_server: NatsServer, agent_side: NATS
) -> None:
    """Cluster mode: the replica whose execution took the result loses the lease before its
    engine records the end. The report stays unacknowledged, and the new lease holder's
    executor is offered it and hands it to its engine (here a recorder that says "unknown",
    as an engine that already has the end does), which acknowledges it."""
    handed: list[tuple[str, Outcome]] = []

    async def late(
        job_id: str,
        execution_id: str,
        outcome: Outcome,
        *,
        equipment_id: str,
        agent_id: str = "",
        reported_at: datetime | None = None,
    ) -> str:
        handed.append((execution_id, outcome))
        return "unknown"

    former = executor(nats_server)
    await former.start()
    successor = executor(nats_server)
    await successor.start(reports=False)
    run = request()
    try:
        outcome = await former.execute(run, no_progress)
        assert outcome.result == RESULT
        await former.follow()  # the lease is lost before the end is recorded
        await successor.follow_late_results(late)
        await successor.lead()
        await eventually(lambda: handed, what="the result offered to the new lease holder")
        assert [(execution_id, o.result) for execution_id, o in handed] == [
            (run.execution_id, RESULT)
        ]
        await eventually(lambda: unacknowledged(agent_side), until=lambda n: n == 0)
    finally:
        await successor.aclose()
        await former.aclose()
