"""Run commands sent ahead (a fire the scheduler decided before its time, ``LABLINK_FIRE_LEAD``):
the agent accepts at once and holds the command until its ``due_at`` on its own clock, at most
``HOLD_LIMIT_SECONDS`` (two hosts' clocks that disagree never hold a run for long); a stop
meanwhile means the instrument is never touched. The scheduler's executor sends ahead only to
an agent whose presence says it holds; for any other, it sends at the fire's time. A real
nats-server, real agents driving pyvisa-sim, and the agent's side played on the wire."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import nats
import pytest
from nats.aio.msg import Msg

from lablink.bus.options import NatsOptions
from lablink.bus.server import NatsServer
from lablink.clock import SystemClock
from lablink.equipment_agent.agent import Agent
from lablink.instruments.context import RunContext
from lablink.instruments.errors import OperationStopped
from lablink.instruments.execution import ExecutionRequest, Outcome
from lablink.instruments.protocol import (
    HOLD_LIMIT_SECONDS,
    REPORTS_STREAM,
    Presence,
    Report,
    RunCommand,
    RunReply,
    StopReply,
    StopRequest,
    encoder,
    presence_subject,
    report_subject,
    run_subject,
    stop_subject,
)
from lablink.scheduler.agents import AgentExecutor
from tests.agents.test_stale_commands import Recorder
from tests.support.agent_lab import AgentLab, bench_config
from tests.support.bench import copy_bench, execution_request
from tests.support.eventually import eventually

pytestmark = pytest.mark.nats

PSU = "power_supply_1"
SET_12_V = {"command": "set_voltage", "parameters": {"value": 12.0}}


async def start_agent(lab: AgentLab, tmp_path: Path, recorder: Recorder, clock: Any) -> Agent:
    config = bench_config(copy_bench(tmp_path / "bench"), tmp_path / "agent-data", only=(PSU,))
    agent = Agent(config, lab.options, wrap=recorder)
    agent.clock = clock
    await agent.start()
    lab.agents.append(agent)
    await lab.online(PSU)
    return agent


def scheduled(due: datetime) -> ExecutionRequest:
    return msgspec.structs.replace(
        execution_request(PSU, "command", SET_12_V), scheduled_time=due, trigger_info="scheduled"
    )


async def ask(url: str, subject: str, message: msgspec.Struct) -> bytes:
    nc = await nats.connect(url)
    try:
        return (await nc.request(subject, encoder.encode(message), timeout=10)).data
    finally:
        await nc.close()


async def result(url: str, execution_id: str) -> Outcome:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        msg = await eventually(
            lambda: js.get_last_msg(REPORTS_STREAM, report_subject(PSU, execution_id, 1)),
            ignoring=(nats.js.errors.NotFoundError,),
            what=f"the result of {execution_id}",
        )
    finally:
        await nc.close()
    outcome = msgspec.json.decode(msg.data or b"", type=Report).outcome
    assert outcome is not None
    return outcome


async def test_a_command_sent_ahead_starts_on_the_instrument_at_its_due_time(
    lab: AgentLab, tmp_path: Path, nats_server: NatsServer
) -> None:
    recorder = Recorder()
    await start_agent(lab, tmp_path, recorder, SystemClock())
    assert lab.executor.sightings[PSU].presence.holds  # what lets the scheduler send ahead
    due = datetime.now(UTC) + timedelta(seconds=0.5)
    request = scheduled(due)
    reply = msgspec.json.decode(
        await ask(nats_server.url, run_subject(PSU), RunCommand(request=request, due_at=due)),
        type=RunReply,
    )
    assert reply.status == "accepted"

    outcome = await result(nats_server.url, request.execution_id)
    assert outcome.status == "completed", outcome
    assert outcome.instrument_started_at is not None
    assert outcome.instrument_started_at >= due
    assert "VOLT 12.000" in recorder.sent(PSU)


class Behind(SystemClock):
    """The agent host's clock ten seconds behind the scheduler's."""

    def now(self) -> datetime:
        return super().now() - timedelta(seconds=10)


async def test_a_hold_is_bounded_when_the_two_clocks_disagree(
    lab: AgentLab, tmp_path: Path, nats_server: NatsServer
) -> None:
    """Due now on the scheduler's clock, ten seconds ahead on the agent's: the agent holds it
    for ``HOLD_LIMIT_SECONDS``, not ten seconds."""
    assert HOLD_LIMIT_SECONDS < 5
    recorder = Recorder()
    await start_agent(lab, tmp_path, recorder, Behind())
    due = datetime.now(UTC)
    request = scheduled(due)
    await ask(nats_server.url, run_subject(PSU), RunCommand(request=request, due_at=due))

    outcome = await result(nats_server.url, request.execution_id)
    assert outcome.status == "completed", outcome
    assert outcome.instrument_started_at is not None
    # On the agent's clock: it began before the command's due time came there.
    assert outcome.instrument_started_at < due - timedelta(seconds=5)


async def test_a_command_stopped_while_held_never_touches_the_instrument(
    lab: AgentLab, tmp_path: Path, nats_server: NatsServer
) -> None:
    recorder = Recorder()
    await start_agent(lab, tmp_path, recorder, Behind())  # held for the whole limit
    before = list(recorder.sent(PSU))
    request = scheduled(datetime.now(UTC))
    command = RunCommand(request=request, due_at=request.scheduled_time)
    await ask(nats_server.url, run_subject(PSU), command)
    stopped = msgspec.json.decode(
        await ask(
            nats_server.url, stop_subject(PSU), StopRequest(execution_id=request.execution_id)
        ),
        type=StopReply,
    )
    assert stopped.stopped

    outcome = await result(nats_server.url, request.execution_id)
    assert outcome.status == "failed"
    assert outcome.error is not None
    assert outcome.error.type == "stopped"
    assert outcome.instrument_started_at is None
    assert not any("VOLT" in line for line in recorder.sent(PSU)[len(before) :])


WIRE = "multimeter_1"


async def test_the_scheduler_sends_ahead_only_to_an_agent_that_holds(
    nats_server: NatsServer,
) -> None:
    """The agent played on the wire: without a presence that says it holds, a fire decided
    ahead leaves at its time; with one, it leaves at once, due at its scheduled time."""
    nc = await nats.connect(nats_server.url)
    got: list[tuple[datetime, RunCommand]] = []

    async def run(msg: Msg) -> None:
        got.append((datetime.now(UTC), msgspec.json.decode(msg.data, type=RunCommand)))
        await msg.respond(encoder.encode(RunReply(status="refused", agent_id="wire")))

    await nc.subscribe(run_subject(WIRE), cb=run)
    executor = AgentExecutor(NatsOptions(url=nats_server.url), heartbeat_timeout=60)
    await executor.start()

    async def no_progress(fraction: float, message: str, data: dict[str, Any]) -> None:
        return None

    def ahead(seconds: float) -> ExecutionRequest:
        return msgspec.structs.replace(
            execution_request(WIRE, "measurement", {"command": "get_voltage"}),
            scheduled_time=datetime.now(UTC) + timedelta(seconds=seconds),
            trigger_info="scheduled",
        )

    try:
        first = ahead(0.5)
        await executor.execute(first, no_progress)  # refused by the wire: returns at once
        (received, command), *_ = got
        assert received >= first.scheduled_time  # held here until its time
        assert command.due_at is not None

        presence = Presence(
            equipment_id=WIRE, agent_id="wire", kind="multimeter", state="online", holds=True
        )
        await nc.publish(presence_subject(WIRE), encoder.encode(presence))
        await eventually(lambda: executor.sightings.get(WIRE), until=lambda s: s is not None)

        second = ahead(HOLD_LIMIT_SECONDS * 0.95)
        outcome = await executor.execute(second, no_progress)
        received, command = got[1]
        assert command.due_at is not None
        assert abs((command.due_at - second.scheduled_time).total_seconds()) < 0.05
        assert outcome.dispatched_at is not None
        assert outcome.dispatched_at < second.scheduled_time  # sent ahead, for the agent to hold
    finally:
        await executor.aclose()
        await nc.close()


def test_the_worker_waits_for_the_instant_and_a_stop_ends_the_wait() -> None:
    """``RunContext.wait_to_begin``, as an instrument's worker runs it: it returns once the
    context's clock reads ``not_before``, and a stop meanwhile raises ``OperationStopped``."""
    ctx = RunContext(equipment_id=PSU, not_before=datetime.now(UTC) + timedelta(seconds=0.2))
    ctx.wait_to_begin()
    assert datetime.now(UTC) >= ctx.not_before  # type: ignore[operator]

    stopped = RunContext(equipment_id=PSU, not_before=datetime.now(UTC) + timedelta(hours=1))
    threading.Timer(0.1, stopped.cancel.set).start()
    with pytest.raises(OperationStopped):
        stopped.wait_to_begin()
