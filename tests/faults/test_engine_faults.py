"""Finding 2: one failed append stopped all firing for good, silently.

Faults are real: the SQLite file is capped with ``PRAGMA max_page_count`` on the store's own
connection (the cap is per connection; raising it again "frees the disk"), so appends fail
with SQLite's own "database or disk is full". The engine must keep every fire, show the
failure in health, back off, raise the ``scheduler_fault`` alarm after its grace period, and
resume by itself: fires that fell due meanwhile follow the job's misfire and coalesce rules,
exactly as after downtime.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from lablink.application import JobService
from lablink.clock import SystemClock
from lablink.domain.firing import decide_fire
from lablink.domain.job import JobState, fold
from lablink.errors import RecordingFailed
from lablink.events import (
    AlarmRaised,
    ExecutionCancelled,
    ExecutionFailed,
    ExecutionInterrupted,
    ExecutionProgressed,
    ExecutionQueued,
    ExecutionRequested,
    ExecutionSkipped,
    ExecutionSucceeded,
    ExecutionTimedOut,
    RecordedEvent,
)
from lablink.eventstore.sqlite import SQLiteEventStore
from lablink.health import Health
from lablink.ids import SequentialIds
from lablink.logstore import open_store
from lablink.projections.jobs import read_snapshot
from lablink.projections.reading import reading_views
from lablink.repository import JobRepository
from lablink.scheduler.engine import Engine, recovery_lists
from lablink.supervision import Supervisor
from tests.support.eventually import eventually
from tests.support.harness import GateExecutor, Harness, api_client
from tests.support.views import view_rows

EVERY_SECOND: dict[str, Any] = {
    "name": "Every second",
    "schedule_type": "measurement",
    "equipment_id": "power_supply_1",
    "trigger_type": "interval",
    "interval_seconds": 1,
    "parameters": {"command": "get_voltage"},
}
UNCAPPED = 1_073_741_823
# What is recorded at an instant besides a fire's decision: ends, progress, alarms.
NOT_FIRE = (
    ExecutionProgressed,
    ExecutionSucceeded,
    ExecutionFailed,
    ExecutionTimedOut,
    ExecutionCancelled,
    ExecutionInterrupted,
    AlarmRaised,
)


def cap(store: SQLiteEventStore) -> None:
    """The disk is full: no page beyond those the file has now."""
    with store.lock:
        (pages,) = store.conn.execute("PRAGMA page_count").fetchone()
        store.conn.execute(f"PRAGMA max_page_count = {pages}")


def uncap(store: SQLiteEventStore) -> None:
    with store.lock:
        store.conn.execute(f"PRAGMA max_page_count = {UNCAPPED}")


def read_only(store: SQLiteEventStore, on: bool = True) -> None:
    """The log refuses every write at once (SQLite's ``query_only`` on the store's own
    connection: "attempt to write a readonly database"), where a capped file still takes
    the small writes that fit in its pages' free space."""
    with store.lock:
        store.conn.execute(f"PRAGMA query_only = {int(on)}")


async def quiet(harness: Harness) -> None:
    """Let execution tasks run until each is done, held at its gate, or waiting for the log
    to take its outcome (``settle`` would wait for those for ever while the log is full)."""
    engine = harness.engine

    def busy() -> int:
        held = set(harness.executor.held())
        return len([t for e, t in engine.tasks().items() if not t.done() and e not in held])

    await eventually(
        busy,
        until=lambda count: count <= engine.waiting_to_record,
        interval=0.001,  # appends are written in a worker thread
        what="execution tasks come to rest",
    )


async def fill_until_refused(harness: Harness) -> datetime:
    """Cap the log, then let 1 s fires come until one cannot be recorded; returns when."""
    cap(harness.store)
    for _ in range(300):
        harness.clock.advance(1)
        try:
            await harness.engine.turn()
        except RecordingFailed as exc:
            cause = exc.cause
            break
        await quiet(harness)
    else:
        raise AssertionError("the capped log never refused a fire")
    assert "database or disk is full" in str(cause)
    return harness.clock.now()


