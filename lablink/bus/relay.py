"""Publishes the log to JetStream, in position order, never ahead of the log.

The relay reads events past its checkpoint and publishes each to ``LABLINK_EVENTS`` with
``Nats-Msg-Id`` = event id (JetStream drops a duplicate within its window; consumers dedupe by
the same id). Up to ``window`` batches are in flight: batch n+1 is read and published while
the acks of batch n are awaited, because waiting for every ack before reading again left the
relay at a fraction of what the server takes. Messages still go out in position order, and
the checkpoint moves, in order, only past batches whose every message was acked. So a crash or
an outage never loses an event and never reorders them; at worst some events are sent again.
NATS being down never blocks the scheduler or the API: events keep committing and the backlog
drains in order on reconnect. If the stream disappears, it is recreated and refilled from the
log.

Sessions. Publishing runs in sessions under a ``Supervisor`` (health entry ``task.relay``): a
session opens a connection of its own, makes sure of the stream and publishes from the
checkpoint until anything fails (a lost connection, a refused publish, acks that never come,
a bug); then it closes that connection and the supervisor starts a new one after a capped
backoff. Nothing survives from one session to the next but the checkpoint, so no state of a
connection that went bad (which is what kept the relay of finding 4 looping on "acks missing"
until LabLink restarted) can outlive it.

A stream that takes nothing. After a write error on its disk (ENOSPC, EFBIG), nats-server keeps
the stream's file store failed: it answers no publish to that stream, even once the disk has
room again, until the server restarts (nats-server issues 6211, 8386). The relay sees a
reachable JetStream whose acks never come; when that lasts ``stuck_seconds`` with a backlog,
it calls ``on_stuck`` (the private server is then restarted, see ``bus.private``), and again
after growing pauses while it lasts. With an external NATS it reports it, failing, in health.

Cluster mode: one relay per cluster. Every replica's local copy holds the same log at the
same positions, and every replica has a relay (``shared_stream``), but only the one holding
the scheduler lease publishes: ``lead()`` when it gains the lease, ``follow()`` when it loses
it (``scheduler.leadership``). A relay of a shared stream starts each session after the
stream's last message (``_resume_after_stream_tail``, both ways), not from its own
checkpoint, which is stale once another replica has published: so a handoff publishes
nothing twice (the former leader's last acked event is the stream's tail) and skips nothing
(the stream holds every position up to its tail, each relay having published in order from
the tail it found). A former leader's relay paused mid-batch (SIGSTOP) and resumed may still
send that batch after the new leader's started: those ids are in the stream already and
JetStream drops them within its duplicate window (600 s); a pause longer than the window
outlives the server's patience with the paused connection (it is closed by the server's
pings), so that batch never arrives. A following relay holds no connection, and says so
(``RelayStatus.following``): not publishing is its job, not a fault.

Acks are read by the relay itself rather than through nats-py's ``publish_async``: that
loses a JetStream error reply and leaves its future pending for ever (nats.py issue #985),
which turned every refusal ("insufficient resources", "maximum messages exceeded") into an
anonymous ack timeout.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec
import nats.errors
import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from lablink.bus.connection import connect_nats, ensure_stream
from lablink.bus.options import NatsOptions, redact
from lablink.bus.subjects import EVENTS_ALL, STREAM, alarm_subject, event_subject
from lablink.clock import SystemClock
from lablink.errors import AckFailed, PublishRefused, StreamTailLost, ViewsFileMissing
from lablink.events import (
    AlarmRaised,
    AnyEvent,
    JobCreated,
    JobUpdated,
    RecordedEvent,
    decode_event,
)
from lablink.eventstore.base import StoredRow, parse_instant
from lablink.eventstore.sqlite import LogReader, SQLiteEventStore, connect
from lablink.health import Health
from lablink.projections.executions import equipment_of_job
from lablink.projections.follower import connect_views
from lablink.projections.reading import views_file
from lablink.supervision import Supervisor, Watch, describe

__all__ = ["AckFailed", "NatsOptions", "Relay", "RelayStatus", "envelope", "row_envelope"]

log = structlog.get_logger(tag="relay")

TASK = "task.relay"
SHUTDOWN_SECONDS = 2.0
CHECKPOINTS = """
CREATE TABLE IF NOT EXISTS relay_checkpoints (name TEXT PRIMARY KEY, position INTEGER NOT NULL)
"""
_MAX_SUBJECTS = 50_000
_FOREVER = 10 * 365 * 86400.0
# The connection's own liveness check: a server that stops answering (SIGSTOP, a hung host)
# is noticed within about PING_SECONDS x (MAX_PINGS + 1) even while nothing is published.
PING_SECONDS = 2.0
MAX_PINGS = 2
# The relay's checkpoint is written at most this often (the latest position each time).
CHECKPOINT_SECONDS = 0.25
# How often a running session makes sure the stream still ends where it acknowledged: one
# small request, the bound on how long a tail lost to a server's write error goes unseen.
TAIL_CHECK_SECONDS = 5.0
# A pause between two calls of on_stuck grows from stuck_seconds to this.
MAX_STUCK_PAUSE = 600.0


class _Envelope(msgspec.Struct):
    """What is published: the stored columns and the event."""

    position: int
    event_id: str
    stream_id: str
    version: int
    type: str
    occurred_at: datetime
    actor: str
    correlation_id: str | None
    data: AnyEvent


_encoder = msgspec.json.Encoder()


def envelope(recorded: RecordedEvent) -> bytes:
    """The published form of a recorded event; ``row_envelope`` gives the same bytes."""
    return _encoder.encode(
        {
            "position": recorded.position,
            "event_id": recorded.event_id,
            "stream_id": recorded.stream_id,
            "version": recorded.version,
            "type": recorded.type,
            "occurred_at": recorded.occurred_at,
            "actor": recorded.actor,
            "correlation_id": recorded.correlation_id,
            "data": recorded.event,
        }
    )


def row_envelope(row: StoredRow, event: AnyEvent) -> bytes:
    """The published form of a stored row and its decoded payload, without building a
    ``RecordedEvent``. The payload is decoded and encoded again rather than spliced in as it
    is stored: a row of an older schema, or a float field stored as an int, would otherwise
    go out differently from today, and the decode costs about 0.4 ms per 1,000 events."""
    position, event_id, stream_id, version, kind, occurred_at, actor, correlation, _ = row
    return _encoder.encode(
        _Envelope(
            position,
            event_id,
            stream_id,
            version,
            kind,
            parse_instant(occurred_at),
            actor,
            correlation,
            event,
        )
    )


@dataclass
class RelayStatus:
    """What the relay says of itself, read by the health probes (``bus.probes``) and the
    API's ``nats`` summary; written from the event loop and from committing threads."""

    url: str
    connected: bool = False
    published_position: int = 0
    log_position: int = 0
    last_error: str | None = None
    oldest_unpublished_at: datetime | None = None
    published_total: int = 0
    # Monotonic instants: since when the relay has had no connection (None: it has one),
    # when the checkpoint last moved, and how many times the stream was found stuck.
    disconnected_since: float | None = field(default_factory=time.monotonic)
    last_progress: float = field(default_factory=time.monotonic)
    stuck_calls: int = 0
    # How often the stream was found short of what it had acknowledged, and the relay went
    # back to its tail to publish the rest again.
    tails_lost: int = 0
    # Cluster mode: another replica publishes (this one does not hold the scheduler lease),
    # and where this relay's last session found the stream's tail and resumed after it.
    following: bool = False
    resumed_at: int | None = None
    # (position, first seen): when each range of positions was first seen committed, to
    # tell the age of the oldest unpublished event whatever the clocks of its writers.
    _seen: collections.deque[tuple[int, float]] = field(default_factory=collections.deque)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def lag(self) -> int:
        if self.following:  # another replica publishes: nothing waits for this one
            return 0
        return max(0, self.log_position - self.published_position)

    def observe(self, position: int, now: float | None = None) -> None:
        """The log reaches ``position`` (seen now)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            if position <= self.log_position:
                return
            caught_up = self.log_position <= self.published_position
            self.log_position = position
            if self.following or position <= self.published_position:
                return
            if caught_up:  # from caught up to behind: not stalled before now
                self.last_progress = max(self.last_progress, now)
            seen = self._seen
            # Neighbouring observations merge (keeping the earlier instant, so an age is never
            # understated), more coarsely the longer the backlog: a few thousand entries at most.
            grain = max(0.25, (now - seen[0][1]) / 2048) if seen else 0.25
            if seen and now - seen[-1][1] < grain:
                seen[-1] = (position, seen[-1][1])
            else:
                seen.append((position, now))

    def leading(self, now: float | None = None) -> None:
        """Publishing from now on (cluster mode): what was committed while following waits
        from now, not from when it was committed."""
        with self._lock:
            self.following = False
            self.last_error = None
            self._seen.clear()
            self.last_progress = time.monotonic() if now is None else now

    def published(self, position: int, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            seen = self._seen
            if position < self.published_position:  # a refill from 0: all of it waits anew
                seen.clear()
                if self.log_position > position:
                    seen.append((self.log_position, now))
            self.published_position = position
            self.last_progress = now
            while seen and seen[0][0] <= position:
                seen.popleft()

    def set_connected(self, connected: bool, now: float | None = None) -> None:
        self.connected = connected
        if connected:
            self.disconnected_since = None
        elif self.disconnected_since is None:
            self.disconnected_since = time.monotonic() if now is None else now

    def lag_seconds(self, now: float | None = None) -> float:
        """How long the oldest unpublished event has waited (0 when caught up)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            if self.following or self.log_position <= self.published_position:
                return 0.0
            first = next((t for p, t in self._seen if p > self.published_position), None)
        return max(0.0, now - first) if first is not None else 0.0

    def stalled_seconds(self, now: float | None = None) -> float:
        """How long the relay has been behind without moving its checkpoint."""
        now = time.monotonic() if now is None else now
        lag = self.lag_seconds(now)
        return min(lag, max(0.0, now - self.last_progress)) if lag else 0.0

    def disconnected_seconds(self, now: float | None = None) -> float:
        if self.disconnected_since is None:
            return 0.0
        return max(0.0, (time.monotonic() if now is None else now) - self.disconnected_since)


