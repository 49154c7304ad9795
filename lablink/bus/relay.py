"""Publishes the log to JetStream, in position order, never ahead of the log.

The relay reads events past its checkpoint, publishes each to ``LABLINK_EVENTS`` with
``Nats-Msg-Id`` = event id (JetStream drops a duplicate within its window; consumers dedupe by
the same id), waits for every ack of the batch, and only then advances the checkpoint. So a
crash or an outage never loses an event and never reorders them; at worst a batch is sent
again. NATS being down never blocks the scheduler or the API: events keep committing and the
backlog drains in order on reconnect. If the stream disappears, it is recreated and refilled
from the log.
"""

from __future__ import annotations

import asyncio
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
from nats.js.api import StorageType, StreamConfig
from nats.js.errors import NotFoundError

from lablink.bus.subjects import EVENTS_ALL, STREAM, alarm_subject, event_subject
from lablink.events import AlarmRaised, JobCreated, JobUpdated, RecordedEvent
from lablink.eventstore.sqlite import SQLiteEventStore, connect, read_events

log = structlog.get_logger(tag="relay")

CHECKPOINTS = """
CREATE TABLE IF NOT EXISTS relay_checkpoints (name TEXT PRIMARY KEY, position INTEGER NOT NULL)
"""
_encoder = msgspec.json.Encoder()


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


def envelope(recorded: RecordedEvent) -> bytes:
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


class Relay:
    def __init__(
        self,
        db_path: Path,
        options: NatsOptions,
        *,
        name: str = "relay",
        batch_size: int = 1000,
        ack_timeout: float = 5.0,
        poll_seconds: float = 1.0,
    ) -> None:
        self.db_path = db_path
        self.options = options
        self.name = name
        self.batch_size = batch_size
        self.ack_timeout = ack_timeout
        self.poll_seconds = poll_seconds
        self.status = RelayStatus(url=options.url)
        self._conn: sqlite3.Connection = connect(db_path)
        self._conn.execute(CHECKPOINTS)
        self._wake = asyncio.Event()
        self._progress = asyncio.Event()  # set whenever the checkpoint moves
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._nc: NATS | None = None
        self._equipment: dict[str, str] = {}
        self._unsubscribe: Any = None
        # A second connection, used only from a worker thread, for checkpoint writes.
        self._writer: sqlite3.Connection = connect(db_path)
        self._position = self._stored_checkpoint()
        self.status.published_position = self._position

    # -- lifecycle ------------------------------------------------------------------------------

    def attach(self, store: SQLiteEventStore) -> None:
        """Wake on every commit of this process (others are found by polling)."""
        self._unsubscribe = store.subscribe(lambda _: self.notify())

    async def start(self) -> Relay:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._run(), name="nats-relay")
        return self

    async def aclose(self, drain_seconds: float = 5.0) -> None:
        """Publish what is pending (for up to ``drain_seconds``), then stop."""
        if self._unsubscribe is not None:
            self._unsubscribe()
        if self._task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._caught_up(), drain_seconds)
            self._stopping = True
            self._wake.set()
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
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

    async def _save(self, position: int) -> None:
        # Written off the event loop: the write waits for the log's writer lock, and the
        # API and the engine share this loop. A checkpoint lost in a crash only sends a
        # batch again, which JetStream drops by Nats-Msg-Id.
        await asyncio.to_thread(self._write_checkpoint, position)
        self._position = position
        self.status.published_position = position
        self._progress.set()

    def _log_position(self) -> int:
        (position,) = self._conn.execute("SELECT COALESCE(MAX(position), 0) FROM events").fetchone()
        return int(position)

    # -- the loop -------------------------------------------------------------------------------

    async def _run(self) -> None:
        backoff = 0.1
        while not self._stopping:
            try:
                js = await self._connected()
                await self._ensure_stream(js)
                while not self._stopping:
                    published = await self._publish_batch(js)
                    backoff = 0.1
                    if not published:
                        self._wake.clear()
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self._wake.wait(), self.poll_seconds)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # NATS trouble: report, back off, try again
                self.status.last_error = f"{type(exc).__name__}: {exc}"
                self.status.connected = bool(self._nc and self._nc.is_connected)
                log.warning("relay paused", error=self.status.last_error, retry_in=backoff)
                self._refresh_lag()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _connected(self) -> JetStreamContext:
        if self._nc is None or self._nc.is_closed:

            async def disconnected() -> None:
                self.status.connected = False

            async def reconnected() -> None:
                self.status.connected = True
                self.notify()

            self._nc = await nats.connect(
                **self.options.connect_kwargs(),
                name=f"lablink-{self.name}",
                connect_timeout=2,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                disconnected_cb=disconnected,
                reconnected_cb=reconnected,
            )
        self.status.connected = self._nc.is_connected
        if not self._nc.is_connected:
            raise ConnectionError("not connected to NATS")
        return self._nc.jetstream(timeout=self.ack_timeout)

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
                await self._save(0)

    def _refresh_lag(self) -> None:
        self.status.log_position = self._log_position()
        pending = read_events(self._conn, self.checkpoint(), 1)
        self.status.oldest_unpublished_at = pending[0].occurred_at if pending else None

    def _equipment_of(self, recorded: RecordedEvent) -> str | None:
        event = recorded.event
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

    async def _publish_batch(self, js: JetStreamContext) -> int:
        start = self.checkpoint()
        batch = read_events(self._conn, start, self.batch_size)
        self._refresh_lag()
        if not batch:
            return 0
        started = time.perf_counter()
        acks = []
        for recorded in batch:
            subject = event_subject(recorded.type, recorded.stream_id, self._equipment_of(recorded))
            acks.append(
                await js.publish_async(
                    subject,
                    envelope(recorded),
                    headers={"Nats-Msg-Id": recorded.event_id},
                )
            )
        try:
            await asyncio.wait_for(asyncio.gather(*acks), self.ack_timeout)
        except asyncio.CancelledError:
            for ack in acks:
                ack.cancel()
            await asyncio.gather(*acks, return_exceptions=True)
            raise
        except NotFoundError:
            await self._ensure_stream(js)
            return 0
        except Exception as exc:
            for ack in acks:
                ack.cancel()
            if "no responders" in str(exc).lower() or type(exc).__name__ == "NoRespondersError":
                await self._ensure_stream(js)
            raise
        assert self._nc is not None
        for recorded in batch:
            if isinstance(recorded.event, AlarmRaised):
                await self._nc.publish(
                    alarm_subject(recorded.event.severity, recorded.event.equipment_id),
                    envelope(recorded),
                )
        await self._save(batch[-1].position)
        self.status.published_total += len(batch)
        self.status.last_error = None
        self._refresh_lag()
        log.debug(
            "published",
            events=len(batch),
            up_to=batch[-1].position,
            ms=round((time.perf_counter() - started) * 1000, 2),
        )
        return len(batch)
