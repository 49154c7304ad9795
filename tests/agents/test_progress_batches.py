"""Progress reports go to the log a fetch at a time (issue 19): the scheduler's reports
consumer takes up to 100 reports at once, and their progress goes through the engine's group
committer together (one commit for the fetch), not one append each; each execution's
progress stays in the order it was sent, and before its result.

Against a real nats-server and a real SQLite log; the agent is played at the protocol level
(it accepts run commands and publishes reports on the instrument's own subjects), so that the
test says exactly which reports exist and when.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import nats
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from lablink.bus.server import NatsServer
from lablink.clock import ManualClock
from lablink.events import ExecutionProgressed, ExecutionSucceeded
from lablink.instruments.execution import Outcome
from lablink.instruments.protocol import (
    Report,
    RunReply,
    encoder,
    report_subject,
    run_subject,
)
from tests.support.agent_lab import AgentLab
from tests.support.eventually import eventually

PSU = "power_supply_1"
EXECUTIONS = 4
REPORTS_EACH = 250  # 1,000 progress reports in all


class ProtocolAgent:
    """Accepts every run command for one instrument and publishes the reports it is given,
    as an agent would (``Nats-Msg-Id`` and all)."""

    def __init__(self, nc: NATS) -> None:
        self.nc = nc
        self.accepted: list[str] = []

    async def serve(self, equipment_id: str) -> None:
        async def on_run(msg: Msg) -> None:
            self.accepted.append(msg.subject)
            await msg.respond(encoder.encode(RunReply(status="accepted", agent_id="protocol")))

        await self.nc.subscribe(run_subject(equipment_id), cb=on_run)
        await self.nc.flush()  # subscribed on the server before any run request comes

    async def publish(self, reports: Sequence[Report]) -> None:
        """All of them without waiting, then their acknowledgements together."""
        js = self.nc.jetstream()
        acks = [
            await js.publish_async(
                report_subject(r.equipment_id, r.execution_id, r.seq),
                encoder.encode(r),
                headers={"Nats-Msg-Id": f"{r.execution_id}:{r.seq}"},
            )
            for r in reports
        ]
        await asyncio.gather(*acks)


@pytest.fixture
async def lab(
    tmp_path: Path, nats_server: NatsServer, clock: ManualClock
) -> AsyncIterator[AgentLab]:
    # The protocol agent sends no heartbeat: its instrument is never taken for lost here.
    lab = await AgentLab(
        tmp_path / "scheduler.db", nats_server.url, clock, heartbeat_timeout=600
    ).start()
    try:
        yield lab
    finally:
        await lab.close()


async def test_a_fetch_of_progress_reports_is_recorded_in_one_commit_in_order(
    lab: AgentLab, nats_server: NatsServer
) -> None:
    nc = await nats.connect(nats_server.url)
    agent = ProtocolAgent(nc)
    try:
        await agent.serve(PSU)
        jobs: dict[str, str] = {}  # execution id -> job id
        for n in range(EXECUTIONS):
            job_id = lab.create(
                {
                    "name": f"reporting {n}",
                    "schedule_type": "measurement",
                    "equipment_id": PSU,
                    "parameters": {"command": "get_voltage"},
                }
            )
            jobs[await lab.engine.run_now(job_id)] = job_id
        # Accepted: each execution's waiter is registered (before its run request went).
        await eventually(lambda: len(agent.accepted) == EXECUTIONS)

        # Every fetch's progress goes to the engine in one call: count the calls and the
        # log's transactions they cost.
        fetches: list[int] = []

        async def counted(reports: Sequence[ExecutionProgressed]) -> None:
            fetches.append(len(reports))
            await lab.engine.record_progress(reports)

        lab.executor.follow_progress(counted)
        began = datetime.now(UTC)

        def step(execution_id: str, seq: int) -> Report:
            return Report(
                execution_id=execution_id,
                job_id=jobs[execution_id],
                equipment_id=PSU,
                agent_id="protocol",
                seq=seq,
                at=datetime.now(UTC),
                progress=min(1.0, seq / REPORTS_EACH),
                message=f"step {seq}",
                data={"done": seq},
                instrument_started_at=began,
            )

        # The executions' reports interleaved, as several instruments' would be.
        progress = [step(e, seq) for seq in range(1, REPORTS_EACH + 1) for e in jobs]
        commits = lab.engine.committer.batches
        await agent.publish(progress)

        def recorded() -> dict[str, list[ExecutionProgressed]]:
            return {
                e: [
                    p
                    for p in lab.events(j)
                    if isinstance(p, ExecutionProgressed) and p.execution_id == e
                ]
                for e, j in jobs.items()
            }

        await eventually(
            lambda: sum(len(p) for p in recorded().values()),
            until=lambda n: n == EXECUTIONS * REPORTS_EACH,
            what="every progress report in the log",
        )
        committed = lab.engine.committer.batches - commits
        assert sum(fetches) == EXECUTIONS * REPORTS_EACH
        # One commit per fetch at most (each job's reports in one append), not one per
        # report; a fetch holds up to 100.
        assert committed <= len(fetches) < EXECUTIONS * REPORTS_EACH // 10, (committed, fetches)
        # Each execution's progress in the order it was sent, nothing lost or doubled.
        for execution_id, reports in recorded().items():
            assert [r.data["done"] for r in reports] == list(range(1, REPORTS_EACH + 1))
            # A progress report says when the operation began on the instrument.
            assert lab.executor.instrument_times(execution_id).started_at == began

        # A result in the same fetch as its execution's last progress comes after it.
        last = REPORTS_EACH + 1
        tail: list[Report] = []
        for execution_id in jobs:
            result = msgspec.structs.replace(
                step(execution_id, last + 1), outcome=Outcome.ok(value=1.0)
            )
            tail += [step(execution_id, last), result]
        await agent.publish(tail)
        for execution_id, job_id in jobs.items():
            row = await lab.finished(execution_id)
            assert row["status"] == "completed", row
            events = lab.events(job_id)
            done = [e.data["done"] for e in events if isinstance(e, ExecutionProgressed)]
            assert done == list(range(1, last + 1))
            assert isinstance(events[-1], ExecutionSucceeded)
    finally:
        await nc.close()
