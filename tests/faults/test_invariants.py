"""The fault battery's own check can fail: each invariant is broken once on purpose."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from lablink.eventstore.sqlite import connect
from tests.support.harness import Harness
from tests.support.tamper import drop_triggers
from tests.support.views import views_db

BODY: dict[str, Any] = {
    "name": "Every minute",
    "schedule_type": "measurement",
    "equipment_id": "power_supply_1",
    "trigger_type": "interval",
    "interval_minutes": 1,
    "parameters": {"command": "get_voltage"},
}


async def _run_a_while(harness: Harness) -> str:
    job_id = harness.service.create_job(BODY, "tester")
    harness.engine.plan(job_id)
    for _ in range(3):
        await harness.at(harness.clock.now() + timedelta(minutes=1))
        for execution_id in harness.executor.held():
            harness.executor.release(execution_id)
        await harness.settle()
    return job_id


async def test_a_sound_log_passes(harness: Harness, invariants: Any) -> None:
    job_id = await _run_a_while(harness)
    await invariants(harness.path, acknowledged_jobs=[job_id])


@pytest.mark.parametrize(
    ("damage", "complaint"),
    [
        ("DELETE FROM events WHERE position = 2", "gaps"),
        ("UPDATE jobs SET name = 'edited behind the log'", "replay differs"),
        (
            "INSERT INTO events (event_id, stream_id, version, type, occurred_at, actor,"
            " correlation_id, payload) SELECT event_id || 'x', stream_id, version + 1000, type,"
            " occurred_at, actor, correlation_id, payload FROM events"
            " WHERE type = 'execution.started' LIMIT 1",
            "started more than once",
        ),
    ],
)
async def test_each_broken_invariant_is_caught(
    harness: Harness, invariants: Any, tmp_path: Path, damage: str, complaint: str
) -> None:
    job_id = await _run_a_while(harness)
    # The views' file with the log attached (writable): a damage to either is found there.
    conn = connect(views_db(harness.path))
    conn.execute("ATTACH DATABASE ? AS log", (str(harness.path),))
    drop_triggers(conn, "log")
    conn.execute(damage)
    conn.close()
    with pytest.raises(AssertionError, match=complaint):
        await invariants(harness.path, acknowledged_jobs=[job_id])


async def test_a_lost_acknowledged_job_is_caught(harness: Harness, invariants: Any) -> None:
    await _run_a_while(harness)
    with pytest.raises(AssertionError, match="missing from the log"):
        await invariants(harness.path, acknowledged_jobs=["job_never_written"])
