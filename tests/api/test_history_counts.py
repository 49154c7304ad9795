"""Job history counts each execution once, under its own status.

``GET /api/scheduler/jobs/{id}/history`` used to count ``timed_out`` and ``interrupted``
inside ``failed``: after a crash it read ``failed: 1, interrupted: 1`` with no failed
execution, and summing the fields overcounted. Here one job goes through every ending, a
crash included, and the counts are checked against the executions themselves.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from lablink.clock import ManualClock
from lablink.instruments.execution import Outcome
from tests.support.harness import Harness, api_client

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
JOB: dict[str, Any] = {
    "name": "Every ending",
    "schedule_type": "measurement",
    "equipment_id": "power_supply_1",
    "parameters": {"command": "get_voltage"},
    "trigger_type": "interval",
    "interval_minutes": 10,
    "timeout_seconds": 700,
    "misfire_grace_time": 900,
}
STATUS_FIELD = {"completed": "successful"}
COUNTS = (
    "successful",
    "failed",
    "timed_out",
    "interrupted",
    "cancelled",
    "skipped",
    "missed",
    "coalesced",
    "blocked",
)


def minutes(n: float) -> datetime:
    return T0 + timedelta(minutes=n)


async def history(h: Harness, job_id: str) -> dict[str, Any]:
    async with api_client(h, auth=False) as client:
        response = await client.get(f"/api/scheduler/jobs/{job_id}/history")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()["history"]
    return body


def by_status(h: Harness, job_id: str) -> Counter[str]:
    return Counter(STATUS_FIELD.get(r["status"], r["status"]) for r in h.executions(job_id))


async def test_each_execution_counts_under_its_own_status(tmp_path: Path) -> None:
    path = tmp_path / "data" / "scheduler.db"
    clock = ManualClock(T0)
    h = await Harness(path, clock).start()
    h.executor.hold = True
    job_id = h.service.create_job(JOB, "alice")

    await h.at(minutes(10))  # fails
    (failing,) = h.executor.held()
    h.executor.release(failing, Outcome.failed("instrument_error", "-222,Data out of range"))
    await h.settle()
    await h.at(minutes(20))  # still running at 09:30, so that fire is skipped ...
    await h.at(minutes(30))
    await h.at(minutes(32))  # ... then it times out (timeout_seconds=700)
    await h.at(minutes(40))  # cancelled
    (cancelling,) = h.executor.held()
    assert await h.engine.cancel(job_id, cancelling, "operator")
    await h.settle()
    await h.at(minutes(50))  # completes
    (succeeding,) = h.executor.held()
    h.executor.release(succeeding)
    await h.settle()
    # Stalled until 10:35: 10:00 and 10:10 are beyond the 15-minute grace (missed), 10:20 is
    # within it (coalesced into the run of 10:30).
    await h.at(minutes(95))
    assert [r["status"] for r in h.executions(job_id)][-3:] == ["missed", "coalesced", "running"]

    record = await history(h, job_id)
    assert record["in_progress"] == 1
    assert sum(record[k] for k in COUNTS) + record["in_progress"] == record["total_executions"]

    await h.crash()  # the 10:30 run is left running: interrupted on restart
    clock.set(minutes(96))
    h = await Harness(path, clock).start(prefix="b")
    record = await history(h, job_id)
    await h.close()

    expected = by_status(h, job_id)
    assert expected == {
        "failed": 1,
        "timed_out": 1,
        "cancelled": 1,
        "skipped": 1,
        "successful": 1,
        "missed": 1,
        "coalesced": 1,
        "interrupted": 1,
    }
    assert {k: record[k] for k in COUNTS} == {k: expected[k] for k in COUNTS}
    # The guide's fields keep their names; "failed" is only the executions that failed.
    assert (record["total_executions"], record["successful"], record["failed"]) == (8, 1, 1)
    assert record["in_progress"] == 0
    assert sum(record[k] for k in COUNTS) == record["total_executions"]
    assert record["last_status"] == "interrupted"


async def test_a_timeout_is_not_counted_as_a_failure_and_failed_today_says_what_it_counts(
    harness: Harness, client: Any
) -> None:
    h = harness
    h.executor.hold = True
    job_id = h.service.create_job(JOB, "alice")
    await h.at(minutes(10))
    (failing,) = h.executor.held()
    h.executor.release(failing, Outcome.failed("instrument_error", "boom"))
    await h.settle()
    await h.at(minutes(20))
    await h.at(minutes(32))  # timed out (the 09:30 fire was skipped)
    record = (await client.get(f"/api/scheduler/jobs/{job_id}/history")).json()["history"]
    # A timeout is not also a failure in the history (it was counted in both before).
    assert (record["failed"], record["timed_out"], record["skipped"]) == (1, 1, 1)
    assert record["total_executions"] == 3
    stats = (await client.get("/api/scheduler/statistics")).json()["statistics"]
    assert stats["failed_today_includes"] == ["failed", "timed_out", "interrupted"]
    assert stats["failed_today"] == 2
    assert stats["today_by_status"]["failed"] == 1
    assert stats["today_by_status"]["timed_out"] == 1
    assert stats["total_executions_today"] == sum(stats["today_by_status"].values())