class _Acks:
    """JetStream's answers to one session's publishes, on one inbox subscription: a future per
    message, failed with ``PublishRefused`` when JetStream says no."""

    def __init__(self, nc: NATS) -> None:
        self._nc = nc
        self.inbox = nc.new_inbox()
        self._pending: dict[str, tuple[asyncio.Future[int], int]] = {}
        self._next = 0

    async def start(self) -> None:
        await self._nc.subscribe(f"{self.inbox}.*", cb=self._answer)

    def expect(self, position: int) -> tuple[str, asyncio.Future[int]]:
        """A reply subject for the publish of ``position`` and the future of its ack."""
        self._next += 1
        token = str(self._next)
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending[token] = (future, position)
        return f"{self.inbox}.{token}", future

    async def _answer(self, msg: Msg) -> None:
        found = self._pending.pop(msg.subject.rpartition(".")[2], None)
        if found is None or found[0].done():
            return
        future, position = found
        status = (msg.headers or {}).get("Status")
        if status == "503":  # no responders: nothing stores that subject
            future.set_exception(PublishRefused(position, 503, "no stream for the subject"))
            return
        try:
            answer = json.loads(msg.data)
        except ValueError:
            future.set_exception(PublishRefused(position, None, f"unreadable ack {msg.data!r}"))
            return
        error = answer.get("error") if isinstance(answer, dict) else None
        if error:
            future.set_exception(
                PublishRefused(position, error.get("code"), str(error.get("description", error)))
            )
        else:
            future.set_result(int(answer.get("seq", 0)) if isinstance(answer, dict) else 0)

    def close(self) -> None:
        for future, _ in self._pending.values():
            future.cancel()
        self._pending.clear()