def fire_decision(
    harness: Harness, job_id: str, at: datetime
) -> tuple[list[RecordedEvent], JobState]:
    """The events of the fire decided at ``at`` and the job's state just before them (what
    was recorded at that instant, less the ends of executions and their progress)."""
    stream = harness.store.read_stream(job_id)
    now = [r for r in stream if r.occurred_at == at]
    begin = next(i for i, r in enumerate(now) if not isinstance(r.event, NOT_FIRE))
    end = next(
        (i for i, r in enumerate(now) if i > begin and isinstance(r.event, NOT_FIRE)), len(now)
    )
    fired = now[begin:end]
    before = [r.event for r in stream if r.version < fired[0].version]
    return fired, fold(JobState(job_id=job_id), before)


def shape(events: list[Any]) -> list[tuple[Any, ...]]:
    return [
        (
            type(e).__struct_config__.tag,
            getattr(e, "scheduled_time", None),
            getattr(e, "missed_count", None),
            getattr(e, "coalesced_count", None),
            getattr(e, "window_start", None),
            getattr(e, "window_end", None),
            getattr(e, "trigger_info", None),
        )
        for e in events
    ]


def fires_covered(events: list[Any]) -> int:
    """How many due fires a decision accounts for: its missed or coalesced records stand
    for several each, a run, a skip or a queued run for one."""
    return sum(
        getattr(e, "missed_count", 0)
        + getattr(e, "coalesced_count", 0)
        + isinstance(e, ExecutionRequested | ExecutionSkipped | ExecutionQueued)
        for e in events
    )


async def test_a_full_log_keeps_every_fire_and_they_follow_the_misfire_rules(
    harness: Harness, invariants: Any
) -> None:
    service, engine, clock = harness.service, harness.engine, harness.clock
    # Runs are held (and may overlap): the only writes the engine must make are its fires,
    # so the first one the capped log refuses is a fire, whose timer must not be lost.
    harness.executor.hold = True
    overlap = {"conflict_policy": "replace", "max_instances": 100}
    coalescing = service.create_job({**EVERY_SECOND, **overlap, "name": "coalescing"}, "tester")
    each = service.create_job(
        {**EVERY_SECOND, **overlap, "name": "each", "coalesce": False, "misfire_grace_time": 3},
        "tester",
    )
    for _ in range(3):
        clock.advance(1)
        await engine.turn()
        await harness.settle()

    refused_at = await fill_until_refused(harness)
    # The log is full for ten more seconds: every turn fails, and the fires are kept.
    for _ in range(10):
        clock.advance(1)
        with pytest.raises(RecordingFailed):
            await engine.turn()
        await quiet(harness)
        for job_id in (coalescing, each):
            planned = engine.timers.planned(job_id)
            assert planned is not None, "a fire's timer was lost"
            assert planned <= clock.now()
    reading = engine.probe()
    assert reading.state == "failing"
    assert "database or disk is full" in reading.reason
    assert reading.details["failures"] >= 11
    assert datetime.fromisoformat(reading.details["failing_since"]) <= refused_at
    health = engine.health.get("scheduler")
    assert health is not None
    assert health.state == "failing"

    uncap(harness.store)
    clock.advance(1)
    resumed_at = clock.now()
    assert await engine.turn() >= 2
    await harness.settle()
    assert engine.probe().state == "ok"
    assert engine.waiting_to_record == 0

    for job_id in (coalescing, each):
        fired, state = fire_decision(harness, job_id, resumed_at)
        # Exactly what a scheduler coming back from downtime decides at that instant.
        expected = decide_fire(state, resumed_at, SequentialIds("oracle").execution_id)
        assert shape([r.event for r in fired]) == shape(expected.events)
        # Nothing of the job was recorded while the log was full.
        stream = harness.store.read_stream(job_id)
        assert not [r for r in stream if refused_at < r.occurred_at < resumed_at]

        # The whole window the log was full is accounted for, in one or two records
        # (coalesced within the grace time, missed beyond it), and a run follows.
        assert fires_covered([r.event for r in fired]) >= 11
        assert any(getattr(r.event, "trigger_info", None) == "catch_up" for r in fired)

    # Firing goes on as before.
    for _ in range(3):
        clock.advance(1)
        await engine.turn()
        await harness.settle()
    assert harness.executions(coalescing)[-1]["trigger_info"] == "scheduled"
    assert len(harness.executor.held()) < 100
    await harness.close()
    await invariants(harness.path, acknowledged_jobs=[coalescing, each])


