"""Loading job aggregates: a fold of the job's own events, cached between commands.

The cache is trusted: every writer in this process records what it appended here. A writer
elsewhere (another process on the same file) makes the next append fail its version check;
the caller then forgets the cached state, reloads and decides again. Loading a job not in the
cache starts from the jobs view's copy of the aggregate state (its snapshot) when it has one,
and folds only the events past that version.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from lablink.domain.job import JobState, evolve
from lablink.events import RecordedEvent
from lablink.eventstore.base import EventStore

SnapshotSource = Callable[[str], tuple[JobState, int] | None]
ChangeListener = Callable[[str, list[RecordedEvent]], None]


@dataclass(frozen=True, slots=True)
class Loaded:
    state: JobState
    version: int


class JobRepository:
    def __init__(self, store: EventStore, snapshots: SnapshotSource | None = None) -> None:
        self.store = store
        self._snapshots = snapshots
        self._cache: dict[str, Loaded] = {}
        self._lock = threading.Lock()
        self._listeners: list[ChangeListener] = []

    def load(self, job_id: str) -> Loaded:
        with self._lock:
            cached = self._cache.get(job_id)
        if cached is not None:
            return cached
        start = Loaded(JobState(job_id=job_id), 0)
        if self._snapshots is not None:
            snapshot = self._snapshots(job_id)
            if snapshot is not None:
                start = Loaded(*snapshot)
        state, version = start.state, start.version
        for recorded in self.store.read_stream(job_id, after_version=version):
            state = evolve(state, recorded.event)
            version = recorded.version
        loaded = Loaded(state, version)
        with self._lock:
            current = self._cache.get(job_id)
            if current is None or current.version < version:
                self._cache[job_id] = loaded
            return self._cache[job_id]

    def forget(self, job_id: str) -> None:
        with self._lock:
            self._cache.pop(job_id, None)

    def recorded(self, job_id: str, state: JobState, recorded: list[RecordedEvent]) -> None:
        """An append of ours committed: cache the state it produced, tell the listeners."""
        if recorded:
            with self._lock:
                current = self._cache.get(job_id)
                if current is None or current.version < recorded[-1].version:
                    self._cache[job_id] = Loaded(state, recorded[-1].version)
        for listener in list(self._listeners):
            listener(job_id, recorded)

    def subscribe(self, listener: ChangeListener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)
