"""The in-memory twin of the SQLite store: same contract, same tests, no disk."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime

from lablink.errors import DuplicateId, StreamVersionConflict
from lablink.events import NewEvent, RecordedEvent
from lablink.eventstore.base import (
    ANY,
    AppendOutcome,
    AppendRequest,
    format_instant,
    new_event_id,
    parse_instant,
)


class MemoryEventStore:
    def __init__(self, on_append: Callable[[list[RecordedEvent]], None] | None = None) -> None:
        self._events: list[RecordedEvent] = []
        self._streams: dict[str, list[RecordedEvent]] = {}
        self._event_ids: set[str] = set()
        self._lock = threading.RLock()
        self._on_append = on_append

    def append(
        self, stream_id: str, expected_version: int, events: Sequence[NewEvent]
    ) -> list[RecordedEvent]:
        outcome = self.append_batch(
            [AppendRequest(stream_id=stream_id, expected_version=expected_version, events=events)]
        )[0]
        if isinstance(outcome, StreamVersionConflict):
            raise outcome
        return outcome

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

    def stream_version(self, stream_id: str) -> int:
        with self._lock:
            return len(self._streams.get(stream_id, ()))

    def last_position(self) -> int:
        with self._lock:
            return len(self._events)

    def close(self) -> None:
        return None
