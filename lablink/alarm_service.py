"""Acknowledging and clearing alarms, through the write path (``lablink.handler``).

An alarm's facts are its raise (stored with what caused it, in a job's or an instrument's
stream) and the acknowledgements and clears of its own stream ``alarm:<alarm_id>``. The
alarms view says where the raise is (its log position); the alarm's repository starts from
the raise and folds the alarm's own stream, and the handler appends at the version read.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from lablink.clock import Clock
from lablink.domain.alarms import AlarmState, decide_acknowledge, decide_clear, evolve, stream_id
from lablink.errors import AlarmNotFound
from lablink.events import AlarmRaised, AnyEvent, RecordedEvent
from lablink.eventstore.base import EventStore
from lablink.eventstore.sqlite import SQLiteEventStore
from lablink.handler import CommandHandler
from lablink.projections.alarms import raised_position
from lablink.projections.reading import reading_views
from lablink.repository import Repository, of_events

# How long finding a raise waits for the views to fold it (the engine's loop may be waiting).
LOCATE_WAIT_SECONDS = 1.0
# alarm id -> the log position of its raise, or None.
Locate = Callable[[str], int | None]


class AlarmService:
    def __init__(self, store: EventStore, clock: Clock, locate: Locate):
        self.store = store
        self.clock = clock
        # The alarms view, used only as an index: where in the log each alarm was raised.
        self._locate = locate
        self.repository = Repository(
            store, initial=self._raised, fold=of_events(evolve), stream=stream_id
        )
        self.handler = CommandHandler(store, clock)

    @classmethod
    def on_store(cls, store: SQLiteEventStore, clock: Clock) -> AlarmService:
        """Finding raises through the store's views reader (the scheduler's thread, the
        engine's loop)."""

        def locate(alarm_id: str) -> int | None:
            # The raise may be newer than the views (they fold behind the log).
            views = getattr(store, "views", None)
            if views is not None and not views.settled(LOCATE_WAIT_SECONDS):
                # Not "no such alarm": the caller tries again (the fault alarm is cleared
                # later), the API answers 503 naming the lag.
                raise views.behind(views.head)
            with reading_views(store) as views:
                return raised_position(views, alarm_id)

        return cls(store, clock, locate)

    def _raised(self, alarm_id: str) -> AlarmState:
        """The alarm as its raise left it: the state its own stream folds on."""
        state = AlarmState(alarm_id=alarm_id)
        position = self._locate(alarm_id)
        if position is None:
            raise AlarmNotFound(alarm_id)
        for recorded in self.store.read_all(after_position=position - 1, batch_size=1):
            state = evolve(state, recorded.event)
            break
        return state

    def raise_alarm(
        self,
        stream_id: str,
        alarm: AlarmRaised,
        actor: str,
        *,
        facts: Sequence[AnyEvent] = (),
        at: datetime | None = None,
    ) -> list[RecordedEvent]:
        """Record ``alarm`` in the stream of what caused it, after ``facts`` (that cause) and
        in the same append: an alarm is never on record without its reason."""
        return self.handler.record(stream_id, [*facts, alarm], actor, at=at)

    def load(self, alarm_id: str) -> tuple[AlarmState, int]:
        return self.repository.current(alarm_id)

    def acknowledge(self, alarm_id: str, by: str, note: str, actor: str) -> list[RecordedEvent]:
        return self.handler.handle(
            self.repository, alarm_id, lambda s, _: decide_acknowledge(s, by, note), actor
        ).recorded

    def clear(self, alarm_id: str, by: str, note: str, actor: str) -> list[RecordedEvent]:
        return self.handler.handle(
            self.repository, alarm_id, lambda s, _: decide_clear(s, by, note), actor
        ).recorded
