"""The in-memory twin of the SQLite store: same contract, same tests, no disk."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime

from lablink.errors import DuplicateId, StreamVersionConflict
from lablink.events import NewEvent, RecordedEvent, encode_event
from lablink.eventstore.base import (
    ANY,
    AppendOutcome,
    AppendRequest,
    EventQuery,
    StoredRow,
    append_alone,
    format_instant,
    new_event_id,
    parse_instant,
)


def stored_row(recorded: RecordedEvent) -> StoredRow:
    """The row the SQLite store would hold for ``recorded``."""
    return (
        recorded.position,
        recorded.event_id,
        recorded.stream_id,
        recorded.version,
        recorded.type,
        format_instant(recorded.occurred_at),
        recorded.actor,
        recorded.correlation_id,
        encode_event(recorded.event).decode(),
    )


def _selected(recorded: RecordedEvent, query: EventQuery) -> bool:
    types = query.types
    return (
        (query.stream_id is None or recorded.stream_id == query.stream_id)
        and (query.actor is None or recorded.actor == query.actor)
        and (
            not types
            or any(
                recorded.type.startswith(t) if t.endswith(".") else recorded.type == t
                for t in types
            )
        )
        and (query.since is None or recorded.occurred_at >= query.since)
        and (query.until is None or recorded.occurred_at <= query.until)
        and (query.after_position is None or recorded.position > query.after_position)
    )


class MemoryEventStore:
    def __init__(self, on_append: Callable[[list[RecordedEvent]], None] | None = None) -> None:
        self._events: list[RecordedEvent] = []
        self._streams: dict[str, list[RecordedEvent]] = {}
        self._event_ids: set[str] = set()
        self._lock = threading.RLock()
        self._on_append = on_append
        self._after_commit: list[Callable[[list[RecordedEvent]], None]] = []

    def subscribe(self, listener: Callable[[list[RecordedEvent]], None]) -> Callable[[], None]:
        """Call ``listener`` with the events of every commit, after it (as the SQLite store
        does)."""
        self._after_commit.append(listener)
        return lambda: self._after_commit.remove(listener)

    def append(
        self, stream_id: str, expected_version: int, events: Sequence[NewEvent]
    ) -> list[RecordedEvent]:
        request = AppendRequest(
            stream_id=stream_id, expected_version=expected_version, events=events
        )
        return append_alone(self, request)

    def append_batch(self, requests: Sequence[AppendRequest]) -> list[AppendOutcome]:
        outcomes: list[AppendOutcome] = []
        committed: list[RecordedEvent] = []
        with self._lock:
            # Decide everything first, mutate last: a failure leaves nothing half-written.
            versions: dict[str, int] = {}
            new_ids: set[str] = set()
            for request in requests:
                current = versions.get(
                    request.stream_id, len(self._streams.get(request.stream_id, ()))
                )
                if request.expected_version not in (ANY, current):
                    outcomes.append(
                        StreamVersionConflict(request.stream_id, request.expected_version, current)
                    )
                    continue
                recorded: list[RecordedEvent] = []
                for offset, new in enumerate(request.events, start=1):
                    event_id = new.event_id or new_event_id()
                    if event_id in self._event_ids or event_id in new_ids:
                        raise DuplicateId(event_id)
                    new_ids.add(event_id)
                    recorded.append(
                        RecordedEvent(
                            position=len(self._events) + len(committed) + len(recorded) + 1,
                            event_id=event_id,
                            stream_id=request.stream_id,
                            version=current + offset,
                            # Same precision as the SQLite store: microseconds, UTC.
                            occurred_at=parse_instant(format_instant(new.occurred_at)),
                            actor=new.actor,
                            correlation_id=new.correlation_id,
                            event=new.event,
                        )
                    )
                versions[request.stream_id] = current + len(recorded)
                committed.extend(recorded)
                outcomes.append(recorded)
            for recorded_event in committed:
                self._streams.setdefault(recorded_event.stream_id, []).append(recorded_event)
            self._events.extend(committed)
            self._event_ids.update(new_ids)
        if committed and self._on_append is not None:
            self._on_append(committed)
        if committed:
            for listener in list(self._after_commit):
                listener(committed)
        return outcomes

    def read_stream(self, stream_id: str, after_version: int = 0) -> list[RecordedEvent]:
        with self._lock:
            return list(self._streams.get(stream_id, [])[after_version:])

    def read_all(
        self, after_position: int = 0, until: datetime | None = None, batch_size: int = 1000
    ) -> Iterator[RecordedEvent]:
        with self._lock:
            snapshot = self._events[after_position:]
        for recorded in snapshot:
            if until is None or recorded.occurred_at <= until:
                yield recorded

    def read_rows(
        self,
        after_position: int,
        limit: int,
        *,
        up_to: int | None = None,
        until: datetime | None = None,
    ) -> list[StoredRow]:
        with self._lock:
            snapshot = self._events[after_position : up_to if up_to is not None else None]
        kept = (r for r in snapshot if until is None or r.occurred_at <= until)
        return [stored_row(r) for r in itertools.islice(kept, limit)]

    def find(self, query: EventQuery) -> list[StoredRow]:
        with self._lock:
            snapshot = list(self._events)
        kept = (r for r in snapshot if _selected(r, query))
        return [stored_row(r) for r in itertools.islice(kept, query.limit)]

    def stream_version(self, stream_id: str) -> int:
        with self._lock:
            return len(self._streams.get(stream_id, ()))

    def last_position(self) -> int:
        with self._lock:
            return len(self._events)

    def close(self) -> None:
        return None
