"""The follower's contract (lablink/projections/follower.py), on real SQLite files.

- In the background (``lablink serve``: a real thread, the real clock): appends from several
  threads and from the group committer are all folded; ``wait_for``/``wait`` say True once
  folded and False on timeout; the lag figures move as they should; ``close()`` folds what was
  committed, and releases the coroutines still waiting.
- After each commit (``background=False``: tools and tests): a read right after an append sees
  it; threads committing at once never leave an event unfolded.
- Faults made real (the follower's connection refuses writes, or its file cannot grow): the
  append stands, /health's ``projector`` entry says failing and why, nothing is half-written,
  and once the fault is lifted the views fold again by themselves; the projections forget
  what they kept from a batch that was rolled back.
- The views in a file of their own (``views_path``): the same, and catching up or rebuilding
  at open.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from lablink.application import JobService
from lablink.clock import ManualClock
from lablink.events import ApiKeyCreated, NewEvent, RecordedEvent
from lablink.eventstore import ANY
from lablink.eventstore.base import StoredRow
from lablink.eventstore.group_commit import GroupCommitter
from lablink.eventstore.sqlite import LogReader, SQLiteEventStore
from lablink.ids import SequentialIds
from lablink.logstore import LogStore, open_store
from lablink.projections.follower import Follower, ViewsBehind
from lablink.projections.jobs import JobsProjection, get_job
from lablink.projections.reading import reading_views
from lablink.projections.runner import CHECKPOINTS, META, Projector
from tests.support.crash import Lab, rebuilt, views, views_in
from tests.support.eventually import eventually, eventually_sync
from tests.support.views import views_db

START = datetime(2026, 3, 27, 12, 0, tzinfo=UTC)
# Generous: a loaded two-core machine makes folds slow, never wrong.
WAIT = 60.0


def key(i: int | str) -> list[NewEvent]:
    return [
        NewEvent(
            event=ApiKeyCreated(key_id=f"k{i}", name=f"key {i}", role="operator", key_hash=f"h{i}"),
            actor="admin",
            occurred_at=START,
        )
    ]


def add_key(store: SQLiteEventStore, i: int | str) -> list[RecordedEvent]:
    return store.append(f"apikey:k{i}", ANY, key(i))


def keys_in(conn: sqlite3.Connection) -> set[str]:
    return {row[0] for row in conn.execute("SELECT key_id FROM api_keys")}


def checkpoints_in(path: Path) -> set[int]:
    conn = sqlite3.connect(views_db(path))
    try:
        return {row[0] for row in conn.execute(f"SELECT position FROM {CHECKPOINTS}")}
    finally:
        conn.close()


@pytest.fixture
def background(tmp_path: Path) -> Iterator[LogStore]:
    store = open_store(tmp_path / "scheduler.db", background=True)
    yield store
    store.close()


# -- in the background ---------------------------------------------------------------------


def test_a_commit_told_after_its_fold_is_no_lag(background: LogStore) -> None:
    # A committing thread's listener may run after a fold woken by another commit has read
    # the log past it (the race the threaded test above met): the commit is folded already.
    recorded = add_key(background, "late")
    follower = background.views
    assert background.settled(WAIT)
    samples = len(follower.lag_samples)
    follower.on_commit(recorded)
    assert follower.lag_events() == 0
    assert follower.lag_seconds() == 0.0
    assert len(follower.lag_samples) == samples + 1
    assert follower.probe().state == "ok"


def test_appends_from_many_threads_are_all_folded(background: LogStore) -> None:
    start = threading.Barrier(4)

    def writer(t: int) -> None:
        start.wait()
        for i in range(40):
            add_key(background, f"{t}-{i}")

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    follower = background.views
    assert background.settled(WAIT)
    assert follower.position == background.last_position() == 160
    assert len(keys_in(follower.conn)) == 160
    assert follower.lag_events() == 0
    assert follower.lag_seconds() == 0.0
    # One figure per commit, each how long that commit waited for its fold.
    assert len(follower.lag_samples) == 160
    assert all(seconds >= 0 for seconds in follower.lag_samples)
    assert follower.probe().state == "ok"
    assert follower.folds <= 160  # commits that arrived together share a fold


async def test_the_group_committers_appends_are_all_folded(background: LogStore) -> None:
    async with GroupCommitter(background) as committer:
        await asyncio.gather(*(committer.append(f"apikey:k{i}", 0, key(i)) for i in range(300)))
    follower = background.views
    assert await follower.wait(300, WAIT)
    assert len(keys_in(follower.conn)) == 300
    assert follower.lag_events() == 0
    # Fewer commits than appends (the committer grouped them), one lag figure per commit.
    assert len(follower.lag_samples) == committer.batches < 300


async def test_waits_say_false_while_the_views_are_held_and_true_once_folded(
    background: LogStore,
) -> None:
    follower = background.views
    add_key(background, "first")
    assert follower.wait_for(1, WAIT)
    samples = len(follower.lag_samples)
    # The views' writer lock: held here, the fold of the next commit waits.
    with follower.write_lock:
        (recorded,) = add_key(background, "held")
        position = recorded.position
        assert follower.wait_for(position, 0.2) is False
        assert await follower.wait(position, 0.2) is False
        assert follower.lag_events() == 1
        assert follower.head == position == follower.position + 1
        lag = follower.lag_seconds()
        assert lag > 0
        assert follower.lag_seconds() >= lag  # the oldest unfolded commit only gets older
        assert keys_in(follower.conn) == {"kfirst"}
        with pytest.raises(ViewsBehind, match=f"not yet {position}"):
            await follower.caught_up(0.1)
    assert await follower.wait(position, WAIT)
    assert follower.wait_for(position, WAIT)
    assert follower.lag_events() == 0
    assert follower.lag_seconds() == 0.0
    assert len(follower.lag_samples) == samples + 1
    assert "kheld" in keys_in(follower.conn)


def test_close_folds_what_was_committed(tmp_path: Path) -> None:
    path = tmp_path / "scheduler.db"
    # Closed right after a commit: the thread may not even have woken up for it.
    for i in range(10):
        store = open_store(path, background=True)
        add_key(store, f"at-once-{i}")
        store.close()
        assert checkpoints_in(path) == {i + 1}
    store = open_store(path, background=True)
    with store.views.write_lock:  # the views cannot fold these yet
        for i in range(25):
            add_key(store, i)
        assert store.views.position < 35
        closing = threading.Thread(target=store.close)
        closing.start()
    closing.join(WAIT)
    assert not closing.is_alive()
    assert checkpoints_in(path) == {35}
    assert views_in(views_db(path)) == rebuilt(path, tmp_path / "rebuilt.db")


async def test_coroutines_still_waiting_are_released_at_close(tmp_path: Path) -> None:
    store = open_store(tmp_path / "scheduler.db", background=True)
    add_key(store, 1)
    follower = store.views
    # A position the log never reaches: only close() can end these waits early.
    waiting = [asyncio.create_task(follower.wait(1000 + i, WAIT)) for i in range(3)]
    await eventually(lambda: len(follower._waiters) == 3, what="three coroutines waiting")
    await asyncio.to_thread(store.close)
    done = await asyncio.wait_for(asyncio.gather(*waiting), 10)
    assert done == [False, False, False]


# -- after each commit ---------------------------------------------------------------------


def test_a_read_right_after_an_append_sees_it(tmp_path: Path) -> None:
    store = open_store(tmp_path / "scheduler.db")
    service = JobService(store, ManualClock(START), ids=SequentialIds())
    job_id = service.create_job(
        {
            "name": "ramp",
            "schedule_type": "measurement",
            "equipment_id": "psu_1",
            "parameters": {"command": "get_voltage"},
            "trigger_type": "interval",
            "interval_minutes": 5,
        },
        actor="alice",
    )
    with reading_views(store) as conn:
        job = get_job(conn, job_id)  # no wait: folded before create_job returned
    assert job is not None
    assert job["name"] == "ramp"
    service.pause_job(job_id, actor="alice")
    with reading_views(store) as conn:
        assert get_job(conn, job_id)["enabled"] is False  # type: ignore[index]
    assert store.views.position == store.last_position()
    store.close()


def test_threads_committing_at_once_never_leave_an_event_unfolded(tmp_path: Path) -> None:
    """A commit that finds another thread folding leaves its events to that one
    (``fold_available(wait=False)``), which must look at the log's head again before it
    stops: else the last commits would wait for a next commit that may never come."""
    path = tmp_path / "scheduler.db"
    store = open_store(path)
    store.views.batch = 1  # long folds: commits land while another thread folds
    start = threading.Barrier(4)

    def writer(t: int) -> None:
        start.wait()
        for i in range(60):
            add_key(store, f"{t}-{i}")

    for round_ in range(3):
        threads = [threading.Thread(target=writer, args=(10 * round_ + t,)) for t in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        # Nothing else folds in this mode: what is not folded now never will be.
        assert store.views.position == store.last_position() == 240 * (round_ + 1)
    assert views(store.views.conn) == rebuilt(path, tmp_path / "rebuilt.db")
    store.close()


class CommitsWhenDone(LogReader):
    """The follower's reads of the log, where the read that finds nothing more to fold lets
    another thread commit first (once): that commit's fold finds this one still folding."""

    def __init__(self, conn: sqlite3.Connection, store: LogStore) -> None:
        super().__init__(conn)
        self.store = store
        self.armed = True

    def read_rows(self, after_position: int, limit: int, **options: Any) -> list[StoredRow]:
        rows = super().read_rows(after_position, limit, **options)
        if not rows and self.armed:
            self.armed = False
            other = threading.Thread(target=add_key, args=(self.store, "other"))
            other.start()
            other.join()
        return rows


