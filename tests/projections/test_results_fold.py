"""The results view: a job's series folded from the execution facts, live as a rebuild."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from lablink.clock import ManualClock
from lablink.events import (
    ExecutionDataRemoved,
    ExecutionDataStored,
    ExecutionError,
    ExecutionLateResult,
    ExecutionsPruned,
    NewEvent,
)
from lablink.eventstore import ANY
from lablink.eventstore.sqlite import connect
from lablink.instruments.execution import Outcome
from lablink.projections.reading import reading_views
from lablink.projections.results import iter_series, series_rows, series_shape
from lablink.projections.runner import Projector
from tests.support.harness import Harness
from tests.support.series import (
    ACQUISITION,
    MEASUREMENT,
    STATE_CAPTURE,
    ScriptedExecutor,
    captured,
    fire,
    measured,
    voltage,
)


def series(h: Harness, job_id: str, **options: Any) -> list[dict[str, Any]]:
    with reading_views(h.store) as conn:
        return [r for rows in iter_series(conn, job_id, **options) for r in rows]


def rebuilt_series(h: Harness, job_id: str, path: Path) -> list[dict[str, Any]]:
    conn = connect(path)
    try:
        Projector().rebuild(h.store, conn)
        return [r for rows in iter_series(conn, job_id, chunk=7) for r in rows]
    finally:
        conn.close()


async def started(tmp_path: Path, clock: ManualClock, executor: ScriptedExecutor) -> Harness:
    h = Harness(tmp_path / "data" / "scheduler.db", clock)
    h.executor = executor
    return await h.start()


async def test_a_measurement_jobs_100_fires_are_its_series_in_order(
    tmp_path: Path, clock: ManualClock
) -> None:
    h = await started(tmp_path, clock, ScriptedExecutor(measured))
    try:
        job = h.service.create_job(MEASUREMENT, "alice")
        other = h.service.create_job({**MEASUREMENT, "name": "other"}, "alice")
        h.engine.plan(job)
        h.engine.plan(other)
        times = await fire(h, job, 100)
        rows = series(h, job)
        assert [r["scheduled_time"] for r in rows] == times
        # Both jobs fired each hour: executions alternate between them; values by job.
        values = [r["value"] for r in rows]
        assert values == [voltage(n) for n in range(0, 200, 2)] or values == [
            voltage(n) for n in range(1, 200, 2)
        ]
        assert {r["unit"] for r in rows} == {"V"}
        assert {r["status"] for r in rows} == {"completed"}
        assert {r["kind"] for r in rows} == {"measurement"}
        assert all(r["started_at"] and r["completed_at"] for r in rows)
        assert len(series(h, other)) == 100
        # since inclusive, until exclusive, on the scheduled time.
        from datetime import datetime

        since = datetime.fromisoformat(times[10])
        until = datetime.fromisoformat(times[20])
        assert [r["scheduled_time"] for r in series(h, job, since=since, until=until)] == times[
            10:20
        ]
        with reading_views(h.store) as conn:
            page = series_rows(conn, job, after=(times[97], rows[97]["execution_id"]), limit=5)
        assert [r["scheduled_time"] for r in page] == times[98:]
        assert rebuilt_series(h, job, tmp_path / "rebuilt.db") == rows
    finally:
        await h.close()


async def test_a_state_captures_series_holds_its_readings_and_settings(
    tmp_path: Path, clock: ManualClock
) -> None:
    h = await started(tmp_path, clock, ScriptedExecutor(captured))
    try:
        job = h.service.create_job(STATE_CAPTURE, "alice")
        h.engine.plan(job)
        await fire(h, job, 5)
        rows = series(h, job)
        assert [r["fields"]["measurements.voltage"]["value"] for r in rows] == [
            voltage(n) for n in range(5)
        ]
        assert rows[3]["fields"]["measurements.current"] == {"value": 0.003, "unit": "A"}
        assert [r["fields"]["settings.output"]["value"] for r in rows] == [
            True,
            False,
            True,
            False,
            True,
        ]
        assert all(r["value"] is None for r in rows)
        with reading_views(h.store) as conn:
            kinds, names = series_shape(conn, job, None, None)
        assert kinds == ["state_capture"]
        assert names == [
            ("measurements.voltage", "V"),
            ("measurements.current", "A"),
            ("settings.voltage", "V"),
            ("settings.output", ""),
        ]
        assert rebuilt_series(h, job, tmp_path / "rebuilt.db") == rows
    finally:
        await h.close()


def failing_then_measuring(n: int) -> Outcome:
    if n == 1:
        return Outcome.failed("communication_error", "no answer")
    return measured(n)


async def test_failures_are_gaps_late_results_fill_them_and_retention_prunes(
    tmp_path: Path, clock: ManualClock
) -> None:
    h = await started(tmp_path, clock, ScriptedExecutor(failing_then_measuring))
    try:
        job = h.service.create_job(MEASUREMENT, "alice")
        h.engine.plan(job)
        await fire(h, job, 3)
        rows = series(h, job)
        assert [r["status"] for r in rows] == ["completed", "failed", "completed"]
        assert rows[1]["value"] is None
        assert rows[1]["late"] is False
        failed = rows[1]["execution_id"]
        now = clock.now()

        def append(stream: str, event: Any) -> None:
            h.store.append(
                stream,
                ANY,
                [
                    NewEvent(
                        event=event,
                        actor="scheduler",
                        occurred_at=now,
                        correlation_id=getattr(event, "execution_id", None),
                    )
                ],
            )

        # A late failure changes nothing; a late value fills the gap, once.
        append(
            job,
            ExecutionLateResult(
                job_id=job,
                execution_id=failed,
                received_at=now,
                status="failed",
                error=ExecutionError(type="stopped", message="stopped"),
            ),
        )
        assert series(h, job)[1]["value"] is None
        for value in (4.25, 9.0):
            append(
                job,
                ExecutionLateResult(
                    job_id=job,
                    execution_id=failed,
                    received_at=now,
                    status="completed",
                    result={"value": value, "unit": "V"},
                ),
            )
        late = series(h, job)[1]
        assert (late["status"], late["value"], late["unit"], late["late"]) == (
            "failed",
            4.25,
            "V",
            True,
        )
        # A completed execution's value is never replaced by a late one.
        first = rows[0]["execution_id"]
        append(
            job,
            ExecutionLateResult(
                job_id=job,
                execution_id=first,
                received_at=now,
                status="completed",
                result={"value": -1.0, "unit": "V"},
            ),
        )
        assert series(h, job)[0]["value"] == rows[0]["value"]
        assert rebuilt_series(h, job, tmp_path / "rebuilt.db") == series(h, job)

        # Retention drops what ended before its cut-off: here the first two.
        cutoff = rows[2]["completed_at"]
        from datetime import datetime

        append("retention", ExecutionsPruned(cutoff=datetime.fromisoformat(cutoff), days=0))
        assert [r["execution_id"] for r in series(h, job)] == [rows[2]["execution_id"]]
    finally:
        await h.close()


def acquired(n: int) -> Outcome:
    return Outcome.ok(
        equipment_id="scope_1",
        format="csv",
        data={
            "bucket": "LABLINK_DATA",
            "object": f"capture-{n}.csv",
            "file_name": f"capture-{n}.csv",
            "size": 1000 + n,
            "sha256": f"{n:064x}",
            "rows": 10 * n,
            "columns": [{"name": "time", "unit": "s"}, {"name": "ch1", "unit": "V"}],
            "sample_rate": 1000.0,
            "provenance": {"job_id": "x"},
            "status": "pending_upload" if n == 0 else "stored",
        },
    )


async def test_an_acquisitions_series_summarises_its_captures_and_follows_their_status(
    tmp_path: Path, clock: ManualClock
) -> None:
    h = await started(tmp_path, clock, ScriptedExecutor(acquired))
    try:
        job = h.service.create_job(ACQUISITION, "alice")
        h.engine.plan(job)
        await fire(h, job, 2)
        rows = series(h, job)
        assert [r["data"]["status"] for r in rows] == ["pending_upload", "stored"]
        assert rows[1]["data"] == {
            "object": "capture-1.csv",
            "file_name": "capture-1.csv",
            "size": 1001,
            "rows": 10,
            "sha256": f"{1:064x}",
            "status": "stored",
        }
        now = clock.now() + timedelta(seconds=1)
        for event in (
            ExecutionDataStored(
                job_id=job,
                execution_id=rows[0]["execution_id"],
                object="capture-0.csv",
                size=1000,
                sha256=f"{0:064x}",
                stored_at=now,
            ),
            ExecutionDataRemoved(
                job_id=job,
                execution_id=rows[1]["execution_id"],
                object="capture-1.csv",
                size=1001,
                removed_at=now,
                reason="bound",
            ),
        ):
            h.store.append(job, ANY, [NewEvent(event=event, actor="agent", occurred_at=now)])
        assert [r["data"]["status"] for r in series(h, job)] == ["stored", "removed"]
        assert rebuilt_series(h, job, tmp_path / "rebuilt.db") == series(h, job)
    finally:
        await h.close()


async def test_jobs_without_a_series_have_no_rows(tmp_path: Path, clock: ManualClock) -> None:
    h = await started(tmp_path, clock, ScriptedExecutor(measured))
    try:
        job = h.service.create_job(
            {**MEASUREMENT, "schedule_type": "command", "parameters": {"command": "output_on"}},
            "alice",
        )
        h.engine.plan(job)
        await fire(h, job, 2)
        assert series(h, job) == []
        with reading_views(h.store) as conn:
            assert conn.execute("SELECT COUNT(*) FROM result_pending").fetchone() == (0,)
    finally:
        await h.close()
