"""The event store contract, shared by the SQLite store and its in-memory twin."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Protocol

import msgspec

from lablink.errors import StreamVersionConflict
from lablink.events import NewEvent, RecordedEvent

# An append with expected_version=ANY skips the optimistic check (used only by facts that
# cannot conflict, such as retention passes). A new stream is expected at version 0.
ANY = -1


class AppendRequest(msgspec.Struct, frozen=True, kw_only=True):
    stream_id: str
    expected_version: int
    events: Sequence[NewEvent]


AppendOutcome = list[RecordedEvent] | StreamVersionConflict


class EventStore(Protocol):
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

    def read_stream(self, stream_id: str, after_version: int = 0) -> list[RecordedEvent]: ...

    def read_all(
        self, after_position: int = 0, until: datetime | None = None, batch_size: int = 1000
    ) -> Iterator[RecordedEvent]:
        """Every event past ``after_position`` in position order; ``until`` bounds occurred_at."""
        ...

    def stream_version(self, stream_id: str) -> int: ...

    def last_position(self) -> int: ...

    def close(self) -> None: ...


def new_event_id() -> str:
    """Time-ordered (nanoseconds, then 64 random bits): new ids land at the end of the unique
    index instead of anywhere in it, which keeps appends fast on a large log."""
    return f"{time.time_ns():016x}{secrets.token_hex(8)}"


def format_instant(instant: datetime) -> str:
    """Fixed-width UTC text, so stored instants compare correctly as strings."""
    if instant.tzinfo is None:
        raise ValueError(f"naive datetime {instant!r} cannot be stored")
    # isoformat is several times faster than strftime, and replay formats millions of these.
    utc = instant.astimezone(UTC).replace(tzinfo=None)
    return utc.isoformat(timespec="microseconds") + "Z"


def parse_instant(text: str) -> datetime:
    return datetime.fromisoformat(text)
