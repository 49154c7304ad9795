"""Signed checkpoints of the log, every N events or T minutes and when the server stops.

Each turn reads the clock once and the log's head (last position and its chain hash). A
checkpoint is due when ``every_events`` events have been appended since the last one, or
``every`` has passed and anything at all has been (an idle log gets no checkpoint after
checkpoint: the checkpoint's own event does not count). The signed note is recorded as an
``audit.checkpoint`` event (stream ``audit``), then published to ``LABLINK_AUDIT``
(lablink/bus/audit_stream.py) when the bus is on. Publishing follows the log: every turn
publishes the checkpoints the log holds past the last one published, so a bus that was away
gets them all when it is back, and a restart publishes what the previous run could not.

It runs under the runtime's supervisor as ``task.audit``; closing it takes one last
checkpoint (a graceful stop is signed) and publishes it, within ``CLOSE_SECONDS``.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timedelta
from typing import Protocol

import structlog

from lablink.audit.note import Signer, Verifier
from lablink.clock import Clock
from lablink.events import CheckpointSigned
from lablink.eventstore import EventQuery
from lablink.eventstore.sqlite import SQLiteEventStore, event_of
from lablink.handler import CommandHandler
from lablink.health import Health
from lablink.supervision import Supervisor, Watch

log = structlog.get_logger(tag="audit")

STREAM = "audit"
ACTOR = "audit"
TASK_NAME = "task.audit"
DEFAULT_EVENTS = 10_000
DEFAULT_PERIOD = timedelta(minutes=10)
POLL_SECONDS = 5.0
CLOSE_SECONDS = 10.0


class Sink(Protocol):
    """Where checkpoints are published, out of the log owner's reach (``BusCheckpoints``)."""

    async def publish(self, origin: str, size: int, note: str) -> None: ...

    async def published_size(self, verifier: Verifier) -> int: ...


class Checkpointer:
    def __init__(
        self,
        store: SQLiteEventStore,
        clock: Clock,
        signer: Signer,
        *,
        every_events: int = DEFAULT_EVENTS,
        every: timedelta = DEFAULT_PERIOD,
        poll_seconds: float = POLL_SECONDS,
        sink: Sink | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.signer = signer
        self.every_events = every_events
        self.every = every
        self.poll_seconds = poll_seconds
        self.sink = sink
        # The size of the last checkpoint the sink holds (what to publish from); asked of the
        # sink when it is first reachable.
        self.published_size: int | None = None
        self.last: CheckpointSigned | None = None
        self.last_at: datetime | None = None
        self.last_event_position = 0  # where the last checkpoint's own event sits
        self._read_log = False
        self._scanned = 0  # the log's position up to which checkpoints were looked for
        self._pending: list[CheckpointSigned] = []
        self.iterations = 0
        self._stop = asyncio.Event()
        self._done = asyncio.Event()
        self._supervisor: Supervisor | None = None
        self._own_supervisor = False

    # -- deciding and signing ------------------------------------------------------------------

    def _load(self) -> None:
        if self._read_log:
            return
        with self.store.lock:
            version = self.store.stream_version(STREAM)
            recorded = self.store.read_stream(STREAM, max(0, version - 1))
        for record in recorded:
            if isinstance(record.event, CheckpointSigned):
                self.last, self.last_at = record.event, record.occurred_at
                self.last_event_position = record.position
        self._read_log = True

    def due(self, now: datetime) -> bool:
        self._load()
        position = self.store.last_position()
        if position == 0 or position == self.last_event_position:
            return False  # nothing, or nothing but the last checkpoint, since it
        if position - self.last_event_position >= self.every_events:
            return True
        return self.last_at is None or now - self.last_at >= self.every

    def checkpoint(self, now: datetime) -> CheckpointSigned | None:
        """Sign the log's head as it is and record it; None if nothing new is to sign."""
        self._load()
        size, head = self.store.head()
        if size == 0 or size == self.last_event_position:
            return None
        event = CheckpointSigned(
            origin=self.signer.name,
            size=size,
            head=head.hex(),
            note=self.signer.sign(self.signer.name, size, head),
        )
        (recorded,) = CommandHandler(self.store, self.clock).record(STREAM, [event], ACTOR, at=now)
        self.last, self.last_at, self.last_event_position = event, now, recorded.position
        log.info("checkpoint signed", origin=event.origin, size=size, head=event.head[:16])
        return event

    def unpublished(self) -> list[CheckpointSigned]:
        """The checkpoints in the log past the last one published, oldest first (the log is
        read from where the last look ended: once from the start after a start)."""
        rows = self.store.find(
            EventQuery(stream_id=STREAM, after_position=self._scanned, limit=10**9)
        )
        if rows:
            self._scanned = rows[-1][0]
        notes = [event_of(row).event for row in rows]
        self._pending += [
            n
            for n in notes
            if isinstance(n, CheckpointSigned)
            and n.origin == self.signer.name
            and n.size > (self.published_size or 0)
        ]
        return list(self._pending)

    async def publish_pending(self) -> int:
        """Publish what the audit stream lacks; how many were published."""
        if self.sink is None:
            return 0
        if self.published_size is None:
            self.published_size = await self.sink.published_size(self.signer.verifier)
        pending = await asyncio.to_thread(self.unpublished)
        for checkpoint in pending:
            await self.sink.publish(checkpoint.origin, checkpoint.size, checkpoint.note)
            self.published_size = checkpoint.size
            self._pending.pop(0)
        return len(pending)

    # -- the loop ------------------------------------------------------------------------------

    async def start(self, supervisor: Supervisor | None = None) -> None:
        if supervisor is None:
            supervisor = Supervisor(Health(self.clock))
            self._own_supervisor = True
        self._supervisor = supervisor
        log.info(
            "signed checkpoints",
            origin=self.signer.name,
            every_events=self.every_events,
            every_minutes=self.every.total_seconds() / 60,
            published=self.sink is not None,
        )
        supervisor.spawn(TASK_NAME, self.run)

    async def run(self, watch: Watch) -> None:
        """The supervised body (``task.audit``)."""
        try:
            while not (self._stop.is_set() or watch.stopping):
                self.iterations += 1
                now = self.clock.now()  # the one reading of this turn
                try:
                    if await asyncio.to_thread(self.due, now):
                        await asyncio.to_thread(self.checkpoint, now)
                    await self.publish_pending()
                except Exception as exc:  # the log or the bus: shown in /health, tried again
                    watch.failed(exc)
                else:
                    last = self.last
                    watch.ok(
                        last_size=last.size if last else 0,
                        published_size=self.published_size,
                    )
                await watch.sleep(self.poll_seconds, until=self._stop)
        finally:
            self._done.set()
        while not watch.stopping:  # closed: idle until the supervisor stops
            await watch.sleep(3600)

    async def aclose(self) -> None:
        """Stop the loop, then sign and publish the log as it stands (a graceful stop)."""
        self._stop.set()
        if self._supervisor is not None:
            await self._done.wait()
        try:
            async with asyncio.timeout(CLOSE_SECONDS):
                await asyncio.to_thread(self.checkpoint, self.clock.now())
                await self.publish_pending()
        except Exception as exc:  # the stop goes on; the next start publishes it
            log.warning("final checkpoint not completed", error=f"{type(exc).__name__}: {exc}")
        if self._supervisor is not None and self._own_supervisor:
            with contextlib.suppress(Exception):
                await self._supervisor.aclose()
        self._supervisor = None
