"""A consistent copy of the event log while LabLink runs (`lablink backup`).

Only the log is copied: it is the record. The views (``views.db``) are folded from it again
on restore, and the secrets beside it are the admin's to keep (docs/operations.md).

The copy is SQLite's online backup API, from a read-only connection that holds one read
transaction for the whole copy. In WAL mode a reader never blocks the writer, so the running
scheduler appends as usual; the open transaction pins the snapshot, so the paged copy (a
progress bar, a pause between steps for the scheduler's own disk writes) is of one instant
and never restarts because the log moved (a backup step on a connection without it starts
over whenever another connection writes, which a busy log does every second). No lock of
the data directory is taken: this is a reader, like the API's.

The copy is written beside its target under a temporary name, switched out of WAL mode (one
self-contained file, that opening it later does not change), flushed to disk and renamed into
place; then its SHA-256 is written beside it.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from lablink.backup import checksum
from lablink.errors import BackupError, BackupExists, NotALog
from lablink.eventstore.sqlite import LogReader

# Pages per step of the copy: 4 MiB at SQLite's default page size.
PAGES_PER_STEP = 1024
# A pause after each step, so the scheduler's own writes (each waiting for the disk) are not
# queued behind a burst of the copy's.
STEP_PAUSE = 0.002
# A large file is deleted (an old copy, or one --force replaces) by shrinking it this much at
# a time: unlinking 500 MB at once held the scheduler's appends for 0.2 s (the filesystem
# frees every extent in one journal commit), in 64 MiB steps 0.04 s.
SHRINK_STEP = 64 * 1024 * 1024
FILE_MODE = 0o600  # the log holds every key hash and result

# (pages copied, pages in all), after each step.
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Backup:
    file: Path
    position: int  # the last log position the copy holds
    sha256: str
    size: int
    seconds: float


def read_only(db: Path) -> sqlite3.Connection:
    """A connection that cannot write the log (nor create it): ``NotALog`` if there is no
    database at ``db``."""
    if not db.is_file():
        raise NotALog(str(db), "no such file")
    uri = f"{db.resolve().as_uri()}?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout=10000")
    except sqlite3.Error as exc:
        raise NotALog(str(db), str(exc)) from exc
    return conn


def has_log(conn: sqlite3.Connection) -> bool:
    row = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'events'"
    ).fetchone()
    return row is not None


@contextlib.contextmanager
def pinned(db: Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection to the log inside one read transaction: every read sees the
    log as it stood at the first one."""
    conn = read_only(db)
    try:
        try:
            conn.execute("BEGIN")
            found = has_log(conn)  # the first read: it also starts the snapshot
        except sqlite3.DatabaseError as exc:
            raise NotALog(str(db), str(exc)) from exc
        if not found:
            raise NotALog(str(db), "it holds no event log (no events table)")
        try:
            yield conn
        finally:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("COMMIT")
    finally:
        conn.close()


def take(
    db: Path,
    target: Path | Callable[[int], Path],
    *,
    force: bool = False,
    progress: Progress | None = None,
    pause: float = STEP_PAUSE,
) -> Backup:
    """Copy the log at ``db`` to ``target`` (and ``target.sha256``); ``target`` may be made
    from the last position the copy holds (the scheduled backups' names). ``BackupExists``
    if the target exists and not ``force``."""
    started = time.monotonic()
    with pinned(db) as source:
        position = LogReader(source).last_position()  # of the snapshot the copy is
        file = target(position) if callable(target) else target
        if file.exists() and not force:
            raise BackupExists(str(file))
        if file.exists() and file.resolve() == db.resolve():
            raise BackupError(f"{file}: this is the log itself; back it up to another file")
        if not file.parent.is_dir():
            raise BackupError(f"{file.parent}: no such directory")
        partial = file.with_name(f".{file.name}.partial")
        try:
            _copy(source, partial, progress, pause)
            _seal(partial)
            if file.exists():  # --force: the old copy goes gently, then the new takes its name
                discard(file, pause)
            os.replace(partial, file)
            _sync_dir(file.parent)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()
            raise
    sha256 = checksum.digest(file)
    checksum.write(file, sha256)
    return Backup(
        file=file,
        position=position,
        sha256=sha256,
        size=file.stat().st_size,
        seconds=time.monotonic() - started,
    )


def _copy(
    source: sqlite3.Connection, partial: Path, progress: Progress | None, pause: float
) -> None:
    with contextlib.suppress(FileNotFoundError):
        partial.unlink()
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)

    def step(status: int, remaining: int, total: int) -> None:
        # The copy reaches the disk a step at a time: left to the end, one flush of the whole
        # file holds the scheduler's appends (each waiting for its own fsync) for as long as
        # it takes (measured: 0.8 s for 500 MB).
        os.fdatasync(fd)
        if progress is not None:
            progress(total - remaining, total)
        if remaining and pause > 0:
            time.sleep(pause)  # pacing the copy's writes, not waiting for a condition

    dest = sqlite3.connect(partial, isolation_level=None)
    try:
        # Each step of the copy is a transaction of its own on the copy: with a journal and
        # SQLite's own fsyncs (several per step), the copy's flushes queue the scheduler's.
        # A half-written copy is worth nothing anyway: it takes its name only once whole and
        # flushed (``_seal``).
        dest.execute("PRAGMA journal_mode=OFF")
        dest.execute("PRAGMA synchronous=OFF")
        source.backup(dest, pages=PAGES_PER_STEP, progress=step)
        # One file, complete on its own: a copy in WAL mode would grow -wal and -shm files
        # beside it when opened, and could change under its checksum.
        dest.execute("PRAGMA journal_mode=DELETE")
    except sqlite3.Error as exc:  # the source was readable: writing the copy failed
        raise BackupError(f"{partial}: {exc}") from exc
    finally:
        dest.close()
        os.close(fd)


def discard(file: Path, pause: float = STEP_PAUSE) -> None:
    """Delete ``file`` (gone already is fine), shrinking it a step at a time first."""
    try:
        fd = os.open(file, os.O_WRONLY)
    except FileNotFoundError:
        return
    try:
        size = os.fstat(fd).st_size
        while size > 0:
            size = max(0, size - SHRINK_STEP)
            os.ftruncate(fd, size)
            os.fsync(fd)
            if size and pause > 0:
                time.sleep(pause)  # pacing, as the copy's steps
    finally:
        os.close(fd)
    with contextlib.suppress(FileNotFoundError):
        file.unlink()


def _seal(partial: Path) -> None:
    fd = os.open(partial, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
