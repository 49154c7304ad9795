"""The projector in a process of its own (lablink/projections/fold_process.py), what
``lablink serve`` runs by default: real child processes, real SQLite files, real signals.

- Everything committed is folded by the child, in batches, and the views equal a rebuild; the
  parent's position, lag and waits follow the child's reports.
- Faults made real: another writer holding views.db (the waits say False, then True), a fold
  the file refuses (/health failing with SQLite's reason, nothing half-written, folds again by
  itself once lifted), the child killed or stopped by pid (started again, nothing lost or
  folded twice), the parent killed outright (the child ends with it), and close (the child
  folds what was committed and exits).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from lablink.eventstore.group_commit import GroupCommitter
from lablink.logstore import LogStore, open_store
from lablink.projections.follower import ViewsBehind
from tests.projections.test_follower import add_key, checkpoints_in, key, keys_in
from tests.support.crash import rebuilt, views_in
from tests.support.eventually import eventually, eventually_sync
from tests.support.views import views_db

WAIT = 60.0


@pytest.fixture
def store(tmp_path: Path) -> Iterator[LogStore]:
    opened = open_store(tmp_path / "scheduler.db", background=True, fold_process=True)
    yield opened
    opened.close()


def child_pid(store: LogStore) -> int:
    eventually_sync(lambda: store.views.pid, what="the projector process started")
    pid = store.views.pid
    assert pid is not None
    return pid


def alive(pid: int) -> bool:
    """Running (a zombie, ended but not yet waited for, counts as ended)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_the_child_folds_every_commit_and_the_views_equal_a_rebuild(store: LogStore) -> None:
    pid = child_pid(store)
    assert pid != os.getpid()
    start = threading.Barrier(4)

    def writer(t: int) -> None:
        start.wait()
        for i in range(50):
            add_key(store, f"{t}-{i}")

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    follower = store.views
    assert store.settled(WAIT)
    assert follower.position == store.last_position() == 200
    with follower.reading() as conn:
        assert len(keys_in(conn)) == 200
    assert len(follower.lag_samples) == 200  # a figure per commit, from the child's reports
    assert 1 <= follower.folds <= 200
    reading = follower.probe()
    assert reading.state == "ok"
    assert reading.details["process"] == pid
    assert follower.pid == pid  # the same child did all of it
    store.close()
    assert views_in(views_db(store.path)) == rebuilt(store.path, store.path.parent / "r.db")


async def test_the_group_committers_appends_are_folded_by_the_child(store: LogStore) -> None:
    async with GroupCommitter(store) as committer:
        await asyncio.gather(*(committer.append(f"apikey:k{i}", 0, key(i)) for i in range(300)))
    assert await store.views.wait(300, WAIT)
    with store.views.reading() as conn:
        assert len(keys_in(conn)) == 300


