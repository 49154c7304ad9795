"""Agents refuse stale commands (issue 12, point 7): a run command received later than its
job's misfire grace time after it was due never drives the instrument; the execution fails
``stale_command``, saying how late it came. Against a real nats-server, real agents (in
process with their SCPI recorded, or a `lablink agent` process frozen with SIGSTOP)."""

from __future__ import annotations

import asyncio
import json
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import nats
import pytest

from lablink.bus.relay import NatsOptions
from lablink.bus.server import NatsServer
from lablink.clock import ManualClock, SystemClock
from lablink.equipment_agent.agent import Agent
from lablink.instruments.protocol import (
    REPORTS_STREAM,
    Report,
    RunCommand,
    RunReply,
    encoder,
    report_subject,
    run_subject,
)
from lablink.instruments.scpi import MessagePort
from lablink.scheduler.agents import AgentExecutor
from tests.support.agent_lab import AgentLab, bench_config
from tests.support.bench import RecordingPort, copy_bench, execution_request
from tests.support.eventually import eventually

pytestmark = pytest.mark.nats

PSU = "power_supply_1"
SET_17_5_V = {"command": "set_voltage", "parameters": {"value": 17.5}}


class Recorder:
    """Each instrument's port wrapped in a RecordingPort: every SCPI write and query."""

    def __init__(self) -> None:
        self.ports: dict[str, RecordingPort] = {}

    def __call__(self, equipment_id: str, port: MessagePort) -> MessagePort:
        self.ports[equipment_id] = RecordingPort(port)
        return self.ports[equipment_id]

    def sent(self, equipment_id: str) -> list[str]:
        return self.ports[equipment_id].sent()


async def start_agent(
    lab: AgentLab, tmp_path: Path, recorder: Recorder, clock: Any = None
) -> Agent:
    config = bench_config(copy_bench(tmp_path / "bench"), tmp_path / "agent-data", only=(PSU,))
    agent = Agent(config, lab.options, wrap=recorder)
    if clock is not None:
        agent.clock = clock
    await agent.start()
    lab.agents.append(agent)
    await lab.online(PSU)
    return agent


async def ask(url: str, command: RunCommand) -> RunReply:
    nc = await nats.connect(url)
    try:
        msg = await nc.request(run_subject(PSU), encoder.encode(command), timeout=5)
    finally:
        await nc.close()
    return msgspec.json.decode(msg.data, type=RunReply)


async def test_a_command_scheduled_two_days_ago_is_refused_without_touching_the_instrument(
    lab: AgentLab, tmp_path: Path, nats_server: NatsServer
) -> None:
    recorder = Recorder()
    agent = await start_agent(lab, tmp_path, recorder)
    before = list(recorder.sent(PSU))
    two_days_ago = datetime.now(UTC) - timedelta(days=2)
    request = msgspec.structs.replace(
        execution_request(PSU, "command", SET_17_5_V),
        scheduled_time=two_days_ago,
        trigger_info="scheduled",
    )
    # As an old scheduler (or a hand) sends it: no due_at, the scheduled time counts.
    reply = await ask(nats_server.url, RunCommand(request=request))
    again = await ask(nats_server.url, RunCommand(request=request))

    assert reply.status == "refused"
    assert reply.error is not None
    assert reply.error.type == "stale_command"
    assert reply.error.message.startswith("stale command: received 2 days, 0:00:0")
    assert "beyond misfire_grace_time=300s; the instrument was not touched" in reply.error.message
    assert reply.error.details["misfire_grace_time"] == 300.0
    assert reply.error.details["late_seconds"] >= 2 * 86400
    assert again.status == "duplicate"
    assert again.state == "finished"
    assert recorder.sent(PSU) == before  # not one SCPI message

    # The refusal is the execution's result, in the agent's ledger and in the stream.
    ledger = agent._ledger
    assert ledger is not None
    state, outcome = ledger.state(request.execution_id)
    assert state == "finished"
    assert outcome is not None
    assert outcome.error == reply.error
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        stored = await _until_stored(js, report_subject(PSU, request.execution_id, 1))
    finally:
        await nc.close()
    assert stored.outcome is not None
    assert stored.outcome.error == reply.error

    # The same command, due now, runs.
    fresh = msgspec.structs.replace(request, execution_id="exec_fresh_1")
    accepted = await ask(nats_server.url, RunCommand(request=fresh, due_at=datetime.now(UTC)))
    assert accepted.status == "accepted"
    await eventually(lambda: "VOLT 17.500" in recorder.sent(PSU))


