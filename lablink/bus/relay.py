"""Publishes the log to JetStream, in position order, never ahead of the log.

The relay reads events past its checkpoint and publishes each to ``LABLINK_EVENTS`` with
``Nats-Msg-Id`` = event id (JetStream drops a duplicate within its window; consumers dedupe by
the same id). Up to ``window`` batches are in flight: batch n+1 is read and published while
the acks of batch n are awaited, because waiting for every ack before reading again left the
relay at a fraction of what the server takes. Messages still go out in position order, and
the checkpoint moves, in order, only past batches whose every message was acked. On a failed
or late ack, whatever is in flight is dropped and publishing resumes after the checkpoint. So
a crash or an outage never loses an event and never reorders them; at worst some events are
sent again. NATS being down never blocks the scheduler or the API: events keep committing and
the backlog drains in order on reconnect. If the stream disappears, it is recreated and
refilled from the log.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import sqlite3
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import nats
import structlog
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import PubAck, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from lablink.bus.subjects import EVENTS_ALL, STREAM, alarm_subject, event_subject
from lablink.events import (
    AlarmRaised,
    AnyEvent,
    JobCreated,
    JobUpdated,
    RecordedEvent,
    decode_event,
)
from lablink.eventstore.base import parse_instant
from lablink.eventstore.sqlite import SQLiteEventStore, connect

log = structlog.get_logger(tag="relay")

SHUTDOWN_SECONDS = 2.0
CHECKPOINTS = """
CREATE TABLE IF NOT EXISTS relay_checkpoints (name TEXT PRIMARY KEY, position INTEGER NOT NULL)
"""
_ROWS = (
    "SELECT position, event_id, stream_id, version, type, occurred_at, actor, correlation_id,"
    " payload FROM events WHERE position > ? ORDER BY position LIMIT ?"
)
_MAX_SUBJECTS = 50_000
Row = tuple[int, str, str, int, str, str, str, str | None, str]


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


def row_envelope(row: Row, event: AnyEvent) -> bytes:
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
class NatsOptions:
    url: str
    user: str | None = None
    password: str | None = None
    credentials: str | None = None  # a .creds file
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    replicas: int = 1

    def connect_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"servers": [u.strip() for u in self.url.split(",")]}
        if self.user:
            kwargs.update(user=self.user, password=self.password)
        if self.credentials:
            kwargs["user_credentials"] = self.credentials
        if self.tls_ca or self.tls_cert:
            import ssl

            context = ssl.create_default_context(cafile=self.tls_ca)
            if self.tls_cert:
                context.load_cert_chain(self.tls_cert, self.tls_key)
            kwargs["tls"] = context
        return kwargs


@dataclass
class RelayStatus:
    url: str
    connected: bool = False
    published_position: int = 0
    log_position: int = 0
    last_error: str | None = None
    oldest_unpublished_at: datetime | None = None
    published_total: int = field(default=0)

    @property
    def lag(self) -> int:
        return max(0, self.log_position - self.published_position)

    def as_dict(self) -> dict[str, Any]:
        lag_seconds = (
            (datetime.now(UTC) - self.oldest_unpublished_at).total_seconds()
            if self.oldest_unpublished_at and self.lag
            else 0.0
        )
        return {
            "status": "ok" if self.connected and self.lag < 1000 else "degraded",
            "url": self.url,
            "connected": self.connected,
            "published_position": self.published_position,
            "log_position": self.log_position,
            "lag_events": self.lag,
            "lag_seconds": round(lag_seconds, 3),
            "last_error": self.last_error,
        }


@dataclass
class _Batch:
    """Published, not yet confirmed: its acks, and the alarms to send once they are in."""

    last: int  # position of its last event
    size: int
    acks: list[asyncio.Future[PubAck]]
    alarms: list[tuple[str, bytes]]
    started: float

    def drop(self) -> None:
        # Cancelled acks never log "exception was never retrieved"; failed ones are read here.
        for ack in self.acks:
            if not ack.cancel() and not ack.cancelled():
                ack.exception()


class AckFailed(RuntimeError):
    def __init__(self, position: int, missing: int) -> None:
        self.position = position
        super().__init__(f"{missing} acks missing for the batch ending at position {position}")


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
    ) -> None:
        self.db_path = db_path
        self.options = options
        self.name = name
        self.batch_size = batch_size
        self.window = window  # batches in flight; 4 x 1,000 is nats-py's own pending limit
        self.ack_timeout = ack_timeout  # for the oldest batch in flight to be fully acked
        self.poll_seconds = poll_seconds
        self.watch_seconds = watch_seconds
        self.status = RelayStatus(url=options.url)
        self._conn: sqlite3.Connection = connect(db_path)
        self._conn.execute(CHECKPOINTS)
        self._wake = asyncio.Event()
        self._progress = asyncio.Event()  # set whenever the checkpoint moves
        self._dirty = asyncio.Event()  # the checkpoint moved since it was last written
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._writer_task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._nc: NATS | None = None
        self._lost = asyncio.Event()  # set when the current connection is lost
        self._equipment: dict[str, str] = {}
        self._subjects: dict[tuple[str, str, str | None], str] = {}
        self._unsubscribe: Any = None
        # A second connection, used only from a worker thread, for checkpoint writes.
        self._writer: sqlite3.Connection = connect(db_path)
        self._position = self._saved = self._stored_checkpoint()
        self.status.published_position = self._position

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
            status.log_position = max(status.log_position, events[-1].position)
        self.notify()

    async def start(self) -> Relay:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._run(), name="nats-relay")
        self._writer_task = asyncio.create_task(self._write_checkpoints(), name="relay-checkpoint")
        return self

    async def aclose(self, drain_seconds: float = 5.0) -> None:
        """Publish what is pending (for up to ``drain_seconds``), then stop. Cancelling the
        caller still stops the relay, and the cancellation goes on to the caller."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        try:
            if self._task is not None:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(drain_seconds):
                        await self._caught_up()
        finally:
            await self._shutdown()

    async def _shutdown(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            # Bounded: on Python 3.11 the publishing task group has been seen to miss its
            # parent's cancellation (tasks left pending after cancel()); a shutdown must not
            # wait for ever on it. Closing the connection ends the session from below.
            _, pending = await asyncio.wait([self._task], timeout=SHUTDOWN_SECONDS)
            if pending:
                log.warning("relay task slow to stop: closing its connection")
                if self._nc is not None:
                    with contextlib.suppress(Exception):
                        await self._nc.close()
                self._lost.set()
                self._task.cancel()
                _, pending = await asyncio.wait([self._task], timeout=SHUTDOWN_SECONDS)
            if pending:
                log.error("relay task did not stop; abandoning it", task=repr(self._task))
        if self._writer_task is not None:
            self._dirty.set()  # the last position is written, then the writer returns
            await asyncio.wait([self._writer_task])
        if self._nc is not None and not self._nc.is_closed:
            with contextlib.suppress(Exception):
                await self._nc.close()
        self._conn.close()
        self._writer.close()

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
        self.status.published_position = position
        self._progress.set()
        self._dirty.set()

    async def _write_checkpoints(self) -> None:
        # Written off the event loop (the write waits for the log's writer lock, and the API
        # and the engine share this loop), one write at a time, the latest position only: a
        # checkpoint lost in a crash only sends events again, which JetStream drops.
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
            if self._stopping and not self._dirty.is_set():
                return

    def _log_position(self) -> int:
        (position,) = self._conn.execute("SELECT COALESCE(MAX(position), 0) FROM events").fetchone()
        return int(position)

    def _data_version(self) -> int:
        # Changes whenever another connection, in any process, commits to the database.
        return int(self._conn.execute("PRAGMA data_version").fetchone()[0])

    # -- the loop -------------------------------------------------------------------------------

    async def _run(self) -> None:
        backoff = 0.1
        while not self._stopping:
            try:
                js = await self._connected()
                await self._ensure_stream(js)
                await self._pump(js)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # NATS trouble: report, back off, try again
                while isinstance(exc, ExceptionGroup):
                    exc = exc.exceptions[0]
                self.status.last_error = f"{type(exc).__name__}: {exc}"
                self.status.connected = bool(self._nc and self._nc.is_connected)
                log.warning("relay paused", error=self.status.last_error, retry_in=backoff)
                self._refresh_lag()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
            else:
                backoff = 0.1

    async def _connected(self) -> JetStreamContext:
        if self._nc is None or self._nc.is_closed:
            self._nc = await self._connect()
        self.status.connected = self._nc.is_connected
        if not self._nc.is_connected:
            raise ConnectionError("not connected to NATS")
        return self._nc.jetstream(timeout=self.ack_timeout)

    async def _connect(self) -> NATS:
        """A connection that never reconnects by itself: nats-py would then send what it had
        buffered for the lost connection after messages the server never got from it, out
        of position order. A lost connection ends the session instead (``_pump``), and the
        next one resumes after the checkpoint. Each server is tried (twice) before giving up."""
        lost = asyncio.Event()

        async def closed() -> None:
            self.status.connected = False
            lost.set()

        nc = await nats.connect(
            **self.options.connect_kwargs(),
            name=f"lablink-{self.name}",
            connect_timeout=2,
            allow_reconnect=False,
            max_reconnect_attempts=1,
            reconnect_time_wait=0.1,
            disconnected_cb=closed,
            closed_cb=closed,
        )
        self._lost = lost
        return nc

    async def _ensure_stream(self, js: JetStreamContext) -> None:
        try:
            await js.stream_info(STREAM)
        except NotFoundError:
            await js.add_stream(
                StreamConfig(
                    name=STREAM,
                    subjects=[EVENTS_ALL],
                    storage=StorageType.FILE,
                    duplicate_window=600.0,
                    num_replicas=self.options.replicas,
                )
            )
            if self.checkpoint():
                log.warning("stream was missing: refilling it from the log", stream=STREAM)
                self._set_checkpoint(0)

    def _refresh_lag(self) -> None:
        self.status.log_position = max(self.status.log_position, self._log_position())
        row = self._conn.execute(
            "SELECT occurred_at FROM events WHERE position > ? ORDER BY position LIMIT 1",
            (self.checkpoint(),),
        ).fetchone()
        self.status.oldest_unpublished_at = parse_instant(row[0]) if row else None

    async def _pump(self, js: JetStreamContext) -> None:
        """Publish from the checkpoint on, with up to ``window`` batches in flight, until
        something fails; then nothing is left in flight."""
        in_flight: collections.deque[_Batch] = collections.deque()
        sent = asyncio.Event()
        slots = asyncio.Semaphore(self.window)
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._publish(js, in_flight, sent, slots))
                tasks.create_task(self._confirm(in_flight, sent, slots))
                tasks.create_task(self._watch_connection())
        finally:
            for batch in in_flight:
                batch.drop()

    async def _watch_connection(self) -> None:
        await self._lost.wait()
        raise ConnectionError("connection to NATS lost")

    async def _publish(
        self,
        js: JetStreamContext,
        in_flight: collections.deque[_Batch],
        sent: asyncio.Event,
        slots: asyncio.Semaphore,
    ) -> None:
        after = self.checkpoint()
        while True:
            await slots.acquire()
            while True:
                self._wake.clear()  # before reading: a commit from now on wakes us again
                rows: list[Row] = self._conn.execute(_ROWS, (after, self.batch_size)).fetchall()
                self._refresh_lag()
                if rows:
                    break
                await self._idle()
            in_flight.append(await self._send(js, rows))
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
                async with asyncio.timeout(self.watch_seconds):
                    await self._wake.wait()
                return
            if self._data_version() != version:
                return

    async def _send(self, js: JetStreamContext, rows: list[Row]) -> _Batch:
        batch = _Batch(rows[-1][0], len(rows), [], [], time.monotonic())
        try:
            for row in rows:
                event = decode_event(row[8])
                payload = row_envelope(row, event)
                if isinstance(event, AlarmRaised):
                    alarm = alarm_subject(event.severity, event.equipment_id)
                    batch.alarms.append((alarm, payload))
                batch.acks.append(
                    await js.publish_async(
                        self._subject(row, event), payload, headers={"Nats-Msg-Id": row[1]}
                    )
                )
        except BaseException:
            batch.drop()
            raise
        return batch

    async def _confirm(
        self, in_flight: collections.deque[_Batch], sent: asyncio.Event, slots: asyncio.Semaphore
    ) -> None:
        assert self._nc is not None
        while True:
            while not in_flight:
                sent.clear()
                await sent.wait()
            batch = in_flight[0]
            # The oldest batch gets ack_timeout from when it is the oldest, so a window of
            # batches on a slow disk is not timed out for the batches queued before it.
            _, missing = await asyncio.wait(batch.acks, timeout=self.ack_timeout)
            if missing:
                raise AckFailed(batch.last, len(missing))
            for ack in batch.acks:
                if ack.cancelled():  # by nats-py, closing: not our own cancellation
                    raise AckFailed(batch.last, 1)
                if (error := ack.exception()) is not None:
                    raise error
            for subject, payload in batch.alarms:
                await self._nc.publish(subject, payload)
            in_flight.popleft()
            slots.release()
            self._set_checkpoint(batch.last)
            self.status.published_total += batch.size
            self.status.last_error = None
            self._refresh_lag()
            log.debug(
                "published",
                events=batch.size,
                up_to=batch.last,
                ms=round((time.monotonic() - batch.started) * 1000, 2),
            )

    def _subject(self, row: Row, event: AnyEvent) -> str:
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
            row = self._conn.execute(
                "SELECT equipment_id FROM execution_jobs WHERE job_id = ?", (job_id,)
            ).fetchone()
            self._equipment[job_id] = row[0] if row else ""
        return self._equipment[job_id] or None
