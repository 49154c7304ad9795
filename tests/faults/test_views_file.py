"""The views in their own file (``data/views.db``), on real SQLite files.

- The default layout: the log's file holds the log only; the views, views.db beside it.
- views.db missing, unreadable (not a database), ahead of the log (the log restored from an
  older backup), or folded from another log: rebuilt from the log at the start, and the log
  says so; never trusted.
- A data directory made by the previous version (the views in the log's file): views.db is
  built from the log, then the view tables are dropped from the log's file in one
  transaction; the keys' last-use side table moves with its rows.
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

from structlog.testing import capture_logs

from lablink.clock import ManualClock
from lablink.eventstore.sqlite import SQLiteEventStore
from lablink.keys import KeyUsage
from lablink.logstore import open_store
from lablink.projections.reading import reading_views, views_file
from lablink.projections.runner import CHECKPOINTS, META, Projector
from tests.faults.conftest import Invariants
from tests.support.crash import START, Lab, Snapshot, rebuilt, views_in
from tests.support.views import views_db

LOG_TABLES = {"events"}


def tables_in(path: Path) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        return {
            row[0]
            for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        }
    finally:
        conn.close()


def fill(log_path: Path, steps: int, *, prefix: str = "", **options: object) -> None:
    """Jobs, keys, instruments and profiles through LabLink's own services (no runs: the
    lab's synthetic runs carry no correlation id, which the invariants check)."""
    store = open_store(log_path, **options)  # type: ignore[arg-type]
    try:
        lab = Lab(store, prefix=prefix)
        kinds = ["create", "key", "online", "update", "pause", "profile", "resume", "revoke"]
        lab.step("create", 0, 0)
        for i in range(1, steps):
            lab.step(kinds[i % len(kinds)], i, i)
    finally:
        store.close()


def head_of(log_path: Path) -> int:
    store = SQLiteEventStore(log_path)
    try:
        return store.last_position()
    finally:
        store.close()


def reopened(log_path: Path) -> tuple[int, list[MutableMapping[str, Any]]]:
    """Open the store as `lablink serve` does at its start; (views' position, log lines)."""
    with capture_logs() as lines:
        store = open_store(log_path)
        position = store.views.position
        store.close()
    return position, lines


def messages(lines: list[MutableMapping[str, Any]]) -> list[str]:
    return [str(line["event"]) for line in lines]


def without(snapshot: Snapshot, *tables: str) -> Snapshot:
    return {name: rows for name, rows in snapshot.items() if name not in tables}


def remove_views(log_path: Path) -> None:
    views = views_db(log_path)
    for suffix in ("", "-wal", "-shm"):
        views.with_name(views.name + suffix).unlink(missing_ok=True)


async def test_the_log_file_holds_the_log_and_views_db_the_views(
    tmp_path: Path, invariants: Invariants
) -> None:
    log_path = tmp_path / "data" / "scheduler.db"
    fill(log_path, 30)
    assert tables_in(log_path) == LOG_TABLES
    views = tables_in(views_db(log_path))
    assert {"jobs", "executions", "api_keys", "profiles", CHECKPOINTS, META} <= views
    assert "events" not in views
    # The process's own readers see them (the engine's start, the profile lookups).
    store = open_store(log_path)
    try:
        with reading_views(store) as conn:
            assert conn.execute("SELECT count(*) FROM jobs").fetchone()[0] > 0
            assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == head_of(log_path)
    finally:
        store.close()
    assert views_in(views_db(log_path)) == rebuilt(log_path, tmp_path / "rebuilt.db")
    await invariants(log_path)


def test_two_logs_in_one_folder_keep_views_of_their_own(tmp_path: Path) -> None:
    """views.db is the default log's (scheduler.db); a log of another name has
    ``<stem>.views.db``: two logs in one folder do not rebuild one file back and forth."""
    assert views_file(tmp_path / "scheduler.db") == tmp_path / "views.db"
    assert views_file(tmp_path / "bench.db") == tmp_path / "bench.views.db"
    assert views_file(":memory:") is None
    fill(tmp_path / "scheduler.db", 10)
    fill(tmp_path / "bench.db", 20, prefix="b")
    assert head_of(tmp_path / "scheduler.db") != head_of(tmp_path / "bench.db")
    # Each reopened in turn: its views are its own and current, nothing rebuilt.
    for name in ("scheduler.db", "bench.db", "scheduler.db"):
        position, lines = reopened(tmp_path / name)
        assert position == head_of(tmp_path / name)
        assert not [m for m in messages(lines) if "rebuild" in m or "building" in m], lines
    assert tables_in(tmp_path / "bench.views.db") == tables_in(tmp_path / "views.db")


async def test_a_missing_views_file_is_rebuilt_from_the_log_at_the_start(
    tmp_path: Path, invariants: Invariants
) -> None:
    log_path = tmp_path / "data" / "scheduler.db"
    fill(log_path, 30)
    remove_views(log_path)
    position, lines = reopened(log_path)
    assert position == head_of(log_path) > 0
    assert "no views yet: building them from the log" in messages(lines)
    assert views_in(views_db(log_path)) == rebuilt(log_path, tmp_path / "rebuilt.db")
    await invariants(log_path)


