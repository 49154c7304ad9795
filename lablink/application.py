"""The one write path for jobs: load the job's events, decide, append with the version read.

HTTP handlers, the CLI and (later) the scheduler engine call this; none of them writes events
any other way. A stale version on append means someone else wrote first: reload and decide
again, unless the client pinned the version it edited (then it is told).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lablink.clock import Clock
from lablink.domain.job import (
    CompleteJob,
    CreateJob,
    DeleteJob,
    JobCommand,
    JobState,
    PauseJob,
    ResumeJob,
    UpdateJob,
    decide,
    evolve,
)
from lablink.domain.requests import parse_job_request
from lablink.errors import JobNotFound, JobVersionConflict, StreamVersionConflict
from lablink.events import AnyEvent, NewEvent, RecordedEvent
from lablink.eventstore.base import EventStore
from lablink.ids import IdGenerator, RandomIds

MAX_RETRIES = 5


@dataclass(frozen=True, slots=True)
class Loaded:
    state: JobState
    version: int


def correlation_of(event: AnyEvent) -> str | None:
    return getattr(event, "execution_id", None)


class JobService:
    def __init__(
        self,
        store: EventStore,
        clock: Clock,
        *,
        default_timezone: str = "UTC",
        ids: IdGenerator | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.default_timezone = default_timezone
        self.ids = ids or RandomIds()
        # Folded states by job id; a load reads only the events past the cached version.
        self._cache: dict[str, Loaded] = {}
        self._lock = threading.Lock()

    # -- reading the aggregate ----------------------------------------------------------------

    def load(self, job_id: str) -> Loaded:
        with self._lock:
            cached = self._cache.get(job_id) or Loaded(JobState(job_id=job_id), 0)
        newer = self.store.read_stream(job_id, after_version=cached.version)
        if not newer:
            return cached
        state = cached.state
        for recorded in newer:
            state = evolve(state, recorded.event)
        loaded = Loaded(state, newer[-1].version)
        with self._lock:
            current = self._cache.get(job_id)
            if current is None or current.version < loaded.version:
                self._cache[job_id] = loaded
        return loaded

    # -- commands -----------------------------------------------------------------------------

    def execute(
        self, command: JobCommand, actor: str, *, expected_version: int | None = None
    ) -> list[RecordedEvent]:
        for _ in range(MAX_RETRIES):
            loaded = self.load(command.job_id)
            if (
                expected_version is not None
                and loaded.state.exists
                and expected_version != loaded.version
            ):
                raise JobVersionConflict(command.job_id, expected_version, loaded.version)
            now = self.clock.now()
            events = decide(loaded.state, command, now)
            if not events:
                return []
            try:
                return self.store.append(
                    command.job_id,
                    loaded.version,
                    [
                        NewEvent(
                            event=e,
                            actor=actor,
                            occurred_at=now,
                            correlation_id=correlation_of(e),
                        )
                        for e in events
                    ],
                )
            except StreamVersionConflict as conflict:
                if expected_version is not None:
                    raise JobVersionConflict(
                        command.job_id, expected_version, conflict.actual
                    ) from conflict
        raise StreamVersionConflict(
            command.job_id, loaded.version, self.load(command.job_id).version
        )

    def create_job(self, body: bytes | str | Mapping[str, Any], actor: str) -> str:
        request = parse_job_request(dict(body) if isinstance(body, Mapping) else body)
        job_id = self.ids.job_id()
        self.execute(
            CreateJob(
                job_id=job_id,
                request=request,
                default_timezone=self.default_timezone,
                created_by=actor,
            ),
            actor,
        )
        return job_id

    def update_job(
        self,
        job_id: str,
        changes: Mapping[str, Any],
        actor: str,
        *,
        expected_version: int | None = None,
    ) -> list[RecordedEvent]:
        return self.execute(
            UpdateJob(
                job_id=job_id,
                changes=dict(changes),
                default_timezone=self.default_timezone,
            ),
            actor,
            expected_version=expected_version,
        )

    def pause_job(self, job_id: str, actor: str, reason: str = "") -> list[RecordedEvent]:
        return self.execute(PauseJob(job_id=job_id, reason=reason), actor)

    def resume_job(self, job_id: str, actor: str) -> list[RecordedEvent]:
        return self.execute(ResumeJob(job_id=job_id), actor)

    def delete_job(self, job_id: str, actor: str) -> list[RecordedEvent]:
        return self.execute(DeleteJob(job_id=job_id), actor)

    def complete_job(self, job_id: str, actor: str) -> list[RecordedEvent]:
        return self.execute(CompleteJob(job_id=job_id), actor)

    def get_state(self, job_id: str) -> JobState:
        state = self.load(job_id).state
        if not state.exists or state.status == "deleted":
            raise JobNotFound(job_id)
        return state
