"""The executions fold writes each row once per batch without reading it (a new row whole,
an older one by the columns that changed), and gives, for any log and any batching, exactly
the rows a rebuild gives."""

from __future__ import annotations

import itertools
import random
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from lablink.eventstore.sqlite import connect
from lablink.logstore import open_store
from lablink.projections import executions as executions_fold
from lablink.projections.executions import ExecutionsProjection
from lablink.projections.runner import Projector
from tests.support.fold_logs import FireLog, fold_live, rebuilt, step


def sizes_of(seed: int) -> Iterator[int]:
    draw = random.Random(seed)
    while True:
        yield draw.choice([1, 2, 5, 13, 40, 1000])


@pytest.mark.slow
@settings(
    max_examples=80,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    st.lists(step, min_size=1, max_size=60),
    st.integers(0, 2**32),
    st.frozensets(st.integers(0, 30), max_size=4),
    st.frozensets(st.integers(0, 30), max_size=3),
    st.booleans(),
)
def test_executions_folded_live_in_any_batches_equal_a_rebuild(
    steps: list[tuple[Any, ...]],
    seed: int,
    forget_after: frozenset[int],
    roll_back: frozenset[int],
    forget_on_roll_back: bool,
) -> None:
    creates = [("create", 0, 0, 0), ("create", 1, 3, 1)]
    with tempfile.TemporaryDirectory() as folder:
        store = open_store(Path(folder) / "scheduler.db")
        FireLog(store).run(creates + steps)
        expected = rebuilt(store, Path(folder) / "rebuilt.db")
        live = fold_live(
            list(store.read_all()),
            Path(folder) / "live.db",
            sizes_of(seed),
            forget_after=forget_after,
            roll_back=roll_back,
            forget_on_roll_back=forget_on_roll_back,
            projector=Projector([ExecutionsProjection()]),
        )
        assert live["executions"] == expected["executions"]
        assert live["execution_jobs"] == expected["execution_jobs"]
        event(f"executions: {min(len(expected['executions']), 5)}")
        store.close()


def test_a_batch_reads_no_execution_row_and_writes_each_once(tmp_path: Path) -> None:
    """Facts about executions opened in earlier batches become one UPDATE per execution,
    with no SELECT; executions opened in the batch are inserted once, whatever follows."""
    store = open_store(tmp_path / "scheduler.db")
    log = FireLog(store)
    log.run([("create", 0, 0, 0), *[("fire", 0, "scheduled", "pending")] * 3])
    first = list(store.read_all())
    log.run(
        [
            *[("start", 0)] * 3,  # the three earlier ones start...
            *[("finish", 0, "completed")] * 2,  # ...and two of them end
            ("fire", 0, "manual", "completed"),  # a new one: opened, started, ended
        ]
    )
    second = list(store.read_all(after_position=first[-1].position))
    conn = connect(tmp_path / "folded.db")
    projector = Projector([ExecutionsProjection()])
    projector.create(conn)
    conn.execute("BEGIN IMMEDIATE")
    projector.apply(conn, first)
    conn.execute("COMMIT")
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    conn.execute("BEGIN IMMEDIATE")
    projector.apply(conn, second)
    conn.execute("COMMIT")
    conn.set_trace_callback(None)
    touching = [s for s in statements if "executions " in s]
    assert not [s for s in touching if s.startswith("SELECT")]
    assert len([s for s in touching if s.startswith("UPDATE")]) == 3
    assert len([s for s in touching if s.startswith("INSERT")]) == 1
    expected = rebuilt(store, tmp_path / "rebuilt.db")
    rows = sorted(conn.execute("SELECT * FROM executions").fetchall(), key=repr)
    assert rows == expected["executions"]
    conn.close()
    store.close()


def test_job_names_in_memory_are_bounded_and_read_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(executions_fold, "MAX_JOBS_IN_MEMORY", 1)
    store = open_store(tmp_path / "scheduler.db")
    log = FireLog(store)
    log.run([("create", 0, n, 0) for n in range(3)])
    log.run([("fire", n, "scheduled", "completed") for n in range(9)])
    log.run([("update", 1, "name"), *[("fire", n, "manual", "completed") for n in range(6)]])
    projection = ExecutionsProjection()
    live = fold_live(
        list(store.read_all()),
        tmp_path / "live.db",
        itertools.repeat(4),
        projector=Projector([projection]),
    )
    assert len(projection._jobs) <= 1
    expected = rebuilt(store, tmp_path / "rebuilt.db")
    assert live["executions"] == expected["executions"]
    # Three jobs' names, and one of them again after its rename.
    assert len({row[3] for row in live["executions"]}) == 4
    store.close()


def test_a_prune_drops_rows_opened_earlier_in_its_own_batch(tmp_path: Path) -> None:
    store = open_store(tmp_path / "scheduler.db")
    log = FireLog(store)
    log.run(
        [
            ("create", 0, 0, 0),
            ("fire", 0, "scheduled", "completed"),
            ("fire", 0, "manual", "failed"),
            ("fire", 0, "scheduled", "running"),
            ("advance", 7200),
            ("prune", 1),
            ("fire", 0, "scheduled", "completed"),
        ]
    )
    events = list(store.read_all())
    expected = rebuilt(store, tmp_path / "rebuilt.db")
    assert len(expected["executions"]) == 2  # the one still running, the one after the prune
    for size in (1, 3, len(events)):
        live = fold_live(
            events,
            tmp_path / f"live{size}.db",
            itertools.repeat(size),
            projector=Projector([ExecutionsProjection()]),
        )
        assert live["executions"] == expected["executions"]
    store.close()
