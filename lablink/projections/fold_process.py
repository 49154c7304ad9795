"""The projector in a process of its own: the views folded on the second core.

``lablink serve`` runs the engine's loop, the group committer, the relay and the API in one
Python process, under one interpreter lock. Folding the views there cost about 280 µs of every
fire's 900 (BENCHMARKS.md, "Where the time goes"), paid while the loop and the writer waited
for the lock. The views live in a file of their own and a fold takes no lock of the log's, so a
child interpreter can fold them: the same ``Projector.apply`` in batches, each batch's rows and
checkpoints in one transaction, on the child's own connection.

The two sides talk over the child's standard streams:

- parent → child (stdin): a byte per commit, "there is more", written without waiting (a full
  pipe already holds wake-ups enough). End of file: fold what is left, then exit.
- child → parent (stdout): ``R <position>`` once started (its checkpoints), then a line per
  fold transaction, ``F <position>``, and per failed one, ``E <position> <error>``. The
  parent's follower turns them into its position (read-your-writes, the lag) and its /health
  entry.

The child is started in a session of its own (a Ctrl-C at the terminal is the parent's to
handle) and ends when its stdin does, so a parent killed outright leaves no child behind. A
child that dies is started again by the parent from the views' checkpoints: a fold commits its
rows and checkpoints together, so nothing is lost or folded twice.

A plain child interpreter (``python -c`` running ``main``), as ``parallel.py``'s rebuild helper:
fork would copy this process's connections and threads.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

from lablink.eventstore.sqlite import LogReader, connect, event_of
from lablink.projections.runner import Projector

# The child's report lines.
FOLDED = b"F"
FAILED = b"E"
READY = b"R"
# A fold that failed (the disk is full, the file read-only) is tried again after this, doubling
# up to MAX_BACKOFF.
BACKOFF = 0.05
MAX_BACKOFF = 5.0


def fold_connection(log_path: Path, views_path: Path | None) -> sqlite3.Connection:
    """The connection a folder writes the views on: their own file with the log attached
    read-only (``views_path=None``: the layout before views.db, both in the log's file)."""
    if views_path is None:
        conn = connect(log_path)
    else:
        # The log's table (``events``) is found by its unqualified name, the views' tables
        # are the main database's, so every query reads the same in both layouts.
        conn = connect(views_path)
        attach_log(conn, log_path)
    # The views are disposable (rebuilt from the log, their checkpoints committed with their
    # rows): a fold need not wait for the disk. A power cut may undo the last folds; the
    # checkpoints go with them, and catching up folds them again.
    conn.execute("PRAGMA synchronous=NORMAL")
    # The folds touch the same rows again and again (a job fires every second): keep their
    # pages in memory (64 MiB; measured 55 -> 45 µs per event for the jobs fold with 10,000
    # jobs).
    conn.execute("PRAGMA cache_size=-65536")
    return conn


def attach_log(conn: sqlite3.Connection, log_path: Path) -> None:
    """Attach the log read-only to a connection to the views' file, as ``log``: the log's
    tables (``events``) are found by their own names, the views' in the main database, so
    every query reads the same in both layouts. Read-only: a writer's BEGIN IMMEDIATE would
    lock every attached database, the log's among them."""
    uri = f"{Path(log_path).resolve().as_uri()}?mode=ro"
    conn.execute("ATTACH DATABASE ? AS log", (uri,))


class FoldProcess:
    """The parent's handle on one child folding ``views_path`` from ``log_path``."""

    def __init__(self, log_path: Path, views_path: Path, batch: int) -> None:
        # The child imports this very copy of LabLink, wherever the working directory is.
        here = str(Path(__file__).resolve().parents[2])
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([here, *filter(None, [os.environ.get("PYTHONPATH")])]),
        }
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                f"from {__name__} import main; main()",
                str(log_path),
                str(views_path),
                str(batch),
            ],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None,  # its log lines and tracebacks go where the parent's go
            start_new_session=True,
        )
        stdin, stdout = self.process.stdin, self.process.stdout
        assert stdin is not None
        assert stdout is not None
        os.set_blocking(stdin.fileno(), False)
        self._stdin: IO[bytes] | None = stdin
        self.stdout: IO[bytes] = stdout

    @property
    def pid(self) -> int:
        return self.process.pid

    def wake(self) -> None:
        """Tell the child there is more to fold (from the committing thread: never waits)."""
        stdin = self._stdin
        if stdin is None:
            return
        # Full: the child has not read the wake-ups already there, one is as good as many.
        # Closed or broken: the child is gone, and the parent's reader starts another.
        with contextlib.suppress(BlockingIOError, OSError, ValueError):
            os.write(stdin.fileno(), b".")

    def finish(self) -> None:
        """Close the child's stdin: it folds what is committed and exits."""
        stdin, self._stdin = self._stdin, None
        if stdin is not None:
            with contextlib.suppress(OSError):
                stdin.close()

    def wait(self, timeout: float) -> int | None:
        """The child's exit code once it has ended (None: still running after ``timeout``)."""
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        self.finish()
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self.stdout.close()


def parse(line: bytes) -> tuple[bytes, int, str]:
    """A report line as (kind, position, error text)."""
    kind, _, rest = line.rstrip(b"\n").partition(b" ")
    number, _, text = rest.partition(b" ")
    return kind, int(number), text.decode(errors="replace")


# -- the child's side ------------------------------------------------------------------------


def main() -> None:
    """Fold the log into the views from their checkpoints on, whenever the parent says there
    is more, until the parent closes stdin."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    log_path, views_path, batch = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    conn = fold_connection(log_path, views_path)
    projector = Projector()
    reader = LogReader(conn)
    position = min(projector.checkpoints(conn).values(), default=0)
    wake = sys.stdin.fileno()
    os.set_blocking(wake, False)
    _report(READY, position)
    pause = BACKOFF
    while True:
        ended = _drain(wake)  # before reading the log: a commit after this wakes us again
        try:
            position = _fold_all(conn, reader, projector, position, batch)
        except Exception as exc:  # reported; the parent's /health shows it; tried again
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            projector.forget()
            _report(FAILED, position, f"{type(exc).__name__}: {exc}")
            if ended:
                sys.exit(1)
            time.sleep(BACKOFF)
            # Then until a new commit (the fault may be gone, and a reader waits for it) or
            # the end of the pause, whichever comes first.
            select.select([wake], [], [], max(0.0, pause - BACKOFF))
            pause = min(pause * 2, MAX_BACKOFF)
            continue
        pause = BACKOFF
        if ended:
            conn.close()
            return
        select.select([wake], [], [])


def _fold_all(
    conn: sqlite3.Connection, reader: LogReader, projector: Projector, position: int, batch: int
) -> int:
    while True:
        rows = reader.read_rows(position, batch)
        if not rows:
            return position
        events = [event_of(row) for row in rows]
        conn.execute("BEGIN IMMEDIATE")
        projector.apply(conn, events)
        conn.execute("COMMIT")
        position = events[-1].position
        _report(FOLDED, position)


def _drain(fd: int) -> bool:
    """Read every wake-up waiting; True once the parent has closed the pipe."""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return False
        if not chunk:
            return True


def _report(kind: bytes, position: int, text: str = "") -> None:
    line = kind + b" " + str(position).encode()
    if text:
        line += b" " + " ".join(text.split()).encode()
    try:
        os.write(sys.stdout.fileno(), line + b"\n")
    except BrokenPipeError:  # the parent is gone: nobody is left to tell
        sys.exit(0)