def test_a_commit_left_to_the_thread_folding_is_folded_by_it(tmp_path: Path) -> None:
    """The same hand-over, made to happen: the other thread's commit lands after this
    thread's last read, and its fold gives way to this one."""
    store = open_store(tmp_path / "scheduler.db")
    reader = CommitsWhenDone(store.views.conn, store)
    store.views._reader = reader
    add_key(store, "mine")
    assert not reader.armed  # the other thread did commit in between
    assert store.last_position() == 2
    assert store.views.position == 2
    assert keys_in(store.views.conn) == {"kmine", "kother"}
    store.close()


# -- faults ----------------------------------------------------------------------------------


def refuse_writes(follower: Follower, refused: bool) -> None:
    # Under the views' writer lock: never in the middle of one of the thread's folds.
    with follower.write_lock:
        follower.conn.execute(f"PRAGMA query_only={int(refused)}")


def test_a_fold_that_cannot_write_fails_in_the_open_and_folds_again_by_itself(
    background: LogStore,
) -> None:
    follower = background.views
    path = background.path
    add_key(background, "before")
    assert background.settled(WAIT)
    refuse_writes(follower, True)

    recorded = add_key(background, "during")  # the append stands: the log is not the views
    assert recorded[0].position == 2
    reading = eventually_sync(follower.probe, until=lambda r: r.state == "failing")
    assert "readonly" in (reading.reason or "")
    assert reading.details["position"] == 1
    assert reading.details["head"] == 2
    assert reading.details["failed_folds"] >= 1
    assert follower.error is not None
    # Nothing half-written: the checkpoint and the rows are those of the first key only.
    assert checkpoints_in(path) == {1}
    conn = sqlite3.connect(views_db(path))
    assert {row[0] for row in conn.execute("SELECT key_id FROM api_keys")} == {"kbefore"}
    conn.close()
    # Retried, with a backoff, by the thread itself: the failures keep counting.
    eventually_sync(lambda: follower.failures >= 2)

    refuse_writes(follower, False)
    eventually_sync(follower.probe, until=lambda r: r.state == "ok")
    assert follower.error is None
    assert follower.position == 2
    assert keys_in(follower.conn) == {"kbefore", "kduring"}
    assert views_in(views_db(path)) == rebuilt(path, path.parent / "rebuilt.db")