async def test_an_outcome_that_cannot_be_recorded_waits_for_the_log(
    harness: Harness, invariants: Any
) -> None:
    """The end of an execution is a fact that must not be lost: it waits, then is recorded
    with the instant it really ended, before any fire is decided."""
    service, engine, clock, executor = (
        harness.service,
        harness.engine,
        harness.clock,
        harness.executor,
    )
    executor.hold = True
    job_id = service.create_job({**EVERY_SECOND, "interval_seconds": 60}, "tester")
    # A capped file still takes writes that fit in its pages' free space: run executions
    # until the end of one is refused.
    for _ in range(100):
        clock.advance(60)
        await engine.turn()
        await harness.settle()
        (execution_id,) = executor.held()
        cap(harness.store)
        clock.advance(1)
        ended_at = clock.now()
        executor.release(execution_id)
        await quiet(harness)
        if engine.waiting_to_record:
            break
        uncap(harness.store)
    assert engine.waiting_to_record == 1
    assert harness.executions(job_id)[-1]["status"] == "running"
    clock.advance(5)
    with pytest.raises(RecordingFailed):
        await engine.turn()

    uncap(harness.store)
    clock.advance(1)
    await engine.turn()
    await harness.settle()
    assert engine.waiting_to_record == 0
    (row,) = harness.rows(
        "SELECT status, completed_at FROM executions WHERE execution_id = ?", execution_id
    )
    assert row["status"] == "completed"
    assert row["completed_at"].startswith(ended_at.replace(tzinfo=None).isoformat())
    await harness.close()
    await invariants(harness.path, acknowledged_jobs=[job_id])


def _started(db: Path, job_id: str) -> int:
    (row,) = view_rows(
        db,
        "SELECT COUNT(*) AS n FROM executions WHERE job_id = ? AND status = 'completed'",
        job_id,
    )
    return int(row["n"])


@pytest.mark.slow
async def test_the_live_loop_resumes_by_itself_once_the_disk_is_freed(
    tmp_path: Path, invariants: Any
) -> None:
    db = tmp_path / "data" / "scheduler.db"
    clock = SystemClock()
    store = open_store(db)

    def snapshot(job_id: str) -> Any:
        with reading_views(store) as views:
            return read_snapshot(views, job_id)

    jobs = JobRepository(store, snapshots=snapshot)
    service = JobService(store, clock, default_timezone="UTC", repository=jobs)
    health = Health(clock)
    supervisor = Supervisor(health, initial_backoff=0.2, max_backoff=1.0)
    engine = Engine(store, clock, GateExecutor(), jobs=jobs, supervisor=supervisor)
    with reading_views(store) as views:
        active, unfinished = recovery_lists(views)
    await engine.start(active, unfinished)
    try:
        job_ids = [service.create_job({**EVERY_SECOND, "name": f"job {n}"}, "t") for n in (1, 2)]
        await eventually(lambda: all(_started(db, j) >= 2 for j in job_ids), what="first runs")

        cap(store)
        watch = supervisor.watches["task.engine"]

        def engine_failing() -> bool:
            entry = health.get("task.engine")
            return entry is not None and entry.state == "failing" and watch.failures >= 3

        await eventually(engine_failing, what="task.engine failing three times")
        entry = health.get("task.engine")
        assert entry is not None
        assert entry.since is not None
        assert "database or disk is full" in entry.reason
        assert entry.details["last_error"] == entry.reason
        scheduler = health.get("scheduler")
        assert scheduler is not None
        assert scheduler.state == "failing"
        before = {j: _started(db, j) for j in job_ids}

        uncap(store)
        await eventually(
            lambda: all(_started(db, j) >= before[j] + 3 for j in job_ids), what="firing resumed"
        )
        entry = health.get("task.engine")
        assert entry is not None
        assert entry.state == "ok"
        scheduler = health.get("scheduler")
        assert scheduler is not None
        assert scheduler.state == "ok"
        # Each job's first fire after the fault is the catch-up of what fell due meanwhile.
        for job_id in job_ids:
            kinds = [
                r["trigger_info"]
                for r in view_rows(
                    db,
                    "SELECT trigger_info FROM executions WHERE job_id = ? AND status != 'missed'"
                    " ORDER BY seq",
                    job_id,
                )
            ]
            assert "catch_up" in kinds
    finally:
        await engine.aclose()
        await supervisor.aclose()
        store.close()
    await invariants(db, acknowledged_jobs=job_ids)


