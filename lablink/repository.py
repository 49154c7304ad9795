"""Loading aggregates: a snapshot (when there is one) plus a fold of the stream's tail.

One ``Repository[State]`` per kind of aggregate says how: the stream an id lives in, the state
before its first event (``initial``; an alarm starts from its raise, read elsewhere in the log),
an optional snapshot source (the jobs view keeps a copy of each job's state and the version it
reflects), and the fold of one recorded event. ``lablink.handler`` is its only writer.

With ``cache=True`` (jobs) the state is kept between commands, and the cache is trusted: every
writer in this process records what it appended here. A writer elsewhere (another process on
the same file) makes the next append fail its version check; the handler then forgets the
cached state, reloads and decides again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

from lablink.domain.job import JobState, evolve
from lablink.events import AnyEvent, RecordedEvent
from lablink.eventstore.base import EventStore

State = TypeVar("State")

SnapshotSource = Callable[[str], tuple[State, int] | None]
ChangeListener = Callable[[str, list[RecordedEvent]], None]
Fold = Callable[[State, RecordedEvent], State]


@dataclass(frozen=True, slots=True)
class Loaded(Generic[State]):
    state: State
    version: int


def of_events(evolve: Callable[[State, AnyEvent], State]) -> Fold[State]:
    """A fold of recorded events from a domain's ``evolve`` of bare events."""
    return lambda state, recorded: evolve(state, recorded.event)


def _same(aggregate_id: str) -> str:
    return aggregate_id


def _always(state: object) -> bool:
    return True


class Repository(Generic[State]):
    def __init__(
        self,
        store: EventStore,
        *,
        initial: Callable[[str], State],
        fold: Fold[State],
        stream: Callable[[str], str] = _same,
        snapshots: SnapshotSource[State] | None = None,
        exists: Callable[[State], bool] = _always,
        cache: bool = False,
    ) -> None:
        self.store = store
        self._initial = initial
        self._fold = fold
        self._stream = stream
        self._snapshots = snapshots
        # Whether the aggregate lives (a version pinned by a client is checked only then).
        self.exists = exists
        self._caching = cache
        self._cache: dict[str, Loaded[State]] = {}
        self._lock = threading.Lock()
        self._listeners: list[ChangeListener] = []

    def stream_id(self, aggregate_id: str) -> str:
        return self._stream(aggregate_id)

    def fold(self, state: State, recorded: Iterable[RecordedEvent]) -> State:
        for one in recorded:
            state = self._fold(state, one)
        return state

    def load(self, aggregate_id: str) -> Loaded[State]:
        if self._caching:
            with self._lock:
                cached = self._cache.get(aggregate_id)
            if cached is not None:
                return cached
        snapshot = self._snapshots(aggregate_id) if self._snapshots is not None else None
        state, version = snapshot if snapshot is not None else (self._initial(aggregate_id), 0)
        for recorded in self.store.read_stream(self.stream_id(aggregate_id), after_version=version):
            state = self._fold(state, recorded)
            version = recorded.version
        loaded = Loaded(state, version)
        if not self._caching:
            return loaded
        with self._lock:
            current = self._cache.get(aggregate_id)
            if current is None or current.version < version:
                self._cache[aggregate_id] = loaded
            return self._cache[aggregate_id]

    def current(self, aggregate_id: str) -> tuple[State, int]:
        """``load`` as a pair: the state and the version it reflects."""
        loaded = self.load(aggregate_id)
        return loaded.state, loaded.version

    def forget(self, aggregate_id: str) -> None:
        with self._lock:
            self._cache.pop(aggregate_id, None)

    def recorded(self, aggregate_id: str, state: State, recorded: list[RecordedEvent]) -> None:
        """An append of ours committed: cache the state it produced, tell the listeners."""
        if recorded and self._caching:
            with self._lock:
                current = self._cache.get(aggregate_id)
                if current is None or current.version < recorded[-1].version:
                    self._cache[aggregate_id] = Loaded(state, recorded[-1].version)
        for listener in list(self._listeners):
            listener(aggregate_id, recorded)

    def heard(self, aggregate_id: str, recorded: list[RecordedEvent]) -> None:
        """Events of the aggregate recorded by someone else (another replica, in cluster
        mode): a cached state older than them is dropped, and the listeners are told."""
        if recorded and self._caching:
            with self._lock:
                current = self._cache.get(aggregate_id)
                if current is not None and current.version < recorded[-1].version:
                    del self._cache[aggregate_id]
        for listener in list(self._listeners):
            listener(aggregate_id, recorded)

    def subscribe(self, listener: ChangeListener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)


def keyed(
    store: EventStore,
    blank: Callable[..., State],
    key: str,
    evolve: Callable[[State, AnyEvent], State],
    stream: Callable[[str], str],
    *,
    exists: Callable[[State], bool] = _always,
) -> Repository[State]:
    """An aggregate whose state starts as ``blank(<key>=id)`` and folds its stream's events."""
    return Repository(
        store,
        initial=lambda aggregate_id: blank(**{key: aggregate_id}),
        fold=of_events(evolve),
        stream=stream,
        exists=exists,
    )


class JobRepository(Repository[JobState]):
    """Jobs: cached, started from the jobs view's snapshot when it has one."""

    def __init__(
        self, store: EventStore, snapshots: SnapshotSource[JobState] | None = None
    ) -> None:
        super().__init__(
            store,
            initial=lambda job_id: JobState(job_id=job_id),
            fold=of_events(evolve),
            snapshots=snapshots,
            exists=lambda state: state.exists,
            cache=True,
        )