def test_a_full_views_file_fails_the_fold_not_the_append(tmp_path: Path) -> None:
    """The views in a file of their own, capped at its size (``max_page_count``): folds
    after each commit fail with SQLite's "full", the appends do not."""
    path, views_path = tmp_path / "scheduler.db", tmp_path / "views.db"
    store = open_store(path, views_path=views_path)
    follower = store.views
    follower.conn.execute("VACUUM")  # no free pages left to fill before the cap bites
    (pages,) = follower.conn.execute("PRAGMA page_count").fetchone()
    follower.conn.execute(f"PRAGMA max_page_count={pages}")
    appended = 0
    while follower.error is None:
        assert appended < 500, "the capped views file never filled"
        add_key(store, appended)
        appended += 1
    assert store.last_position() == appended
    reading = follower.probe()
    assert reading.state == "failing"
    assert "full" in (reading.reason or "")
    at = follower.position
    assert at < appended
    assert checkpoints_in(views_path) == {at}
    assert len(views_in(views_path)["api_keys"]) == at  # rows and checkpoint agree

    follower.conn.execute("PRAGMA max_page_count=1073741823")
    add_key(store, "after")  # the next commit folds the whole backlog
    assert follower.error is None
    assert follower.probe().state == "ok"
    assert follower.position == store.last_position() == appended + 1
    store.close()
    assert views_in(views_path) == rebuilt(path, tmp_path / "rebuilt.db")