# -- the scheduler_fault alarm --------------------------------------------------------------------


async def _alarms(harness: Harness) -> list[dict[str, Any]]:
    async with api_client(harness, auth=False) as client:
        response = await client.get("/api/alarms")
        assert response.status_code == 200, response.text
        return [a for a in response.json()["alarms"] if a["kind"] == "scheduler_fault"]


async def test_fault_alarm_is_recorded_once_the_log_takes_writes_marked_with_its_start(
    harness: Harness, invariants: Any
) -> None:
    """The log itself cannot be written: the alarm cannot be raised during the fault. It is
    recorded once the fault clears, with when the fault started and ended, and cleared."""
    service, engine, clock = harness.service, harness.engine, harness.clock
    job_id = service.create_job(EVERY_SECOND, "tester")
    clock.advance(1)
    await engine.turn()
    await harness.settle()
    read_only(harness.store)
    clock.advance(1)
    started = clock.now()
    with pytest.raises(RecordingFailed):
        await engine.turn()
    assert engine.fault.since == started
    for _ in range(40):  # past the 30 s grace
        clock.advance(1)
        with pytest.raises(RecordingFailed):
            await engine.turn()
    assert engine.fault_alarm is not None
    assert engine.fault_alarm.raised is None
    assert await _alarms(harness) == []

    read_only(harness.store, False)
    clock.advance(1)
    ended = clock.now()
    await engine.turn()
    await harness.settle()
    (alarm,) = await _alarms(harness)
    assert alarm["severity"] == "critical"
    assert alarm["state"] == "cleared"
    assert alarm["error"]["fault_started_at"] == started.isoformat()
    assert alarm["error"]["fault_ended_at"] == ended.isoformat()
    assert alarm["error"]["recorded_after_fault"] is True
    assert alarm["error"]["failures"] == 41
    assert "readonly database" in alarm["error"]["last_error"]
    assert started.isoformat() in alarm["message"]
    await harness.close()
    await invariants(harness.path, acknowledged_jobs=[job_id])


