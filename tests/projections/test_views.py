"""Projections read right after a write: jobs, executions, history and statistics rows."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from lablink.application import JobService
from lablink.clock import ManualClock
from lablink.events import (
    ExecutionError,
    ExecutionFailed,
    ExecutionMissed,
    ExecutionRequested,
    ExecutionsPruned,
    ExecutionStarted,
    ExecutionSucceeded,
    NewEvent,
)
from lablink.eventstore import ANY
from lablink.eventstore.sqlite import SQLiteEventStore
from lablink.logstore import LogStore

HOURLY: dict[str, Any] = {
    "name": "Hourly Voltage Check",
    "schedule_type": "measurement",
    "equipment_id": "power_supply_1",
    "trigger_type": "interval",
    "interval_hours": 1,
    "parameters": {"command": "get_voltage"},
    "tags": ["hourly"],
}


def rows(store: SQLiteEventStore, sql: str, *args: Any) -> list[dict[str, Any]]:
    assert isinstance(store, LogStore)  # opened with its views
    cursor = store.views.conn.execute(sql, args)
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]


def record(store: SQLiteEventStore, clock: ManualClock, job_id: str, *events: Any) -> None:
    store.append(
        job_id,
        store.stream_version(job_id),
        [
            NewEvent(
                event=e,
                actor="scheduler",
                occurred_at=clock.now(),
                correlation_id=e.execution_id,
            )
            for e in events
        ],
    )


def run_once(
    store: SQLiteEventStore,
    clock: ManualClock,
    job_id: str,
    execution_id: str,
    *,
    seconds: float,
    ok: bool = True,
) -> None:
    fire = clock.now()
    record(
        store,
        clock,
        job_id,
        ExecutionRequested(
            job_id=job_id,
            execution_id=execution_id,
            scheduled_time=fire,
            actual_time=fire,
            trigger_info="scheduled",
        ),
        ExecutionStarted(job_id=job_id, execution_id=execution_id, started_at=fire),
    )
    end = clock.advance(seconds)
    final: Any = (
        ExecutionSucceeded(
            job_id=job_id,
            execution_id=execution_id,
            completed_at=end,
            started_at=fire,
            result={"value": 5.0, "unit": "V"},
        )
        if ok
        else ExecutionFailed(
            job_id=job_id,
            execution_id=execution_id,
            completed_at=end,
            started_at=fire,
            error=ExecutionError(type="instrument", message="-222,Data out of range", code=-222),
        )
    )
    record(store, clock, job_id, final)


def test_jobs_row_has_every_field_right_after_create(
    store: SQLiteEventStore, service: JobService, clock: ManualClock
) -> None:
    job_id = service.create_job(HOURLY, actor="alice")
    (row,) = rows(store, "SELECT * FROM jobs")
    assert row["job_id"] == job_id
    assert row["name"] == "Hourly Voltage Check"
    assert row["enabled"] == 1
    assert row["status"] == "active"
    assert row["version"] == 1
    assert row["created_by"] == "alice"
    assert json.loads(row["parameters"]) == {"command": "get_voltage"}
    assert json.loads(row["tags"]) == ["hourly"]
    assert row["timezone"] == "Europe/Berlin"
    assert row["next_run_time"] == "2026-03-02T10:00:00.000000Z"


def test_jobs_row_follows_pause_resume_update_delete(
    store: SQLiteEventStore, service: JobService, clock: ManualClock
) -> None:
    job_id = service.create_job(HOURLY, actor="alice")
    service.pause_job(job_id, actor="bob")
    (row,) = rows(store, "SELECT enabled, status, next_run_time, version FROM jobs")
    assert row == {"enabled": 0, "status": "paused", "next_run_time": None, "version": 2}
    clock.advance(timedelta(hours=2, minutes=30))
    service.resume_job(job_id, actor="bob")
    service.update_job(job_id, {"name": "Renamed"}, actor="bob", expected_version=3)
    (row,) = rows(store, "SELECT name, status, next_run_time, version, updated_at FROM jobs")
    assert row == {
        "name": "Renamed",
        "status": "active",
        "next_run_time": "2026-03-02T12:00:00.000000Z",
        "version": 4,
        "updated_at": "2026-03-02T11:30:00.000000Z",
    }
    service.delete_job(job_id, actor="bob")
    assert rows(store, "SELECT * FROM jobs") == []
    assert rows(store, "SELECT * FROM job_history") == []


def test_executions_history_and_statistics(
    store: SQLiteEventStore, service: JobService, clock: ManualClock
) -> None:
    job_id = service.create_job(HOURLY, actor="alice")
    clock.advance(timedelta(hours=1))
    run_once(store, clock, job_id, "exec_1", seconds=1.5)
    clock.advance(timedelta(hours=1))
    run_once(store, clock, job_id, "exec_2", seconds=0.5, ok=False)

    executions = rows(store, "SELECT * FROM executions ORDER BY seq")
    assert [e["execution_id"] for e in executions] == ["exec_1", "exec_2"]
    first, second = executions
    assert first["status"] == "completed"
    assert first["job_name"] == "Hourly Voltage Check"
    assert first["equipment_id"] == "power_supply_1"
    assert first["scheduled_time"] == "2026-03-02T10:00:00.000000Z"
    assert first["duration_seconds"] == 1.5
    assert json.loads(first["result"]) == {"value": 5.0, "unit": "V"}
    assert second["status"] == "failed"
    assert json.loads(second["error"])["code"] == -222

    (history,) = rows(store, "SELECT * FROM job_history")
    assert history["total_executions"] == 2
    assert (history["successful"], history["failed"]) == (1, 1)
    assert history["duration_total"] / history["duration_count"] == 1.0
    assert history["last_execution_id"] == "exec_2"
    assert history["last_status"] == "failed"

    (job,) = rows(store, "SELECT execution_count, last_fire_time, next_run_time FROM jobs")
    assert job == {
        "execution_count": 2,
        "last_fire_time": "2026-03-02T11:00:01.500000Z",
        "next_run_time": "2026-03-02T12:00:00.000000Z",
    }
    counts = {
        (r["status"]): r["count"]
        for r in rows(store, "SELECT status, SUM(count) AS count FROM stats_buckets GROUP BY 1")
    }
    assert counts == {"pending": 0, "running": 0, "completed": 1, "failed": 1}
    assert rows(store, "SELECT * FROM stats_open") == []


def test_missed_record_and_running_count(
    store: SQLiteEventStore, service: JobService, clock: ManualClock
) -> None:
    job_id = service.create_job(HOURLY, actor="alice")
    start = clock.now()
    clock.advance(timedelta(days=7))
    record(
        store,
        clock,
        job_id,
        ExecutionMissed(
            job_id=job_id,
            execution_id="exec_m",
            scheduled_time=start + timedelta(hours=1),
            actual_time=clock.now(),
            missed_count=167,
            window_start=start + timedelta(hours=1),
            window_end=start + timedelta(hours=167),
            reason="scheduler was down",
        ),
        ExecutionRequested(
            job_id=job_id,
            execution_id="exec_c",
            scheduled_time=start + timedelta(hours=168),
            actual_time=clock.now(),
            trigger_info="catch_up",
        ),
        ExecutionStarted(job_id=job_id, execution_id="exec_c", started_at=clock.now()),
    )
    missed, running = rows(store, "SELECT * FROM executions ORDER BY seq")
    assert (missed["status"], missed["missed_count"]) == ("missed", 167)
    assert running["status"] == "running"
    assert rows(store, "SELECT status FROM stats_open") == [{"status": "running"}]
    (job,) = rows(store, "SELECT running_count, next_run_time FROM jobs")
    assert job == {"running_count": 1, "next_run_time": "2026-03-09T10:00:00.000000Z"}


def test_pruning_removes_old_rows_but_keeps_totals(
    store: SQLiteEventStore, service: JobService, clock: ManualClock
) -> None:
    job_id = service.create_job(HOURLY, actor="alice")
    clock.advance(timedelta(hours=1))
    run_once(store, clock, job_id, "exec_old", seconds=1)
    clock.advance(timedelta(days=40))
    run_once(store, clock, job_id, "exec_new", seconds=1)
    store.append(
        "retention",
        ANY,
        [
            NewEvent(
                event=ExecutionsPruned(cutoff=clock.now() - timedelta(days=30), days=30),
                actor="retention",
                occurred_at=clock.now(),
            )
        ],
    )
    assert [r["execution_id"] for r in rows(store, "SELECT execution_id FROM executions")] == [
        "exec_new"
    ]
    (history,) = rows(store, "SELECT total_executions, successful FROM job_history")
    assert history == {"total_executions": 2, "successful": 2}
    (job,) = rows(store, "SELECT execution_count FROM jobs")
    assert job["execution_count"] == 2


def test_projections_catch_up_after_reopen(db_path: Any, clock: ManualClock) -> None:
    from lablink.logstore import open_store

    plain = SQLiteEventStore(db_path)
    service = JobService(plain, clock, default_timezone="UTC")
    # Written without projections attached (as by a crash between versions).
    job_id = service.create_job(HOURLY, actor="alice")
    plain.close()
    reopened = open_store(db_path)
    assert [r["job_id"] for r in rows(reopened, "SELECT job_id FROM jobs")] == [job_id]
    reopened.close()


def test_views_made_by_another_version_are_rebuilt_on_open(
    db_path: Any, clock: ManualClock
) -> None:
    from lablink.logstore import open_store

    store = open_store(db_path)
    JobService(store, clock, default_timezone="UTC").create_job(HOURLY, actor="alice")
    with store.views.write_lock:
        store.views.conn.execute("DELETE FROM jobs")  # a stale view...
        store.views.conn.execute(
            "UPDATE projection_meta SET value = 'older-version' WHERE key = 'fingerprint'"
        )  # ...of old
    store.close()
    reopened = open_store(db_path)
    assert len(rows(reopened, "SELECT job_id FROM jobs")) == 1
    (fingerprint,) = reopened.views.conn.execute(
        "SELECT value FROM projection_meta WHERE key = 'fingerprint'"
    ).fetchone()
    assert fingerprint != "older-version"
    reopened.close()