class RecoversWhileAsked(Follower):
    """A follower whose folding thread recovers exactly while /health reads it: between
    the probe's read of the error and its read of when the failures began."""

    recover_on_read = False

    @property
    def failing_since(self) -> float | None:
        if self.recover_on_read:
            self.recover_on_read = False
            self._folded(self.position)  # what the folding thread does once a fold succeeds
        return self._since

    @failing_since.setter
    def failing_since(self, value: float | None) -> None:
        self._since = value


def test_health_reads_the_projector_while_it_recovers(tmp_path: Path) -> None:
    store = open_store(tmp_path / "scheduler.db")
    follower = RecoversWhileAsked(store, Projector(), background=False)
    follower.open()
    follower._failed(sqlite3.OperationalError("database or disk is full"))
    assert follower.probe().state == "failing"
    follower.recover_on_read = True
    assert follower.probe().state in ("ok", "failing")  # either, but an answer
    assert follower.probe().state == "ok"
    follower.close()
    store.close()


class Remembering(JobsProjection):
    """The real jobs projection, counting ``forget()`` calls."""

    forgotten = 0

    def forget(self) -> None:
        Remembering.forgotten += 1
        super().forget()


class Refusing:
    """A view folded after the jobs: while ``refusing``, its fold fails and the batch,
    the jobs' rows included, is rolled back."""

    name = "refusing"
    tables: tuple[str, ...] = ()
    refusing = False

    def create(self, db: object) -> None:
        pass

    def forget(self) -> None:
        pass

    def apply(self, conn: sqlite3.Connection, events: Sequence[RecordedEvent]) -> None:
        if self.refusing:
            raise sqlite3.OperationalError("database or disk is full")


def test_a_rolled_back_batch_is_forgotten_and_folded_again_exactly_once(tmp_path: Path) -> None:
    path = tmp_path / "scheduler.db"
    refusing = Refusing()
    store = open_store(path, Projector([Remembering(), refusing]))
    lab = Lab(store)
    lab.step("create", 0, 0)
    assert store.views.error is None
    forgotten = Remembering.forgotten

    refusing.refusing = True
    lab.step("run", 0, 0)  # requested + started: counted once, or twice if folded twice
    assert store.views.error is not None
    # Told at the rollback, not left to notice it at its next batch.
    assert Remembering.forgotten > forgotten
    lab.step("finish", 0, 0)
    refusing.refusing = False
    store.views.fold_available()
    assert store.views.error is None

    rows = views(store.views.conn)["jobs"]
    store.close()
    reference = tmp_path / "reference.db"
    target = sqlite3.connect(reference, isolation_level=None)
    Projector([JobsProjection()]).rebuild(SQLiteEventStore(path), target)
    assert rows == views(target)["jobs"]
    target.close()


# -- the views in a file of their own -------------------------------------------------------


def test_views_in_their_own_file_fold_catch_up_and_rebuild(tmp_path: Path) -> None:
    path, views_path = tmp_path / "scheduler.db", tmp_path / "views.db"
    store = open_store(path, views_path=views_path, background=True)
    for i in range(10):
        add_key(store, i)
    assert store.settled(WAIT)
    store.close()
    conn = sqlite3.connect(path)
    log_tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    conn.close()
    assert "api_keys" not in log_tables
    assert CHECKPOINTS not in log_tables
    assert checkpoints_in(views_path) == {10}

    # Appends while no follower runs: folded when the store is opened again.
    log = SQLiteEventStore(path)
    for i in range(10, 15):
        add_key(log, i)
    log.close()
    store = open_store(path, views_path=views_path)
    assert store.views.position == 15
    store.close()
    assert views_in(views_path) == rebuilt(path, tmp_path / "rebuilt.db")

    # Views made by another version (another fingerprint): rebuilt from the log at open.
    conn = sqlite3.connect(views_path, isolation_level=None)
    conn.execute(f"UPDATE {META} SET value = 'another version' WHERE key = 'fingerprint'")
    conn.execute("DELETE FROM api_keys WHERE key_id = 'k3'")
    conn.execute("INSERT INTO api_keys (key_id, name) VALUES ('stale', 'stale')")
    conn.close()
    store = open_store(path, views_path=views_path)
    store.close()
    assert views_in(views_path) == rebuilt(path, tmp_path / "rebuilt-2.db")
