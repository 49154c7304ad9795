"""The jobs fold is incremental (a fire writes the columns it changes, the view is patched
as text) and gives, for any log and any batching, exactly the rows a rebuild gives, with
each job's API view exactly what ``views.job_view`` renders from its row."""

from __future__ import annotations

import itertools
import json
import random
import sqlite3
import tempfile
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from lablink.clock import ManualClock
from lablink.domain.job import JobState, evolve
from lablink.eventstore.sqlite import connect
from lablink.logstore import open_store
from lablink.projections import jobs as jobs_fold
from lablink.projections.base import to_json
from lablink.projections.jobs import COLUMNS, JobsProjection, read_snapshot
from lablink.projections.runner import Projector
from lablink.projections.views import job_view
from tests.support.fold_logs import (
    START,
    FireLog,
    fold_live,
    fold_projector,
    rebuilt,
    step,
    tables,
)
from tests.support.harness import Harness, api_client


def check_views(rows: list[tuple[Any, ...]]) -> None:
    """Each stored view is, byte for byte, what ``job_view`` renders from its row."""
    for values in rows:
        row = dict(zip(COLUMNS, values, strict=True))
        assert row["view"] == to_json(job_view(row)), row["job_id"]


def sizes_of(seed: int, largest: int) -> Iterator[int]:
    draw = random.Random(seed)
    while True:
        yield draw.randint(1, largest)


@pytest.mark.slow
@settings(
    max_examples=120,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    st.lists(step, min_size=1, max_size=60),
    st.integers(0, 2**32),
    st.sampled_from([1, 3, 7, 50]),
    st.frozensets(st.integers(0, 40), max_size=4),
    st.frozensets(st.integers(0, 40), max_size=3),
    st.booleans(),
)
def test_live_batches_of_any_size_with_memory_dropped_anywhere_equal_a_rebuild(
    steps: list[tuple[Any, ...]],
    seed: int,
    largest: int,
    forget_after: frozenset[int],
    roll_back: frozenset[int],
    forget_on_roll_back: bool,
) -> None:
    creates = [("create", 0, 1, 1), ("create", 2, 2, 2), ("create", 1, 4, 0)]
    with tempfile.TemporaryDirectory() as folder:
        store = open_store(Path(folder) / "scheduler.db")
        FireLog(store).run(creates + steps)
        events = list(store.read_all())
        expected = rebuilt(store, Path(folder) / "rebuilt.db")
        live = fold_live(
            events,
            Path(folder) / "live.db",
            sizes_of(seed, largest),
            forget_after=forget_after,
            roll_back=roll_back,
            forget_on_roll_back=forget_on_roll_back,
        )
        assert live == expected
        check_views(expected["jobs"])
        # The store's own views, folded after each commit, agree too.
        assert tables(store.views.conn) == expected
        event(f"jobs: {min(len(expected['jobs']), 3)}")
        store.close()


def test_one_log_folded_in_batches_of_1_7_1000_and_rebuilt_gives_the_same_rows(
    tmp_path: Path,
) -> None:
    store = open_store(tmp_path / "scheduler.db")
    log = FireLog(store)
    log.run(
        [
            ("create", 0, 0, 0),
            ("create", 2, 1, 1),
            ("create", 3, 3, 2),
            ("create", 1, 4, 1),
            *[
                ("fire", n, "scheduled", ["completed", "failed", "queued"][n % 3])
                for n in range(40)
            ],
            ("update", 1, "name"),
            ("pause", 2),
            *[("fire", n, "manual", "completed") for n in range(8)],
            ("resume", 2),
            ("start", 0),
            ("start", 1),
            ("finish", 0, "timed_out"),
            ("delete", 3),
            *[("fire", n, "catch_up", "running") for n in range(6)],
            ("miss", 0, 40),
            ("coalesce", 1, 12),
            ("late", 2, "failed"),
            ("prune", 0),
        ]
    )
    events = list(store.read_all())
    expected = rebuilt(store, tmp_path / "rebuilt.db")
    assert len(expected["jobs"]) == 3
    assert {row[COLUMNS.index("execution_count")] for row in expected["jobs"]} != {0}
    for size in (1, 7, 1000):
        assert fold_live(events, tmp_path / f"live{size}.db", itertools.repeat(size)) == expected
    check_views(expected["jobs"])
    store.close()


