"""The event store contract, shared by the SQLite store and its in-memory twin."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

import msgspec

from lablink.errors import StreamVersionConflict
from lablink.events import NewEvent, RecordedEvent
from lablink.ids import random_hex

# An append with expected_version=ANY skips the optimistic check (used only by facts that
# cannot conflict, such as retention passes). A new stream is expected at version 0.
ANY = -1


class AppendRequest(msgspec.Struct, frozen=True, kw_only=True):
    stream_id: str
    expected_version: int
    events: Sequence[NewEvent]


AppendOutcome = list[RecordedEvent] | StreamVersionConflict

# An event as the log stores it: position, event id, stream id, version, type, occurred_at
# (``format_instant`` text), actor, correlation id, payload (JSON text). For readers that
# pass the payload on without decoding it (the relay, the audit trail, bulk rebuilds).
StoredRow = tuple[int, str, str, int, str, str, str, str | None, str]


class EventQuery(msgspec.Struct, frozen=True, kw_only=True):
    """Which events to find (the audit trail's filters); every given filter must hold.

    ``types`` entries are full types (``job.paused``) or family prefixes ending in a dot
    (``job.``). ``since`` and ``until`` bound occurred_at, both inclusive. Results are in
    log order, from just past ``after_position``, at most ``limit`` of them.
    """

    stream_id: str | None = None
    actor: str | None = None
    types: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    after_position: int | None = None
    limit: int = 100


class EventReader(Protocol):
    """The reads of the log that others need; the only way in besides the store's appends."""

    def read_stream(self, stream_id: str, after_version: int = 0) -> list[RecordedEvent]:
        """One stream's events past ``after_version``, in version order."""
        ...

    def read_all(
        self, after_position: int = 0, until: datetime | None = None, batch_size: int = 1000
    ) -> Iterator[RecordedEvent]:
        """Every event past ``after_position`` in position order; ``until`` bounds occurred_at
        (inclusive: ``lablink replay --until``)."""
        ...

    def read_rows(
        self,
        after_position: int,
        limit: int,
        *,
        up_to: int | None = None,
        until: datetime | None = None,
    ) -> list[StoredRow]:
        """Up to ``limit`` stored rows past ``after_position`` in position order, at most up
        to position ``up_to`` and occurred_at ``until`` when given."""
        ...

    def find(self, query: EventQuery) -> list[StoredRow]:
        """The stored rows ``query`` selects, in log order."""
        ...

    def stream_version(self, stream_id: str) -> int: ...

    def last_position(self) -> int: ...


class ReadsThrough:
    """``EventReader``'s reads, each passed on to ``_reads``: the base of a store whose reads
    are another reader's (the JetStream store reads its local copy; its fenced wrapper, the
    store)."""

    _reads: EventReader

    def read_stream(self, stream_id: str, after_version: int = 0) -> list[RecordedEvent]:
        return self._reads.read_stream(stream_id, after_version)

    def read_all(
        self, after_position: int = 0, until: datetime | None = None, batch_size: int = 1000
    ) -> Iterator[RecordedEvent]:
        return self._reads.read_all(after_position, until, batch_size)

    def read_rows(
        self,
        after_position: int,
        limit: int,
        *,
        up_to: int | None = None,
        until: datetime | None = None,
    ) -> list[StoredRow]:
        return self._reads.read_rows(after_position, limit, up_to=up_to, until=until)

    def find(self, query: EventQuery) -> list[StoredRow]:
        return self._reads.find(query)

    def stream_version(self, stream_id: str) -> int:
        return self._reads.stream_version(stream_id)

    def last_position(self) -> int:
        return self._reads.last_position()


class EventStore(EventReader, Protocol):
    def append(
        self, stream_id: str, expected_version: int, events: Sequence[NewEvent]
    ) -> list[RecordedEvent]:
        """Append atomically or raise StreamVersionConflict having written nothing."""
        ...

    def append_batch(self, requests: Sequence[AppendRequest]) -> list[AppendOutcome]:
        """Group commit: one transaction for many appends, each checked on its own.

        A request whose expected version is stale gets its conflict back in its slot and
        writes nothing; the others commit together.
        """
        ...

    def close(self) -> None: ...


@runtime_checkable
class ShowsLater(Protocol):
    """A store whose appends may return before its own reads show them (the engine's fenced
    store in cluster mode: answered from the record's acknowledgement, its local copy a
    moment behind). A caller that answers a client waits for them first."""

    def wait_visible(self) -> None:
        """Return once the reads show every append returned so far (``LocalCopyBehind``
        past the store's copy timeout: recorded, not yet shown)."""
        ...


def append_alone(store: EventStore, request: AppendRequest) -> list[RecordedEvent]:
    """``request`` as a group commit of one: its events, or its conflict raised."""
    outcome = store.append_batch([request])[0]
    if isinstance(outcome, StreamVersionConflict):
        raise outcome
    return outcome


def new_event_id() -> str:
    """Time-ordered (nanoseconds, then 64 random bits): new ids land at the end of the unique
    index instead of anywhere in it, which keeps appends fast on a large log."""
    return f"{time.time_ns():016x}{random_hex()}"


def format_instant(instant: datetime) -> str:
    """Fixed-width UTC text, so stored instants compare correctly as strings."""
    if instant.tzinfo is None:
        raise ValueError(f"naive datetime {instant!r} cannot be stored")
    # isoformat is several times faster than strftime, and replay formats millions of these.
    utc = instant.astimezone(UTC).replace(tzinfo=None)
    return utc.isoformat(timespec="microseconds") + "Z"


def parse_instant(text: str) -> datetime:
    return datetime.fromisoformat(text)
