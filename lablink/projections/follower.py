"""The projector behind the log: folds what was committed into the views, in batches.

The log is the only thing on the fire path. An append commits its events and nothing else;
the store then tells the follower how far the log now reaches (``on_commit``), and the
follower folds everything past its own position, up to ``batch`` events per transaction,
with the projections' checkpoints in the same transaction (``Projector.apply``). A crash
between an append and its fold loses nothing: the views' checkpoints say where to start
again (``Projector.catch_up`` when the store is opened).

Two ways to run it:

- **in the background** (``start``): a thread of its own, woken by each commit, or
  (``start(process=True)``, what ``lablink serve`` does by default) a child process on the
  other core (``fold_process.py``), whose reports a thread of this process reads. Readers that
  must see a write wait for its position (``wait_for``/``wait``: read-your-writes, bounded);
- **after each commit** (``background=False``): the committing thread folds right after its
  commit, in a transaction of its own. For the command-line tools and the tests, where every
  read follows the write it depends on and nothing fires.

The follower writes the views on its own connection: in a file of their own (``views_path``,
``views.db`` beside the log by default, the log attached read-only), under a lock of their own;
or (``views_path=None``: a log in memory, or the layout before views.db) in the log's file,
under the store's lock. Readers in the same process read them through ``reading()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import structlog

from lablink.events import RecordedEvent
from lablink.eventstore.sqlite import LogReader, SQLiteEventStore, connect, event_of
from lablink.health import Reading
from lablink.projections.fold_process import (
    BACKOFF,
    FAILED,
    FOLDED,
    MAX_BACKOFF,
    READY,
    FoldProcess,
    attach_log,
    fold_connection,
    parse,
)
from lablink.projections.runner import CHECKPOINTS, Projector

log = structlog.get_logger(tag="projector")

# Events folded per transaction: enough that a burst of fires is one commit, few enough that
# the log's writer never waits long for the views' writer.
BATCH = 1000
# /health: behind by more than this is "degraded".
DEGRADED_LAG_SECONDS = 5.0
# Figures kept for the lag's percentiles (benchmarks, /health).
LAG_SAMPLES = 100_000
# Commits not yet folded whose instants are kept one by one (the lag of each).
MAX_PENDING_COMMITS = 100_000


class ViewsBehind(Exception):
    """The views had not folded a position within the wait a reader allows."""

    def __init__(self, position: int, folded: int, lag_seconds: float) -> None:
        self.position = position
        self.folded = folded
        self.lag_seconds = lag_seconds
        super().__init__(
            f"the views have folded the log up to position {folded}, not yet {position}"
            f" ({position - folded} events, {lag_seconds:.1f} s behind)"
        )


class Follower:
    def __init__(
        self,
        store: SQLiteEventStore,
        projector: Projector,
        *,
        batch: int = BATCH,
        background: bool = True,
        views_path: str | Path | None = None,
    ) -> None:
        self.store = store
        self.projector = projector
        self.batch = batch
        self.background = background
        self.views_path = Path(views_path) if views_path is not None else None
        shared = str(store.path) == ":memory:" and views_path is None
        # ":memory:" is one database per connection: the views must use the store's.
        self.conn: sqlite3.Connection = store.conn if shared else self._connect()
        self._own_conn = not shared
        # The views in the log's file: one writer at a time, and the store's lock hands over
        # at once where SQLite's busy handler would sleep. In a file of their own, the views
        # never wait for the log's writer (their lock is only against a second folder).
        self.write_lock: threading.RLock = (
            store.lock if self.views_path is None else threading.RLock()
        )
        self._reader = LogReader(self.conn)
        self._cond = threading.Condition()
        self._fold_lock = threading.Lock()
        self.position = 0
        self.head = store.last_position()
        # (position, monotonic instant) of each commit not yet folded: the lag in seconds.
        self._commits: deque[tuple[int, float]] = deque()
        self.lag_samples: deque[float] = deque(maxlen=LAG_SAMPLES)
        self._waiters: list[Waiter] = []
        self._thread: threading.Thread | None = None
        # In a process of its own (``start(process=True)``): the child folding the views;
        # ``_thread`` then reads its reports.
        self._child: FoldProcess | None = None
        self.restarts = 0  # children started again after one ended
        self._stopping = False
        # The readers' connection (``reading``), opened on first use.
        self._read_conn: sqlite3.Connection | None = None
        self._read_lock: threading.RLock = (
            store.lock if self.views_path is None else threading.RLock()
        )
        self.error: BaseException | None = None
        self.failing_since: float | None = None
        self.failures = 0
        self.folds = 0  # transactions written
        self._unsubscribe: Callable[[], None] = store.subscribe(self.on_commit)

    def _connect(self) -> sqlite3.Connection:
        log_path = Path(self.store.path)
        return fold_connection(log_path, self.views_path)

    @contextlib.contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """A connection that sees the views (and the log: its tables by their own names), for
        a reader in this process; one reader at a time. In a file of their own the views are
        read on a connection of its own, which never waits for a fold (WAL); in the log's
        file, on the store's connection under its lock."""
        with self._read_lock:
            if self._read_conn is None:
                self._read_conn = self._open_reader()
            yield self._read_conn

    def _open_reader(self) -> sqlite3.Connection:
        if self.views_path is None:
            return self.store.conn
        return connect_views(self.store.path, self.views_path)

    # -- following the log -------------------------------------------------------------------

    def on_commit(self, events: list[RecordedEvent]) -> None:
        """The store's after-commit listener (in the committing thread)."""
        last = events[-1].position
        with self._cond:
            if last > self.head:
                self.head = last
            commits = self._commits
            if last <= self.position:
                # A fold that read the log between this commit and its listener has folded it
                # already: noted as waiting, it would stay so, a lag that never ends.
                self.lag_samples.append(0.0)
            elif len(commits) < MAX_PENDING_COMMITS:
                commits.append((last, time.monotonic()))
            else:  # folds failing for long: the newest entry stands for the commits after it
                commits[-1] = (last, commits[-1][1])
            self._cond.notify_all()
        child = self._child
        if child is not None:
            child.wake()
        if not self.background:
            # A failed fold is recorded (self.error, /health); the append itself stood.
            with contextlib.suppress(Exception):
                self.fold_available(wait=False)

    def open(self) -> None:
        """Make the views' tables and fold what the log holds past their checkpoints (all of
        it again if they were made by another version of LabLink)."""
        projector, conn = self.projector, self.conn
        with self._fold_lock, self.write_lock:  # the folds' order: no deadlock with them
            stored = projector.stored_fingerprint(conn)
            had_views = (
                conn.execute(
                    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                    (CHECKPOINTS,),
                ).fetchone()
                is not None
            )
            stale = self._stale(conn, stored, had_views)
            if stale is not None:
                # The log is the truth: fold it again.
                log.warning(f"{stale}: rebuilding the views from the log", **self._where())
                projector.rebuild(self.store, conn)
            else:
                if not had_views and self.store.last_position() > 0:
                    log.warning("no views yet: building them from the log", **self._where())
                projector.create(conn)
                if stored is None:
                    projector.remember_fingerprint(conn)
                projector.catch_up(self.store, conn)
            position = min(projector.checkpoints(conn).values(), default=0)
        with self._cond:
            self.position = position
            self.head = max(self.head, self.store.last_position())

    def _stale(self, conn: sqlite3.Connection, stored: str | None, had_views: bool) -> str | None:
        """Why views that exist cannot be caught up, only rebuilt (None: they can)."""
        projector = self.projector
        if (stored is None and had_views) or (
            stored is not None and stored != projector.fingerprint()
        ):
            return "the views were made by another version of LabLink"
        if not had_views:
            return None
        folded = max(projector.checkpoints(conn).values(), default=0)
        head = self.store.last_position()
        if folded > head:
            # The log was restored from a backup older than the views, or is another log.
            return f"the views have folded position {folded}, past the log's end ({head})"
        origin = projector.origin(conn)
        if origin is not None and folded > 0 and origin != _first_event(self.store):
            return "the views were folded from another log"
        return None

    def _where(self) -> dict[str, Any]:
        return {
            "views": str(self.views_path or self.store.path),
            "log": str(self.store.path),
            "events": self.store.last_position(),
        }

    def start(self, *, process: bool = False) -> None:
        """Fold in the background from now on (``lablink serve``): in a thread of its own, or
        (``process=True``, views in a file of their own) in a child process on another core,
        whose reports a thread of this process reads."""
        self.background = True
        if self._thread is not None:
            return
        if process and self.views_path is not None and str(self.store.path) != ":memory:":
            target, name = self._follow_child, "lablink-projector-reports"
        else:
            target, name = self._run, "lablink-projector"
        self._thread = threading.Thread(target=target, name=name, daemon=True)
        self._thread.start()

    @property
    def pid(self) -> int | None:
        """The folding child's process id (None: folding in this process)."""
        child = self._child
        return None if child is None else child.pid

    def _run(self) -> None:
        pause = BACKOFF
        while True:
            with self._cond:
                while not self._stopping and self.position >= self.head:
                    self._cond.wait()
                if self._stopping:
                    return
            try:
                self.fold_available()
            except Exception:  # recorded in self.error; tried again after a pause
                self._pause_after_failure(pause)
                pause = min(pause * 2, MAX_BACKOFF)
            else:
                pause = BACKOFF

    def _follow_child(self) -> None:
        """Start the child, read its reports until it ends, and start another while the
        follower is not stopping."""
        assert self.views_path is not None
        pause = BACKOFF
        while not self._stopping:
            try:
                child = FoldProcess(Path(self.store.path), self.views_path, self.batch)
            except OSError as exc:
                self._failed_elsewhere(f"the projector process could not start: {exc}")
                self._pause_after_failure(pause)
                pause = min(pause * 2, MAX_BACKOFF)
                continue
            self._child = child
            child.wake()  # commits may have come before it listened
            if self._stopping:  # close() came while it started: it ends with its stdin
                child.finish()
            for line in child.stdout:
                try:
                    kind, position, text = parse(line)
                except ValueError:  # not a report (a stray print of a library): not ours
                    continue
                if kind == FOLDED:
                    self.folds += 1
                    self._folded(position)
                    pause = BACKOFF
                elif kind == READY:  # its checkpoints, before any fold: it is up
                    self._folded(max(position, self.position))
                elif kind == FAILED:
                    self._failed_elsewhere(text)
            code = child.wait(MAX_BACKOFF)
            child.stdout.close()
            self._child = None
            if self._stopping:
                return
            self.restarts += 1
            self._failed_elsewhere(f"the projector process {child.pid} ended (exit code {code})")
            self._pause_after_failure(pause)
            pause = min(pause * 2, MAX_BACKOFF)

    def _failed_elsewhere(self, text: str) -> None:
        """A fold the child could not make (rolled back there), or the child's end."""
        if self.error is None:
            self.failing_since = time.monotonic()
            log.error("projection fold failed", position=self.position, error=text)
        self.error = FoldFailed(text)
        self.failures += 1

    def _pause_after_failure(self, pause: float) -> None:
        """At least BACKOFF; then until a new commit (the fault may be gone, and a reader
        waits for it) or the end of ``pause``, whichever comes first."""
        head = self.head
        with self._cond:
            self._cond.wait_for(lambda: self._stopping, timeout=BACKOFF)
            self._cond.wait_for(
                lambda: self._stopping or self.head > head, timeout=max(0.0, pause - BACKOFF)
            )

    def fold_available(self, *, wait: bool = True) -> int:
        """Fold everything committed so far, a batch per transaction; returns events folded.

        ``wait=False`` (after a commit, in the committing thread): if another thread is
        folding, leave it to that one, which looks at the log's head again once done. A
        failed fold is rolled back (rows and checkpoints alike), the projections forget what
        they kept in memory, and the error is raised after being recorded.
        """
        total = 0
        while True:
            if not self._fold_lock.acquire(blocking=wait):
                return total
            try:
                total += self._fold_all()
            finally:
                self._fold_lock.release()
            if self.position >= self.head:
                return total

    def _fold_all(self) -> int:
        total = 0
        while not self._stopping:
            if self._own_conn:
                rows = self._reader.read_rows(self.position, self.batch)
            else:
                # The store's own connection (":memory:"): an append in progress on it
                # would show its uncommitted rows to a read outside its lock.
                with self.write_lock:
                    rows = self._reader.read_rows(self.position, self.batch)
            if not rows:
                break
            events = [event_of(row) for row in rows]
            with self.write_lock:
                try:
                    self.conn.execute("BEGIN IMMEDIATE")
                    self.projector.apply(self.conn, events)
                    self.conn.execute("COMMIT")
                except Exception as exc:
                    self._failed(exc)
                    raise
            self.folds += 1
            total += len(events)
            self._folded(events[-1].position)
        return total

    def _failed(self, exc: Exception) -> None:
        if self.conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):  # SQLite may have rolled back itself
                self.conn.execute("ROLLBACK")
        self.projector.forget()
        if self.error is None:
            self.failing_since = time.monotonic()
            log.error("projection fold failed", position=self.position, error=str(exc))
        self.error = exc
        self.failures += 1

    def _folded(self, position: int) -> None:
        now = time.monotonic()
        if self.error is not None:
            log.info("projection folds again", position=position, failures=self.failures)
        self.error = None
        self.failing_since = None
        self.failures = 0
        with self._cond:
            self.position = position
            commits = self._commits
            while commits and commits[0][0] <= position:
                self.lag_samples.append(now - commits.popleft()[1])
            ready = [w for w in self._waiters if w[0] <= position]
            if ready:
                self._waiters = [w for w in self._waiters if w[0] > position]
            self._cond.notify_all()
        _release(ready)

    # -- waiting for a position ----------------------------------------------------------------

    def wait_for(self, position: int, timeout: float) -> bool:
        """Block until the views have folded ``position``; False if ``timeout`` passed."""
        if self.position >= position:
            return True
        with self._cond:
            return self._cond.wait_for(lambda: self.position >= position, timeout)

    async def wait(self, position: int, seconds: float) -> bool:
        """The same for a coroutine, without holding a thread while it waits."""
        if self.position >= position:
            return True
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._cond:
            if self.position >= position:
                return True
            waiter = (position, loop, future)
            self._waiters.append(waiter)
        try:
            await asyncio.wait_for(future, seconds)
        except TimeoutError:
            pass
        finally:  # timed out, or the request was cancelled (the client went away)
            with self._cond:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
        return self.position >= position

    async def caught_up(self, seconds: float) -> None:
        """Wait until the views show everything committed so far; ViewsBehind if they do
        not within ``seconds`` (at once while folding fails)."""
        position = self.head
        if self.position >= position:
            return
        if self.error is not None or not await self.wait(position, seconds):
            raise self.behind(position)

    def settled(self, timeout: float) -> bool:
        """Wait until the views have folded everything committed so far."""
        return self.wait_for(self.head, timeout)

    def behind(self, position: int) -> ViewsBehind:
        return ViewsBehind(position, self.position, self.lag_seconds())

    # -- how far behind ------------------------------------------------------------------------

    def lag_events(self) -> int:
        return max(0, self.head - self.position)

    def lag_seconds(self) -> float:
        """How long the oldest commit not yet folded has waited (0 when caught up)."""
        with self._cond:
            oldest = self._commits[0][1] if self._commits else None
        return 0.0 if oldest is None else max(0.0, time.monotonic() - oldest)

    def probe(self) -> Reading:
        """The projector's entry in /health."""
        lag_events, lag_seconds = self.lag_events(), self.lag_seconds()
        details: dict[str, Any] = {
            "position": self.position,
            "head": self.head,
            "lag_events": lag_events,
            "lag_seconds": round(lag_seconds, 3),
            "background": self.background,
        }
        pid = self.pid
        if pid is not None or self.restarts:
            details.update(process=pid, restarts=self.restarts)
        # Read once: the folding thread may recover (and clear both) while /health asks.
        error, since = self.error, self.failing_since
        if error is not None and since is not None:
            details.update(
                last_error=str(error),
                failed_folds=self.failures,
                failing_for_seconds=round(time.monotonic() - since, 1),
            )
            return Reading(
                state="failing",
                reason=f"the views cannot be folded ({type(error).__name__}: {error})",
                details=details,
            )
        if self.background and self._thread is not None and not self._thread.is_alive():
            return Reading(state="failing", reason="the projector thread stopped", details=details)

        if lag_seconds > DEGRADED_LAG_SECONDS:
            return Reading(
                state="degraded",
                reason=f"the views are {lag_events} events ({lag_seconds:.1f} s) behind the log",
                details=details,
            )
        return Reading(state="ok", details=details)

    # -- stopping ------------------------------------------------------------------------------

    def close(self, timeout: float = 10.0) -> None:
        """Fold what is committed (within ``timeout``), stop the thread (and the child),
        close the connection."""
        self._unsubscribe()
        self._unsubscribe = _nothing
        if self._thread is not None:
            if self.error is None:  # folds failing (a full disk): catch-up at the next open
                self.wait_for(self.head, timeout)
            with self._cond:
                self._stopping = True
                self._cond.notify_all()
            child = self._child
            if child is not None:
                child.finish()  # it folds what is left and ends; its reports end with it
            self._thread.join(timeout)
            if child is not None and self._thread.is_alive():
                log.warning("projector process still folding at close: killed", pid=child.pid)
                child.kill()
                self._thread.join(timeout)
            if self._thread.is_alive():  # still in a transaction: let the process end it
                log.warning("projector still folding at close", position=self.position)
                return
            self._thread = None
        with self._cond:
            waiters, self._waiters = self._waiters, []
        _release(waiters)
        if self._own_conn and (self._thread is None or not self._thread.is_alive()):
            with self._fold_lock, self.write_lock:
                self.conn.close()
        with self._read_lock:
            if self._read_conn is not None and self._read_conn is not self.store.conn:
                self._read_conn.close()
            self._read_conn = None


class FoldFailed(Exception):
    """What the projector process reported: a fold it rolled back, or its own end."""


Waiter = tuple[int, asyncio.AbstractEventLoop, asyncio.Future[None]]


def connect_views(log_path: Path, views_path: Path | None) -> sqlite3.Connection:
    """A read-only connection for a reader of both: the views' file with the log attached
    (``views_path=None``: the layout before views.db, both in the log's file)."""
    conn = connect(log_path if views_path is None else views_path)
    try:
        if views_path is not None:
            attach_log(conn, log_path)
        conn.execute("PRAGMA query_only = ON")
    except BaseException:
        conn.close()
        raise
    return conn


def _first_event(store: SQLiteEventStore) -> str | None:
    """The id of the log's first event: which log the views were folded from."""
    for recorded in store.read_all(after_position=0, batch_size=1):
        return recorded.event_id
    return None


def _release(waiters: list[Waiter]) -> None:
    for _, loop, future in waiters:
        # A loop already closed (its process stopping) has nobody left to wake.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_resolve, future)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _nothing() -> None:
    return None