async def test_fault_alarm_is_raised_live_when_the_log_can_take_it_and_cleared_after(
    harness: Harness, invariants: Any
) -> None:
    """The engine's own write path is down (its group committer stopped) while the log can
    be written: the alarm is raised as soon as the grace period is over, and cleared when
    the engine records again. Not before the grace period."""
    service, engine, clock = harness.service, harness.engine, harness.clock
    job_id = service.create_job(EVERY_SECOND, "tester")
    clock.advance(1)
    await engine.turn()
    await harness.settle()

    await engine.committer.aclose()
    for _ in range(29):
        clock.advance(1)
        with pytest.raises(RecordingFailed):
            await engine.turn()
    assert await _alarms(harness) == []  # within the grace period: no alarm yet
    clock.advance(2)
    with pytest.raises(RecordingFailed):
        await engine.turn()
    (alarm,) = await _alarms(harness)
    assert (alarm["severity"], alarm["state"]) == ("critical", "active")
    assert alarm["error"]["recorded_after_fault"] is False
    assert "the group committer is not running" in alarm["error"]["last_error"]

    engine.committer.start(engine.supervisor)
    clock.advance(1)
    await engine.turn()
    await harness.settle()
    (alarm,) = await _alarms(harness)
    assert alarm["state"] == "cleared"
    assert alarm["cleared"]["by"] == "scheduler"
    await harness.close()
    await invariants(harness.path, acknowledged_jobs=[job_id])


async def test_a_short_fault_raises_no_alarm(harness: Harness, invariants: Any) -> None:
    service, engine, clock = harness.service, harness.engine, harness.clock
    job_id = service.create_job(EVERY_SECOND, "tester")
    read_only(harness.store)
    for _ in range(29):  # a fault of 28 s, under the 30 s grace
        clock.advance(1)
        with pytest.raises(RecordingFailed):
            await engine.turn()
    read_only(harness.store, False)
    clock.advance(1)
    await engine.turn()
    await harness.settle()
    assert await _alarms(harness) == []
    await harness.close()
    await invariants(harness.path, acknowledged_jobs=[job_id])


# -- the scheduler health probe -------------------------------------------------------------------


async def test_scheduler_probe_reports_the_loop_age_and_a_stall(
    harness: Harness, invariants: Any
) -> None:
    engine, clock = harness.engine, harness.clock
    job_id = harness.service.create_job(EVERY_SECOND, "tester")
    harness.executor.hold = True
    clock.advance(1)
    await engine.turn()
    await harness.settle()
    reading = engine.probe()
    assert reading.state == "ok"
    assert reading.details["planned_jobs"] == 1
    assert reading.details["running_executions"] == 1
    assert reading.details["last_iteration_age_seconds"] == 0

    # With the loop running, a loop that stops turning shows: the manual clock moves on
    # and the probe is read before the loop has had a chance to turn.
    engine.start_loop()
    await eventually(lambda: engine.turns >= 3, what="the loop turning")
    clock.advance(10)
    reading = engine.probe()
    assert reading.state == "degraded"
    clock.advance(30)
    reading = engine.probe()
    assert reading.state == "failing"
    assert "has not turned for 40 s" in reading.reason
    await eventually(lambda: engine.probe().state == "ok", what="the loop turning again")
    await harness.close()
    await invariants(harness.path, acknowledged_jobs=[job_id])


async def test_run_now_on_a_full_log_answers_503_and_is_not_the_engines_fault(
    harness: Harness, invariants: Any
) -> None:
    """A client's command that cannot be recorded is answered at once (503, the storage
    error); it keeps nothing, and the scheduler's own health stays as its own work says."""
    harness.executor.hold = True  # runs stay running: nothing of the engine's own to write
    body = {**EVERY_SECOND, "enabled": False, "conflict_policy": "replace", "max_instances": 100}
    job_id = harness.service.create_job(body, "tester")
    cap(harness.store)
    async with api_client(harness, auth=False) as client:
        for _ in range(99):  # a capped file takes what fits in its pages' free space
            response = await client.post(f"/api/scheduler/jobs/{job_id}/run")
            if response.status_code != 200:
                break
            await quiet(harness)
        assert response.status_code == 503, response.text
        assert "database or disk is full" in response.json()["detail"]
    assert not harness.engine.fault.failing
    assert harness.engine.waiting_to_record == 0
    assert harness.engine.probe().state == "ok"
    uncap(harness.store)
    await harness.close()
    await invariants(harness.path, acknowledged_jobs=[job_id])
