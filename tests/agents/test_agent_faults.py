"""Every fault between the scheduler and an instrument, against a real nats-server and real
agents (in-process, or `lablink agent` processes killed with SIGKILL)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import signal
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import nats
import pytest

from lablink.api.queries import list_equipment
from lablink.bus.server import NatsServer
from lablink.clock import ManualClock
from lablink.equipment_agent.config import InstrumentConfig
from lablink.events import AlarmRaised, EquipmentOffline, EquipmentOnline
from lablink.instruments.execution import Outcome
from lablink.instruments.protocol import RunCommand, RunReply, encoder, run_subject
from lablink.instruments.scpi import MessagePort
from tests.support.agent_lab import AgentLab, bench_config, spawn_agent, write_lab_toml
from tests.support.bench import (
    RecordingPort,
    bench_variant,
    copy_bench,
    execution_request,
)
from tests.support.eventually import eventually
from tests.support.views import open_views

LONG_CAPTURE = {  # point by point on the supply, in real time: a minute unless stopped
    "schedule_type": "acquisition",
    "equipment_id": "power_supply_1",
    "parameters": {"duration": 60, "sample_rate": 2},
}


@pytest.fixture
async def lab(
    tmp_path: Path, nats_server: NatsServer, clock: ManualClock
) -> AsyncIterator[AgentLab]:
    lab = await AgentLab(
        tmp_path / "scheduler.db", nats_server.url, clock, heartbeat_timeout=1.0
    ).start()
    try:
        yield lab
    finally:
        await lab.close()


def error(row: dict[str, Any], status: str = "failed") -> dict[str, Any]:
    assert row["status"] == status, row
    value: dict[str, Any] = json.loads(row["error"])
    return value


async def test_no_agent_fails_as_equipment_offline_without_waiting(
    tmp_path: Path, nats_server: NatsServer, clock: ManualClock
) -> None:
    # A request timeout of a minute: only NATS's "no responders" can end this one early.
    lab = await AgentLab(tmp_path / "scheduler.db", nats_server.url, clock, run_timeout=60).start()
    try:
        job_id = lab.create(
            {
                "name": "Hourly check",
                "schedule_type": "measurement",
                "equipment_id": "power_supply_1",
                "on_failure_alarm": True,
            }
        )
        execution_id = await lab.engine.run_now(job_id)
        row = await asyncio.wait_for(lab.finished(execution_id), 60)
        alarms = [e for e in lab.events(job_id) if isinstance(e, AlarmRaised)]
    finally:
        await lab.close()
    problem = error(row)
    assert problem["type"] == "equipment_offline"
    assert problem["message"] == "equipment offline: no agent serves power_supply_1"
    (alarm,) = alarms
    assert alarm.kind == "job_failure"
    assert alarm.severity == "critical"
    assert alarm.job_id == job_id
    assert alarm.job_name == "Hourly check"
    assert alarm.execution_id == execution_id
    assert alarm.equipment_id == "power_supply_1"
    assert alarm.error["type"] == "equipment_offline"
    assert alarm.execution_time is not None
    assert "equipment offline" in alarm.message


async def test_a_job_without_on_failure_alarm_raises_none(lab: AgentLab) -> None:
    job_id = lab.create({"schedule_type": "measurement", "equipment_id": "power_supply_1"})
    row = await lab.finished(await lab.engine.run_now(job_id))
    assert row["status"] == "failed"
    assert not [e for e in lab.events(job_id) if isinstance(e, AlarmRaised)]


@pytest.mark.e2e
async def test_an_agent_killed_mid_run_fails_the_execution_as_agent_lost(
    lab: AgentLab, tmp_path: Path, nats_server: NatsServer
) -> None:
    config = bench_config(
        copy_bench(tmp_path / "bench"), tmp_path / "agent-data", agent_id="lab-pc", realtime=True
    )
    toml = write_lab_toml(tmp_path / "lab.toml", config, nats_server.url)
    agent = await spawn_agent(toml)
    try:
        await lab.online("power_supply_1", within=30)
        job_id = lab.create(LONG_CAPTURE)
        execution_id = await lab.engine.run_now(job_id)
        await lab.until(execution_id, ("running",))
        await eventually(lambda: lab.rows("SELECT 1 FROM executions WHERE progress > 0"))
        agent.send_signal(signal.SIGKILL)
        await agent.wait()
        row = await lab.finished(execution_id, within=30)
    finally:
        if agent.returncode is None:
            agent.kill()
            await agent.wait()

    problem = error(row)
    assert problem["type"] == "agent_lost"
    assert problem["message"] == "agent lost: no heartbeat from lab-pc for 1 s"
    online, offline, alarm = lab.events("equipment:power_supply_1")
    assert isinstance(online, EquipmentOnline)
    assert isinstance(offline, EquipmentOffline)
    assert offline.reason == problem["message"]
    # An instrument going offline raises an alarm with what the log knew of it.
    assert isinstance(alarm, AlarmRaised)
    assert alarm.kind == "equipment_offline"
    assert alarm.severity == "critical"
    assert alarm.equipment_id == "power_supply_1"
    assert alarm.equipment["agent_id"] == "lab-pc"
    assert alarm.equipment["identity"].startswith("LabLink Sim,PSU-3005")


@pytest.mark.e2e
async def test_an_instrument_error_code_reaches_the_record(lab: AgentLab, tmp_path: Path) -> None:
    # A smaller load than its driver table: the instrument itself refuses 5 A.
    small = bench_variant(tmp_path / "small", "electronic load", "max: 30", "max: 3")
    config = bench_config(small, tmp_path / "agent-data", only=("load_1",))
    await lab.start_agent_process(config, tmp_path / "lab.toml")  # `lablink agent`
    row = await lab.run(
        {
            "schedule_type": "command",
            "equipment_id": "load_1",
            "parameters": {"command": "set_current", "parameters": {"value": 5.0}},
        }
    )
    problem = error(row)
    assert problem["type"] == "instrument_error"
    assert problem["code"] == -100
    assert problem["message"] == "load_1 reported error -100 'Command error' after 'CURR 5.000'"


@pytest.mark.e2e
async def test_a_visa_timeout_is_explained_by_the_error_queue(
    lab: AgentLab, tmp_path: Path
) -> None:
    # Firmware that no longer knows MEAS:VOLT?: the query times out, the queue says why.
    old = bench_variant(tmp_path / "old", "power supply", '"MEAS:VOLT?"', '"MEAS:VOLT:DC?"')
    config = bench_config(old, tmp_path / "agent-data", only=("power_supply_1",))
    (psu,) = config.instruments
    slow = InstrumentConfig(
        id=psu.id, kind=psu.kind, resource=psu.resource, backend=psu.backend, timeout_ms=50
    )
    await lab.start_agent_process(  # `lablink agent`, its lab.toml giving timeout_ms = 50
        dataclasses.replace(config, instruments=(slow,)), tmp_path / "lab.toml"
    )
    row = await lab.run(
        {
            "schedule_type": "measurement",
            "equipment_id": "power_supply_1",
            "parameters": {"command": "get_voltage"},
        }
    )
    problem = error(row)
    assert problem["type"] == "instrument_error"
    assert problem["code"] == -100
    assert problem["details"]["command"] == "MEAS:VOLT?"


@pytest.mark.e2e
async def test_a_timeout_stops_the_agent_and_applies_the_safe_state(
    lab: AgentLab, tmp_path: Path
) -> None:
    config = bench_config(copy_bench(tmp_path / "bench"), tmp_path / "agent-data", realtime=True)
    await lab.start_agent_process(config, tmp_path / "lab.toml")  # `lablink agent`
    switched_on = await lab.run(
        {
            "schedule_type": "command",
            "equipment_id": "power_supply_1",
            "parameters": {"command": "output_on"},
        }
    )
    assert switched_on["status"] == "completed"
    job_id = lab.create({**LONG_CAPTURE, "timeout_seconds": 5, "on_failure_alarm": True})
    execution_id = await lab.engine.run_now(job_id)
    running = await lab.until(execution_id, ("running",))
    assert running["status"] == "running"
    # The equipment view says what the instrument is running.
    conn = open_views(lab.path)
    try:
        (psu,) = list_equipment(conn, equipment_id="power_supply_1")
    finally:
        conn.close()
    assert [r["execution_id"] for r in psu["running"]] == [execution_id]
    assert psu["running"][0]["job_id"] == job_id
    # Time out an operation that is on the instrument (the agent says so in its queue), not
    # one still on its way to it: a stopped execution that never reached the instrument
    # touches nothing (docs/agents.md), and a loaded machine can be that slow.
    await eventually(
        lambda: lab.executor.queue_depths().get("power_supply_1"),
        until=lambda q: q is not None and q.queued == 0 and q.running >= 1,
        timeout=60,
        what="the capture on the instrument",
    )
    await lab.at(lab.clock.now() + timedelta(seconds=6))

    row = await lab.finished(execution_id)
    assert row["status"] == "timed_out"
    (alarm,) = [e for e in lab.events(job_id) if isinstance(e, AlarmRaised)]
    assert alarm.severity == "critical"
    assert alarm.error == {"type": "timed_out", "timeout_seconds": 5.0}
    # The guide's "equipment information": what the agent said of the instrument.
    assert alarm.equipment["equipment_id"] == "power_supply_1"
    assert alarm.equipment["kind"] == "power_supply"
    assert alarm.equipment["identity"].startswith("LabLink Sim,PSU-3005")
    assert alarm.equipment["agent_id"] == "bench-agent"
    # A capture leaves the output as it is: off means the agent's safe state ran.
    state = await lab.run({"schedule_type": "state_capture", "equipment_id": "power_supply_1"})
    assert json.loads(state["result"])["settings"]["output"]["value"] is False
    # The agent's own word on the stopped run carries what the instrument did before the
    # stop: when the operation began on it, and when it let go of it.
    stopped = await eventually(
        lambda: agent_outcome(tmp_path / "agent-data", "bench-agent", execution_id),
        timeout=60,
        what="the agent's outcome of the stopped run",
    )
    assert stopped is not None
    assert stopped.error is not None
    assert stopped.error.type == "stopped"
    assert stopped.instrument_started_at is not None
    assert stopped.instrument_ended_at is not None
    assert stopped.instrument_started_at <= stopped.instrument_ended_at


def agent_outcome(data_dir: Path, agent_id: str, execution_id: str) -> Outcome | None:
    """The outcome the agent's ledger holds for ``execution_id`` once it finished."""
    conn = sqlite3.connect(f"file:{data_dir / 'agents' / f'{agent_id}.db'}?mode=ro", uri=True)
    try:
        row = conn.execute(
            "SELECT outcome FROM executions WHERE execution_id = ? AND finished_at IS NOT NULL",
            (execution_id,),
        ).fetchone()
    finally:
        conn.close()
    return None if row is None else msgspec.json.decode(row[0], type=Outcome)


