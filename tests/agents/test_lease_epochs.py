"""Agents refuse a former scheduler leader's commands (issue 18): a run command carries the
lease epoch of the replica that sent it, and an agent refuses one lower than the highest it
has seen, also after its own restart (the highest is kept in its ledger). A real agent on a
real nats-server, its SCPI recorded."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest

from lablink.bus.server import NatsServer
from lablink.equipment_agent.agent import Agent
from lablink.instruments.protocol import RunCommand
from tests.agents.test_stale_commands import PSU, SET_17_5_V, Recorder, ask
from tests.support.agent_lab import AgentLab, bench_config
from tests.support.bench import copy_bench, execution_request

pytestmark = pytest.mark.nats


async def start_agent(lab: AgentLab, tmp_path: Path, recorder: Recorder) -> Agent:
    """The same agent (its data directory, so its ledger) each time it is started."""
    bench = tmp_path / "bench" / "bench.yaml"
    if not bench.exists():
        bench = copy_bench(bench.parent)
    config = bench_config(bench, tmp_path / "agent-data", only=(PSU,))
    agent = Agent(config, lab.options, wrap=recorder)
    await agent.start()
    lab.agents.append(agent)
    await lab.online(PSU)
    return agent


def command(epoch: int) -> RunCommand:
    request = execution_request(PSU, "command", SET_17_5_V)
    return RunCommand(request=request, due_at=datetime.now(UTC), lease_epoch=epoch)


async def test_a_lower_epoch_is_refused_also_after_the_agent_restarts(
    lab: AgentLab, tmp_path: Path, nats_server: NatsServer
) -> None:
    recorder = Recorder()
    agent = await start_agent(lab, tmp_path, recorder)

    assert (await ask(nats_server.url, command(7))).status == "accepted"
    before = list(recorder.sent(PSU))
    refused = await ask(nats_server.url, command(5))  # a former leader, resumed
    assert refused.status == "refused"
    assert "lease epoch 5, below the 7 seen" in refused.reason
    assert recorder.sent(PSU)[: len(before)] == before
    assert (await ask(nats_server.url, command(7))).status == "accepted"  # the same leader
    assert (await ask(nats_server.url, command(9))).status == "accepted"  # a newer one
    assert (await ask(nats_server.url, command(0))).status == "accepted"  # no lease at all

    await agent.aclose()
    lab.agents.remove(agent)
    recorder = Recorder()
    await start_agent(lab, tmp_path, recorder)
    again = await ask(nats_server.url, command(8))
    assert again.status == "refused"
    assert "below the 9 seen" in again.reason


def test_a_command_without_an_epoch_is_of_no_lease() -> None:
    request = execution_request(PSU, "command", SET_17_5_V)
    encoded = msgspec.json.encode({"request": request})
    assert msgspec.json.decode(encoded, type=RunCommand).lease_epoch == 0
