"""Putting a backup back (`lablink restore FILE --data-dir DIR`).

Only into an empty or missing directory: a restore never replaces a log, so a mistyped
path costs nothing. The copy's SHA-256 is checked against ``FILE.sha256`` when there is one;
the copy is checked by SQLite (``integrity_check``) before it becomes ``scheduler.db``; the
views are then folded from it by the projector's rebuild, the same fold `lablink replay`
runs, so that the first `lablink serve` on the directory starts with them ready.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lablink.backup import checksum
from lablink.backup.snapshot import FILE_MODE, pinned
from lablink.datadir import DB_NAME, DataDirLock, prepare, secure_files
from lablink.errors import DataDirUnusable, NotALog, RestoreTargetNotEmpty
from lablink.eventstore.sqlite import LogReader, SQLiteEventStore, connect
from lablink.projections.reading import views_file
from lablink.projections.runner import Projector

# Events folded so far, after each batch of the rebuild.
Folded = Callable[[int], None]


@dataclass(frozen=True)
class Restored:
    db: Path
    views: Path
    position: int
    sha256: str | None  # None: there was no FILE.sha256 to check against
    seconds: float


def check_empty(directory: Path) -> None:
    """``RestoreTargetNotEmpty`` naming what is in ``directory`` (missing is fine)."""
    if not directory.exists():
        return
    if not directory.is_dir():
        raise DataDirUnusable(str(directory), "it exists and is not a directory")
    entries = sorted(entry.name for entry in directory.iterdir())
    if entries:
        raise RestoreTargetNotEmpty(str(directory), entries)


def last_position(file: Path) -> int:
    """The copy's last position, after SQLite has checked every page of it."""
    with pinned(file) as conn:
        problems = [row[0] for row in conn.execute("PRAGMA integrity_check")]
        if problems != ["ok"]:
            raise NotALog(str(file), f"integrity_check: {'; '.join(problems[:3])}")
        return LogReader(conn).last_position()


def restore(file: Path, data_dir: Path, *, progress: Folded | None = None) -> Restored:
    started = time.monotonic()
    if not file.is_file():
        raise NotALog(str(file), "no such file")
    check_empty(data_dir)
    sha256 = checksum.check(file)  # ChecksumMismatch: nothing is written
    position = last_position(file)
    prepare(data_dir)
    lock = DataDirLock(data_dir).acquire()  # no `lablink serve` starts on it half-restored
    try:
        db = data_dir / DB_NAME
        partial = data_dir / f".{DB_NAME}.partial"
        try:
            shutil.copyfile(file, partial)
            os.chmod(partial, FILE_MODE)
            with open(partial, "rb") as stream:
                os.fsync(stream.fileno())
            os.replace(partial, db)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()
            raise
        views = views_file(db)
        assert views is not None  # a file named scheduler.db has views.db beside it
        _rebuild_views(db, views, progress)
        secure_files(data_dir)
    finally:
        lock.release()
    return Restored(
        db=db, views=views, position=position, sha256=sha256, seconds=time.monotonic() - started
    )


def _rebuild_views(db: Path, views: Path, progress: Folded | None) -> None:
    """The views folded from the restored log: ``Projector.rebuild``, as `lablink replay`."""
    store = SQLiteEventStore(db)
    try:
        target = connect(views)
        try:
            with store.lock:
                Projector().rebuild(store, target, progress=progress)
        finally:
            target.close()
    except sqlite3.DatabaseError as exc:
        raise NotALog(str(db), str(exc)) from exc
    finally:
        store.close()