async def test_an_unreadable_views_file_is_rebuilt_from_the_log_at_the_start(
    tmp_path: Path, invariants: Invariants
) -> None:
    log_path = tmp_path / "data" / "scheduler.db"
    fill(log_path, 30)
    remove_views(log_path)
    views_db(log_path).write_bytes(b"this is not a SQLite database, whatever it was" * 200)
    position, lines = reopened(log_path)
    assert position == head_of(log_path)
    (line,) = [
        x for x in lines if x["event"] == "views file unreadable: rebuilding it from the log"
    ]
    assert line["log_level"] == "warning"
    assert line["path"] == str(views_db(log_path))
    assert views_in(views_db(log_path)) == rebuilt(log_path, tmp_path / "rebuilt.db")
    await invariants(log_path)


async def test_views_ahead_of_a_log_restored_from_a_backup_are_rebuilt(
    tmp_path: Path, invariants: Invariants
) -> None:
    """The log goes back to an older backup; views.db stays as it was: it has folded
    positions the log no longer holds, and would show jobs that never happened."""
    data = tmp_path / "data"
    log_path = data / "scheduler.db"
    fill(log_path, 20)
    backup = tmp_path / "backup.db"
    shutil.copy(log_path, backup)  # closed: the WAL was checkpointed into the file
    backed_up = head_of(backup)
    fill(log_path, 20, prefix="later_")
    assert head_of(log_path) > backed_up
    for suffix in ("-wal", "-shm"):
        log_path.with_name(log_path.name + suffix).unlink(missing_ok=True)
    shutil.copy(backup, log_path)  # the restore: views.db is left as it was

    position, lines = reopened(log_path)
    assert position == backed_up
    assert any("past the log's end" in m for m in messages(lines))
    assert views_in(views_db(log_path)) == rebuilt(log_path, tmp_path / "rebuilt.db")
    await invariants(log_path)


async def test_views_folded_from_another_log_are_rebuilt(
    tmp_path: Path, invariants: Invariants
) -> None:
    """Another log, longer than the one the views were folded from: not ahead, but not
    theirs either (its first event is another)."""
    log_path = tmp_path / "data" / "scheduler.db"
    other = tmp_path / "other" / "scheduler.db"
    fill(log_path, 10)
    fill(other, 30, prefix="other_")
    assert head_of(other) > head_of(log_path)
    log_path.unlink()
    for suffix in ("-wal", "-shm"):
        log_path.with_name(log_path.name + suffix).unlink(missing_ok=True)
    shutil.copy(other, log_path)

    position, lines = reopened(log_path)
    assert position == head_of(log_path)
    assert "the views were folded from another log: rebuilding the views from the log" in (
        messages(lines)
    )
    assert views_in(views_db(log_path)) == rebuilt(log_path, tmp_path / "rebuilt.db")
    await invariants(log_path)


async def test_a_data_directory_of_the_previous_layout_starts_and_loses_its_stale_views(
    tmp_path: Path, invariants: Invariants
) -> None:
    log_path = tmp_path / "data" / "scheduler.db"
    fill(log_path, 40, views_in_log=True)  # as the previous version made it
    # ...with the keys' last use noted beside the views, as its API did.
    usage = KeyUsage(log_path, ManualClock(START))
    usage.seen("k-used")
    old = tables_in(log_path)
    assert {"jobs", "executions", "api_keys", CHECKPOINTS, META, "api_key_usage"} <= old
    assert not views_db(log_path).exists()

    position, lines = reopened(log_path)
    assert position == head_of(log_path)
    (moved,) = [x for x in lines if x["event"] == "view tables moved out of the event log's file"]
    assert moved["dropped"] == len(old - LOG_TABLES)
    # The log's file holds the log only; nobody can read a stale view there by mistake.
    assert tables_in(log_path) == LOG_TABLES
    views = views_in(views_db(log_path))
    assert without(views, "api_key_usage") == rebuilt(log_path, tmp_path / "rebuilt.db")
    assert views["api_key_usage"] == [("k-used", "2026-03-27T12:00:00.000000Z")]
    # A second start has nothing left to move.
    _, lines = reopened(log_path)
    assert "view tables moved out of the event log's file" not in messages(lines)
    await invariants(log_path)


def test_the_previous_layout_is_still_there_on_request(tmp_path: Path) -> None:
    """``views_in_log``: what the benchmark's side-by-side and the upgrade test need."""
    log_path = tmp_path / "scheduler.db"
    store = open_store(log_path, Projector(), views_in_log=True)
    try:
        Lab(store).step("create", 0, 0)
    finally:
        store.close()
    assert {"events", "jobs", CHECKPOINTS} <= tables_in(log_path)
    assert not views_db(log_path).exists()


async def test_lablink_starts_on_a_data_directory_of_the_previous_layout(
    tmp_path: Path, invariants: Invariants
) -> None:
    """The runtime `lablink serve` runs, on a data directory the previous version left: it
    starts, its readers (the engine's plan, the first admin key, retention) read views.db,
    and the log's file is left with the log."""
    from lablink.runtime import Runtime, ensure_admin_key
    from lablink.scheduler.engine import recovery_lists
    from lablink.settings import Settings

    data = tmp_path / "data"
    log_path = data / "scheduler.db"
    fill(log_path, 20, views_in_log=True)
    settings = Settings(data_dir=data, timezone="UTC", executor="noop", nats=False)
    with capture_logs() as lines:
        async with Runtime(settings) as runtime:
            assert ensure_admin_key(runtime) is None  # the lab's keys are found in views.db
            with reading_views(runtime.store) as conn:
                active, _ = recovery_lists(conn)
    (started,) = [x for x in lines if x["event"] == "scheduler started"]
    assert started["jobs"] == len(active) > 0  # the engine planned what views.db lists
    assert "view tables moved out of the event log's file" in messages(lines)
    assert tables_in(log_path) == LOG_TABLES
    await invariants(log_path)
