"""stop(): the engine cancels an execution's task, then the executor ends the operation and
puts the instrument in its safe state (outputs off)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from lablink.equipment_agent.bench import open_simulated_bench
from lablink.equipment_agent.inprocess import InProcessExecutor
from lablink.instruments.execution import ExecutionRequest
from lablink.instruments.scpi import MessagePort
from tests.support.bench import ProgressLog, copy_bench, execution_request


@pytest.fixture
async def realtime(tmp_path: Path) -> AsyncIterator[InProcessExecutor]:
    """Instrument time passes in real time, as with real instruments."""
    bench = open_simulated_bench(copy_bench(tmp_path / "bench"))
    ex = InProcessExecutor(bench, tmp_path / "data", realtime=True)
    yield ex
    await ex.aclose()


async def start_and_cancel(
    executor: InProcessExecutor, request: ExecutionRequest
) -> asyncio.Task[Any]:
    """Start ``request``, wait for its first progress report, cancel it as the engine does."""
    started = asyncio.Event()

    async def progress(fraction: float, message: str, data: dict[str, Any]) -> None:
        started.set()

    task = asyncio.create_task(executor.execute(request, progress))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    return task


async def read_setting(executor: InProcessExecutor, equipment_id: str, name: str) -> Any:
    outcome = await executor.execute(
        execution_request(equipment_id, "state_capture"), ProgressLog()
    )
    return outcome.result["settings"][name]["value"]


async def test_stop_switches_the_supply_output_off(realtime: InProcessExecutor) -> None:
    on = await realtime.execute(
        execution_request("power_supply_1", "command", {"command": "output_on"}), ProgressLog()
    )
    assert on.result["value"] is True
    # A logging acquisition that would sample the supply once a second for an hour.
    logging = execution_request("power_supply_1", "acquisition", {"duration": 3600})

    await start_and_cancel(realtime, logging)
    await realtime.stop(logging.execution_id)

    assert await read_setting(realtime, "power_supply_1", "output") is False


async def test_stopping_a_load_test_ends_it_and_leaves_the_input_off(
    realtime: InProcessExecutor,
) -> None:
    params = {"command": "run_load_test", "parameters": {"duration": 3600, "current": 5.0}}
    request = execution_request("load_1", "command", params)

    await start_and_cancel(realtime, request)
    await realtime.stop(request.execution_id)

    assert await read_setting(realtime, "load_1", "input") is False


async def test_stop_of_an_unknown_or_finished_execution_does_nothing(
    realtime: InProcessExecutor,
) -> None:
    done = execution_request("power_supply_1", "command", {"command": "output_on"})
    await realtime.execute(done, ProgressLog())

    await realtime.stop(done.execution_id)
    await realtime.stop("exec_never_ran")

    assert await read_setting(realtime, "power_supply_1", "output") is True


class _HeldScope:
    """Wraps the scope's real port and holds the worker inside its third record."""

    def __init__(self, inner: MessagePort, loop: asyncio.AbstractEventLoop) -> None:
        self.inner = inner
        self.loop = loop
        self.reached = asyncio.Event()
        self.release = threading.Event()
        self.records = 0

    def write(self, message: str) -> int:
        return self.inner.write(message)

    def query(self, message: str) -> str:
        if message.startswith("WAV:DATA?"):
            self.records += 1
            if self.records == 3:
                self.loop.call_soon_threadsafe(self.reached.set)
                self.release.wait(timeout=60)
        return self.inner.query(message)


async def test_stopped_acquisition_leaves_only_a_partial_file(tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()
    held: dict[str, _HeldScope] = {}

    def wrap(equipment_id: str, port: MessagePort) -> MessagePort:
        if equipment_id != "scope_1":
            return port
        held[equipment_id] = _HeldScope(port, loop)
        return held[equipment_id]

    data_dir = tmp_path / "data"
    executor = InProcessExecutor.simulated(
        data_dir, bench_yaml=copy_bench(tmp_path / "bench"), wrap=wrap
    )
    scope = held["scope_1"]
    params = {"duration": 600, "sample_rate": 1_000_000, "channels": [1, 2, 3, 4]}
    request = execution_request("scope_1", "acquisition", params)
    try:
        task = asyncio.create_task(executor.execute(request, ProgressLog()))
        await scope.reached.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        stopping = asyncio.create_task(executor.stop(request.execution_id))
        scope.release.set()
        await stopping

        csv_path = data_dir / "acquisitions" / f"{request.execution_id}.csv"
        assert not csv_path.exists()
        assert csv_path.with_name(csv_path.name + ".partial").exists()
        assert await read_setting(executor, "scope_1", "sample_rate") == 1e6  # restored
    finally:
        scope.release.set()
        await executor.aclose()


async def test_closing_the_executor_fails_what_is_still_queued(tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()
    held: list[_HeldScope] = []

    def wrap(equipment_id: str, port: MessagePort) -> MessagePort:
        if equipment_id != "scope_1":
            return port
        held.append(_HeldScope(port, loop))
        return held[0]

    executor = InProcessExecutor.simulated(
        tmp_path / "data", bench_yaml=copy_bench(tmp_path / "bench"), wrap=wrap
    )
    params = {"duration": 60, "sample_rate": 1000, "channels": [1]}
    capture = asyncio.create_task(
        executor.execute(execution_request("scope_1", "acquisition", params), ProgressLog())
    )
    await held[0].reached.wait()  # the scope's worker is busy with the capture
    queued = asyncio.create_task(
        executor.execute(execution_request("scope_1", "state_capture"), ProgressLog())
    )
    await asyncio.sleep(0)  # let it queue behind the capture
    closing = asyncio.create_task(executor.aclose())

    queued_outcome = await queued  # its queued operation is dropped by the shutdown
    held[0].release.set()
    capture_outcome = await capture
    await closing

    assert queued_outcome.error is not None
    assert queued_outcome.error.type == "equipment_offline"
    assert queued_outcome.error.message == (
        "equipment 'scope_1' is not connected: the bench was closed"
    )
    assert capture_outcome.error is not None
    assert capture_outcome.error.type == "stopped"