@dataclass
class _Batch:
    """Published, not yet confirmed: its acks, and the alarms to send once they are in."""

    last: int  # position of its last event
    size: int
    acks: list[asyncio.Future[int]]
    alarms: list[tuple[str, bytes]]
    started: float

    def drop(self) -> None:
        # Cancelled acks never log "exception was never retrieved"; failed ones are read here.
        for ack in self.acks:
            if not ack.cancel() and not ack.cancelled():
                ack.exception()


class _Stopping(Exception):
    """Ends a session because the relay stops."""


Escalation = Callable[[str], Awaitable[None]]


class Relay:
    def __init__(
        self,
        db_path: Path,
        options: NatsOptions,
        *,
        name: str = "relay",
        batch_size: int = 1000,
        window: int = 4,
        ack_timeout: float = 5.0,
        poll_seconds: float = 1.0,
        watch_seconds: float = 0.01,
        health: Health | None = None,
        on_stuck: Escalation | None = None,
        stuck_seconds: float = 30.0,
        initial_backoff: float = 0.2,
        max_backoff: float = 5.0,
        views_path: Path | None = None,
        tail_check_seconds: float = TAIL_CHECK_SECONDS,
        shared_stream: bool = False,
    ) -> None:
        self.db_path = db_path
        # Cluster mode (module docstring): publishes only between lead() and follow(), each
        # session from the stream's tail.
        self.shared_stream = shared_stream
        self.tail_check_seconds = tail_check_seconds
        # The views (which instrument a job runs on): views.db beside the log by default.
        if views_path is None:
            views_path = views_file(db_path)
            if views_path is None:
                raise ValueError(f"the relay reads a log file, not {db_path} (in memory)")
        self.views_path: Path = views_path
        self._views: sqlite3.Connection | None = None
        self.options = options
        self.name = name
        self.batch_size = batch_size
        self.window = window  # batches in flight; 4 x 1,000 is nats-py's own pending limit
        self.ack_timeout = ack_timeout  # for the oldest batch in flight to be fully acked
        self.poll_seconds = poll_seconds
        self.watch_seconds = watch_seconds
        # How often an idle relay looks for another process's commits: from watch_seconds
        # right after activity, doubling up to this while nothing happens, so a quiet server
        # costs next to nothing (100 checks a second were most of its idle CPU).
        self.idle_watch_seconds = max(watch_seconds, 0.5)
        self._watch_now = watch_seconds
        self.on_stuck = on_stuck
        self.stuck_seconds = stuck_seconds
        self.status = RelayStatus(url=redact(options.url), following=shared_stream)
        # The runtime's registry when given (`/health`), else one of its own.
        self.health = health if health is not None else Health(SystemClock())
        self._backoff = (initial_backoff, max_backoff)
        self._supervisor = self._new_supervisor()
        self._conn: sqlite3.Connection = connect(db_path)
        self._conn.execute(CHECKPOINTS)
        self._log = LogReader(self._conn)
        self._wake = asyncio.Event()
        self._progress = asyncio.Event()  # set whenever the checkpoint moves
        self._dirty = asyncio.Event()  # the checkpoint moved since it was last written
        self._stopping = False
        self._started = False
        self._writer_task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._nc: NATS | None = None
        self._lost = asyncio.Event()  # set when the current connection is lost
        self._healthy = False  # task.relay last said ok
        self._next_stuck_call = 0.0
        self._stuck_pause = stuck_seconds
        self._equipment: dict[str, str] = {}
        self._subjects: dict[tuple[str, str, str | None], str] = {}
        self._unsubscribe: Any = None
        # A second connection, used only from a worker thread, for checkpoint writes. Not
        # synced at each commit (the next append's is enough for it): a checkpoint lost in a
        # power cut only sends events again, which JetStream drops.
        self._writer: sqlite3.Connection = connect(db_path)
        self._writer.execute("PRAGMA synchronous=NORMAL")
        self._position = self._saved = self._stored_checkpoint()
        self.status.published(self._position)
        self.status.observe(self._log_position())

    # -- lifecycle ------------------------------------------------------------------------------

    def attach(self, store: SQLiteEventStore) -> None:
        """Wake on every commit of this process (others are seen in PRAGMA data_version)."""
        self._unsubscribe = store.subscribe(self._committed)

    def _committed(self, events: list[RecordedEvent]) -> None:
        # In the committing thread. The status counts these events at once, so /health shows
        # the lag while the relay is busy reconnecting rather than reading the log.
        if events:
            status = self.status
            if status.oldest_unpublished_at is None:
                status.oldest_unpublished_at = events[0].occurred_at
            status.observe(events[-1].position)
        self.notify()

    def _new_supervisor(self) -> Supervisor:
        initial, cap = self._backoff
        return Supervisor(self.health, initial_backoff=initial, max_backoff=cap)

    async def start(self) -> Relay:
        """Start publishing; a relay of a shared stream starts following (``lead``)."""
        self._loop = asyncio.get_running_loop()
        self._started = True
        if not self.shared_stream:
            self._supervisor.spawn(TASK, self._session)
        self._writer_task = asyncio.create_task(self._write_checkpoints(), name="relay-checkpoint")
        return self

    async def lead(self) -> None:
        """Cluster mode, on gaining the scheduler lease: publish, from the stream's tail."""
        if not self.shared_stream or not self._started or self._stopping:
            return
        if TASK in self._supervisor:
            return
        log.info("relay: publishing (this replica leads)", stream=STREAM)
        self.status.leading()
        self._supervisor = self._new_supervisor()
        self._supervisor.spawn(TASK, self._session)

    async def follow(self) -> None:
        """Cluster mode, on losing the lease: stop publishing at once (nothing is drained:
        the next leader publishes what is left, from the stream's tail)."""
        if not self.shared_stream or self.status.following:
            return
        self.status.following = True
        log.info("relay: following (another replica publishes)", stream=STREAM)
        await self._stop_session()
        self.status.set_connected(False)

    @property
    def running(self) -> bool:
        return self._started and not self._stopping

    @property
    def stopped(self) -> bool:
        """Closed, and its publishing session ended."""
        return self._stopping and TASK not in self._supervisor

    async def aclose(self, drain_seconds: float = 5.0) -> None:
        """Publish what is pending (for up to ``drain_seconds``), then stop. Cancelling the
        caller still stops the relay, and the cancellation goes on to the caller."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        try:
            if self._started:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(drain_seconds):
                        await self._caught_up()
        finally:
            await self._shutdown()

    async def _shutdown(self) -> None:
        self._stopping = True
        await self._stop_session()
        if self._writer_task is not None:
            self._dirty.set()  # the last position is written, then the writer returns
            await asyncio.wait([self._writer_task])
        await self._close_connection()
        if self._views is not None:
            self._views.close()
        self._conn.close()
        self._writer.close()

    async def _stop_session(self) -> None:
        """End the publishing session (its supervisor closed), bounded."""
        closing = asyncio.ensure_future(self._supervisor.aclose(grace_seconds=SHUTDOWN_SECONDS))
        # Bounded: on Python 3.11 a task group has been seen to miss its parent's cancellation
        # (tasks left pending after cancel()); a shutdown must not wait for ever on it.
        # Closing the connection ends the session from below.
        done, _ = await asyncio.wait([closing], timeout=2 * SHUTDOWN_SECONDS)
        if not done:
            log.warning("relay session slow to stop: closing its connection")
            await self._close_connection()
            self._lost.set()
            done, _ = await asyncio.wait([closing], timeout=SHUTDOWN_SECONDS)
            if not done:
                log.error("relay session did not stop; abandoning it")
        await self._close_connection()

    async def _caught_up(self) -> None:
        while self.status.connected and self.checkpoint() < self._log_position():
            self._progress.clear()
            self.notify()
            await self._progress.wait()

    def notify(self) -> None:
        if self._loop is None or self._loop.is_closed():
            return
        self._loop.call_soon_threadsafe(self._wake.set)

    # -- checkpoint -----------------------------------------------------------------------------

    def checkpoint(self) -> int:
        """The position up to which every event has been acked by JetStream."""
        return self._position

    def _stored_checkpoint(self) -> int:
        row = self._conn.execute(
            "SELECT position FROM relay_checkpoints WHERE name = ?", (self.name,)
        ).fetchone()
        return int(row[0]) if row else 0

    def _write_checkpoint(self, position: int) -> None:
        self._writer.execute(
            "INSERT INTO relay_checkpoints (name, position) VALUES (?, ?)"
            " ON CONFLICT(name) DO UPDATE SET position = excluded.position",
            (self.name, position),
        )

    def _set_checkpoint(self, position: int) -> None:
        self._position = position
        self.status.published(position)
        self._progress.set()
        self._dirty.set()

    async def _write_checkpoints(self) -> None:
        # Written off the event loop (the write waits for the log's writer lock, and the API
        # and the engine share this loop), the latest position only, at most once per
        # CHECKPOINT_SECONDS: a checkpoint lost in a crash only sends events again, which
        # JetStream drops. A write per batch took the log's write lock hundreds of times a
        # second at 1,000 fires/s (22 % of the server's busy time, the appends waiting).
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            position = self._position
            if position != self._saved:
                try:
                    await asyncio.to_thread(self._write_checkpoint, position)
                    self._saved = position
                except sqlite3.Error as exc:  # the next move writes it again
                    log.warning("relay checkpoint not saved", error=str(exc))
            if self._stopping:
                if not self._dirty.is_set():
                    return
            else:
                await asyncio.sleep(CHECKPOINT_SECONDS)

    def _log_position(self) -> int:
        return self._log.last_position()

    def _data_version(self) -> int:
        # Changes whenever another connection, in any process, commits to the database.
        return int(self._conn.execute("PRAGMA data_version").fetchone()[0])

    # -- sessions -------------------------------------------------------------------------------

    async def _session(self, watch: Watch) -> None:
        """One connection's worth of publishing; raises whatever ended it (see the module
        docstring), returns only when the relay stops."""
        reached = False
        try:
            nc = await self._connect()
            js = nc.jetstream(timeout=self.ack_timeout)
            await self._ensure_stream(js)
            reached = True  # JetStream answers: what fails from here on is the stream's
            await self._pump(nc, js, watch)
        except _Stopping:
            return
        except Exception as exc:
            if self._stopping or watch.stopping:
                return
            await self._failed(exc, reached)
            raise
        finally:
            await self._close_connection()

    async def _failed(self, exc: BaseException, reached: bool) -> None:
        self._healthy = False
        self.status.last_error = describe(exc)
        self.status.set_connected(bool(self._nc is not None and self._nc.is_connected))
        self._refresh_lag()
        if reached and isinstance(exc, AckFailed):
            await self._maybe_stuck()

    async def _maybe_stuck(self) -> None:
        """Acks missing from a JetStream that answers, for ``stuck_seconds`` with a backlog:
        the stream's store has failed (module docstring)."""
        now = time.monotonic()
        stalled = self.status.stalled_seconds(now)
        if stalled < self.stuck_seconds or now < self._next_stuck_call:
            return
        self.status.stuck_calls += 1
        self._next_stuck_call = now + self._stuck_pause
        self._stuck_pause = min(self._stuck_pause * 2, MAX_STUCK_PAUSE)
        reason = (
            f"stream {STREAM} has taken no event for {stalled:.0f} s although JetStream"
            f" answers ({self.status.last_error})"
        )
        if self.on_stuck is None:
            log.error("stream takes no event; its nats-server may need a restart", reason=reason)
            return
        log.error("stream takes no event; restarting the nats-server", reason=reason)
        try:
            await self.on_stuck(reason)
        except Exception as exc:  # the next failed session tries again
            log.error("could not restart the nats-server", error=describe(exc))

    async def _connect(self) -> NATS:
        """A connection that never reconnects by itself: nats-py would then send what it had
        buffered for the lost connection after messages the server never got from it, out
        of position order. A lost connection ends the session instead (``_pump``), and the
        next one resumes after the checkpoint. Each server is tried (twice) before giving up."""
        lost = asyncio.Event()
        self._lost = lost
        status = self.status

        async def closed() -> None:
            status.set_connected(False)
            lost.set()

        async def quiet(exc: Exception) -> None:
            # The session's own failure says it; nats-py would log each one again.
            log.debug("nats client error", error=describe(exc))

        nc = await connect_nats(
            self.options,
            name=f"lablink-{self.name}",
            connect_timeout=2,
            allow_reconnect=False,
            max_reconnect_attempts=1,
            reconnect_time_wait=0.1,
            ping_interval=PING_SECONDS,
            max_outstanding_pings=MAX_PINGS,
            disconnected_cb=closed,
            closed_cb=closed,
            error_cb=quiet,
        )
        self._nc = nc
        status.set_connected(nc.is_connected)
        return nc

    async def _close_connection(self) -> None:
        nc, self._nc = self._nc, None
        if nc is not None and not nc.is_closed:
            # Bounded: closing flushes, and a stopped server never answers the flush.
            with contextlib.suppress(Exception):
                async with asyncio.timeout(SHUTDOWN_SECONDS):
                    await nc.close()

    async def _ensure_stream(self, js: JetStreamContext) -> None:
        created = await ensure_stream(
            js, STREAM, [EVENTS_ALL], replicas=self.options.replicas, copy=True
        )
        if created and self.checkpoint():
            log.warning("stream was missing: refilling it from the log", stream=STREAM)
            self._set_checkpoint(0)
            self.status.resumed_at = 0
        elif not created:
            await self._resume_after_stream_tail(js)

    async def _resume_after_stream_tail(self, js: JetStreamContext) -> None:
        """The stream acknowledges before its disk has a message (``ensure_stream``'s
        ``copy``): a nats-server that crashed, or failed to write, may have lost the last
        events it acked. The session resumes after the stream's last message, so a lost
        tail is published again from the log, in order (what a store keeps of what it was
        given is a prefix of it). A shared stream's relay (cluster mode) also moves forward
        to the tail: what lies before it another replica published."""
        position = await self._stream_ends_at(js)
        if position is not None:
            self.status.resumed_at = position
        if self.shared_stream and position is not None and position > self.checkpoint():
            log.info(
                "resuming after the stream's tail",
                stream=STREAM,
                stream_ends_at=position,
                checkpoint=self.checkpoint(),
            )
            self._set_checkpoint(position)
        elif position is not None and position < self.checkpoint():
            log.warning(
                "stream lost its tail: publishing it again from the log",
                stream=STREAM,
                stream_ends_at=position,
                checkpoint=self.checkpoint(),
            )
            self.status.tails_lost += 1
            self._set_checkpoint(position)

    async def _stream_ends_at(self, js: JetStreamContext) -> int | None:
        """The log position of the stream's last message: 0 when it never kept one, None
        when it was emptied by hand (a purge: nothing to measure against)."""
        try:
            last = await js.get_msg(STREAM, subject=EVENTS_ALL)
        except NotFoundError:
            info = await js.stream_info(STREAM)
            return 0 if info.state.last_seq == 0 else None
        return int(msgspec.json.decode(last.data or b"{}").get("position", 0))

    async def _check_tail(self, js: JetStreamContext) -> None:
        """While the session runs: a tail lost without the connection dropping (a write
        error on the server's disk) ends the session, so that the next one publishes it
        again, instead of waiting for a later event to find the stream broken."""
        while True:
            await asyncio.sleep(self.tail_check_seconds)
            acknowledged = self.checkpoint()  # read before asking: the stream has at least it
            try:
                position = await self._stream_ends_at(js)
            except (TimeoutError, nats.errors.TimeoutError):
                continue  # a slow answer proves nothing; a lost connection ends the session
            if position is not None and position < acknowledged:
                raise StreamTailLost(STREAM, position, acknowledged)

    def _refresh_lag(self) -> None:
        self.status.observe(self._log_position())
        rows = self._log.read_rows(self.checkpoint(), 1)
        self.status.oldest_unpublished_at = parse_instant(rows[0][5]) if rows else None

    def _working(self, watch: Watch) -> None:
        """The session does its job (caught up, or a batch was acked)."""
        self.status.last_error = None
        if not self._healthy:
            self._healthy = True
            self._stuck_pause = self.stuck_seconds
            self._next_stuck_call = 0.0
            watch.ok("publishing", url=self.status.url)

    async def _pump(self, nc: NATS, js: JetStreamContext, watch: Watch) -> None:
        """Publish from the checkpoint on, with up to ``window`` batches in flight, until
        something fails; then nothing is left in flight."""
        in_flight: collections.deque[_Batch] = collections.deque()
        sent = asyncio.Event()
        slots = asyncio.Semaphore(self.window)
        acks = _Acks(nc)
        await acks.start()
        failure: BaseException | None = None
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._publish(nc, acks, in_flight, sent, slots, watch))
                tasks.create_task(self._confirm(nc, in_flight, sent, slots, watch))
                tasks.create_task(self._watch_connection())
                tasks.create_task(self._check_tail(js))
                tasks.create_task(self._until_stopping(watch))
        except BaseExceptionGroup as group:
            failure = _first(group)
        finally:
            for batch in in_flight:
                batch.drop()
            acks.close()
        # Raised here, not in the except clause: its message is its own, not the group's.
        raise failure or RuntimeError("the publishing tasks ended by themselves")

    async def _until_stopping(self, watch: Watch) -> None:
        await watch.sleep(_FOREVER)
        raise _Stopping

    async def _watch_connection(self) -> None:
        await self._lost.wait()
        raise ConnectionError(f"connection to NATS lost ({self.status.url})")

    async def _publish(
        self,
        nc: NATS,
        acks: _Acks,
        in_flight: collections.deque[_Batch],
        sent: asyncio.Event,
        slots: asyncio.Semaphore,
        watch: Watch,
    ) -> None:
        after = self.checkpoint()
        while True:
            await slots.acquire()
            while True:
                self._wake.clear()  # before reading: a commit from now on wakes us again
                rows = self._log.read_rows(after, self.batch_size)
                self._refresh_lag()
                if rows:
                    self._watch_now = self.watch_seconds
                    break
                if not in_flight:
                    self._working(watch)  # caught up
                await self._idle()
            in_flight.append(await self._send(nc, acks, rows))
            sent.set()
            after = rows[-1][0]

    async def _idle(self) -> None:
        """Until this process commits (``notify``), another one does (``data_version``), or
        ``poll_seconds`` pass."""
        assert self._loop is not None
        deadline = self._loop.time() + self.poll_seconds
        version = self._data_version()
        while self._loop.time() < deadline:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that
            # arrives as the event is set, and the relay would never stop.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._watch_now):
                    await self._wake.wait()
                return
            if self._data_version() != version:
                return
            self._watch_now = min(self._watch_now * 2, self.idle_watch_seconds)

    async def _send(self, nc: NATS, acks: _Acks, rows: list[StoredRow]) -> _Batch:
        batch = _Batch(rows[-1][0], len(rows), [], [], time.monotonic())
        try:
            for row in rows:
                event = decode_event(row[8])
                payload = row_envelope(row, event)
                if isinstance(event, AlarmRaised):
                    alarm = alarm_subject(event.severity, event.equipment_id)
                    batch.alarms.append((alarm, payload))
                reply, ack = acks.expect(row[0])
                batch.acks.append(ack)
                await nc.publish(
                    self._subject(row, event),
                    payload,
                    reply=reply,
                    headers={"Nats-Msg-Id": row[1]},
                )
        except BaseException:
            batch.drop()
            raise
        return batch

    async def _confirm(
        self,
        nc: NATS,
        in_flight: collections.deque[_Batch],
        sent: asyncio.Event,
        slots: asyncio.Semaphore,
        watch: Watch,
    ) -> None:
        while True:
            while not in_flight:
                sent.clear()
                await sent.wait()
            batch = in_flight[0]
            # The oldest batch gets ack_timeout from when it is the oldest, so a window of
            # batches on a slow disk is not timed out for the batches queued before it.
            _, missing = await asyncio.wait(batch.acks, timeout=self.ack_timeout)
            for ack in batch.acks:  # a refusal, said at once, before any timeout
                if ack.done() and not ack.cancelled() and (error := ack.exception()):
                    raise error
            if missing:
                raise AckFailed(batch.last, len(missing))
            for ack in batch.acks:
                if ack.cancelled():  # closing: not our own cancellation
                    raise AckFailed(batch.last, 1)
            for subject, payload in batch.alarms:
                await nc.publish(subject, payload)
            in_flight.popleft()
            slots.release()
            self._set_checkpoint(batch.last)
            self.status.published_total += batch.size
            self._refresh_lag()
            self._working(watch)
            log.debug(
                "published",
                events=batch.size,
                up_to=batch.last,
                ms=round((time.monotonic() - batch.started) * 1000, 2),
            )

    def _subject(self, row: StoredRow, event: AnyEvent) -> str:
        # Cached: event_subject makes four regex passes, and a job's events repeat the same
        # few subjects.
        key = (row[4], row[2], self._equipment_of(event))
        subject = self._subjects.get(key)
        if subject is None:
            if len(self._subjects) >= _MAX_SUBJECTS:
                self._subjects.clear()
            subject = self._subjects[key] = event_subject(*key)
        return subject

    def _equipment_of(self, event: AnyEvent) -> str | None:
        if isinstance(event, JobCreated | JobUpdated):
            self._equipment[event.job_id] = event.spec.equipment_id
            return event.spec.equipment_id
        equipment = getattr(event, "equipment_id", None)
        if equipment is not None:
            return str(equipment)
        job_id = getattr(event, "job_id", None)
        if job_id is None:
            return None
        if job_id not in self._equipment:
            self._equipment[job_id] = equipment_of_job(self._views_conn(), job_id) or ""
        return self._equipment[job_id] or None

    def _views_conn(self) -> sqlite3.Connection:
        if self._views is None:
            # Not the log's connection as a stand-in: the log has no view tables. A views file
            # not made yet (its scheduler rebuilds it at start) fails the session, which is
            # retried after a backoff and shown in /health, rather than naming no instrument.
            # (Not connect_views' own connect either: that would create an empty file.)
            if not self.views_path.exists():
                raise ViewsFileMissing(str(self.views_path), str(self.db_path))
            self._views = connect_views(self.db_path, self.views_path)
        return self._views


def _first(group: BaseExceptionGroup[Any]) -> BaseException:
    """The error that ended a task group: a stop wins, then the first real failure."""
    flat: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        else:
            flat.append(exc)

    walk(group)
    for exc in flat:
        if isinstance(exc, _Stopping):
            return exc
    return next((e for e in flat if not isinstance(e, asyncio.CancelledError)), flat[0])
