"""A data directory with a log written by the job service, its signing key, and a
checkpointer on a manual clock: what the audit tests sign, tamper with and verify."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from lablink.application import JobService
from lablink.audit.checkpoints import Checkpointer
from lablink.audit.note import Signer
from lablink.audit.signing_key import ensure_signer
from lablink.clock import ManualClock
from lablink.eventstore.sqlite import SQLiteEventStore
from lablink.logstore import open_store

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
JOB: dict[str, Any] = {
    "name": "Hourly Voltage Check",
    "schedule_type": "measurement",
    "equipment_id": "power_supply_1",
    "trigger_type": "interval",
    "interval_hours": 1,
    "parameters": {"command": "get_voltage"},
}


@dataclass
class Lab:
    data_dir: Path
    store: SQLiteEventStore
    clock: ManualClock
    service: JobService
    signer: Signer
    checkpoints: Checkpointer

    @property
    def db(self) -> Path:
        return self.data_dir / "scheduler.db"

    def work(self, jobs: int = 1) -> list[str]:
        """Each job created, paused and resumed: three events a job."""
        ids = []
        for number in range(jobs):
            job_id = self.service.create_job({**JOB, "name": f"Job {number}"}, actor="alice")
            self.clock.advance(timedelta(minutes=1))
            self.service.pause_job(job_id, actor="alice")
            self.service.resume_job(job_id, actor="bob")
            ids.append(job_id)
        return ids


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    data_dir = tmp_path / "data"
    clock = ManualClock(T0)
    store = open_store(data_dir / "scheduler.db")
    signer = ensure_signer(data_dir)
    checkpoints = Checkpointer(store, clock, signer, every_events=10, every=timedelta(minutes=10))
    try:
        yield Lab(data_dir, store, clock, JobService(store, clock), signer, checkpoints)
    finally:
        store.close()
