"""`lablink verify`: is the data directory's record sound, and do the views say what it says?

In order, stopping at the first discrepancy (one line: where, and what):

1. ``PRAGMA integrity_check`` on the log (``scheduler.db``) and on the views (``views.db``);
2. the log's positions run 1, 2, 3… without a gap, each stream's versions 1, 2, 3…, and
   each event's hash is the one its content and the previous hash give (the chain,
   lablink/eventstore/chain.py; `lablink audit verify` also checks the signed checkpoints);
3. a replay equals the live views: the log is folded by the same projector into a scratch
   file (in the system's temporary directory) up to the position the live views have folded,
   and the two are compared table by table, row by row (``lablink.projections.compare``).

It only reads: read-only connections, no lock of the data directory, so it runs beside
`lablink serve`. The views fold behind the log: verify first waits (``wait`` seconds, 30 by
default) for them to fold the log's last position as it read it; then it holds one read
transaction on the views, so that what it compares is one instant of them, and replays the
log up to exactly that instant. Views still behind after the wait (a server whose projector
is failing, or a stopped one that crashed before folding) are compared as far as they go,
and the report says how far that is.
"""

from __future__ import annotations

import contextlib
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from lablink.backup.snapshot import pinned, read_only
from lablink.datadir import DB_NAME, VIEWS_NAME
from lablink.errors import NotALog, VerifyFailed
from lablink.eventstore.chain import ChainCheck, ChainRow, PassedOver, in_order
from lablink.eventstore.sqlite import LogReader, connect
from lablink.projections.compare import count_rows, first_difference, view_tables
from lablink.projections.runner import Projector

WAIT_SECONDS = 30.0
POLL_SECONDS = 0.1
WALK_BATCH = 10_000

# What verify is doing now, for a progress line.
Step = Callable[[str], None]


@dataclass(frozen=True)
class Verified:
    log_position: int  # the log's last position when it was walked
    streams: int
    views_position: int  # the position up to which replay and views were compared
    tables: int
    rows: int
    seconds: float
    passed_over: int = 0  # a cluster copy's positions that were the lease's messages

    def summary(self) -> str:
        behind = (
            ""
            if self.views_position >= self.log_position
            else f" (the views were {self.log_position - self.views_position} events behind)"
        )
        copy = (
            f" but for {self.passed_over} a cluster copy passed over (the lease's messages)"
            if self.passed_over
            else ""
        )
        return (
            f"ok: {self.log_position - self.passed_over} events, positions gap-free{copy},"
            f" {self.streams} streams with"
            f" contiguous versions, hash chain intact; a replay up to position"
            f" {self.views_position} equals the live views ({self.tables} tables,"
            f" {self.rows} rows){behind}"
            f" [{self.seconds:.1f} s]"
        )


def verify(data_dir: Path, *, wait: float = WAIT_SECONDS, step: Step | None = None) -> Verified:
    """Check the data directory; ``VerifyFailed`` names the first discrepancy."""
    started = time.monotonic()
    say = step or (lambda _: None)
    db, views = data_dir / DB_NAME, data_dir / VIEWS_NAME
    projector = Projector()
    say("integrity_check (log)")
    with pinned(db) as log:
        _integrity(log, "log")
        head = LogReader(log).last_position()
    if not views.is_file():
        raise VerifyFailed("views", f"no {views}: `lablink serve` or `lablink replay` folds them")
    say(f"waiting for the views to fold position {head}")
    _wait_for_views(views, projector, head, wait)
    with _pinned_views(views) as live:
        say("integrity_check (views)")
        _integrity(live, "views")
        folded = _folded(live, projector)
        with pinned(db) as log:
            say("positions and versions")
            last, streams, passed = _walk(LogReader(log))
            if folded > last:
                raise VerifyFailed(
                    "views", f"they have folded position {folded}, past the log's end ({last})"
                )
            say(f"replaying the log up to position {folded}")
            tables = view_tables(projector)
            with _scratch() as replayed:
                projector.create(replayed)
                projector.fold_log(LogReader(log), replayed, folded)
                say("comparing the views with the replay")
                difference = first_difference(replayed, live, tables)
                if difference is not None:
                    raise VerifyFailed(difference.where, difference.detail)
                rows = count_rows(replayed, tables)
    return Verified(
        log_position=last,
        streams=streams,
        passed_over=passed,
        views_position=folded,
        tables=len(tables),
        rows=rows,
        seconds=time.monotonic() - started,
    )


