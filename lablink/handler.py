"""The one write path: load the aggregate, decide, append at the version read.

Every writer of LabLink goes through here: the job, profile, alarm, equipment and key
services, retention, the scheduler's own facts, and the engine (through the group committer,
``GroupCommitHandler``). Nothing else appends (``tests/test_write_path.py`` checks).

A stale version on append means someone else wrote first: the handler forgets what it had
loaded, reloads and decides again, up to ``retries`` times, then raises the last
``StreamVersionConflict``. A client that pinned the version it edited (``expected_version``)
is told instead, with the error its service names (``stale``).

The attempts are written once, as a generator that yields each append and is sent its
outcome, so the thread-side handler (the store) and the engine's (the group committer) drive
the same steps.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, Protocol, TypeVar

from lablink.clock import Clock, SystemClock
from lablink.errors import RecordingFailed, StorageError, StreamVersionConflict
from lablink.events import AnyEvent, RecordedEvent, stamp
from lablink.eventstore.base import ANY, AppendOutcome, AppendRequest, EventStore
from lablink.eventstore.group_commit import GroupCommitter
from lablink.repository import Loaded, Repository

State = TypeVar("State")
State_co = TypeVar("State_co", covariant=True)

MAX_RETRIES = 5


class Decided(Protocol[State_co]):
    """A decision that knows the state its events lead to (the engine's ``Decision``), which
    saves folding them again."""

    @property
    def events(self) -> list[AnyEvent]: ...

    @property
    def state(self) -> State_co: ...


# The state and the time the events will be stamped with -> the events (or a Decided).
Decide = Callable[[State, datetime], "list[AnyEvent] | Decided[State]"]
# (expected, actual) -> the error a client that pinned a stale version is given.
Stale = Callable[[int, int], Exception]


@dataclass(frozen=True, slots=True)
class Handled(Generic[State]):
    before: State  # the state decided from
    version: int  # its version
    state: State  # after the events (the same as before when nothing was appended)
    events: list[AnyEvent]
    recorded: list[RecordedEvent]


# Each append the attempts ask for, sent its outcome; they end with what was handled.
Steps = Generator[AppendRequest, AppendOutcome | None, Handled[State]]


class Tracker(Protocol):
    """Told how each of the engine's appends went (its ``RecordingFault``)."""

    def written(self) -> None: ...

    def failed(self, stream_id: str, error: BaseException) -> None: ...


def _attempts(
    repository: Repository[State],
    aggregate_id: str,
    decide: Decide[State],
    actor: str,
    *,
    now: Callable[[], datetime],
    load: Callable[[str], Loaded[State]],
    retries: int,
    expected_version: int | None = None,
    stale: Stale | None = None,
) -> Steps[State]:
    stream = repository.stream_id(aggregate_id)
    conflict: StreamVersionConflict | None = None
    for _ in range(retries):
        loaded = load(aggregate_id)
        pinned = expected_version is not None and repository.exists(loaded.state)
        if pinned and expected_version != loaded.version:
            assert expected_version is not None
            raise _stale(stale, stream, expected_version, loaded.version)
        at = now()
        decided = decide(loaded.state, at)
        events, after = (decided, None) if isinstance(decided, list) else (decided.events, decided)
        if not events:
            state = loaded.state if after is None else after.state
            return Handled(loaded.state, loaded.version, state, [], [])
        outcome = yield AppendRequest(
            stream_id=stream, expected_version=loaded.version, events=stamp(events, actor, at)
        )
        assert outcome is not None
        if isinstance(outcome, StreamVersionConflict):
            repository.forget(aggregate_id)
            if expected_version is not None:
                raise _stale(stale, stream, expected_version, outcome.actual) from outcome
            conflict = outcome
            continue
        state = repository.fold(loaded.state, outcome) if after is None else after.state
        repository.recorded(aggregate_id, state, outcome)
        return Handled(loaded.state, loaded.version, state, events, outcome)
    assert conflict is not None, "retries must be 1 or more"
    raise conflict


def _given(loaded: Loaded[State]) -> Callable[[str], Loaded[State]]:
    """A load that returns what was already loaded (the batch loaded it, and told the
    tracker if it failed)."""

    def load(_: str) -> Loaded[State]:
        return loaded

    return load


def _stale(stale: Stale | None, stream: str, expected: int, actual: int) -> Exception:
    return stale(expected, actual) if stale else StreamVersionConflict(stream, expected, actual)


def _advance(steps: Steps[State], outcome: AppendOutcome | None) -> AppendRequest | Handled[State]:
    """The next append the steps ask for, or what they ended with."""
    try:
        return steps.send(outcome)
    except StopIteration as done:
        handled: Handled[State] = done.value
        return handled


def _fact(
    stream_id: str, events: list[AnyEvent], actor: str, expected_version: int, at: datetime
) -> AppendRequest:
    return AppendRequest(
        stream_id=stream_id, expected_version=expected_version, events=stamp(events, actor, at)
    )


def _conflict_raised(outcome: AppendOutcome) -> list[RecordedEvent]:
    if isinstance(outcome, StreamVersionConflict):
        raise outcome
    return outcome


class CommandHandler:
    """The write path on the store itself, in the caller's thread."""

    def __init__(
        self, store: EventStore, clock: Clock | None = None, *, retries: int = MAX_RETRIES
    ) -> None:
        self.store = store
        self.clock: Clock = clock or SystemClock()
        self.retries = retries

    def handle(
        self,
        repository: Repository[State],
        aggregate_id: str,
        decide: Decide[State],
        actor: str,
        *,
        expected_version: int | None = None,
        stale: Stale | None = None,
        retries: int | None = None,
        at: datetime | None = None,
    ) -> Handled[State]:
        """Load, decide, append; on a stale version reload and decide again. ``at``: the
        time to decide and stamp with, instead of the clock's."""
        steps = _attempts(
            repository,
            aggregate_id,
            decide,
            actor,
            now=self.clock.now if at is None else lambda: at,
            load=repository.load,
            expected_version=expected_version,
            stale=stale,
            retries=self.retries if retries is None else retries,
        )
        step = _advance(steps, None)
        while isinstance(step, AppendRequest):
            step = _advance(steps, self.store.append_batch([step])[0])
        return step

    def record(
        self,
        stream_id: str,
        events: list[AnyEvent],
        actor: str,
        *,
        expected_version: int = ANY,
        at: datetime | None = None,
    ) -> list[RecordedEvent]:
        """Append facts that need no decision (a retention pass, a new key's first event)."""
        request = _fact(stream_id, events, actor, expected_version, at or self.clock.now())
        return _conflict_raised(self.store.append_batch([request])[0])

    def record_together(
        self, facts: list[tuple[str, list[AnyEvent]]], actor: str, *, at: datetime | None = None
    ) -> list[RecordedEvent]:
        """Append facts for several streams in one transaction: all or none (a retention
        pass's removals, each in its job's stream, with its pruning)."""
        when = at or self.clock.now()
        requests = [_fact(stream, events, actor, ANY, when) for stream, events in facts if events]
        recorded: list[RecordedEvent] = []
        for outcome in self.store.append_batch(requests):
            recorded += _conflict_raised(outcome)
        return recorded


class GroupCommitHandler:
    """The engine's write path: the same steps, appended through the group committer.

    The engine must tell a log that refuses writes from anything else: reading or writing
    the log failing is raised as ``RecordingFailed``, and the ``tracker`` is told how each
    append went."""

    def __init__(self, committer: GroupCommitter, clock: Clock, *, retries: int) -> None:
        self.committer = committer
        self.clock = clock
        self.retries = retries

    async def handle(
        self,
        repository: Repository[State],
        aggregate_id: str,
        decide: Decide[State],
        actor: str,
        *,
        tracker: Tracker | None = None,
    ) -> Handled[State]:
        def load(aggregate_id: str) -> Loaded[State]:
            try:
                return repository.load(aggregate_id)
            except (StorageError, sqlite3.OperationalError) as exc:
                if tracker is not None:
                    tracker.failed(aggregate_id, exc)
                raise RecordingFailed(aggregate_id, exc) from exc

        steps = _attempts(
            repository,
            aggregate_id,
            decide,
            actor,
            now=self.clock.now,
            load=load,
            retries=self.retries,
        )
        step = _advance(steps, None)
        while isinstance(step, AppendRequest):
            step = _advance(steps, await self._append(step, tracker))
        return step

    async def handle_all(
        self,
        repository: Repository[State],
        commands: Sequence[tuple[str, Decide[State]]],
        actor: str,
        *,
        tracker: Tracker | None = None,
        linger: float = 0.0,
    ) -> list[Handled[State] | Exception]:
        """The same steps for several aggregates at once, their appends submitted together
        (one wait for all: the engine's chunk of due fires). One attempt each: where the
        stream had moved, the place holds the ``StreamVersionConflict`` (nothing written;
        the caller goes again one by one). ``RecordingFailed`` where the log could not be
        read or written for it, or whatever deciding raised. ``linger``: how long the
        appends may wait for company (``GroupCommitter.submit_all``)."""
        results: list[Handled[State] | Exception | None] = [None] * len(commands)
        waiting: list[tuple[int, Steps[State]]] = []
        requests: list[AppendRequest] = []
        now = self.clock.now
        for index, (aggregate_id, decide) in enumerate(commands):
            try:
                loaded = repository.load(aggregate_id)
            except (StorageError, sqlite3.OperationalError) as exc:
                if tracker is not None:
                    tracker.failed(aggregate_id, exc)
                results[index] = RecordingFailed(aggregate_id, exc)
                continue
            steps = _attempts(
                repository,
                aggregate_id,
                decide,
                actor,
                now=now,
                load=_given(loaded),
                retries=1,
            )
            try:
                step = _advance(steps, None)
            except Exception as exc:
                results[index] = exc
                continue
            if isinstance(step, AppendRequest):
                waiting.append((index, steps))
                requests.append(step)
            else:
                results[index] = step
        if requests:
            try:
                outcomes = await self.committer.submit_all(requests, linger=linger)
            except Exception as exc:
                outcomes = [exc] * len(requests)
            # The tracker is told in the requests' order, as one by one it would be: the
            # last word on a fault is the last append's.
            for (index, steps), request, outcome in zip(waiting, requests, outcomes, strict=True):
                if isinstance(outcome, Exception) and not isinstance(
                    outcome, StreamVersionConflict
                ):
                    if tracker is not None:
                        tracker.failed(request.stream_id, outcome)
                    results[index] = RecordingFailed(request.stream_id, outcome)
                    continue
                if not isinstance(outcome, (list, StreamVersionConflict)):
                    raise outcome  # a BaseException: cancelled mid-write
                if tracker is not None:
                    tracker.written()
                try:
                    handled = _advance(steps, outcome)
                except StreamVersionConflict as conflict:  # one attempt: it is the caller's
                    results[index] = conflict
                    continue
                assert not isinstance(handled, AppendRequest), "one attempt, one append"
                results[index] = handled
        return [result for result in results if result is not None]

    async def record(
        self, stream_id: str, events: list[AnyEvent], actor: str, tracker: Tracker | None
    ) -> list[RecordedEvent]:
        """Append facts that need no decision, at any version (the engine's clock steps)."""
        request = _fact(stream_id, events, actor, ANY, self.clock.now())
        return _conflict_raised(await self._append(request, tracker))

    async def _append(self, request: AppendRequest, tracker: Tracker | None) -> AppendOutcome:
        try:
            outcome = await self.committer.submit(request)
        except Exception as exc:
            if tracker is not None:
                tracker.failed(request.stream_id, exc)
            raise RecordingFailed(request.stream_id, exc) from exc
        if tracker is not None:
            tracker.written()
        return outcome