async def test_a_result_that_arrives_while_the_scheduler_is_down_is_recorded_after(
    lab: AgentLab, tmp_path: Path, nats_server: NatsServer, clock: ManualClock
) -> None:
    agent = await lab.start_agent(
        bench_config(copy_bench(tmp_path / "bench"), tmp_path / "data", realtime=True)
    )
    job_id = lab.create({**LONG_CAPTURE, "parameters": {"duration": 1.5, "sample_rate": 2}})
    execution_id = await lab.engine.run_now(job_id)
    ledger = agent._ledger
    assert ledger is not None
    await eventually(lambda: ledger.state(execution_id), until=lambda s: s[0] == "running")
    lab.agents.remove(agent)  # it outlives this scheduler
    await lab.crash()

    await eventually(
        lambda: ledger.state(execution_id)[0] == "finished" and not ledger.unpublished()
    )

    again = await AgentLab(tmp_path / "scheduler.db", nats_server.url, clock).start()
    again.agents.append(agent)
    try:
        row = await again.finished(execution_id, within=60)
        assert row["status"] == "completed", row
        assert json.loads(row["result"])["sample_count"] == 3
    finally:
        await again.close()
        lab.store = again.store  # the fixture's close() finds it closed already


async def test_a_redelivered_command_never_drives_the_instrument_twice(
    lab: AgentLab, tmp_path: Path, nats_server: NatsServer
) -> None:
    recorder = Recorder()
    config = bench_config(copy_bench(tmp_path / "bench"), tmp_path / "data", only=("multimeter_1",))
    await lab.start_agent(config, wrap=recorder)
    request = execution_request("multimeter_1", "measurement", {"command": "get_voltage"})
    # Due now: a command long past its job's misfire grace time would be refused as stale.
    command = encoder.encode(RunCommand(request=request, due_at=datetime.now(UTC)))
    nc = await nats.connect(nats_server.url)
    try:
        replies = [
            msgspec.json.decode(
                (await nc.request(run_subject("multimeter_1"), command, timeout=5)).data,
                type=RunReply,
            )
            for _ in range(3)
        ]
        # Once it ran (on a busy machine the accepted run may not have begun yet), an agent
        # restarted on the same ledger remembers it too.
        await eventually(
            lambda: recorder.count("multimeter_1", "MEAS:VOLT:DC?"), until=lambda n: n >= 1
        )
        await lab.agents.pop().aclose()
        await lab.start_agent(config, wrap=recorder)
        replies.append(
            msgspec.json.decode(
                (await nc.request(run_subject("multimeter_1"), command, timeout=5)).data,
                type=RunReply,
            )
        )
    finally:
        await nc.close()

    assert [r.status for r in replies] == ["accepted", "duplicate", "duplicate", "duplicate"]
    assert recorder.count("multimeter_1", "MEAS:VOLT:DC?") == 1


