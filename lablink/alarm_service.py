"""The write path for acknowledging and clearing alarms.

An alarm's facts are its raise (stored with what caused it, in a job's or an instrument's
stream) and the acknowledgements and clears of its own stream ``alarm:<alarm_id>``. The
alarms view says where the raise is (its log position); the decision folds the raise and
the alarm's own stream, and appends at the version read.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from lablink.clock import Clock
from lablink.domain.alarms import AlarmState, decide_acknowledge, decide_clear, evolve, stream_id
from lablink.errors import AlarmNotFound, StreamVersionConflict
from lablink.events import AnyEvent, RecordedEvent, stamp
from lablink.eventstore.base import EventStore
from lablink.eventstore.sqlite import SQLiteEventStore

MAX_RETRIES = 5
# alarm id -> the log position of its raise, or None.
Locate = Callable[[str], int | None]


def raised_position(conn: sqlite3.Connection, alarm_id: str) -> int | None:
    row = conn.execute(
        "SELECT raised_position FROM alarms WHERE alarm_id = ?", (alarm_id,)
    ).fetchone()
    return int(row[0]) if row else None


class AlarmService:
    def __init__(self, store: EventStore, clock: Clock, locate: Locate):
        self.store = store
        self.clock = clock
        # The alarms view, used only as an index: where in the log each alarm was raised.
        self._locate = locate

    @classmethod
    def on_store(cls, store: SQLiteEventStore, clock: Clock) -> AlarmService:
        """Finding raises through the store's own connection, under its lock (the
        scheduler's thread, the engine's loop)."""

        def locate(alarm_id: str) -> int | None:
            with store.lock:
                return raised_position(store.conn, alarm_id)

        return cls(store, clock, locate)

    def load(self, alarm_id: str) -> tuple[AlarmState, int]:
        state = AlarmState(alarm_id=alarm_id)
        position = self._locate(alarm_id)
        if position is None:
            raise AlarmNotFound(alarm_id)
        for recorded in self.store.read_all(after_position=position - 1, batch_size=1):
            state = evolve(state, recorded.event)
            break
        version = 0
        for recorded in self.store.read_stream(stream_id(alarm_id)):
            state = evolve(state, recorded.event)
            version = recorded.version
        return state, version

    def acknowledge(self, alarm_id: str, by: str, note: str, actor: str) -> list[RecordedEvent]:
        return self._execute(alarm_id, lambda s: decide_acknowledge(s, by, note), actor)

    def clear(self, alarm_id: str, by: str, note: str, actor: str) -> list[RecordedEvent]:
        return self._execute(alarm_id, lambda s: decide_clear(s, by, note), actor)

    def _execute(
        self, alarm_id: str, decide: Callable[[AlarmState], list[AnyEvent]], actor: str
    ) -> list[RecordedEvent]:
        for _ in range(MAX_RETRIES):
            state, version = self.load(alarm_id)
            events = decide(state)
            try:
                return self.store.append(
                    stream_id(alarm_id), version, stamp(events, actor, self.clock.now())
                )
            except StreamVersionConflict:
                continue
        raise StreamVersionConflict(
            stream_id(alarm_id), version, self.store.stream_version(stream_id(alarm_id))
        )
