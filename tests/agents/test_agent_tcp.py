"""The real network path: a scheduled job goes from the engine through AgentExecutor and a real
nats-server to an agent, which drives an instrument through pyvisa-py over a loopback TCP
socket, and the result comes back into the executions view.

The instrument is served by this file: it answers the multimeter driver table line by line and
watches the wire for what the bench promises (one VISA session per instrument, each
operation whole), so the concurrency test fails if either promise breaks.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from lablink.application import JobService
from lablink.bus.relay import NatsOptions
from lablink.bus.server import NatsServer
from lablink.clock import ManualClock
from lablink.equipment_agent.agent import Agent
from lablink.equipment_agent.config import AgentConfig, InstrumentConfig
from lablink.eventstore.sqlite import SQLiteEventStore
from lablink.ids import SequentialIds
from lablink.instruments.drivers import MULTIMETER, make_instrument
from lablink.instruments.instrument import ERROR_QUERY
from lablink.logstore import open_store
from lablink.repository import JobRepository
from lablink.scheduler.agents import AgentExecutor
from lablink.scheduler.engine import Engine
from tests.support.eventually import eventually
from tests.support.views import open_views

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
EQUIPMENT_ID = "dmm_1"
# Distinctive, so a result cannot match by accident (the simulated bench says 5.0 V).
VOLTAGE = 1.234567
WAIT_SECONDS = 30.0


# -- the instrument -----------------------------------------------------------------------------


class LoopbackMultimeter:
    """The instrument's side of the multimeter table, one line in, at most one line out.

    It also checks the order of what arrives. The driver sets a value as: drain the error
    queue, ``HEADER value``, ``SYST:ERR?``, ``HEADER?``. A setting written without the drain
    just before it, or not followed at once by its own error check and read-back, means that
    another job's commands got in between: each one is kept in ``violations``.
    """

    IDN = "LabLink Test,DMM-LOOP,0001,1.0"

    def __init__(self, voltage: float = VOLTAGE) -> None:
        self.readings = {m.query: 0.0 for m in MULTIMETER.measurements}
        self.readings["MEAS:VOLT:DC?"] = voltage
        self.settings: dict[str, float] = {s.header: 1.0 for s in MULTIMETER.settings}
        self.errors: list[str] = []
        self.lines: list[str] = []
        self.violations: list[str] = []
        self.settings_checked = 0  # settings seen with their drain, error check and read-back
        self._due: list[str] = []
        self._drained = False

    def handle(self, line: str) -> str | None:
        self.lines.append(line)
        self._check_order(line)
        header, _, argument = line.partition(" ")
        if line == "*IDN?":
            return self.IDN
        if line == "*RST":
            self.settings = dict.fromkeys(self.settings, 1.0)
            return None
        if line == "*TST?":
            return "0"
        if line == ERROR_QUERY:
            return self.errors.pop(0) if self.errors else '+0,"No error"'
        if line in self.readings:
            return f"{self.readings[line]:.6E}"
        if line.endswith("?") and line[:-1] in self.settings:
            return f"{self.settings[line[:-1]]:.6E}"
        if header in self.settings and argument:
            self.settings[header] = float(argument)
            return None
        # A real instrument stays silent and queues an error; the driver then reads the queue.
        self.errors.append('-113,"Undefined header"')
        return None

    def _check_order(self, line: str) -> None:
        if self._due:
            wanted = self._due.pop(0)
            if line == wanted:
                if not self._due:
                    self.settings_checked += 1
                # Neither this error check nor the read-back may pass for the next drain.
                self._drained = False
                return
            self.violations.append(f"{line!r} arrived where {wanted!r} was due")
            self._due.clear()
        header, _, argument = line.partition(" ")
        if header in self.settings and argument:
            if not self._drained:
                self.violations.append(f"{line!r} arrived without its error-queue drain")
            self._due = [ERROR_QUERY, f"{header}?"]
        self._drained = line == ERROR_QUERY


class LoopbackServer:
    """Serves a ``LoopbackMultimeter`` on 127.0.0.1, counting the connections made to it.

    ``hold()`` keeps every answer back until ``release()``: nothing sent to the instrument can
    finish meanwhile, so a test can have several executions in flight at once for certain.
    """

    def __init__(self, instrument: LoopbackMultimeter) -> None:
        self.instrument = instrument
        self.connections = 0
        self.port = 0
        self._answering = asyncio.Event()
        self._answering.set()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[Any]] = set()

    @property
    def resource(self) -> str:
        return f"TCPIP::127.0.0.1::{self.port}::SOCKET"

    async def start(self) -> LoopbackServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def hold(self) -> None:
        self._answering.clear()

    def release(self) -> None:
        self._answering.set()

    async def close(self) -> None:
        self.release()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for writer in self._writers:
            writer.close()
        await asyncio.gather(*self._handlers, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            while raw := await reader.readline():
                answer = self.instrument.handle(raw.decode().rstrip("\r\n"))
                if answer is not None:
                    await self._answering.wait()
                    writer.write(answer.encode() + b"\n")
                    await writer.drain()
        except ConnectionError:
            pass  # the agent closed its session
        finally:
            writer.close()


class DirectPort:
    """The loopback instrument without the socket, for checking its order check."""

    def __init__(self, instrument: LoopbackMultimeter) -> None:
        self.instrument = instrument

    def write(self, message: str) -> int:
        assert self.instrument.handle(message) is None
        return len(message)

    def query(self, message: str) -> str:
        answer = self.instrument.handle(message)
        assert answer is not None, message
        return answer


# -- the scheduler and the agent ----------------------------------------------------------------


@dataclass
class Lab:
    clock: ManualClock
    store: SQLiteEventStore
    service: JobService
    engine: Engine
    executor: AgentExecutor
    instrument: LoopbackServer

    def execution(self, execution_id: str) -> dict[str, Any]:
        conn = open_views(self.store.path)
        conn.row_factory = sqlite3.Row
        try:
            row = conn.execute(
                "SELECT * FROM executions WHERE execution_id = ?", (execution_id,)
            ).fetchone()
        finally:
            conn.close()
        assert row is not None, execution_id
        return dict(row)

    async def settle(self) -> None:
        """Wait for every execution in flight to be recorded as ended."""
        await asyncio.wait_for(asyncio.gather(*self.engine.tasks().values()), WAIT_SECONDS)

    async def running_on_agent(self, count: int) -> None:
        """Wait until the agent's heartbeat lists ``count`` executions running on the
        instrument (accepted, not finished)."""
        await eventually(
            lambda: self.executor.sightings.get(EQUIPMENT_ID),
            until=lambda sighting: sighting is not None and len(sighting.presence.running) == count,
            timeout=WAIT_SECONDS,
            what=f"{count} running",
        )

    async def online(self) -> None:
        await eventually(
            lambda: (s := self.executor.sightings.get(EQUIPMENT_ID)) is not None and s.online,
            timeout=WAIT_SECONDS,
            what=f"{EQUIPMENT_ID} seen online",
        )


@pytest.fixture
async def instrument() -> AsyncIterator[LoopbackServer]:
    server = await LoopbackServer(LoopbackMultimeter()).start()
    try:
        yield server
    finally:
        await server.close()


@pytest.fixture
async def lab(
    tmp_path: Path, nats_server: NatsServer, instrument: LoopbackServer
) -> AsyncIterator[Lab]:
    options = NatsOptions(url=nats_server.url)
    config = AgentConfig(
        agent_id="lab-pc-test",
        instruments=(
            InstrumentConfig(
                id=EQUIPMENT_ID,
                kind="multimeter",
                resource=instrument.resource,
                backend="@py",
                # Generous: the concurrency test holds the instrument's answers for a while.
                timeout_ms=10_000,
            ),
        ),
        data_dir=tmp_path / "agent",
        heartbeat_seconds=0.05,
    )
    clock = ManualClock(START)
    async with contextlib.AsyncExitStack() as stack:
        store = open_store(tmp_path / "data" / "scheduler.db")
        stack.callback(store.close)
        ids = SequentialIds()
        jobs = JobRepository(store)
        service = JobService(store, clock, default_timezone="UTC", ids=ids, repository=jobs)
        # Started before the agent: it creates the reports stream the agent publishes to.
        executor = AgentExecutor(options)
        stack.push_async_callback(executor.aclose)
        await executor.start()
        agent = Agent(config, options)
        stack.push_async_callback(agent.aclose)
        await agent.start()
        engine = Engine(store, clock, executor, jobs=jobs, ids=ids)
        await engine.open([], [])
        stack.push_async_callback(engine.aclose, 5)
        ready = Lab(clock, store, service, engine, executor, instrument)
        await ready.online()
        yield ready


def job(name: str, schedule_type: str, parameters: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "schedule_type": schedule_type,
        "equipment_id": EQUIPMENT_ID,
        "trigger_type": "interval",
        "interval_hours": 1,
        "parameters": parameters,
    }


# -- the tests ----------------------------------------------------------------------------------


async def test_a_scheduled_measurement_reaches_the_tcp_instrument_and_is_recorded(
    lab: Lab,
) -> None:
    job_id = lab.service.create_job(
        job("Loopback voltage", "measurement", {"command": "get_voltage"}), "alice"
    )
    lab.engine.plan(job_id)
    lab.clock.set(START + timedelta(hours=1))

    assert await lab.engine.tick() == 1
    (execution_id,) = lab.engine.tasks()
    await lab.settle()

    row = lab.execution(execution_id)
    assert row["status"] == "completed", row["error"]
    assert row["trigger_info"] == "scheduled"
    assert json.loads(row["result"]) == {
        "equipment_id": EQUIPMENT_ID,
        "command": "get_voltage",
        "measurement": "voltage",
        "value": VOLTAGE,
        "unit": "V",
    }
    # Opened once through pyvisa-py (identified, then measured), nothing else on the wire.
    assert lab.instrument.connections == 1
    assert lab.instrument.instrument.lines == ["*IDN?", "MEAS:VOLT:DC?"]


async def test_concurrent_jobs_share_one_session_and_never_interleave(lab: Lab) -> None:
    nplcs = [0.1, 0.2, 1.0, 2.0, 10.0]
    settings = [
        lab.service.create_job(
            job(f"NPLC {v}", "command", {"command": "set_nplc", "parameters": {"value": v}}),
            "alice",
        )
        for v in nplcs
    ]
    measurements = [
        lab.service.create_job(job(f"Voltage {n}", "measurement", {}), "alice") for n in range(3)
    ]
    # Nothing the instrument is asked can finish until every execution is on the agent.
    lab.instrument.hold()
    setting_runs = [await lab.engine.run_now(j) for j in settings]
    measurement_runs = [await lab.engine.run_now(j) for j in measurements]
    await lab.running_on_agent(len(settings) + len(measurements))
    lab.instrument.release()
    await lab.settle()

    # What the instrument saw: one session, every setting whole, every operation arrived.
    wire = lab.instrument.instrument
    assert lab.instrument.connections == 1
    assert wire.violations == []
    assert wire.settings_checked == len(nplcs)
    assert wire.lines.count("MEAS:VOLT:DC?") == len(measurements)
    for execution_id, nplc in zip(setting_runs, nplcs, strict=True):
        row = lab.execution(execution_id)
        assert row["status"] == "completed", row["error"]
        result = json.loads(row["result"])
        # Read back between this job's own write and the next job's: its own value.
        assert (result["requested"], result["value"]) == (nplc, nplc)
    for execution_id in measurement_runs:
        row = lab.execution(execution_id)
        assert row["status"] == "completed", row["error"]
        assert json.loads(row["result"])["value"] == VOLTAGE


def test_the_order_check_accepts_the_driver_and_flags_interleaving() -> None:
    """The concurrency test is only as good as this check: it must pass what the driver
    sends one operation at a time and flag commands of two operations mixed."""
    whole = LoopbackMultimeter()
    dmm = make_instrument("multimeter", EQUIPMENT_ID, DirectPort(whole))
    assert dmm.apply("nplc", 2.0) == 2.0
    assert dmm.measure("voltage").value == VOLTAGE
    assert whole.lines == [
        "SYST:ERR?",
        "VOLT:DC:NPLC 2.000",
        "SYST:ERR?",
        "VOLT:DC:NPLC?",
        "MEAS:VOLT:DC?",
    ]
    assert (whole.violations, whole.settings_checked) == ([], 1)

    # Two settings whose steps alternate, as two threads on one session would send them.
    mixed = LoopbackMultimeter()
    for line in [
        "SYST:ERR?",
        "SYST:ERR?",
        "VOLT:DC:NPLC 1.000",
        "VOLT:DC:NPLC 2.000",
        "SYST:ERR?",
        "SYST:ERR?",
        "VOLT:DC:NPLC?",
        "VOLT:DC:NPLC?",
    ]:
        mixed.handle(line)
    assert mixed.violations != []
    assert mixed.settings_checked < 2

    # A measurement slipped between a setting's drain and its write.
    split = LoopbackMultimeter()
    for line in ["SYST:ERR?", "MEAS:VOLT:DC?", "VOLT:DC:NPLC 1.000", "SYST:ERR?", "VOLT:DC:NPLC?"]:
        split.handle(line)
    assert split.violations == ["'VOLT:DC:NPLC 1.000' arrived without its error-queue drain"]
