"""Crash anywhere, catch up, and the views equal a fresh rebuild (issue 14's property).

For any sequence of commands (jobs, executions and their alarms, profiles, keys, equipment,
prunes; the views sometimes folding behind the log, sometimes caught up) and a crash at any
point of it: between an append's commit and its fold, inside a fold's transaction, or between
two of a fold's batches, in either layout of the views (the log's file, or a file of their
own):

- the views the crash left on disk are exactly the fold of the log up to their checkpoint
  (nothing half-written), and
- once the store is opened again (the follower catches up from its checkpoint), every view
  table, all rows and all columns, equals a ``Projector().rebuild`` into another file.

The last test kills a real process (SIGKILL) that appends with its follower folding in a
thread of its own, at a random moment, several times over one database.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from lablink.eventstore.sqlite import SQLiteEventStore
from lablink.logstore import open_store
from lablink.projections.runner import CHECKPOINTS
from tests.support.crash import (
    Crash,
    Fuse,
    Lab,
    Snapshot,
    crash,
    folded_up_to,
    fused_projector,
    rebuilt,
    views,
    views_in,
)
from tests.support.eventually import eventually_sync
from tests.support.views import views_db

# "lag": the views stop folding (as a follower thread that fell behind); "catch": they fold
# the backlog, a batch per transaction.
step = st.tuples(
    st.sampled_from([*Lab.KINDS, "lag", "catch", "run", "finish"]),
    st.integers(0, 9),
    st.integers(0, 3),
)
create = st.tuples(st.just("create"), st.integers(0, 9), st.integers(0, 3))
WHERE = ["in_batch", "between_batches", "before_fold"]


def perform(lab: Lab, store: Any, action: tuple[str, int, int]) -> None:
    kind, index, option = action
    if kind == "lag":
        store.views.background = True  # no thread: commits pile up unfolded
    elif kind == "catch":
        store.views.background = False
        store.views.fold_available()
    else:
        lab.step(kind, index, option)


def checkpoint(conn_views: Snapshot) -> int:
    positions = {int(position) for _, position in conn_views[CHECKPOINTS]}
    assert len(positions) == 1, f"projections folded to different positions: {positions}"
    return positions.pop()


@pytest.mark.slow
@settings(
    max_examples=50,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    creates=st.lists(create, min_size=1, max_size=3),
    steps=st.lists(step, min_size=0, max_size=24),
    crash_at=st.integers(0, 30),
    behind=st.integers(0, 8),
    where=st.sampled_from(WHERE),
    n=st.integers(0, 60),
    batch=st.sampled_from([1, 2, 3, 7, 1000]),
    own_file=st.booleans(),
)
def test_views_after_a_crash_anywhere_and_catch_up_equal_a_rebuild(
    creates: list[tuple[str, int, int]],
    steps: list[tuple[str, int, int]],
    crash_at: int,
    behind: int,
    where: str,
    n: int,
    batch: int,
    own_file: bool,
) -> None:
    """``behind``: the views stop folding that many steps before the crash, so that the
    fold the crash cuts short (or never lets start) holds a backlog of several batches."""
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        log_path = folder / "scheduler.db"
        # views.db (the default), or the views in the log's file (the layout before).
        views_path = views_db(log_path) if own_file else log_path
        fuse = Fuse()
        store = open_store(log_path, fused_projector(fuse), views_in_log=not own_file)
        store.views.batch = batch
        lab = Lab(store)
        plan = creates + steps
        crash_at = min(crash_at, len(plan))
        crashed = False
        try:
            for index, action in enumerate(plan[:crash_at]):
                if index == crash_at - behind:
                    store.views.background = True
                perform(lab, store, action)
            if where == "before_fold":
                store.views.background = True  # the next commit is never folded
            backlog = store.last_position() - store.views.position
            if where == "between_batches":
                # Die before one of the batches the backlog is folded in (the first, if
                # there is no backlog: the crash step's own fold).
                fuse.arm(batches=n % max(1, -(-backlog // batch)))
            elif where == "in_batch":
                # Events are counted once per projection; a step appends one to three.
                fuse.arm(events=n % (len(store.views.projector.projections) * (backlog + 2)))
            if crash_at < len(plan) and plan[crash_at][0] not in ("lag", "catch"):
                perform(lab, store, plan[crash_at])  # caught up: its commit's fold may die
            if where != "before_fold":
                store.views.fold_available()  # the backlog, if the views lag
        except Crash:
            crashed = True
        crash(store)
        last = SQLiteEventStore(log_path)
        head = last.last_position()
        last.close()
        event(f"crash {where}: {'in a fold' if crashed else 'outside a fold'}")

        # On disk after the crash: rows and checkpoints agree, nothing half-written.
        left = views_in(views_path)
        at = checkpoint(left)
        event("views behind at the crash" if at < head else "views caught up at the crash")
        assert left == folded_up_to(log_path, folder / "partial.db", at)

        # Restart: the follower catches up from its checkpoint.
        again = open_store(log_path, views_in_log=not own_file)
        try:
            assert again.views.position == head
            caught_up = views(again.views.conn)
        finally:
            again.close()
        assert checkpoint(caught_up) == head
        assert caught_up == rebuilt(log_path, folder / "rebuilt.db")


# -- a real process, killed ------------------------------------------------------------------

WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from lablink.logstore import open_store
    from tests.support.crash import Lab

    store = open_store(Path(sys.argv[1]), background=True)
    store.views.batch = 3  # several folds per burst: a kill may land between two
    lab = Lab(store, prefix=f"r{sys.argv[2]}_")
    kinds = ["create", "run", "finish", "update", "pause", "resume", "key", "online"]
    lab.step("create", 0, 0)
    print("ready", flush=True)
    i = 0
    while True:
        i += 1
        lab.step(kinds[i % len(kinds)], i, i)
        if i % 5 == 0:
            lab.step("finish", i, i // 5)
    """
)


@pytest.mark.slow
def test_a_process_killed_while_it_appends_and_folds_loses_nothing(tmp_path: Path) -> None:
    """SIGKILL at random moments: each time, the next open catches up to a rebuild."""
    log_path = tmp_path / "scheduler.db"
    rng = random.Random(14)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    kills = 0
    for round_ in range(4):
        before = _head(log_path)
        child = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(log_path), str(round_)],
            stdout=subprocess.PIPE,
            env=env,
        )
        try:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == b"ready"
            # Let it append some events past where it started, then kill it at a random
            # moment (time here only spreads the kills; nothing is asserted about it).
            eventually_sync(lambda: _head(log_path), until=(before + 20).__lt__, timeout=60)
            time.sleep(rng.uniform(0, 0.3))
            os.kill(child.pid, signal.SIGKILL)
            kills += 1
        finally:
            child.kill()
            child.wait(timeout=60)
        assert child.returncode == -signal.SIGKILL

        left = views_in(views_db(log_path))
        at = checkpoint(left)
        head = _head(log_path)
        assert at <= head
        assert left == folded_up_to(log_path, tmp_path / f"partial-{round_}.db", at)

        again = open_store(log_path)
        try:
            assert again.views.position == head
            caught_up = views(again.views.conn)
        finally:
            again.close()
        assert caught_up == rebuilt(log_path, tmp_path / f"rebuilt-{round_}.db")
    assert kills == 4


def _head(log_path: Path) -> int:
    if not log_path.exists():
        return 0
    store = SQLiteEventStore(log_path)
    try:
        return store.last_position()
    finally:
        store.close()