async def test_an_agent_that_stops_says_goodbye_and_is_recorded_offline(
    lab: AgentLab, tmp_path: Path
) -> None:
    agent = await lab.start_agent(
        bench_config(copy_bench(tmp_path / "bench"), tmp_path / "data", only=("sensor_1",))
    )
    lab.agents.remove(agent)
    await agent.aclose()
    await eventually(lambda: len(lab.events("equipment:sensor_1")), until=lambda n: n == 3)
    offline = lab.events("equipment:sensor_1")[1]
    assert isinstance(offline, EquipmentOffline)
    assert offline.reason == "the agent stopped"
    row = await lab.run({"schedule_type": "measurement", "equipment_id": "sensor_1"})
    assert error(row)["type"] == "equipment_offline"


class Recorder:
    """Wraps each instrument's port in a RecordingPort, kept across agent restarts."""

    def __init__(self) -> None:
        self.ports: dict[str, RecordingPort] = {}
        self.history: dict[str, list[str]] = {}

    def __call__(self, equipment_id: str, port: MessagePort) -> MessagePort:
        if equipment_id in self.ports:
            self.history.setdefault(equipment_id, []).extend(self.ports[equipment_id].sent())
        self.ports[equipment_id] = RecordingPort(port)
        return self.ports[equipment_id]

    def count(self, equipment_id: str, command: str) -> int:
        sent = [*self.history.get(equipment_id, []), *self.ports[equipment_id].sent()]
        return sent.count(command)
