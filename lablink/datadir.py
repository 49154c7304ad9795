"""The data directory: created private, checked usable, claimed by one process at a time.

Two LabLink schedulers on one database both fire the same jobs (they race for each fire, and
under load one fails with "database is locked"). So `lablink serve` and `lablink scheduler`
hold an exclusive ``flock`` on ``DATA_DIR/lablink.lock``, and whatever publishes the log to
NATS (serve and scheduler with the bus on, `lablink relay`) one on ``DATA_DIR/relay.lock``.
The kernel drops a lock when its holder dies, SIGKILL included: there is no stale lock to
clean up. The file holds the holder's pid, for the message a second process prints:
"LabLink is already running on DATA_DIR (pid N)".

Modes: a new data directory is made 0700, and the database files and the admin key are 0600
(the log holds every result, key hash and actor). An existing directory that is readable by
others is tightened to 0700 when it is clearly LabLink's own (it holds ``scheduler.db`` or a
lock file, and this user owns it); any other directory (a home directory, /tmp given as the
data dir) is left alone with a warning: chmod on someone else's directory is not ours to do.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import weakref
from pathlib import Path

import structlog

from lablink.errors import DataDirLocked, DataDirUnusable

log = structlog.get_logger(tag="scheduler")

SCHEDULER_LOCK = "lablink.lock"
RELAY_LOCK = "relay.lock"
DB_NAME = "scheduler.db"
# The views of the default log (lablink.projections.reading.views_file names the others').
VIEWS_NAME = "views.db"
# Files that are LabLink's alone: the log and the views folded from it (each with its WAL and
# shared-memory index: key hashes and results are in both) and the admin key. The bus's
# credentials under nats/ are written 0600 where they are made.
PRIVATE_FILES = (
    *(f"{name}{suffix}" for name in (DB_NAME, VIEWS_NAME) for suffix in ("", "-wal", "-shm")),
    "admin.key",
)
DIR_MODE = 0o700
FILE_MODE = 0o600


def _cause(exc: OSError) -> str:
    return os.strerror(exc.errno) if exc.errno else str(exc)


def prepare(path: Path) -> Path:
    """Make ``path`` a usable, private data directory, or raise ``DataDirUnusable`` naming
    the path and the cause. Creates it 0700 if missing; tightens what is LabLink's own."""
    shown = str(path)
    if path.exists() and not path.is_dir():
        raise DataDirUnusable(shown, "it exists and is not a directory")
    if not path.exists():
        try:
            path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
            os.chmod(path, DIR_MODE)  # mkdir's mode passes through the umask
        except OSError as exc:
            raise DataDirUnusable(shown, f"{_cause(exc)} (cannot create it)") from exc
    _check_writable(path)
    _tighten(path)
    return path


def _check_writable(path: Path) -> None:
    # A real write, not os.access or the mode bits: root passes those on a 0500 directory,
    # and SQLite must create its -wal and -shm files here.
    probe = path / f".lablink-write-test-{os.getpid()}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    except OSError as exc:
        raise DataDirUnusable(str(path), f"{_cause(exc)} (cannot create files in it)") from exc
    os.close(fd)
    with contextlib.suppress(OSError):
        probe.unlink()
    # SQLite opens a database it cannot write read-only without a word, and the first
    # write fails much later: check the files themselves (an immutable or read-only file).
    for name in (DB_NAME, f"{DB_NAME}-wal", f"{DB_NAME}-shm"):
        file = path / name
        try:
            os.close(os.open(file, os.O_RDWR))
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise DataDirUnusable(str(path), f"{_cause(exc)} (cannot write {file})") from exc


def _tighten(path: Path) -> None:
    info = path.stat()
    if stat.S_IMODE(info.st_mode) & 0o077:
        ours = info.st_uid == os.geteuid() and any(
            (path / name).exists() for name in (DB_NAME, SCHEDULER_LOCK, RELAY_LOCK)
        )
        mode = oct(stat.S_IMODE(info.st_mode))
        if ours:
            try:
                os.chmod(path, DIR_MODE)
                log.warning("data directory was open to others; now 0700", path=str(path), was=mode)
            except OSError as exc:
                log.warning(
                    "data directory is open to others", path=str(path), mode=mode, error=_cause(exc)
                )
        else:
            log.warning(
                "data directory is open to others; LabLink's files in it are 0600",
                path=str(path),
                mode=mode,
                hint=f"chmod 700 {path}",
            )
    secure_files(path)


def secure_files(path: Path) -> None:
    """Make LabLink's own files in ``path`` 0600 (those that exist)."""
    for name in PRIVATE_FILES:
        file = path / name
        try:
            mode = stat.S_IMODE(file.stat().st_mode)
            if mode & 0o077:
                os.chmod(file, FILE_MODE)
                log.info("file mode tightened", path=str(file), was=oct(mode))
        except FileNotFoundError:
            continue
        except OSError as exc:
            log.warning("cannot make file private", path=str(file), error=_cause(exc))


class DataDirLock:
    """An exclusive lock on one lock file of a data directory; see the module docstring."""

    def __init__(self, path: Path, name: str = SCHEDULER_LOCK) -> None:
        self.path = path
        self.file = path / name
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> DataDirLock:
        try:
            fd = os.open(self.file, os.O_RDWR | os.O_CREAT, FILE_MODE)
        except OSError as exc:
            raise DataDirUnusable(
                str(self.path), f"{_cause(exc)} (cannot open {self.file})"
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_pid(fd)
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise DataDirLocked(str(self.path), holder) from None
            raise DataDirUnusable(
                str(self.path), f"{_cause(exc)} (cannot lock {self.file})"
            ) from exc
        # Overwrite, then cut: a reader never sees an empty file while we hold it.
        pid = f"{os.getpid()}\n".encode()
        os.pwrite(fd, pid, 0)
        os.ftruncate(fd, len(pid))
        self._fd = fd
        # The lock goes with the descriptor: if a start fails before release() is called,
        # collecting this object still lets the next start in.
        self._finalizer = weakref.finalize(self, os.close, fd)
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)
        self._finalizer()  # closes the descriptor, which drops the lock
        self._fd = None

    def __enter__(self) -> DataDirLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode(errors="replace").split("\n", 1)[0].strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


class DataDirClaim:
    """What a scheduler process holds for its whole life: the data directory prepared and
    its locks taken (the relay's too when it publishes to NATS)."""

    def __init__(self, path: Path, *, scheduler: bool = True, relay: bool = False) -> None:
        self.path = path
        self.locks: list[DataDirLock] = []
        if scheduler:
            self.locks.append(DataDirLock(path, SCHEDULER_LOCK))
        if relay:
            self.locks.append(DataDirLock(path, RELAY_LOCK))

    def acquire(self) -> DataDirClaim:
        prepare(self.path)
        try:
            for lock in self.locks:
                lock.acquire()
        except BaseException:
            self.release()
            raise
        return self

    def release(self) -> None:
        for lock in reversed(self.locks):
            lock.release()


def claim(path: Path, *, scheduler: bool = True, relay: bool = False) -> DataDirClaim:
    """Prepare ``path`` and take its locks, or raise ``DataDirError`` (exit code 2 in the
    CLI): ``DataDirLocked`` naming the holder's pid, ``DataDirUnusable`` naming the cause."""
    return DataDirClaim(path, scheduler=scheduler, relay=relay).acquire()
