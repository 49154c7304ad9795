"""Reports published in batches on a real nats-server: each caller learns whether its own
report was acknowledged, results are marked published in the ledger once acknowledged, a
report sent twice is stored once, and a report that cannot go is not marked."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NATS

from lablink.bus.connection import ensure_stream
from lablink.bus.server import NatsServer
from lablink.equipment_agent.ledger import Ledger
from lablink.equipment_agent.reports import ReportSender
from lablink.instruments.execution import Outcome
from lablink.instruments.protocol import REPORTS_FILTER, REPORTS_STREAM, Report

pytestmark = pytest.mark.nats


def report(execution_id: str, seq: int, *, final: bool) -> Report:
    return Report(
        execution_id=execution_id,
        job_id="job_1",
        equipment_id="power_supply_1",
        agent_id="agent-1",
        seq=seq,
        at=datetime.now(UTC),
        progress=1.0 if final else 0.5,
        outcome=Outcome(status="completed", result={"value": 1.0}) if final else None,
    )


@pytest.fixture
async def nc(nats_server: NatsServer) -> AsyncIterator[NATS]:
    client = await nats.connect(nats_server.url)
    await ensure_stream(client.jetstream(), REPORTS_STREAM, [REPORTS_FILTER], replicas=1)
    try:
        yield client
    finally:
        await client.close()


async def stored(nc: NATS) -> int:
    info = await nc.jetstream().stream_info(REPORTS_STREAM)
    return int(info.state.messages)


async def test_many_reports_at_once_are_each_acknowledged_and_results_marked(
    nc: NATS, tmp_path: Path
) -> None:
    ledger = Ledger(tmp_path / "agent.db")
    ids = [f"exec_{i}" for i in range(300)]
    ledger.accept_many([(i, "job_1", "power_supply_1") for i in ids])
    for i in ids:
        ledger.finish(i, Outcome(status="completed", result={"value": 1.0}))
    sender = ReportSender(nc.jetstream, ledger)
    sends = [sender.send(report(i, 1, final=False)) for i in ids]
    sends += [sender.send(report(i, 2, final=True)) for i in ids]
    await asyncio.gather(*sends)
    assert await stored(nc) == 600
    assert ledger.unpublished() == []  # every result acknowledged is marked
    ledger.close()


async def test_a_report_sent_again_is_stored_once(nc: NATS, tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "agent.db")
    ledger.accept("exec_1", "job_1", "power_supply_1")
    sender = ReportSender(nc.jetstream, ledger)
    again = report("exec_1", 1, final=True)
    await asyncio.gather(sender.send(again), sender.send(again))
    await sender.send(again)
    assert await stored(nc) == 1  # the same report number: JetStream drops the duplicates
    ledger.close()


async def test_a_report_that_cannot_go_raises_and_is_not_marked(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    ledger = Ledger(tmp_path / "agent.db")
    ledger.accept("exec_1", "job_1", "power_supply_1")
    ledger.finish("exec_1", Outcome(status="completed", result={"value": 1.0}))
    client = await nats.connect(nats_server.url)
    try:
        # No stream takes the subject: nobody acknowledges.
        sender = ReportSender(client.jetstream, ledger, ack_timeout=0.5)
        with pytest.raises((TimeoutError, nats.errors.Error)):
            await sender.send(report("exec_1", 1, final=True))
    finally:
        await client.close()
    assert [u.execution_id for u in ledger.unpublished()] == ["exec_1"]
    ledger.close()
