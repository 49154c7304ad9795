"""SIGKILL a real scheduler process mid-execution, start a new one on the same database:
the execution is interrupted, missed fires follow misfire/coalesce, nothing runs twice."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from lablink.application import JobService
from lablink.clock import SystemClock
from lablink.logstore import open_store
from lablink.projections.reading import reading_views

LABLINK = str(Path(sys.executable).parent / "lablink")


class Process:
    """A `lablink scheduler` child whose JSON log lines the test can wait for."""

    def __init__(self, data_dir: Path, **settings: str) -> None:
        env = {
            **os.environ,
            **settings,
            "LABLINK_DATA_DIR": str(data_dir),
            "LABLINK_LOG_LEVEL": "debug",
            "LABLINK_REALTIME": "1",
            "LABLINK_TIMEZONE": "UTC",
        }
        self.proc = subprocess.Popen(
            [LABLINK, "scheduler"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                self.lines.put(json.loads(line))
            except json.JSONDecodeError:
                self.lines.put({"event": "raw", "line": line.rstrip()})

    def wait_for(self, event: str, timeout: float = 60, **fields: Any) -> dict[str, Any]:
        deadline = datetime.now(UTC) + timedelta(seconds=timeout)
        while True:
            left = (deadline - datetime.now(UTC)).total_seconds()
            try:
                record = self.lines.get(timeout=max(left, 0.01))
            except queue.Empty:
                raise AssertionError(
                    f"no {event!r} {fields} within {timeout}s: {self.seen}"
                ) from None
            self.seen.append(record)
            if record.get("event") == event and all(record.get(k) == v for k, v in fields.items()):
                return record


def rows(db: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    store = open_store(db)
    try:
        with reading_views(store) as views:
            return views.execute(sql, args).fetchall()
    finally:
        store.close()


@pytest.mark.slow
@pytest.mark.nats
@pytest.mark.e2e
# Where the agent runs decides what the killed run's record says. In-process, the agent dies
# with the scheduler: the restart finds the run unfinished and records it interrupted. As a
# child, the agent outlives it long enough to stop the run (safe state) and say so: the
# restart records that result, failed.
@pytest.mark.parametrize(("agent", "ended"), [("inprocess", "interrupted"), ("process", "failed")])
def test_sigkill_mid_run_then_restart(tmp_path: Path, agent: str, ended: str) -> None:
    data = tmp_path / "data"
    db = data / "scheduler.db"
    store = open_store(db)
    service = JobService(store, SystemClock(), default_timezone="UTC")
    now = datetime.now(UTC)
    # Due at once (within the grace time), and takes 30 s of real instrument time.
    long_job = service.create_job(
        {
            "name": "Business Hours Load Testing",
            "schedule_type": "command",
            "equipment_id": "load_1",
            "trigger_type": "date",
            "run_date": (now - timedelta(seconds=5)).isoformat(),
            "parameters": {
                "command": "run_load_test",
                "parameters": {"duration": 30, "current": 1.0},
            },
            "timeout_seconds": 120,
        },
        "test",
    )
    ticking = service.create_job(
        {
            "name": "Fast check",
            "schedule_type": "measurement",
            "equipment_id": "multimeter_1",
            "trigger_type": "interval",
            "interval_seconds": 1,
            "parameters": {"command": "get_voltage"},
        },
        "test",
    )
    store.close()

    first = Process(data, LABLINK_EMBEDDED_AGENT=agent)
    try:
        started = first.wait_for("execution.started", job_id=long_job)
        first.wait_for("execution.completed", job_id=ticking)
    finally:
        first.proc.send_signal(signal.SIGKILL)
    assert first.proc.wait(timeout=10) == -signal.SIGKILL

    second = Process(data, LABLINK_EMBEDDED_AGENT=agent)
    try:
        second.wait_for(f"execution.{ended}", execution_id=started["execution_id"])
        second.wait_for("execution.completed", job_id=ticking)
    finally:  # a failed wait must not leave the scheduler (and its children) running
        second.proc.send_signal(signal.SIGTERM)
    assert second.proc.wait(timeout=30) == 0

    long_runs = rows(db, "SELECT execution_id, status FROM executions WHERE job_id = ?", long_job)
    assert long_runs == [(started["execution_id"], ended)]
    (began,) = rows(
        db,
        "SELECT instrument_started_at FROM executions WHERE execution_id = ?",
        started["execution_id"],
    )[0]
    # The child agent's report of the run it stopped says when it began on the instrument;
    # in process nobody was left to say it.
    assert (began is not None) == (agent == "process"), began
    (status,) = rows(db, "SELECT status FROM jobs WHERE job_id = ?", long_job)[0]
    assert status == "completed"  # the date ran once; the restart did not run it again

    fires = rows(
        db,
        "SELECT scheduled_time, status, coalesced_count FROM executions"
        " WHERE job_id = ? AND status NOT IN ('missed', 'skipped')",
        ticking,
    )
    scheduled = [f[0] for f in fires]
    assert len(scheduled) == len(set(scheduled)), "a fire ran twice"
    # Fires due while it was down (more than one on a slow restart) ran as one catch-up; the
    # others of them are recorded as coalesced into it (coalesce is the job default).
    # The fire in flight at the kill: failed by the agent that stopped it, or interrupted when
    # it had not reached the agent. Fires are recorded up to LABLINK_FIRE_LEAD before their
    # time, and one whose agent is not yet known to hold commands (before its first
    # heartbeat saying so) waits in the scheduler until its time: killed then, it reached
    # no agent, whichever agent mode.
    assert {f[1] for f in fires} <= {"completed", ended, "interrupted", "running", "coalesced"}
    # A fire that found the previous measurement still running (the agent's round trip on a
    # busy machine) is skipped, as the default conflict policy says, and counted below.
    # Fires due while the scheduler was down were caught up or recorded as missed,
    # never silently dropped: every second between the first and last fire is accounted for.
    missed = rows(
        db,
        "SELECT COALESCE(SUM(missed_count), 0) FROM executions"
        " WHERE job_id = ? AND status = 'missed'",
        ticking,
    )[0][0]
    skipped = rows(
        db, "SELECT COUNT(*) FROM executions WHERE job_id = ? AND status = 'skipped'", ticking
    )[0][0]
    span = rows(
        db,
        "SELECT MIN(scheduled_time), MAX(scheduled_time) FROM executions WHERE job_id = ?",
        ticking,
    )[0]
    first_fire, last_fire = (datetime.fromisoformat(t) for t in span)
    # A coalesced record stands for every fire it merged (coalesced_count): a start slow
    # enough for three fires to fall due before the engine opened records two rows for them.
    ran = sum(f[2] if f[1] == "coalesced" else 1 for f in fires)
    accounted = ran + skipped + missed
    every = rows(
        db,
        "SELECT scheduled_time, status, missed_count FROM executions WHERE job_id = ?"
        " ORDER BY scheduled_time",
        ticking,
    )
    assert accounted == round((last_fire - first_fire).total_seconds()) + 1, every
