"""Findings 9, 11 and the file modes of 14: one LabLink per data directory, a clear one-line
exit on a data directory that cannot be used, and private files.

Real `lablink` processes on real directories. Read-only is made real even for root (where
chmod 0500 does not stop writes): ``chattr +i`` (the immutable flag) and, where mounts are
allowed, a read-only bind mount; as any other user, chmod 0500.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lablink.datadir import DataDirLock, claim, prepare
from lablink.errors import DataDirLocked, DataDirUnusable
from lablink.runtime import Runtime
from lablink.settings import Settings
from tests.support.eventually import eventually_sync

LABLINK = str(Path(sys.executable).parent / "lablink")
ROOT = os.geteuid() == 0


class Lablink:
    """A `lablink` child whose output (JSON log lines and plain lines) the test can read."""

    def __init__(self, tmp: Path, data: Path, *args: str, **env: str) -> None:
        environ = {k: v for k, v in os.environ.items() if not k.startswith("LABLINK_")}
        environ.update(LABLINK_DATA_DIR=str(data), LABLINK_TIMEZONE="UTC", **env)
        self.output = tmp / f"out-{time.monotonic_ns()}.log"
        self._file = self.output.open("w")
        self.proc = subprocess.Popen(
            [LABLINK, *args], env=environ, stdout=self._file, stderr=subprocess.STDOUT
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def lines(self) -> list[str]:
        return self.output.read_text().splitlines()

    def events(self) -> list[dict[str, Any]]:
        found = []
        for line in self.lines():
            with contextlib.suppress(json.JSONDecodeError):
                record = json.loads(line)
                if isinstance(record, dict):
                    found.append(record)
        return found

    def wait_for(self, event: str, timeout: float = 60) -> dict[str, Any]:
        def logged() -> dict[str, Any] | None:
            for record in self.events():
                if record.get("event") == event:
                    return record
            assert self.proc.poll() is None, f"exited before {event!r}: {self.lines()}"
            return None

        found = eventually_sync(logged, timeout=timeout, what=lambda: f"{event!r}: {self.lines()}")
        assert found is not None
        return found

    def exit_code(self, timeout: float = 60) -> int:
        code = self.proc.wait(timeout=timeout)
        self._file.close()
        return code

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._file.close()


@pytest.fixture
def started(tmp_path: Path) -> Iterator[list[Lablink]]:
    """Every process a test starts is stopped afterwards, by its pid."""
    processes: list[Lablink] = []
    yield processes
    for process in processes:
        process.stop()


def start(processes: list[Lablink], tmp: Path, data: Path, *args: str, **env: str) -> Lablink:
    process = Lablink(tmp, data, *args, **env)
    processes.append(process)
    return process


def refused_with_one_line(process: Lablink) -> str:
    """The process exits 2 with exactly one line, and no traceback."""
    assert process.exit_code() == 2, process.lines()
    lines = [line for line in process.lines() if line.strip()]
    assert len(lines) == 1, lines
    assert "Traceback" not in lines[0]
    assert lines[0].startswith("lablink: "), lines
    return lines[0]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


NO_BUS = {"LABLINK_NATS": "off"}


# -- one scheduler per data directory ------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.slow
def test_a_second_scheduler_exits_at_once_and_a_sigkill_frees_the_directory(
    tmp_path: Path, started: list[Lablink]
) -> None:
    data = tmp_path / "data"
    first = start(started, tmp_path, data, "scheduler", **NO_BUS)
    first.wait_for("scheduler started")
    assert (data / "lablink.lock").read_text().strip() == str(first.pid)

    second = start(started, tmp_path, data, "scheduler", **NO_BUS)
    line = refused_with_one_line(second)
    assert line == f"lablink: LabLink is already running on {data} (pid {first.pid})"
    # Nothing of the second made it into the log: it opened nothing.
    assert not [e for e in second.events() if e.get("event") == "scheduler started"]

    api = start(started, tmp_path, data, "serve", "--port", "0", **NO_BUS)
    assert refused_with_one_line(api) == line

    # The kernel drops the lock with its holder, SIGKILL included: no stale lock.
    first.proc.send_signal(signal.SIGKILL)
    assert first.exit_code() == -signal.SIGKILL
    third = start(started, tmp_path, data, "scheduler", **NO_BUS)
    third.wait_for("scheduler started")
    assert (data / "lablink.lock").read_text().strip() == str(third.pid)


@pytest.mark.e2e
@pytest.mark.slow
def test_replay_in_place_waits_for_the_server_and_replay_elsewhere_does_not(
    tmp_path: Path, started: list[Lablink]
) -> None:
    data = tmp_path / "data"
    running = start(started, tmp_path, data, "scheduler", **NO_BUS)
    running.wait_for("scheduler started")

    in_place = start(started, tmp_path, data, "replay")
    line = refused_with_one_line(in_place)
    assert line.startswith(f"lablink: LabLink is already running on {data} (pid {running.pid})")
    assert "--output" in line

    elsewhere = start(started, tmp_path, data, "replay", "--output", str(tmp_path / "copy.db"))
    assert elsewhere.exit_code() == 0, elsewhere.lines()
    assert (tmp_path / "copy.db").exists()


@pytest.mark.e2e
@pytest.mark.nats
@pytest.mark.slow
def test_one_relay_per_data_directory_beside_a_scheduler_without_the_bus(
    tmp_path: Path, started: list[Lablink]
) -> None:
    data = tmp_path / "data"
    scheduler = start(started, tmp_path, data, "scheduler", **NO_BUS)
    scheduler.wait_for("scheduler started")
    # The scheduler does not publish (LABLINK_NATS=off): a relay may run beside it.
    relay = start(started, tmp_path, data, "relay")
    relay.wait_for("relay started")
    assert (data / "relay.lock").read_text().strip() == str(relay.pid)
    second = start(started, tmp_path, data, "relay")
    assert refused_with_one_line(second) == (
        f"lablink: LabLink is already running on {data} (pid {relay.pid})"
    )


def test_the_lock_in_process(tmp_path: Path) -> None:
    data = prepare(tmp_path / "data")
    held = DataDirLock(data).acquire()
    with pytest.raises(DataDirLocked) as refused:
        DataDirLock(data).acquire()
    assert refused.value.pid == os.getpid()
    assert refused.value.path == str(data)
    assert str(refused.value) == f"LabLink is already running on {data} (pid {os.getpid()})"
    held.release()
    with DataDirLock(data) as again:
        assert again.held


async def test_two_runtimes_on_one_directory(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", nats=False, executor="noop", timezone="UTC")
    async with Runtime(settings):
        with pytest.raises(DataDirLocked):
            await Runtime(settings).__aenter__()
    async with Runtime(settings):  # released on a graceful stop
        pass


# -- a data directory that cannot be used --------------------------------------------------


@contextlib.contextmanager
def unwritable(directory: Path) -> Iterator[str]:
    """``directory`` made unwritable for real; yields how."""
    if not ROOT:
        directory.chmod(0o500)
        try:
            yield "chmod 0500"
        finally:
            directory.chmod(0o700)
        return
    made = subprocess.run(["chattr", "+i", str(directory)], capture_output=True, check=False)
    if made.returncode != 0:
        pytest.fail(f"cannot make the fault: chattr +i fails here: {made.stderr.decode().strip()}")
    try:
        yield "chattr +i"
    finally:
        subprocess.run(["chattr", "-i", str(directory)], check=True)


@contextlib.contextmanager
def read_only_mount(directory: Path) -> Iterator[None]:
    """``directory`` bind-mounted read-only onto itself (root with mount rights only)."""
    if not ROOT:
        pytest.fail("cannot make the fault: a bind mount needs root")
    bound = subprocess.run(
        ["mount", "--bind", str(directory), str(directory)], capture_output=True, check=False
    )
    if bound.returncode != 0:
        pytest.fail(f"cannot make the fault: mount --bind fails: {bound.stderr.decode().strip()}")
    try:
        subprocess.run(
            ["mount", "-o", "remount,ro,bind", str(directory)], check=True, capture_output=True
        )
        yield
    finally:
        subprocess.run(["umount", str(directory)], check=True)


@pytest.mark.e2e
@pytest.mark.parametrize("command", ["scheduler", "serve"])
def test_a_read_only_data_directory_is_one_line_and_exit_2(
    tmp_path: Path, started: list[Lablink], command: str
) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    with unwritable(data) as how:
        process = start(started, tmp_path, data, command, "--data-dir", str(data), **NO_BUS)
        line = refused_with_one_line(process)
    cause = "Operation not permitted" if how == "chattr +i" else "Permission denied"
    assert line == f"lablink: cannot use data directory {data}: {cause} (cannot create files in it)"


@pytest.mark.e2e
def test_a_read_only_mount_is_one_line_and_exit_2(tmp_path: Path, started: list[Lablink]) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    with read_only_mount(data):
        process = start(started, tmp_path, data, "scheduler", **NO_BUS)
        line = refused_with_one_line(process)
    assert line == (
        f"lablink: cannot use data directory {data}: Read-only file system"
        " (cannot create files in it)"
    )


@pytest.mark.e2e
def test_an_uncreatable_data_directory_is_one_line_and_exit_2(
    tmp_path: Path, started: list[Lablink]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    data = blocker / "data"
    process = start(started, tmp_path, data, "scheduler", **NO_BUS)
    assert refused_with_one_line(process) == (
        f"lablink: cannot use data directory {data}: Not a directory (cannot create it)"
    )
    file_as_dir = start(started, tmp_path, blocker, "serve", **NO_BUS)
    assert refused_with_one_line(file_as_dir) == (
        f"lablink: cannot use data directory {blocker}: it exists and is not a directory"
    )


@pytest.mark.e2e
@pytest.mark.slow
def test_a_read_only_database_file_is_one_line_and_exit_2(
    tmp_path: Path, started: list[Lablink]
) -> None:
    data = tmp_path / "data"
    first = start(started, tmp_path, data, "scheduler", **NO_BUS)
    first.wait_for("scheduler started")
    first.stop()
    database = data / "scheduler.db"
    if ROOT:
        made = subprocess.run(["chattr", "+i", str(database)], capture_output=True, check=False)
        if made.returncode != 0:
            pytest.fail(f"cannot make the fault: chattr +i fails: {made.stderr.decode().strip()}")
        cause = "Operation not permitted"
    else:
        database.chmod(0o400)
        cause = "Permission denied"
    try:
        again = start(started, tmp_path, data, "scheduler", **NO_BUS)
        line = refused_with_one_line(again)
    finally:
        if ROOT:
            subprocess.run(["chattr", "-i", str(database)], check=True)
        else:
            database.chmod(0o600)
    assert line == f"lablink: cannot use data directory {data}: {cause} (cannot write {database})"


def test_the_errors_name_the_path_and_the_cause(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(DataDirUnusable) as refused:
        claim(blocker / "data")
    assert refused.value.path == str(blocker / "data")
    assert refused.value.cause == "Not a directory (cannot create it)"


# -- file modes ----------------------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.slow
def test_a_fresh_start_makes_the_directory_0700_and_the_files_0600(
    tmp_path: Path, started: list[Lablink]
) -> None:
    data = tmp_path / "fresh" / "data"
    server = start(started, tmp_path, data, "serve", "--port", "0", **NO_BUS)
    server.wait_for("api listening")
    assert mode(data) == 0o700
    for name in (
        "scheduler.db",
        "scheduler.db-wal",
        "scheduler.db-shm",
        "views.db",
        "views.db-wal",
        "views.db-shm",
        "admin.key",
        "lablink.lock",
    ):
        assert mode(data / name) == 0o600, name
    server.stop()
    assert mode(data / "scheduler.db") == 0o600


@pytest.mark.e2e
@pytest.mark.slow
def test_an_old_data_directory_is_tightened_and_a_foreign_one_only_warned_about(
    tmp_path: Path, started: list[Lablink]
) -> None:
    # What earlier versions left: data/ 0755 with scheduler.db 0644.
    old = tmp_path / "old"
    first = start(started, tmp_path, old, "scheduler", **NO_BUS)
    first.wait_for("scheduler started")
    first.stop()
    old.chmod(0o755)
    for name in ("scheduler.db", "scheduler.db-wal", "scheduler.db-shm"):
        if (old / name).exists():
            (old / name).chmod(0o644)
    again = start(started, tmp_path, old, "scheduler", **NO_BUS)
    again.wait_for("scheduler started")
    assert mode(old) == 0o700
    assert mode(old / "scheduler.db") == 0o600
    tightened = [e for e in again.events() if e.get("event", "").startswith("data directory")]
    assert tightened[0]["was"] == "0o755", again.events()

    # A directory that is not LabLink's (no log, no lock in it) keeps its mode: chmod of,
    # say, a home directory given as the data dir is not ours to do.
    foreign = tmp_path / "shared"
    foreign.mkdir()
    foreign.chmod(0o755)
    other = start(started, tmp_path, foreign, "scheduler", **NO_BUS)
    other.wait_for("scheduler started")
    assert mode(foreign) == 0o755
    assert mode(foreign / "scheduler.db") == 0o600
    warned = [e for e in other.events() if e.get("event", "").startswith("data directory")]
    assert warned[0]["hint"] == f"chmod 700 {foreign}", other.events()