def job_row(conn: sqlite3.Connection) -> dict[str, Any]:
    cursor = conn.execute("SELECT * FROM jobs")
    names = [d[0] for d in cursor.description]
    return dict(zip(names, cursor.fetchone(), strict=True))


def test_a_fire_writes_only_what_changes_and_the_view_follows(tmp_path: Path) -> None:
    """A batch of execution facts moves version, counts, next run and the view's copies of
    them; the definition columns and updated_at stay as the last definition left them."""
    store = open_store(tmp_path / "scheduler.db")
    log = FireLog(store)
    log.run([("create", 0, 1, 1)])
    (job_id,) = log.jobs
    before = job_row(store.views.conn)
    log.clock.advance(45)
    log.run([("fire", 0, "scheduled", "completed"), ("fire", 0, "scheduled", "running")])
    after = job_row(store.views.conn)
    assert after["version"] == store.stream_version(job_id) == 8
    assert (after["execution_count"], after["running_count"]) == (2, 1)
    assert after["next_run_time"] != before["next_run_time"]
    changed = {c for c in before if before[c] != after[c]}
    assert changed == {
        "version",
        "next_run_time",
        "last_fire_time",
        "execution_count",
        "running_count",
        "state",
        "view",
    }
    view = json.loads(after["view"])
    assert (view["version"], view["execution_count"], view["running_executions"]) == (8, 2, 1)
    assert view["name"] == 'a,"version":7,"next_run_time":null'
    assert view["parameters"]["version"] == 3
    assert after["view"] == to_json(job_view(after))
    store.close()


def test_a_batch_of_fires_is_one_update_per_job_and_no_read(tmp_path: Path) -> None:
    """Jobs the fold holds: their fires in one batch write one UPDATE each, read nothing."""
    store = open_store(tmp_path / "scheduler.db")
    log = FireLog(store)
    log.run([("create", 0, 0, 0), ("create", 2, 1, 1)])
    first = list(store.read_all())
    log.clock.advance(60)
    log.run([("fire", n % 2, "scheduled", "completed") for n in range(6)])
    second = list(store.read_all(after_position=first[-1].position))
    conn = connect(tmp_path / "folded.db")
    projector = Projector([JobsProjection()])
    projector.create(conn)
    statements: list[str] = []
    for batch, trace in ((first, False), (second, True)):
        conn.set_trace_callback(statements.append if trace else None)
        conn.execute("BEGIN IMMEDIATE")
        projector.apply(conn, batch)
        conn.execute("COMMIT")
    conn.set_trace_callback(None)
    on_jobs = [s for s in statements if " jobs " in s]
    assert [s.split()[0] for s in on_jobs] == ["UPDATE", "UPDATE"]
    assert tables(conn)["jobs"] == rebuilt(store, tmp_path / "rebuilt.db")["jobs"]
    conn.close()
    store.close()


def test_states_in_memory_are_bounded_and_a_dropped_one_is_read_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jobs_fold, "MAX_JOBS_IN_MEMORY", 2)
    store = open_store(tmp_path / "scheduler.db")
    log = FireLog(store)
    log.run([("create", t, n, 0) for t, n in ((0, 0), (1, 1), (2, 2), (0, 3))])
    log.run([("fire", n, "scheduled", "completed") for n in range(12)])
    projection = JobsProjection()
    events = list(store.read_all())
    live = fold_live(
        events, tmp_path / "live.db", itertools.repeat(5), projector=Projector([projection])
    )
    assert len(projection._jobs) <= 2
    assert live["jobs"] == rebuilt(store, tmp_path / "rebuilt.db")["jobs"]
    store.close()


