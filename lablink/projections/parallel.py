"""A rebuild's second core: some projections folded in another Python process.

The same folds (each projection's one ``apply``), run by a child interpreter over the same log
up to the same position, into a scratch database of its own. The rebuilding process copies
the child's rows into its tables in one final transaction, with the checkpoints the child
wrote beside them: until that commit those projections' tables stay empty at checkpoint 0,
so a crash at any point leaves nothing ahead of its rows, and the next start catches them up.

A plain child interpreter (``python -c`` running ``main`` below), not multiprocessing:
fork would copy this process's SQLite connections and threads (the CLI's progress bar, a
server), and spawn re-imports the caller's ``__main__``. Its arguments travel pickled over
its stdin; its errors go to a file.
"""

from __future__ import annotations

import os
import pickle
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from lablink.eventstore.base import EventReader
from lablink.eventstore.sqlite import LogReader
from lablink.projections.base import Projection

SCRATCH = "views.db"


class Folds(Protocol):
    """What the child runs: a projector of the projections it folds (``runner.Projector``,
    which imports this module, hence a protocol rather than an import)."""

    projections: list[Projection]

    def create(self, conn: sqlite3.Connection) -> None: ...

    def fold_log(
        self, reader: EventReader, conn: sqlite3.Connection, bound: int, until: datetime | None
    ) -> int: ...


class Elsewhere:
    """``folds`` folding the log at ``log_path`` (positions up to ``bound``, instants up to
    ``until``) in a child process, into a scratch database; ``copy_into`` brings the rows
    back."""

    def __init__(self, log_path: Path, bound: int, until: datetime | None, folds: Folds) -> None:
        self.projections: Sequence[Projection] = folds.projections
        self._folder = tempfile.TemporaryDirectory(prefix="lablink-rebuild-")
        self.scratch = Path(self._folder.name) / SCRATCH
        # Errors go to a file: a pipe would need reading while the child runs.
        self._errors = tempfile.TemporaryFile()  # noqa: SIM115 (closed in wait or cancel)
        # ``-c``, not ``-m``: the package imports this module before ``-m`` would run it.
        # The child imports this very copy of LabLink, wherever the working directory is.
        here = str(Path(__file__).resolve().parents[2])
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([here, *filter(None, [os.environ.get("PYTHONPATH")])]),
        }
        self._process = subprocess.Popen(
            [sys.executable, "-c", f"from {__name__} import main; main()"],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=self._errors,
        )
        stdin = self._process.stdin
        assert stdin is not None
        # A few hundred bytes: the pipe takes them without waiting for the child to read.
        stdin.write(pickle.dumps((str(log_path), str(self.scratch), bound, until, folds)))
        stdin.close()

    def wait(self) -> None:
        """Wait for the child; raise with its error output if it failed."""
        try:
            code = self._process.wait()
            if code != 0:
                self._errors.seek(0)
                raise RuntimeError(
                    f"the rebuild's second process failed (exit code {code}):\n"
                    + self._errors.read().decode(errors="replace")
                )
        finally:
            self._errors.close()

    def copy_into(self, conn: sqlite3.Connection, checkpoints: str) -> None:
        """Copy the child's rows and checkpoints into ``conn``'s (empty) tables, in one
        transaction of their own."""
        conn.execute("ATTACH DATABASE ? AS scratch", (str(self.scratch),))
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                # The tables are the projections' and the runner's (named by the caller): this
                # module copies them whole, as the runner drops and makes them.
                for projection in self.projections:
                    for table in projection.tables:
                        columns = ", ".join(
                            row[1] for row in conn.execute(f"PRAGMA main.table_info({table})")
                        )
                        into, source = f"main.{table}", f"scratch.{table}"
                        conn.execute(
                            f"INSERT INTO {into} ({columns}) SELECT {columns} FROM {source}"
                        )
                    into, source = f"main.{checkpoints}", f"scratch.{checkpoints}"
                    conn.execute(
                        f"UPDATE {into} SET position ="
                        f" (SELECT position FROM {source} WHERE name = ?) WHERE name = ?",
                        (projection.name, projection.name),
                    )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        finally:
            conn.execute("DETACH DATABASE scratch")
            self._folder.cleanup()

    def cancel(self) -> None:
        if self._process.poll() is None:
            self._process.kill()
        self._process.wait()
        self._errors.close()
        self._folder.cleanup()


def main() -> None:
    """The child's side: fold the log into the scratch database, then exit."""
    arguments: tuple[str, str, int, datetime | None, Any] = pickle.load(sys.stdin.buffer)
    log_path, scratch_path, bound, until, folds = arguments
    log = sqlite3.connect(f"{Path(log_path).resolve().as_uri()}?mode=ro", uri=True)
    scratch = sqlite3.connect(scratch_path, isolation_level=None)
    # Disposable: thrown away if this process or its parent dies before the copy.
    scratch.execute("PRAGMA journal_mode=OFF")
    scratch.execute("PRAGMA synchronous=OFF")
    folds.create(scratch)
    folds.fold_log(LogReader(log), scratch, bound, until)
    scratch.close()
    log.close()
