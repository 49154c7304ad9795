"""Fires decided ahead (``Engine.fire_lead``, ``LABLINK_FIRE_LEAD``): a fire of an idle job
that falls within the lead is decided and recorded before its time, as fired at its time, and
handed to an executor that starts what it is given (in-process, no-op) only at that time. A
job with something running is decided at its time, so its conflict policy sees that instant.
The manual clock decides; the hold itself is real time (a tenth of a second)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from lablink.clock import SystemClock
from lablink.instruments.execution import ExecutionRequest, Outcome, ProgressReport
from tests.support.eventually import eventually
from tests.support.harness import GateExecutor, Harness
from tests.support.series import MEASUREMENT

BASE = MEASUREMENT  # an hourly measurement
TEN = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
LEAD = timedelta(seconds=0.2)


def z(instant: datetime) -> str:
    return instant.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def runs(h: Harness, job_id: str) -> list[dict[str, Any]]:
    return h.rows(
        "SELECT execution_id, status, trigger_info, scheduled_time, started_at, dispatched_at"
        " FROM executions WHERE job_id = ? ORDER BY seq",
        job_id,
    )


async def test_a_fire_within_the_lead_is_recorded_ahead_and_handed_on_at_its_time(
    harness: Harness,
) -> None:
    h = harness
    h.engine.fire_lead = LEAD
    job = h.service.create_job(BASE, "alice")
    h.engine.plan(job)
    assert await h.at(TEN - timedelta(seconds=0.3)) == 0  # before the lead: nothing

    h.clock.set(TEN - timedelta(seconds=0.1))
    assert await h.engine.tick() == 1
    (run,) = runs(h, job)
    # On record before its time, as fired at its time; the executor has nothing yet.
    assert (run["status"], run["scheduled_time"], run["started_at"]) == (
        "running",
        z(TEN),
        z(TEN),
    )
    assert h.executor.requests == []
    assert h.engine.timers.planned(job) == TEN + timedelta(hours=1)

    h.clock.set(TEN)  # the hold is real time: the clock reads the fire's time when it ends
    await h.settle()
    (request,) = h.executor.requests
    assert request.scheduled_time == TEN
    (run,) = runs(h, job)
    assert (run["status"], run["started_at"], run["dispatched_at"]) == ("completed", z(TEN), z(TEN))


async def test_a_busy_job_is_decided_at_its_time_not_ahead(harness: Harness) -> None:
    h = harness
    h.engine.fire_lead = LEAD
    job = h.service.create_job(BASE, "alice")
    h.engine.plan(job)
    h.executor.hold = True
    h.clock.set(TEN - timedelta(seconds=30))  # running at TEN, within its timeout
    manual = await h.engine.run_now(job)
    await h.settle()
    assert h.executor.held() == [manual]

    h.clock.set(TEN - timedelta(seconds=0.1))
    assert await h.engine.tick() == 1  # the timer, taken at its lead
    assert [r["execution_id"] for r in runs(h, job)] == [manual]  # nothing decided ahead
    assert h.engine.timers.planned(job) == TEN  # and it waits for its time
    assert await h.engine.tick() == 0  # without spinning

    assert await h.at(TEN) == 1
    # Its conflict policy (skip) saw the run-now still running at the fire's time.
    fired = [(r["status"], r["scheduled_time"]) for r in runs(h, job)][1:]
    assert fired == [("skipped", z(TEN))]
    h.executor.release(manual)


async def test_without_a_lead_nothing_is_decided_before_its_time(harness: Harness) -> None:
    h = harness
    assert h.engine.fire_lead == timedelta(0)  # the engine's default; `lablink serve` sets it
    job = h.service.create_job(BASE, "alice")
    h.engine.plan(job)
    assert await h.at(TEN - timedelta(microseconds=1)) == 0
    assert runs(h, job) == []
    assert await h.at(TEN) == 1


class Stamped(GateExecutor):
    """Notes the real instant each request reached it."""

    def __init__(self) -> None:
        super().__init__()
        self.reached: list[tuple[ExecutionRequest, datetime]] = []

    async def execute(self, request: ExecutionRequest, progress: ProgressReport) -> Outcome:
        self.reached.append((request, datetime.now(UTC)))
        return await super().execute(request, progress)


async def test_on_the_real_clock_no_fire_is_handed_on_before_its_time(tmp_path: Path) -> None:
    """The loop on the SystemClock with a lead: every fire reaches the executor at or after
    its scheduled time, whatever the machine's load made of the decisions."""
    h = Harness(tmp_path / "scheduler.db", SystemClock())  # type: ignore[arg-type]
    h.executor = executor = Stamped()
    await h.start()
    try:
        h.engine.fire_lead = timedelta(seconds=0.3)
        jobs = [
            h.service.create_job(
                {**BASE, "name": f"every second {n}", "interval_hours": None,
                 "interval_seconds": 1},
                "alice",
            )
            for n in range(3)
        ]  # fmt: skip
        for job in jobs:
            h.engine.plan(job)
        h.engine.start_loop()
        await eventually(lambda: len(executor.reached) >= 9, timeout=60)
        for request, reached in executor.reached:
            assert request.trigger_info == "scheduled"
            assert reached >= request.scheduled_time, (request.execution_id, reached)
    finally:
        await h.close()


async def test_a_job_idle_again_is_decided_ahead_again(harness: Harness) -> None:
    """Its fire was planned at its time while a run went on; once the run ends, the next
    fire is decided ahead again."""
    h = harness
    h.engine.fire_lead = LEAD
    job = h.service.create_job({**BASE, "timeout_seconds": 7200}, "alice")  # runs past 11:00
    h.engine.plan(job)
    h.executor.hold = True
    h.clock.set(TEN - timedelta(seconds=0.1))
    assert await h.engine.tick() == 1
    h.clock.set(TEN)
    await h.settle()  # handed on at its time, and held by the executor: the job is busy
    (running,) = h.executor.held()
    eleven = TEN + timedelta(hours=1)
    assert await h.at(eleven - timedelta(seconds=0.1)) == 0  # busy: planned at its time

    h.executor.hold = False
    h.executor.release(running)
    await h.settle()
    assert await h.engine.tick() == 1  # idle again: within the lead, decided now
    assert [(r["scheduled_time"], r["started_at"]) for r in runs(h, job)][1:] == [
        (z(eleven), z(eleven))
    ]


async def test_a_loop_behind_its_timers_decides_nothing_ahead(harness: Harness) -> None:
    """Overloaded (its oldest due timer long past), the loop plans fires at their time until
    it has caught up: deciding ahead would only add work to a loop that cannot keep up."""
    h = harness
    h.engine.fire_lead = LEAD
    job = h.service.create_job(BASE, "alice")
    h.engine.plan(job)
    assert await h.at(TEN + timedelta(seconds=2)) == 1  # two seconds late: behind
    eleven = TEN + timedelta(hours=1)
    assert h.engine.timers.planned(job) == eleven
    assert await h.at(eleven - timedelta(seconds=0.1)) == 0  # not taken within the lead

    assert await h.at(eleven) == 1  # on time: caught up
    assert await h.at(eleven + timedelta(hours=1) - timedelta(seconds=0.1)) == 1  # ahead again