def test_the_snapshot_is_the_state_at_the_version_it_names(tmp_path: Path) -> None:
    """``read_snapshot`` (the job repository's starting point) pairs the state with the
    version it reflects, after fires folded incrementally."""
    store = open_store(tmp_path / "scheduler.db")
    log = FireLog(store)
    log.run([("create", 0, 0, 0), *[("fire", 0, "scheduled", "completed")] * 3])
    (job_id,) = log.jobs
    snapshot = read_snapshot(store.views.conn, job_id)
    assert snapshot is not None
    state, version = snapshot
    assert version == store.stream_version(job_id)
    folded = JobState(job_id=job_id)
    for recorded in store.read_stream(job_id):
        folded = evolve(folded, recorded.event)
    assert state == folded
    store.close()


@pytest.mark.slow
async def test_the_jobs_api_answers_the_same_bytes_live_and_after_a_rebuild(
    tmp_path: Path,
) -> None:
    """Fires by the real engine, folded after each commit; then the views rebuilt from the
    log: GET /api/scheduler/jobs and /jobs/{id} answer the same bytes before and after."""
    harness = await Harness(tmp_path / "scheduler.db", ManualClock(START)).start()
    try:
        ids = [
            harness.service.create_job(
                {
                    "name": name,
                    "schedule_type": "measurement",
                    "equipment_id": "power_supply_1",
                    "parameters": {"command": "get_voltage", "version": 2},
                    "trigger_type": "interval",
                    "interval_seconds": seconds,
                    "tags": ["api", name],
                },
                actor="alice",
            )
            for name, seconds in (
                ("plain", 10),
                ('a,"version":1', 25),
                ("ünï ✓", 60),
            )
        ]
        for second in range(5, 130, 5):
            await harness.at(START + timedelta(seconds=second))
        harness.service.pause_job(ids[2], actor="bob")
        await harness.at(START + timedelta(seconds=140))

        async def answers() -> list[bytes]:
            async with api_client(harness, auth=False) as client:
                pages = [await client.get("/api/scheduler/jobs")]
                pages += [await client.get(f"/api/scheduler/jobs/{job_id}") for job_id in ids]
                assert all(page.status_code == 200 for page in pages)
                return [page.content for page in pages]

        live = await answers()
        listed = json.loads(live[0])["jobs"]
        assert [job["execution_count"] for job in listed] != [0, 0, 0]
        with harness.store.views.write_lock:
            Projector().rebuild(harness.store, harness.store.views.conn)
        assert await answers() == live
        check_views(
            harness.store.views.conn.execute(f"SELECT {', '.join(COLUMNS)} FROM jobs").fetchall()
        )
    finally:
        await harness.close()


def test_folding_on_another_connection_reads_the_table_again(tmp_path: Path) -> None:
    """One projection object, two databases: what it remembers of one is not used for the
    other (the continuity guard), so the second gets its own rows."""
    store = open_store(tmp_path / "scheduler.db")
    log = FireLog(store)
    log.run([("create", 0, 0, 0), *[("fire", 0, "scheduled", "completed")] * 4])
    events = list(store.read_all())
    projector = fold_projector()
    half = len(events) // 2
    first, second = connect(tmp_path / "a.db"), connect(tmp_path / "b.db")
    for conn in (first, second):
        projector.create(conn)
    for conn, batch in ((first, events[:half]), (second, events), (first, events[half:])):
        conn.execute("BEGIN IMMEDIATE")
        projector.apply(conn, batch)
        conn.execute("COMMIT")
    expected = rebuilt(store, tmp_path / "rebuilt.db")
    assert tables(first) == tables(second) == expected
    for conn in (first, second):
        conn.close()
    store.close()
