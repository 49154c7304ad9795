"""The consumer that keeps a replica's local copy of the log: the record's messages, from the
copy's checkpoint on, written into the copy in order.

The checkpoint is the copy itself: its last position, which is the stream sequence of the last
event it holds. Each session makes an ephemeral push consumer from the next sequence (no
acks, flow control, idle heartbeats, in memory on one node: it is cheap and disposable, the
copy is what remembers). Any doubt ends the session and the next one starts again from the
copy's last position, so nothing is lost or copied twice:

- a consumer sequence that skips (a message lost on its way);
- a heartbeat saying the consumer delivered more than arrived;
- silence for three heartbeats (the consumer's node is gone, a connection was lost);
- any error making the consumer.

The consumer has no subject filter: every sequence of the stream is a position of the copy,
so a message on a subject that is not an event's (a stream made with more subjects than
``lablink.log.>``) is not a silent gap but a message that is not a LabLink event. Such a
message, or a copy that refuses a write, stops the copying there (``error``): a replica that
skipped an event would fold views nobody else has. It is tried again after a backoff, and the
store's waits name the error meanwhile.

The scheduler's lease (``record_format.LEASE_SUBJECT``) lives in the same stream, its
messages expiring by their TTL. A lease message is passed over, not copied: the copy's
positions keep a gap there (``copy_in(..., gaps=True)``, which writes the run down for
`lablink audit verify`), and ``reached`` says how far the
feed has seen, events or not, for the store's waits. A stream sequence that skips while the
consumer's sequence does not is such an expired lease message: the record denies deletes and
purges, so nothing else can leave it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from lablink.eventstore.record_format import is_lease, row_of
from lablink.eventstore.record_link import api
from lablink.eventstore.sqlite import CopiedRow, SQLiteEventStore

log = structlog.get_logger(tag="eventstore")

HEARTBEAT = 1.0  # seconds between the consumer's idle heartbeats
MAX_ROWS = 5000  # rows written into the copy in one transaction, at most
_BACKOFF = (0.05, 2.0)


class _Restart(Exception):
    """End this session and start another from the copy's last position."""


class RecordFeed:
    def __init__(
        self,
        nc: NATS,
        stream: str,
        copy: SQLiteEventStore,
        *,
        heartbeat: float = HEARTBEAT,
        request_timeout: float = 5.0,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.nc = nc
        self.stream = stream
        self.copy = copy
        self.heartbeat = heartbeat
        self.request_timeout = request_timeout
        self.error: Exception | None = None
        self.sessions = 0  # consumers made, for tests and /health
        self.first_start = 0  # the stream sequence the first consumer started from
        self.reached = 0  # the last stream sequence seen and done with (copied or passed over)
        self._on_change = on_change or (lambda: None)
        self._inbox: asyncio.Queue[Msg] = asyncio.Queue()

    async def run(self) -> None:
        delay = _BACKOFF[0]
        while True:
            try:
                await self._session()
                delay = _BACKOFF[0]
            except asyncio.CancelledError:
                raise
            except _Restart as why:
                log.debug("record feed restarts", stream=self.stream, why=str(why))
            except Exception as exc:
                if self.error is None or str(self.error) != str(exc):
                    log.warning("record feed failed", stream=self.stream, error=str(exc))
                self.error = exc
                self._on_change()
                await asyncio.sleep(delay)
                delay = min(delay * 2, _BACKOFF[1])

    async def _session(self) -> None:
        copied = await asyncio.to_thread(self.copy.last_position)
        inbox = self.nc.new_inbox()
        queue: asyncio.Queue[Msg] = asyncio.Queue()
        self._inbox = queue

        async def deliver(msg: Msg) -> None:
            queue.put_nowait(msg)

        sub = await self.nc.subscribe(inbox, cb=deliver)
        consumer: str | None = None
        try:
            created = await api(
                self.nc,
                f"$JS.API.CONSUMER.CREATE.{self.stream}",
                {
                    "stream_name": self.stream,
                    "config": {
                        "deliver_subject": inbox,
                        "deliver_policy": "by_start_sequence",
                        "opt_start_seq": copied + 1,
                        "ack_policy": "none",
                        "max_deliver": 1,
                        "flow_control": True,
                        "idle_heartbeat": int(self.heartbeat * 1e9),
                        "mem_storage": True,
                        "num_replicas": 1,
                        "inactive_threshold": int(max(30.0, 10 * self.heartbeat) * 1e9),
                    },
                },
                self.request_timeout,
            )
            consumer = str(created["name"])
            self.sessions += 1
            self.first_start = self.first_start or copied + 1
            await self._follow(queue, copied)
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
            if consumer is not None and self.nc.is_connected:
                with contextlib.suppress(Exception):
                    await self.nc.publish(f"$JS.API.CONSUMER.DELETE.{self.stream}.{consumer}", b"")

    async def _follow(self, queue: asyncio.Queue[Msg], copied: int) -> None:
        delivered = 0  # the consumer's sequence of the last message taken
        seen = copied  # the last stream sequence taken (an event or a lease message)
        while True:
            # asyncio.timeout, not wait_for: on 3.11 wait_for drops a cancellation that lands
            # as the message arrives, and the feed went on after its store closed.
            try:
                async with asyncio.timeout(3 * self.heartbeat):
                    first = await queue.get()
            except TimeoutError:
                raise _Restart("no heartbeat") from None
            rows: list[CopiedRow] = []
            msg: Msg | None = first
            while msg is not None:
                if await self._control(msg, delivered):
                    pass
                else:
                    meta = msg.metadata
                    if meta.sequence.consumer != delivered + 1:
                        await self._write(rows, seen)
                        raise _Restart(f"consumer sequence {meta.sequence.consumer}")
                    delivered = meta.sequence.consumer
                    at = meta.sequence.stream
                    if at > seen:
                        seen = at
                        if not is_lease(msg.subject):
                            rows.append(row_of(at, msg.subject, msg.headers, msg.data))
                if len(rows) >= MAX_ROWS:
                    break
                msg = queue.get_nowait() if not queue.empty() else None
            await self._write(rows, seen)

    async def _control(self, msg: Msg, delivered: int) -> bool:
        """A heartbeat or a flow-control request (True), or an event (False)."""
        headers = msg.headers or {}
        if headers.get("Status") != "100":
            return False
        if msg.reply:  # flow control: the consumer waits for this answer
            await self.nc.publish(msg.reply, b"")
        stalled = headers.get("Nats-Consumer-Stalled")
        if stalled:
            await self.nc.publish(stalled, b"")
        last = headers.get("Nats-Last-Consumer")
        if last is not None and int(last) != delivered:
            raise _Restart(f"heartbeat: consumer at {last}, {delivered} arrived")
        return True

    async def _write(self, rows: list[CopiedRow], seen: int) -> None:
        """Write ``rows`` into the copy (gaps allowed: lease messages), then say the feed has
        seen up to ``seen``."""
        if rows:
            await asyncio.to_thread(self.copy.copy_in, rows, gaps=True)
            if self.error is not None:
                log.info("record feed copying again", stream=self.stream)
            self.error = None
        if rows or seen > self.reached:
            self.reached = max(self.reached, seen)
            self._on_change()