async def test_waits_say_false_while_another_writer_holds_the_views(store: LogStore) -> None:
    follower = store.views
    add_key(store, "first")
    assert follower.wait_for(1, WAIT)
    holder = sqlite3.connect(views_db(store.path), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # the child's next fold waits for this lock
    try:
        (recorded,) = add_key(store, "held")
        assert follower.wait_for(recorded.position, 0.3) is False
        assert await follower.wait(recorded.position, 0.3) is False
        assert follower.lag_events() == 1
        assert follower.lag_seconds() > 0
        with pytest.raises(ViewsBehind, match=f"not yet {recorded.position}"):
            await follower.caught_up(0.1)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert await follower.wait(recorded.position, WAIT)
    assert follower.lag_seconds() == 0.0
    with follower.reading() as conn:
        assert keys_in(conn) == {"kfirst", "kheld"}


def test_a_fold_the_file_refuses_fails_in_the_open_and_folds_again_by_itself(
    store: LogStore,
) -> None:
    follower = store.views
    add_key(store, "before")
    assert store.settled(WAIT)
    refuser = sqlite3.connect(views_db(store.path), isolation_level=None)
    refuser.execute(
        "CREATE TRIGGER refuse BEFORE INSERT ON api_keys"
        " BEGIN SELECT RAISE(ABORT, 'views refused by the test'); END"
    )
    try:
        recorded = add_key(store, "during")  # the append stands: the log is not the views
        assert recorded[0].position == 2
        reading = eventually_sync(follower.probe, until=lambda r: r.state == "failing")
        assert "views refused by the test" in (reading.reason or "")
        assert reading.details["position"] == 1
        assert reading.details["head"] == 2
        # Nothing half-written: the checkpoint and the rows are those of the first key only.
        assert checkpoints_in(store.path) == {1}
        assert keys_in(refuser) == {"kbefore"}
        eventually_sync(lambda: follower.failures >= 2, what="the child trying again")
    finally:
        refuser.execute("DROP TRIGGER refuse")
        refuser.close()
    eventually_sync(follower.probe, until=lambda r: r.state == "ok")
    assert follower.position == 2
    with follower.reading() as conn:
        assert keys_in(conn) == {"kbefore", "kduring"}


def append_keys(store: LogStore, round_: int, count: int) -> None:
    for i in range(count):
        add_key(store, f"{round_}-{i}")


def replaced(store: LogStore, pid: int) -> bool:
    return store.views.pid not in (None, pid)


def test_a_killed_child_is_started_again_and_nothing_is_lost_or_folded_twice(
    store: LogStore,
) -> None:
    rng = random.Random(7)
    follower = store.views
    pids: list[int] = []
    for round_ in range(3):
        pid = child_pid(store)
        pids.append(pid)
        writing = threading.Thread(target=append_keys, args=(store, round_, 300))
        writing.start()
        # Killed at some point of the round's appends (its folds in flight or not).
        at = round_ * 300 + rng.randrange(1, 250)
        eventually_sync(lambda: follower.position >= at)  # noqa: B023 (waited for here)
        os.kill(pid, signal.SIGKILL)
        writing.join()
        eventually_sync(lambda: replaced(store, pid), what="a new child")  # noqa: B023
    assert store.settled(WAIT)
    assert store.settled(WAIT)
    assert follower.restarts == 3
    assert len(set(pids)) == 3
    eventually_sync(follower.probe, until=lambda r: r.state == "ok")
    assert follower.position == store.last_position() == 900
    store.close()
    assert views_in(views_db(store.path)) == rebuilt(store.path, store.path.parent / "r.db")


async def test_a_stopped_child_holds_the_views_back_until_it_is_continued(
    store: LogStore,
) -> None:
    follower = store.views
    pid = child_pid(store)
    add_key(store, "first")
    assert await follower.wait(1, WAIT)
    os.kill(pid, signal.SIGSTOP)
    try:
        (recorded,) = add_key(store, "while stopped")
        assert await follower.wait(recorded.position, 0.5) is False
        await eventually(lambda: follower.lag_seconds() >= 0.5)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert await follower.wait(recorded.position, WAIT)
    assert follower.pid == pid  # stopped is not dead: the same child goes on
    assert follower.restarts == 0


@pytest.mark.slow
def test_close_folds_what_was_committed_and_the_child_exits(tmp_path: Path) -> None:
    path = tmp_path / "scheduler.db"
    for i in range(5):
        store = open_store(path, background=True, fold_process=True)
        add_key(store, f"at-once-{i}")  # closed at once: the child may not be up yet
        store.close()
        assert checkpoints_in(path) == {i + 1}
    store = open_store(path, background=True, fold_process=True)
    pid = child_pid(store)
    for i in range(200):
        add_key(store, i)
    store.close()
    assert not alive(pid)
    assert checkpoints_in(path) == {205}
    assert views_in(views_db(path)) == rebuilt(path, tmp_path / "rebuilt.db")


PARENT = """
import sys, time
from lablink.logstore import open_store
store = open_store(sys.argv[1], background=True, fold_process=True)
while store.views.pid is None:
    time.sleep(0.01)
print(store.views.pid, flush=True)
time.sleep(600)
"""


def test_a_parent_killed_outright_leaves_no_child_behind(tmp_path: Path) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, str(tmp_path / "scheduler.db")],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    assert parent.stdout is not None
    try:
        pid = int(parent.stdout.readline())
        assert alive(pid)
        parent.kill()
        parent.wait(WAIT)
        # The child's stdin ends with its parent: it exits (init reaps it).
        eventually_sync(lambda: not alive(pid), what=f"the orphaned child {pid} gone")
    finally:
        if parent.poll() is None:
            parent.kill()
        parent.wait()
        parent.stdout.close()


def test_views_in_the_logs_file_fold_in_a_thread_even_when_a_process_is_asked(
    tmp_path: Path,
) -> None:
    store = open_store(
        tmp_path / "scheduler.db", background=True, fold_process=True, views_in_log=True
    )
    try:
        add_key(store, 1)
        assert store.settled(WAIT)
        assert store.views.pid is None  # the log's write lock is not shared with a child
        assert "process" not in store.views.probe().details
    finally:
        store.close()


def test_health_names_the_child_that_ended_until_its_successor_is_up(store: LogStore) -> None:
    follower = store.views
    add_key(store, 1)
    assert store.settled(WAIT)
    pid = child_pid(store)
    os.kill(pid, signal.SIGKILL)
    # At least the backoff (50 ms) and a new interpreter's start lie between the two.
    reading = eventually_sync(follower.probe, until=lambda r: r.state == "failing", interval=0.005)
    assert f"the projector process {pid} ended (exit code -9)" in (reading.reason or "")
    reading = eventually_sync(follower.probe, until=lambda r: r.state == "ok")
    assert reading.details["process"] not in (None, pid)
    assert reading.details["restarts"] == 1
