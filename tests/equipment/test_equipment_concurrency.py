"""Many jobs and threads on one instrument: the SCPI exchange never interleaves.

Every port is wrapped in a RecordingPort over the real pyvisa-sim resource; it notes any
write or query that begins while another is still in progress on the same instrument.
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from lablink.equipment_agent.inprocess import InProcessExecutor
from lablink.instruments.execution import ExecutionRequest
from lablink.instruments.scpi import MessagePort
from tests.support.bench import (
    ProgressLog,
    RecordingPort,
    copy_bench,
    execution_request,
)


class Recorded:
    def __init__(self) -> None:
        self.ports: dict[str, RecordingPort] = {}

    def __call__(self, equipment_id: str, port: MessagePort) -> MessagePort:
        self.ports[equipment_id] = RecordingPort(port)
        return self.ports[equipment_id]


@pytest.fixture
def recorded() -> Recorded:
    return Recorded()


@pytest.fixture
async def executor(tmp_path: Path, recorded: Recorded) -> AsyncIterator[InProcessExecutor]:
    ex = InProcessExecutor.simulated(
        tmp_path / "data", bench_yaml=copy_bench(tmp_path / "bench"), wrap=recorded
    )
    yield ex
    await ex.aclose()


def set_voltage(volts: float) -> ExecutionRequest:
    params = {"command": "set_voltage", "parameters": {"value": volts}}
    return execution_request("power_supply_1", "command", params)


async def test_concurrent_jobs_on_one_instrument_never_interleave(
    executor: InProcessExecutor, recorded: Recorded
) -> None:
    volts = [round(0.25 * i, 3) for i in range(1, 61)]
    requests = [set_voltage(v) for v in volts]
    requests += [execution_request("power_supply_1", "state_capture") for _ in range(10)]
    requests += [
        execution_request("power_supply_1", "measurement", {"command": "get_current"})
        for _ in range(10)
    ]
    random.Random(7).shuffle(requests)

    outcomes = await asyncio.gather(*(executor.execute(r, ProgressLog()) for r in requests))

    assert all(o.status == "completed" for o in outcomes), [o.error for o in outcomes]
    # Each job read back its own value: no other job's write came between its set and read.
    for request, outcome in zip(requests, outcomes, strict=True):
        if request.spec.parameters.get("command") == "set_voltage":
            assert outcome.result["value"] == request.spec.parameters["parameters"]["value"]
    port = recorded.ports["power_supply_1"]
    assert port.overlaps == []
    # In the transcript every set is its own block: drain errors, write, check, read back.
    sent = port.sent()
    for v in volts:
        at = sent.index(f"VOLT {v:.3f}")
        assert sent[at - 1 : at + 3] == ["SYST:ERR?", f"VOLT {v:.3f}", "SYST:ERR?", "VOLT?"]


async def test_threads_and_jobs_share_one_instrument_safely(
    executor: InProcessExecutor, recorded: Recorded
) -> None:
    """Real threads calling the session directly, while jobs run on the event loop."""
    session = executor.bench.session("load_1")
    threads_count, rounds = 8, 25
    barrier = threading.Barrier(threads_count)
    mismatches: list[tuple[float, object]] = []

    def hammer(amps: float) -> None:
        barrier.wait()
        for _ in range(rounds):
            got = session.call(lambda inst: inst.apply("current", amps))
            if got != amps:
                mismatches.append((amps, got))

    threads = [
        threading.Thread(target=hammer, args=(1.0 + i,), name=f"hammer-{i}")
        for i in range(threads_count)
    ]
    for t in threads:
        t.start()
    jobs = [
        execution_request(
            "load_1", "command", {"command": "set_current", "parameters": {"value": 0.5 * i}}
        )
        for i in range(1, 41)
    ]
    outcomes = await asyncio.gather(*(executor.execute(j, ProgressLog()) for j in jobs))
    for t in threads:
        await asyncio.to_thread(t.join)

    assert mismatches == []
    for job, outcome in zip(jobs, outcomes, strict=True):
        assert outcome.result["value"] == job.spec.parameters["parameters"]["value"]
    port = recorded.ports["load_1"]
    assert port.overlaps == []
    assert port.sent().count("CURR?") == threads_count * rounds + len(jobs)


async def test_instruments_work_in_parallel_each_in_order(
    executor: InProcessExecutor, recorded: Recorded
) -> None:
    ids = ["power_supply_1", "multimeter_1", "oscilloscope_1", "scope_1", "load_1", "sensor_1"]
    requests = [execution_request(i, "state_capture") for i in ids for _ in range(5)]

    outcomes = await asyncio.gather(*(executor.execute(r, ProgressLog()) for r in requests))

    assert all(o.status == "completed" for o in outcomes)
    assert all(recorded.ports[i].overlaps == [] for i in ids)


class _SlowPort:
    """Not an instrument: lets the detector itself be shown to catch an overlap."""

    def __init__(self) -> None:
        self.inside = threading.Event()
        self.release = threading.Event()

    def write(self, message: str) -> int:
        return len(message)

    def query(self, message: str) -> str:
        self.inside.set()
        self.release.wait(timeout=60)
        return "1"


def test_the_recorder_catches_an_overlap() -> None:
    slow = _SlowPort()
    port = RecordingPort(slow)
    reader = threading.Thread(target=port.query, args=("*OPC?",))
    reader.start()
    assert slow.inside.wait(timeout=60)
    port.write("OUTP 1")  # while the query is still waiting for its answer
    slow.release.set()
    reader.join()

    assert port.overlaps == ["OUTP 1"]
