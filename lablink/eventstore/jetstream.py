"""The event store whose record is a JetStream stream (cluster mode, issue 18).

The record is one stream (``LABLINK_LOG``, subjects ``lablink.log.>``, file storage, R1 on
one node, R3 in a cluster; ``record_format`` says how an event is a message). Every replica
keeps a local copy of it: a SQLite file with exactly the SQLite log's schema, positions being
the stream's sequences, fed by a consumer from its own last position (``record_feed``). So
everything that reads the log (the projector, the relay, replay, the audit) reads the copy
unchanged, and the copy's listeners (``subscribe``) hear every event, whoever appended it.

Appends go to the record, never to the copy:

- **Optimistic concurrency.** An append at ``expected_version`` carries
  ``Nats-Expected-Last-Subject-Sequence``: the stream sequence of the aggregate's last event
  as the copy holds it, over ``lablink.log.<stream>.>``. If the copy is behind, the server
  refuses the stale expectation (err_code 10071) and nothing is written: the append waits
  for the copy to reach the record's end and answers ``StreamVersionConflict`` with the
  version it finds, and the caller reads again and retries as with the SQLite store.
  ``ANY`` sends no expectation.
- **Atomic.** One event is one publish; several are one atomic batch (ADR-50), the
  expectation on its first message: all are recorded or none. At most 1,000 events in one
  append (``AppendTooLarge``: nothing written).
- **Read-your-writes.** An append returns once the copy holds its events (their versions are
  numbered there, in the record's order), at most ``copy_timeout`` later, else
  ``LocalCopyBehind`` (recorded, not yet shown). Except the engine's fenced group commit:
  its batch's events are answered from what was sent and the positions acknowledged, without
  waiting for the copy (the engine folds its own state), and the heads it recorded are kept
  until the copy reaches them, so that the next commit's expectations do not read a copy
  that is behind. The batch's first request, when it is one message, carries the fence
  instead of its own version check: one request to the record confirms that nothing of its
  stream came between, else it is read back. A client's command batched with fires (a
  run-now) waits for the copy before it is answered (``FencedStore.wait_visible``).
- **Event ids.** Each message carries ``Nats-Msg-Id``, the event id. An id the copy already
  holds is refused before anything is sent (``DuplicateId``); one the record holds but the
  copy not yet is refused by JetStream within its duplicate window.
- ``append_batch`` (group commit): each request is checked and recorded on its own, the
  requests of different streams at once, those of one stream in order; a conflict comes back
  in its slot.

An acknowledgement that never comes (a timeout, a leader election, a lost connection) is
``RecordUnconfirmed``: the append may be recorded. The synchronous protocol runs over
nats-py's asyncio client on an event loop thread the store owns (``loop_thread``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar, cast

import nats.errors
import structlog
from nats.aio.client import Client as NATS

from lablink.clock import Clock
from lablink.errors import (
    AppendTooLarge,
    DuplicateId,
    LeaseLost,
    LocalCopyBehind,
    LocalCopyMismatch,
    RecordUnconfirmed,
    StorageUnavailable,
    StreamVersionConflict,
)
from lablink.events import NewEvent, RecordedEvent
from lablink.eventstore.base import (
    ANY,
    AppendOutcome,
    AppendRequest,
    ReadsThrough,
    StoredRow,
    append_alone,
    parse_instant,
)
from lablink.eventstore.lease import Fence, LeaseRecord, claim, read_lease
from lablink.eventstore.loop_thread import LoopThread
from lablink.eventstore.record_feed import HEARTBEAT, RecordFeed
from lablink.eventstore.record_format import OCCURRED_AT, message_of, stream_subjects
from lablink.eventstore.record_link import (
    BATCH_DUPLICATE_ID,
    EXPECTED_SEQUENCE,
    EXPECTED_SUBJECT,
    IN_PROCESS,
    IN_PROCESS_PAUSE,
    MAX_BATCH,
    STALE_EXPECTATION,
    WRONG_LAST_SEQUENCE,
    Ack,
    ApiError,
    JetStreamOptions,
    Message,
    close,
    connect,
    ensure_stream,
    expectations_hold,
    in_process,
    last_message_sequence,
    message_id_at,
    next_sequence_on,
    publish,
)
from lablink.eventstore.sqlite import SQLiteEventStore, event_of

log = structlog.get_logger(tag="eventstore")


@dataclass(frozen=True)
class CopyStatus:
    """How far the local copy reaches (``copied``) and the record (``recorded``), the lag in
    events, why copying stopped if it did, and how many consumers the feed has made (more
    than one: it started again after a gap, a silence or a failure)."""

    copied: int
    recorded: int | None
    lag: int | None
    error: str | None
    consumers: int


T = TypeVar("T")
FenceSource = Callable[[], Fence | None]

_Head = tuple[int, int]  # a stream's version and the position of its last event


class _Prepared:
    """A request made into messages, checked before anything of its call is sent."""

    __slots__ = ("event_ids", "messages", "request")

    def __init__(self, request: AppendRequest) -> None:
        if len(request.events) > MAX_BATCH:
            raise AppendTooLarge(request.stream_id, len(request.events), MAX_BATCH)
        self.request = request
        self.event_ids: list[str] = []
        self.messages: list[Message] = []
        for new in request.events:
            event_id, subject, headers, body = message_of(request.stream_id, new)
            self.event_ids.append(event_id)
            self.messages.append((subject, headers, body))


def _recorded(one: _Prepared, positions: range, first_version: int) -> list[RecordedEvent]:
    """The events of ``one`` as recorded at ``positions`` from ``first_version`` on: what
    the copy will hold (its payload as sent, its instant as the copy parses it)."""
    return [
        RecordedEvent(
            position=position,
            event_id=event_id,
            stream_id=one.request.stream_id,
            version=first_version + at,
            occurred_at=parse_instant(headers[OCCURRED_AT]),
            actor=new.actor,
            correlation_id=new.correlation_id,
            event=new.event,
        )
        for at, (position, event_id, new, (_, headers, _)) in enumerate(
            zip(positions, one.event_ids, one.request.events, one.messages, strict=True)
        )
    ]


# A batch refused while the lease stands as it was is sent again this many times before its
# requests go one by one: mostly a renewal in process on the lease's subject.
_TOGETHER_RETRIES = 3


def _chunks(
    prepared: list[_Prepared], ready: list[tuple[int, dict[str, str]]]
) -> list[list[tuple[int, dict[str, str]]]]:
    """``ready`` in runs of at most ``MAX_BATCH`` messages, a request never split."""
    chunks: list[list[tuple[int, dict[str, str]]]] = []
    size = MAX_BATCH
    for item in ready:
        count = len(prepared[item[0]].messages)
        if size + count > MAX_BATCH:
            chunks.append([])
            size = 0
        chunks[-1].append(item)
        size += count
    return chunks


def _fenced_messages(
    prepared: list[_Prepared], chunk: list[tuple[int, dict[str, str]]], fence: Fence
) -> list[Message]:
    messages: list[Message] = []
    for index, expectation in chunk:
        for at, (subject, headers, body) in enumerate(prepared[index].messages):
            extra: dict[str, str] = {}
            if not messages:
                extra = fence.headers()
            elif at == 0 or (at == 1 and len(messages) == 1):
                extra = expectation
            messages.append((subject, {**headers, **extra} if extra else headers, body))
    return messages


class JetStreamEventStore(ReadsThrough):
    """Reads (``ReadsThrough``) are the local copy's."""

    def __init__(
        self,
        path: str | Path,
        options: JetStreamOptions,
        *,
        clock: Clock | None = None,
        ack_timeout: float = 5.0,
        copy_timeout: float = 5.0,
        open_timeout: float = 30.0,
        catch_up_timeout: float = 120.0,
        heartbeat: float = HEARTBEAT,
        name: str = "lablink-log",
    ) -> None:
        self.options = options
        self.ack_timeout = ack_timeout
        self.copy_timeout = copy_timeout
        self.copy = SQLiteEventStore(path, clock=clock, as_copy=True)
        self._reads = self.copy
        self.path = self.copy.path
        # The copy is disposable: a power cut that undoes its last transactions undoes its
        # checkpoint with them (its last position), and the feed copies them again. So one
        # fsync per checkpoint of the WAL, not per copied batch.
        self.copy.conn.execute("PRAGMA synchronous=NORMAL")
        self._copied = self.copy.last_position()
        self._progress: asyncio.Event | None = None
        # One fenced publish in flight at a time: the server refuses a second while the
        # first is in process on the lease subject (``record_link.IN_PROCESS``).
        self._fenced_lock: asyncio.Lock | None = None
        self.publishes = 0  # publishes and batches sent to the record (round trips)
        # Streams' heads the record acknowledged and the copy may not hold yet (fenced
        # batches answer without waiting for it): each dropped once the copy reaches it.
        self._acked: dict[str, _Head] = {}
        self._answered = 0  # the last position answered from an acknowledgement
        self._loop = LoopThread(f"{name}-loop")
        self._closed = False
        self._feed_task: asyncio.Task[None] | None = None
        self.copy.subscribe(self._on_copied)
        try:
            self._nc = self._loop.call(
                connect(options, name=name, within=min(open_timeout, 10.0)), open_timeout
            )
            self._loop.call(self._open(open_timeout), open_timeout + 5.0)
        except BaseException as exc:
            self.close()
            if isinstance(exc, LocalCopyMismatch | StorageUnavailable):
                raise
            if isinstance(exc, Exception):
                raise StorageUnavailable(options.shown(), f"cannot open: {exc!r}") from exc
            raise
        self.feed = RecordFeed(
            self._nc,
            options.stream,
            self.copy,
            heartbeat=heartbeat,
            request_timeout=ack_timeout,
            on_change=self._wake,
        )
        self._feed_task = self._loop.call(self._start_feed(), open_timeout)
        # Handed out caught up with the record as it was at the start, as ``open_store``
        # hands out the views caught up with the log: a replica that starts (or comes back)
        # decides from everything recorded before it.
        try:
            self._loop.call(self._catch_up_at_open(catch_up_timeout))
        except BaseException:
            self.close()
            raise

    async def _catch_up_at_open(self, within: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            try:
                end = await last_message_sequence(self._nc, self.options.stream, self.ack_timeout)
                break
            except nats.errors.TimeoutError:
                # A stream just made (by another replica starting too) answers reads only
                # once its replicas have elected a leader.
                if loop.time() >= deadline:
                    raise
        await self._until_copied(end, max(0.0, deadline - loop.time()))

    async def _start_feed(self) -> asyncio.Task[None]:
        return asyncio.create_task(self.feed.run(), name="record-feed")

    async def _open(self, within: float) -> None:
        self._progress = asyncio.Event()
        self._fenced_lock = asyncio.Lock()
        loop = asyncio.get_running_loop()
        await ensure_stream(self._nc, self.options, deadline=loop.time() + within)
        await self._check_copy()

    async def _check_copy(self) -> None:
        """Refuse a copy that holds what the record does not: its last event must be the
        record's at the same sequence."""
        copied = self._copied
        if copied == 0:
            return
        ((_, event_id, *_),) = await asyncio.to_thread(self.copy.read_rows, copied - 1, 1)
        found = await message_id_at(self._nc, self.options.stream, copied, self.ack_timeout)
        if found != event_id:
            raise LocalCopyMismatch(
                str(self.path),
                f"its event {copied} is {event_id!r}, the record's"
                f" ({self.options.shown()}) is {found!r}",
            )

    # -- the copy's progress -------------------------------------------------------------

    def _on_copied(self, events: list[RecordedEvent]) -> None:
        """After each write into the copy (in the writing thread): wake the waits."""
        self._copied = max(self._copied, events[-1].position)
        if not self._closed:
            # The loop may close between the check and the call (the store closing).
            with contextlib.suppress(RuntimeError):
                self._loop.loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        progress, self._progress = self._progress, asyncio.Event()
        if progress is not None:
            progress.set()
        if self._acked:  # the heads the copy now holds are its to give
            copied = self._copied
            self._acked = {sid: head for sid, head in self._acked.items() if head[1] > copied}

    async def _until_copied(self, position: int, within: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while self.seen_position < position:
            progress = self._progress
            remaining = deadline - loop.time()
            if progress is None or remaining <= 0:
                error = self.feed.error
                raise LocalCopyBehind(
                    str(self.path),
                    position,
                    self._copied,
                    f"copying stopped: {error}" if error is not None else "",
                )
            try:
                # Not wait_for: on 3.11 it drops a cancellation that lands with the progress.
                async with asyncio.timeout(remaining):
                    await progress.wait()
            except TimeoutError:
                continue

    async def caught_up(self) -> None:
        """Wait for the copy to hold everything the record holds now (raises
        ``LocalCopyBehind`` past ``copy_timeout``): a new leader decides from it."""
        end = await last_message_sequence(self._nc, self.options.stream, self.ack_timeout)
        await self._until_copied(end, self.copy_timeout)

    async def _catch_up(self) -> None:
        """Wait for the copy to hold everything the record holds now (bounded; a conflict
        answered after it names the version the caller will read)."""
        try:
            end = await last_message_sequence(self._nc, self.options.stream, self.ack_timeout)
            await self._until_copied(end, self.copy_timeout)
        except (LocalCopyBehind, nats.errors.Error) as exc:
            log.warning("local copy not caught up", stream=self.options.stream, error=str(exc))

    def copy_status(self) -> CopyStatus:
        """The local copy against the record, for /health (asks the servers once; the record's
        end is None while they cannot answer)."""
        try:
            recorded: int | None = self.record_position()
        except Exception:  # the record out of reach is what this reports, not a failure
            recorded = None
        error = self.feed.error
        return CopyStatus(
            copied=self._copied,
            recorded=recorded,
            lag=None if recorded is None else max(0, recorded - self.seen_position),
            error=None if error is None else str(error),
            consumers=self.feed.sessions,
        )

    @property
    def copied_position(self) -> int:
        """How far the local copy reaches (its last position)."""
        return self._copied

    @property
    def seen_position(self) -> int:
        """How far the feed has seen the record: the copy's last position, or a lease message
        past it (not copied: no event)."""
        feed = getattr(self, "feed", None)
        return max(self._copied, feed.reached if feed is not None else 0)

    def wait_visible(self) -> None:
        """Until the local copy holds every batch answered from the record's acknowledgement
        (a client's run-now, batched with fires, is then readable)."""
        position = self._answered
        if self.seen_position >= position:
            return
        self._loop.call(self._until_copied(position, self.copy_timeout), self.copy_timeout + 5.0)

    def record_position(self) -> int:
        """Where the record ends now: its last message still there (one request)."""
        return self._loop.call(
            last_message_sequence(self._nc, self.options.stream, self.ack_timeout),
            self.ack_timeout + 1.0,
        )

    # -- writing ---------------------------------------------------------------------------

    def append(
        self, stream_id: str, expected_version: int, events: Sequence[NewEvent]
    ) -> list[RecordedEvent]:
        request = AppendRequest(
            stream_id=stream_id, expected_version=expected_version, events=events
        )
        return append_alone(self, request)

    def append_batch(
        self, requests: Sequence[AppendRequest], *, fence: FenceSource | None = None
    ) -> list[AppendOutcome]:
        """Every request checked before anything is sent (sizes, event ids), so that a refusal
        writes nothing; then each recorded on its own. A failure to record one (an
        unconfirmed ack, the copy behind) is raised once the others are done: the requests
        of its stream after it are not sent."""
        prepared = [_Prepared(request) for request in requests]
        ids = [event_id for one in prepared for event_id in one.event_ids]
        seen: set[str] = set()
        for event_id in ids:
            if event_id in seen:
                raise DuplicateId(event_id)
            seen.add(event_id)
        present = self.copy.event_ids_present(ids)
        if present:
            raise DuplicateId(present[0])
        return self._loop.call(self._append_all(prepared, fence))

    async def _append_all(
        self, prepared: list[_Prepared], fence: FenceSource | None = None
    ) -> list[AppendOutcome]:
        """Record every request. Fenced (the engine's group commit), the first request of
        each stream goes in one atomic batch per 1,000 messages (``_together``): one round
        trip and one Raft commit for a whole chunk of fires, not one per fire, answered from
        the acknowledgement. What that cannot record as a whole, and each stream's later
        requests, go one by one (``_each``); for those the copy is waited for once and read
        back in one range."""
        outcomes: dict[int, AppendOutcome | range] = {}
        left = list(range(len(prepared)))
        if fence is not None and len(prepared) > 1:
            firsts: dict[str, int] = {}
            for index, one in enumerate(prepared):
                firsts.setdefault(one.request.stream_id, index)
            outcomes.update(await self._together(prepared, list(firsts.values()), fence))
            left = [index for index in left if index not in outcomes]
        if left:
            outcomes.update(await self._each(prepared, left, fence))
        spans = {index: span for index, span in outcomes.items() if isinstance(span, range)}
        rows = await self._read_back(list(spans.values()))
        for index, span in spans.items():
            events = [rows[position] for position in span if position in rows]
            if [row[1] for row in events] != prepared[index].event_ids:
                raise StorageUnavailable(
                    str(self.path),
                    f"the copy's events {span.start}..{span.stop - 1} are not the ones"
                    " recorded there",
                )
            outcomes[index] = [event_of(row) for row in events]
        return [cast(AppendOutcome, outcomes[index]) for index in range(len(prepared))]

    async def _read_back(self, spans: list[range]) -> dict[int, StoredRow]:
        recorded = [span for span in spans if span]
        if not recorded:
            return {}
        low, high = min(span.start for span in recorded), max(span.stop for span in recorded)
        await self._until_copied(high - 1, self.copy_timeout)
        found = await asyncio.to_thread(self.copy.read_rows, low - 1, high - low, up_to=high - 1)
        return {row[0]: row for row in found}

    async def _each(
        self, prepared: list[_Prepared], indexes: list[int], fence: FenceSource | None
    ) -> dict[int, AppendOutcome | range]:
        """Record ``indexes`` one request at a time (the streams at once, each stream's
        requests in order): a conflict in its slot, a failure raised once the others are
        done (the requests of its stream after it are not sent)."""
        outcomes: dict[int, AppendOutcome | range] = {}
        failures: list[tuple[int, BaseException]] = []
        by_stream: dict[str, list[int]] = {}
        for index in indexes:
            by_stream.setdefault(prepared[index].request.stream_id, []).append(index)
        heads = await self._heads(list(by_stream))

        async def in_order(stream_id: str, indexes: list[int]) -> None:
            head: _Head | None = heads[stream_id]
            reached = 0  # after an append at ANY: the copy holds the stream's head from here
            for index in indexes:
                try:
                    if head is None:
                        await self._until_copied(reached, self.copy_timeout)
                        head = await asyncio.to_thread(self.copy.stream_head, stream_id)
                    outcome, head = await self._record(prepared[index], head, fence)
                except Exception as exc:
                    failures.append((index, exc))
                    return
                outcomes[index] = outcome
                if isinstance(outcome, range):
                    reached = max(reached, outcome.stop - 1)

        await asyncio.gather(*(in_order(sid, indexes) for sid, indexes in by_stream.items()))
        if failures:
            raise min(failures, key=lambda failure: failure[0])[1]
        return outcomes

    async def _together(
        self, prepared: list[_Prepared], indexes: list[int], source: FenceSource
    ) -> dict[int, AppendOutcome | range]:
        """Record ``indexes`` (one request per stream) under the fence in atomic batches of
        up to 1,000 messages: the fence on a batch's first message, each request's own
        expectation on its first message (on its second where its first carries the fence;
        on none where it has only that one, as a single fenced publish). JetStream 2.15.1
        judges every expectation of a batch against the stream before it, and a stale one
        stores nothing. A request the copy is behind on, and a batch refused for a stale
        expectation that is not the fence's, are left out (no slot): ``_each`` records them.
        ``LeaseLost`` when the lease is another's."""
        outcomes: dict[int, AppendOutcome | range] = {}
        heads = await self._heads([prepared[index].request.stream_id for index in indexes])
        ready: list[tuple[int, dict[str, str]]] = []
        for index in indexes:
            request = prepared[index].request
            version, last_position = heads[request.stream_id] or (0, 0)
            if not prepared[index].messages:
                continue  # nothing to record; ``_each`` answers it as the copy stands
            if request.expected_version == ANY:
                ready.append((index, {}))
            elif version == request.expected_version:
                ready.append(
                    (
                        index,
                        {
                            EXPECTED_SEQUENCE: str(last_position),
                            EXPECTED_SUBJECT: stream_subjects(request.stream_id),
                        },
                    )
                )
            elif version > request.expected_version and request.stream_id not in self._acked:
                outcomes[index] = StreamVersionConflict(
                    request.stream_id, request.expected_version, version
                )
            # Else the copy may be behind (the caller's version, or ours, ahead of it):
            # ``_each`` catches up first, so that a conflict names what the caller will read.
        for chunk in _chunks(prepared, ready):
            span = await self._publish_together(prepared, chunk, source)
            if span is None:
                continue
            start = span.start
            for at, (index, expectation) in enumerate(chunk):
                one = prepared[index]
                count = len(one.messages)
                recorded = range(start, start + count)
                start += count
                expected = one.request.expected_version
                if expected == ANY or (
                    at == 0
                    and count == 1
                    and expectation
                    and not await self._nothing_between(one, heads, recorded.start)
                ):
                    # Its versions as the copy numbers them: at ANY, or where the batch's
                    # first message carried the fence instead of the request's own check
                    # and another write came between (read back).
                    outcomes[index] = recorded
                    continue
                # Its expectation held (or nothing came between), so these are the stream's
                # next versions.
                outcomes[index] = _recorded(one, recorded, expected + 1)
                self._acked[one.request.stream_id] = (expected + count, recorded.stop - 1)
                self._answered = max(self._answered, recorded.stop - 1)
        return outcomes

    async def _nothing_between(
        self, one: _Prepared, heads: dict[str, _Head | None], position: int
    ) -> bool:
        """Whether the record holds nothing of ``one``'s stream between the head it was
        decided on and ``position``, where it was recorded without a check of its own (the
        batch's first message carries the fence): one request to the record."""
        stream_id = one.request.stream_id
        _, last_position = heads[stream_id] or (0, 0)
        try:
            found = await next_sequence_on(
                self._nc,
                self.options.stream,
                stream_subjects(stream_id),
                last_position + 1,
                self.ack_timeout,
            )
        except (nats.errors.Error, ApiError, TimeoutError) as exc:
            log.warning("fenced write not verified: read back", stream=stream_id, error=repr(exc))
            return False
        return found == position

    async def _publish_together(
        self,
        prepared: list[_Prepared],
        chunk: list[tuple[int, dict[str, str]]],
        source: FenceSource,
    ) -> range | None:
        """One atomic batch of ``chunk`` under the fence: the positions it was recorded at, or
        None where an expectation other than the fence's was stale (nothing written), left to
        ``_each``. A refusal while the lease is still this holder's at the same message is a
        stale request (10071) or a publish in process on one of its subjects (10164, a
        renewal, say: sent again a few times); one where a renewal moved the lease is sent
        again expecting the renewal's message, until ``ack_timeout``."""
        ids = [event_id for index, _ in chunk for event_id in prepared[index].event_ids]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.ack_timeout
        moved: Fence | None = None
        pause = IN_PROCESS_PAUSE[0]
        same = 0
        while True:
            fence = source()
            if fence is None:
                raise LeaseLost(self._replica_of(source), 0, "not the lease holder")
            if moved is not None and moved.epoch == fence.epoch and moved.seq > fence.seq:
                fence = moved
            messages = _fenced_messages(prepared, chunk, fence)
            assert self._fenced_lock is not None
            async with self._fenced_lock:
                ack = await self._send(messages, ids)
            if ack.ok:
                if ack.count is not None and ack.count != len(messages):
                    raise RecordUnconfirmed(
                        self.options.shown(),
                        f"batch of {len(messages)} acknowledged {ack.count}",
                        ids,
                    )
                return range(ack.seq - len(messages) + 1, ack.seq + 1)
            if ack.error_code == BATCH_DUPLICATE_ID or ack.duplicate:
                raise DuplicateId(await self._duplicate_of_ids(ids))
            if ack.error_code not in STALE_EXPECTATION:
                raise StorageUnavailable(
                    self.options.shown(), f"{ack.description} (err_code {ack.error_code})"
                )
            live = await read_lease(self._nc, self.options.stream, self.ack_timeout)
            if live is None or live.replica != fence.replica or live.epoch != fence.epoch:
                raise LeaseLost(fence.replica, fence.epoch, "another replica holds it")
            if loop.time() >= deadline:
                return None
            if live.seq != fence.seq:
                moved = Fence(replica=live.replica, epoch=live.epoch, seq=live.seq)
                continue
            same += 1
            if ack.error_code == WRONG_LAST_SEQUENCE or same > _TOGETHER_RETRIES:
                return None  # a request's own expectation was stale (10071 names it)
            await asyncio.sleep(pause)
            pause = min(2 * pause, IN_PROCESS_PAUSE[1])

    async def _send(self, messages: list[Message], ids: list[str]) -> Ack:
        where = self.options.shown()
        self.publishes += 1
        try:
            return await publish(self._nc, messages, {}, self.ack_timeout)
        except nats.errors.NoRespondersError as exc:
            raise StorageUnavailable(where, "no JetStream server answered") from exc
        except (nats.errors.TimeoutError, TimeoutError) as exc:
            raise RecordUnconfirmed(
                where, f"no acknowledgement within {self.ack_timeout:g} s", ids
            ) from exc
        except nats.errors.Error as exc:
            raise RecordUnconfirmed(where, repr(exc), ids) from exc

    async def _heads(self, stream_ids: list[str]) -> dict[str, _Head | None]:
        """Each stream's head: the copy's, or a later one the record acknowledged to this
        store and the copy has not reached yet."""
        heads = await asyncio.to_thread(self._copy_heads, stream_ids)
        for stream_id in stream_ids:
            acked = self._acked.get(stream_id)
            if acked is None:
                continue
            copied = heads[stream_id]
            if copied is not None and copied[1] >= acked[1]:
                del self._acked[stream_id]  # the copy holds it (and numbered it): the truth
            else:
                heads[stream_id] = acked
        return heads

    def _copy_heads(self, stream_ids: list[str]) -> dict[str, _Head | None]:
        with self.copy.lock:
            return {stream_id: self.copy.stream_head(stream_id) for stream_id in stream_ids}

    async def _record(
        self, one: _Prepared, head: _Head, fence: FenceSource | None = None
    ) -> tuple[StreamVersionConflict | range, _Head | None]:
        """Record one request after its stream's ``head`` (version, last position) as the copy
        holds it: the positions it was recorded at, or its conflict; and the stream's head
        after it (None: unknown until the copy has it, after an append at ANY)."""
        request = one.request
        stream_id, expected = request.stream_id, request.expected_version
        version, last_position = head
        expectation: dict[str, str] = {}
        if expected != ANY:
            if version < expected or (version > expected and stream_id in self._acked):
                # The copy may be behind (the caller read a later version, or a fenced batch
                # of ours is not in it yet): not a conflict until it is not, and one answered
                # names the version the caller reads next.
                await self._catch_up()
                version, last_position = (await self._heads([stream_id]))[stream_id] or (0, 0)
                if stream_id in self._acked:
                    # Still behind what the record acknowledged: a conflict now would name a
                    # version the caller cannot read back. Recorded, not yet shown.
                    raise LocalCopyBehind(str(self.path), self._acked[stream_id][1], self._copied)
            if version != expected:
                return StreamVersionConflict(stream_id, expected, version), (
                    version,
                    last_position,
                )
            expectation = {
                EXPECTED_SEQUENCE: str(last_position),
                EXPECTED_SUBJECT: stream_subjects(stream_id),
            }
        if not one.messages:
            return range(0), (version, last_position)
        if fence is not None:
            ack = await self._publish_fenced(one, expectation, fence)
        else:
            ack = await self._publish(one, expectation)
        if ack.error_code in STALE_EXPECTATION:
            await self._catch_up()
            now = await asyncio.to_thread(self.copy.stream_head, stream_id)
            return StreamVersionConflict(stream_id, expected, now[0]), now
        if ack.error_code == BATCH_DUPLICATE_ID or ack.duplicate:
            raise DuplicateId(await self._duplicate_of(one))
        if not ack.ok:
            raise StorageUnavailable(
                self.options.shown(), f"{ack.description} (err_code {ack.error_code})"
            )
        count = len(one.messages)
        if ack.count is not None and ack.count != count:
            raise RecordUnconfirmed(
                self.options.shown(), f"batch of {count} acknowledged {ack.count}", one.event_ids
            )
        span = range(ack.seq - count + 1, ack.seq + 1)
        # The expectation held: nothing else was recorded in this stream in between.
        return span, (version + count, ack.seq) if expected != ANY else None

    async def _publish_fenced(
        self, one: _Prepared, expectation: dict[str, str], source: FenceSource
    ) -> Ack:
        """Publish under the lease's fence. One message carries one expectation: the fence
        (the aggregate's version was checked against the copy, and the engine holds the
        job's lock). A batch carries the aggregate's on its first message and the fence on
        its second, both enforced by the server. Every fence expects on the lease subject,
        where JetStream takes one such publish at a time in a cluster and refuses the
        others outright (``record_link.IN_PROCESS``): so they are sent one at a time, not
        all at once to be refused and sent again. A refusal that is the lease's is
        ``LeaseLost``. One that is this holder's own renewal landing in between (the live
        lease is still its replica's and epoch's, at a later message than the fence it
        had) is sent again expecting that message, until ``ack_timeout``: the keeper may not
        have heard its renewal's answer yet, and the lease it renewed is no less its own."""
        moved: Fence | None = None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.ack_timeout
        while moved is None or loop.time() < deadline:
            fence = source()
            if fence is None:
                raise LeaseLost(self._replica_of(source), 0, "not the lease holder")
            if moved is not None and moved.epoch == fence.epoch and moved.seq > fence.seq:
                fence = moved  # the renewal read from the record, newer than the keeper's
            moved = fence
            assert self._fenced_lock is not None
            async with self._fenced_lock:
                if len(one.messages) == 1 or not expectation:
                    ack = await self._publish(one, fence.headers())
                else:
                    ack = await self._publish(one, expectation, later=fence.headers())
            if ack.error_code not in STALE_EXPECTATION:
                return ack
            live = await read_lease(self._nc, self.options.stream, self.ack_timeout)
            if live is None or live.replica != fence.replica or live.epoch != fence.epoch:
                raise LeaseLost(fence.replica, fence.epoch, "another replica holds it")
            if live.seq == fence.seq:
                return ack  # the lease held: the aggregate's expectation was the stale one
            moved = Fence(replica=live.replica, epoch=live.epoch, seq=live.seq)
        assert moved is not None
        raise LeaseLost(moved.replica, moved.epoch, "renewals kept moving the fence")

    @staticmethod
    def _replica_of(source: FenceSource) -> str:
        return str(getattr(source, "replica", "?"))

    async def _publish(
        self, one: _Prepared, expectation: dict[str, str], *, later: dict[str, str] | None = None
    ) -> Ack:
        """Publish, sending again while JetStream refuses it only because another publish
        expecting on one of its subjects is in process (``record_link.IN_PROCESS``): every
        fenced append expects on the lease subject, so a leader's appends of different jobs
        at once, and its renewals, meet there. Not a conflict: the record does not differ
        from what was expected. Until ``ack_timeout``; then the refusal is the caller's."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.ack_timeout
        pause = IN_PROCESS_PAUSE[0]
        while True:
            ack = await self._publish_once(one, expectation, later=later)
            if ack.error_code != IN_PROCESS or loop.time() >= deadline:
                return ack
            if not in_process(ack, len(one.messages)) and not await expectations_hold(
                self._nc, self.options.stream, [expectation, later or {}], self.ack_timeout
            ):
                return ack  # a batch whose expectation is stale
            await asyncio.sleep(pause)
            pause = min(2 * pause, IN_PROCESS_PAUSE[1])

    async def _publish_once(
        self, one: _Prepared, expectation: dict[str, str], *, later: dict[str, str] | None = None
    ) -> Ack:
        where = self.options.shown()
        self.publishes += 1
        try:
            return await publish(self._nc, one.messages, expectation, self.ack_timeout, later=later)
        except nats.errors.NoRespondersError as exc:
            # Nobody took it: no stream leader (an election), nothing was written.
            raise StorageUnavailable(where, "no JetStream server answered") from exc
        except (nats.errors.TimeoutError, TimeoutError) as exc:
            raise RecordUnconfirmed(
                where, f"no acknowledgement within {self.ack_timeout:g} s", one.event_ids
            ) from exc
        except nats.errors.Error as exc:
            raise RecordUnconfirmed(where, repr(exc), one.event_ids) from exc

    async def _duplicate_of(self, one: _Prepared) -> str:
        return await self._duplicate_of_ids(one.event_ids)

    async def _duplicate_of_ids(self, ids: list[str]) -> str:
        """Which of ``ids`` the record holds already (the first, if the copy cannot tell
        yet)."""
        await self._catch_up()
        present = await asyncio.to_thread(self.copy.event_ids_present, ids)
        return present[0] if present else ids[0]

    # -- the scheduler's lease ---------------------------------------------------------------

    async def on_store_loop(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await ``coro`` on the store's own loop (where its connection lives) from another."""
        return await asyncio.wrap_future(self._loop.submit(coro))

    @property
    def connection(self) -> NATS:
        """The store's NATS connection: used only on the store's loop (``on_store_loop``)."""
        return self._nc

    def lease_link(self, replica: str, ttl: float) -> StoreLeaseLink:
        return StoreLeaseLink(self, replica, ttl)

    def fenced(self, source: FenceSource) -> FencedStore:
        """This store for the engine: every append carries the lease's fence."""
        return FencedStore(self, source)

    # -- reading: the local copy ---------------------------------------------------------

    def subscribe(self, listener: Callable[[list[RecordedEvent]], None]) -> Callable[[], None]:
        """Call ``listener`` with the events of every write into the copy: every event of the
        record, whoever appended it, in order, once."""
        return self.copy.subscribe(listener)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._loop.running:
            try:
                self._loop.call(self._shutdown(), 15.0)
            except Exception as exc:  # closing goes on: the loop and the copy still end
                log.warning("closing the record's connection failed", error=repr(exc))
            self._loop.stop()
        self.copy.close()

    async def _shutdown(self) -> None:
        if self._feed_task is not None:
            # The feed ends (its consumer deleted) before the connection closes.
            self._feed_task.cancel()
            await asyncio.wait({self._feed_task}, timeout=5.0)
        nc = getattr(self, "_nc", None)
        if nc is not None:
            await close(nc)


class StoreLeaseLink:
    """The lease's requests over a store's connection (``lease_keeper.LeaseLink``)."""

    def __init__(self, store: JetStreamEventStore, replica: str, ttl: float) -> None:
        self.store = store
        self.replica = replica
        self.ttl = ttl

    async def read(self) -> LeaseRecord | None:
        store = self.store
        return await store.on_store_loop(
            read_lease(store._nc, store.options.stream, store.ack_timeout)
        )

    async def claim(self, after: LeaseRecord | None) -> LeaseRecord | None:
        return await self._claim(after, take_over=False)

    async def take_over(self, stale: LeaseRecord) -> LeaseRecord | None:
        return await self._claim(stale, take_over=True)

    async def _claim(self, after: LeaseRecord | None, *, take_over: bool) -> LeaseRecord | None:
        store = self.store
        return await store.on_store_loop(
            claim(
                store._nc,
                replica=self.replica,
                ttl=self.ttl,
                after=after,
                at=datetime.now(UTC),
                within=store.ack_timeout,
                take_over=take_over,
            )
        )


class FencedStore(ReadsThrough):
    """A JetStream store whose appends carry the lease's fence (the engine's store in cluster
    mode): refused with ``LeaseLost``, nothing written, once the lease is not this replica's.
    Reads are the store's."""

    def __init__(self, store: JetStreamEventStore, source: FenceSource) -> None:
        self.store = store
        self._reads = store
        self.source = source

    def append(
        self, stream_id: str, expected_version: int, events: Sequence[NewEvent]
    ) -> list[RecordedEvent]:
        outcome = self.append_batch(
            [AppendRequest(stream_id=stream_id, expected_version=expected_version, events=events)]
        )[0]
        if isinstance(outcome, StreamVersionConflict):
            raise outcome
        return outcome

    def wait_visible(self) -> None:
        """``ShowsLater``: the store's."""
        self.store.wait_visible()

    def append_batch(self, requests: Sequence[AppendRequest]) -> list[AppendOutcome]:
        return self.store.append_batch(requests, fence=self.source)

    def close(self) -> None:
        """The store is the runtime's to close, not the engine's."""
