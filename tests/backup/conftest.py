"""A data directory with a short log, its views folded: what the backup tests copy, restore
and verify."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from lablink.application import JobService
from lablink.clock import ManualClock
from lablink.logstore import open_store

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
JOB: dict[str, Any] = {
    "name": "Hourly Voltage Check",
    "schedule_type": "measurement",
    "equipment_id": "power_supply_1",
    "trigger_type": "interval",
    "interval_hours": 1,
    "parameters": {"command": "get_voltage"},
}


def make_data_dir(path: Path, jobs: int = 3) -> list[str]:
    """A log of ``jobs`` jobs, each created, paused and resumed; the views folded."""
    clock = ManualClock(T0)
    store = open_store(path / "scheduler.db")
    try:
        service = JobService(store, clock)
        ids = []
        for number in range(jobs):
            job_id = service.create_job({**JOB, "name": f"Job {number}"}, actor="alice")
            clock.advance(timedelta(minutes=1))
            service.pause_job(job_id, actor="alice")
            service.resume_job(job_id, actor="bob")
            ids.append(job_id)
        return ids
    finally:
        store.close()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    make_data_dir(path)
    return path