def _integrity(conn: sqlite3.Connection, what: str) -> None:
    try:
        problems = [str(row[0]) for row in conn.execute("PRAGMA integrity_check")]
    except sqlite3.DatabaseError as exc:
        raise VerifyFailed(f"{what} integrity_check", str(exc)) from exc
    if problems != ["ok"]:
        raise VerifyFailed(f"{what} integrity_check", problems[0])


def _walk(reader: LogReader) -> tuple[int, int, int]:
    """Positions from 1 without a gap (a cluster copy's gaps only where it wrote down a
    passed-over run: the lease's messages, ``eventstore.chain``); each stream's versions
    from 1 without a gap. Returns the last position, the number of streams and the positions
    passed over."""
    versions: dict[str, int] = {}
    chain = ChainCheck()
    runs = _runs(reader) if reader.is_copy() else iter(())
    for step in in_order(_rows(reader), runs):
        # A gap first, then the stream's versions, then the hash: the first discrepancy
        # named is the plainest one (an edited version also breaks the hash).
        if len(step) != 2 and step[0] == chain.position + 1:
            position, _, stream_id, version, *_ = step
            previous = versions.get(stream_id, 0)
            if version != previous + 1:
                raise VerifyFailed(
                    f"stream {stream_id}",
                    f"version {version} at position {position} follows version {previous}"
                    f" (expected {previous + 1})",
                )
            versions[stream_id] = version
        broken = chain.step(step)
        if broken is not None:
            raise VerifyFailed(f"log position {broken.position}", f"{broken.kind}: {broken.detail}")
    broken = chain.finish()
    if broken is not None:
        raise VerifyFailed(f"log position {broken.position}", f"{broken.kind}: {broken.detail}")
    return chain.position, len(versions), chain.passed


def _rows(reader: LogReader) -> Iterator[ChainRow]:
    position = 0
    while rows := reader.read_chain(position, WALK_BATCH):
        yield from rows
        position = rows[-1][0]


def _runs(reader: LogReader) -> Iterator[PassedOver]:
    position = 0
    while runs := reader.passed_over(position, WALK_BATCH):
        yield from runs
        position = runs[-1][0]


def _folded(live: sqlite3.Connection, projector: Projector) -> int:
    """The one position every projection of the live views has folded."""
    try:
        stored = projector.stored_fingerprint(live)
        checkpoints = projector.checkpoints(live)
    except sqlite3.OperationalError as exc:
        raise VerifyFailed("views", f"not LabLink's views: {exc}") from exc
    if stored != projector.fingerprint():
        raise VerifyFailed(
            "views",
            f"made by another version of LabLink (fingerprint {stored}, this one's is"
            f" {projector.fingerprint()}): `lablink serve` rebuilds them at its start",
        )
    positions = set(checkpoints.values())
    if len(positions) > 1:
        raise VerifyFailed("views", f"their projections disagree on the position: {checkpoints}")
    return positions.pop() if positions else 0


def _position(views: Path, projector: Projector) -> int:
    conn = read_only(views)
    try:
        return min(projector.checkpoints(conn).values(), default=0)
    except sqlite3.DatabaseError:
        return 0  # not views at all: the pinned read reports it
    finally:
        conn.close()


def _wait_for_views(views: Path, projector: Projector, position: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while _position(views, projector) < position and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)  # another process folds: nothing to be woken by


@contextlib.contextmanager
def _pinned_views(views: Path) -> Iterator[sqlite3.Connection]:
    try:
        conn = read_only(views)
    except NotALog as exc:
        raise VerifyFailed("views", exc.reason) from exc
    try:
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")
    except sqlite3.DatabaseError as exc:
        raise VerifyFailed("views", str(exc)) from exc
    finally:
        conn.close()


@contextlib.contextmanager
def _scratch() -> Iterator[sqlite3.Connection]:
    with tempfile.TemporaryDirectory(prefix="lablink-verify-") as scratch:
        conn = connect(Path(scratch) / VIEWS_NAME)
        # A scratch file: nothing to keep if the machine stops.
        conn.execute("PRAGMA synchronous=OFF")
        try:
            yield conn
        finally:
            conn.close()
