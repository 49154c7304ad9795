"""Support for tests that drive the simulated bench: fresh copies of the device file, variants
of it, a port that records the SCPI exchange, and execution requests as the engine builds
them.

pyvisa caches one simulated library per device-file path for the whole process, so a test
that wants the file's defaults opens its own copy.
"""

from __future__ import annotations

import itertools
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lablink.equipment_agent.bench import BENCH_YAML
from lablink.events import JobSpec, ScheduleType
from lablink.instruments.execution import ExecutionRequest
from lablink.instruments.scpi import MessagePort

SCHEDULED = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
_execution_numbers = itertools.count(1)


def copy_bench(directory: Path) -> Path:
    """A private copy of bench.yaml: an independent simulated bench at its defaults."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "bench.yaml"
    shutil.copy(BENCH_YAML, path)
    return path


def bench_variant(directory: Path, device: str, old: str, new: str) -> Path:
    """A copy of bench.yaml whose ``device`` has its first ``old`` replaced by ``new``: an
    instrument that differs from what its driver table expects (another model, a fault)."""
    text = BENCH_YAML.read_text(encoding="utf-8")
    start = text.index(f"\n  {device}:\n")
    at = text.index(old, start)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "bench.yaml"
    path.write_text(text[:at] + new + text[at + len(old) :], encoding="utf-8")
    return path


class RecordingPort:
    """Records every write and query on a port, and every time one began while another was
    still in progress on the same port (which the session's worker must make impossible)."""

    def __init__(self, inner: MessagePort) -> None:
        self.inner = inner
        self.exchanges: list[tuple[str, str, str]] = []  # (kind, message, answer)
        self.overlaps: list[str] = []
        self._busy = threading.Lock()

    def write(self, message: str) -> int:
        with self._exclusive(message):
            count = self.inner.write(message)
            self.exchanges.append(("write", message, ""))
            return count

    def query(self, message: str) -> str:
        with self._exclusive(message):
            answer = self.inner.query(message)
            self.exchanges.append(("query", message, answer.strip()))
            return answer

    def sent(self) -> list[str]:
        return [message for _, message, _ in self.exchanges]

    @contextmanager
    def _exclusive(self, message: str) -> Iterator[None]:
        entered = self._busy.acquire(blocking=False)
        if not entered:
            self.overlaps.append(message)
        try:
            yield
        finally:
            if entered:
                self._busy.release()


class ProgressLog:
    """An async progress callback that keeps what it was told."""

    def __init__(self) -> None:
        self.reports: list[tuple[float, str, dict[str, Any]]] = []

    async def __call__(self, fraction: float, message: str, data: dict[str, Any]) -> None:
        self.reports.append((fraction, message, data))


def execution_request(
    equipment_id: str,
    schedule_type: ScheduleType,
    parameters: dict[str, Any] | None = None,
    *,
    name: str | None = None,
    profile_id: str | None = None,
) -> ExecutionRequest:
    """A request as the engine hands it to an executor, with a fresh execution id."""
    n = next(_execution_numbers)
    name = name or f"{schedule_type} on {equipment_id}"
    spec = JobSpec(
        name=name,
        schedule_type=schedule_type,
        equipment_id=equipment_id,
        trigger_type="interval",
        timezone="Europe/Berlin",
        timeout_seconds=300.0,
        interval_hours=1,
        parameters=parameters or {},
        profile_id=profile_id,
    )
    return ExecutionRequest(
        execution_id=f"exec_{n:06d}",
        job_id=f"job_{n:06d}",
        job_name=name,
        spec=spec,
        scheduled_time=SCHEDULED,
        trigger_info="manual",
    )