class TwoDaysAhead(SystemClock):
    """The real clock two days on: a command is received two days after it was sent, however
    long the agent took to start (a clock fixed before the start made that two days minus the
    start, "1 day, 23:59:59" on a loaded machine)."""

    def now(self) -> datetime:
        return super().now() + timedelta(days=2)


async def test_a_run_the_agent_gets_too_late_fails_as_stale_command(
    lab: AgentLab, tmp_path: Path
) -> None:
    """Through the scheduler: an agent that gets the command two days after it was sent
    (its clock is the injected one) refuses it; the execution records why."""
    recorder = Recorder()
    await start_agent(lab, tmp_path, recorder, clock=TwoDaysAhead())
    before = list(recorder.sent(PSU))
    row = await lab.run(
        {
            "schedule_type": "command",
            "equipment_id": PSU,
            "parameters": SET_17_5_V,
            "misfire_grace_time": 60,
        }
    )

    assert row["status"] == "failed", row
    problem = json.loads(row["error"])
    assert problem["type"] == "stale_command"
    assert problem["message"].startswith("stale command: received 2 days, 0:00:0")
    assert "beyond misfire_grace_time=60s" in problem["message"]
    assert problem["details"]["trigger_info"] == "manual"
    assert recorder.sent(PSU) == before


@pytest.mark.e2e
@pytest.mark.slow
async def test_a_backlog_delivered_to_a_frozen_agent_never_sets_the_voltage(
    lab: AgentLab, tmp_path: Path
) -> None:
    """A `lablink agent` frozen (SIGSTOP) while the run command waits in its socket, thawed
    after the job's grace time: the command is refused, the supply keeps its voltage."""
    config = bench_config(
        copy_bench(tmp_path / "bench"), tmp_path / "agent-data", agent_id="lab-pc", only=(PSU,)
    )
    process = await lab.start_agent_process(config, tmp_path / "lab.toml")
    # The scheduler waits long enough for the frozen agent's answer, and does not give it up
    # as lost meanwhile.
    lab.executor.run_timeout = 30
    lab.executor.heartbeat_timeout = 60
    job_id = lab.create(
        {
            "schedule_type": "command",
            "equipment_id": PSU,
            "parameters": SET_17_5_V,
            "misfire_grace_time": 1,
        }
    )
    process.send_signal(signal.SIGSTOP)
    try:
        execution_id = await lab.engine.run_now(job_id)
        await asyncio.sleep(3)  # the command waits, unread, past its 1 s of grace
    finally:
        process.send_signal(signal.SIGCONT)
    row = await lab.finished(execution_id, within=30)
    state = await lab.run({"schedule_type": "state_capture", "equipment_id": PSU})

    assert row["status"] == "failed", row
    problem = json.loads(row["error"])
    assert problem["type"] == "stale_command"
    assert "beyond misfire_grace_time=1s" in problem["message"]
    assert problem["details"]["late_seconds"] >= 2.5
    voltage = json.loads(state["result"])["settings"]["voltage"]["value"]
    assert voltage != 17.5


def test_the_due_time_of_a_scheduled_fire_is_its_scheduled_time_on_this_hosts_clock() -> None:
    clock = ManualClock(datetime(2026, 3, 2, 9, 0, 40, tzinfo=UTC))
    executor = AgentExecutor(NatsOptions(url="nats://127.0.0.1:1"), clock=clock)
    base = execution_request(PSU, "command", SET_17_5_V)
    on_time = msgspec.structs.replace(
        base, scheduled_time=clock.now() - timedelta(seconds=40), trigger_info="scheduled"
    )
    queued = msgspec.structs.replace(
        base, scheduled_time=clock.now() - timedelta(hours=1), trigger_info="scheduled"
    )
    manual = msgspec.structs.replace(
        base, scheduled_time=clock.now() - timedelta(hours=1), trigger_info="manual"
    )
    now = datetime.now(UTC)
    # 40 s late when sent: due 40 s before now, on the wall clock the agent compares with.
    assert abs((now - executor._due_at(on_time)).total_seconds() - 40) < 5
    # Later than its grace: started late by its conflict policy (queue), due when started.
    assert abs((now - executor._due_at(queued)).total_seconds()) < 5
    assert abs((now - executor._due_at(manual)).total_seconds()) < 5


async def _until_stored(js: Any, subject: str) -> Report:
    msg = await eventually(
        lambda: js.get_last_msg(REPORTS_STREAM, subject),
        ignoring=(nats.js.errors.NotFoundError,),
        what=f"a report stored on {subject}",
    )
    return msgspec.json.decode(msg.data, type=Report)
