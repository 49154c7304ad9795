"""Commands on jobs from HTTP and the CLI: decided on the job's state, written by the handler.

The scheduler engine writes its own commands on jobs (fires, outcomes) through the same
repository and the handler's group-commit variant (``lablink.handler.GroupCommitHandler``).
A stale version on append means someone else wrote first: reload and decide again, unless
the client pinned the version it edited (then it is told, as ``JobVersionConflict``).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol

import msgspec

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
)
from lablink.domain.parameters import CHECKED_FIELDS, parameter_problems
from lablink.domain.requests import JobRequest, parse_job_request
from lablink.errors import InvalidRequest, JobNotFound, JobVersionConflict
from lablink.events import AnyEvent, JobCreated, JobSpec, JobUpdated, RecordedEvent
from lablink.events.jobs import ParametersCheck
from lablink.eventstore.base import EventStore
from lablink.handler import CommandHandler
from lablink.ids import IdGenerator, RandomIds
from lablink.instruments.scpi import InstrumentModel
from lablink.repository import JobRepository, Loaded


class ProfileCheck(Protocol):
    """Whether a job may name a profile: raise InvalidRequest naming ``profile_id``, the value
    and the reason (no such profile; a profile for another kind of instrument)."""

    def check(self, profile_id: str, equipment_id: str) -> None: ...


class InstrumentModels(Protocol):
    """The driver table an instrument runs under, or None while no agent has described it
    (``lablink.instrument_models.KnownInstruments``)."""

    def model(self, equipment_id: str) -> InstrumentModel | None: ...


class JobService:
    def __init__(
        self,
        store: EventStore,
        clock: Clock,
        *,
        default_timezone: str = "UTC",
        ids: IdGenerator | None = None,
        repository: JobRepository | None = None,
        profiles: ProfileCheck | None = None,
        instruments: InstrumentModels | None = None,
        require_reason: bool = False,
    ) -> None:
        self.store = store
        # LABLINK_REQUIRE_REASON: updates, pauses, resumes and deletions need a reason.
        self.require_reason = require_reason
        # None: parameters are left for the agent to check when the job runs ("pending").
        self.instruments = instruments
        # None: a job's profile_id is checked only as an identifier.
        self.profiles = profiles
        self.clock = clock
        self.default_timezone = default_timezone
        self.ids = ids or RandomIds()
        self.jobs = repository or JobRepository(store)
        self.handler = CommandHandler(store, clock)

    def load(self, job_id: str) -> Loaded[JobState]:
        return self.jobs.load(job_id)

    def execute(
        self, command: JobCommand, actor: str, *, expected_version: int | None = None
    ) -> list[RecordedEvent]:
        def decide_checked(state: JobState, now: datetime) -> list[AnyEvent]:
            events = decide(state, command, now)
            if events:
                self._check_profile(events)
                events = self._check_parameters(events)
            return events

        return self.handler.handle(
            self.jobs,
            command.job_id,
            decide_checked,
            actor,
            expected_version=expected_version,
            stale=lambda expected, actual: JobVersionConflict(command.job_id, expected, actual),
        ).recorded

    def _check_profile(self, events: list[AnyEvent]) -> None:
        """A job created, or updated to name a profile or another instrument, must name a
        profile that exists for that kind of instrument (checked after decide, so the job's
        own fields are reported first)."""
        if self.profiles is None:
            return
        for event in events:
            if isinstance(event, JobUpdated) and not (
                {"profile_id", "equipment_id"} & set(event.changed_fields)
            ):
                continue
            if isinstance(event, JobCreated | JobUpdated) and event.spec.profile_id is not None:
                self.profiles.check(event.spec.profile_id, event.spec.equipment_id)

    def _check_parameters(self, events: list[AnyEvent]) -> list[AnyEvent]:
        """A job created, or updated in what the check covers, has its parameters checked
        against the driver of its instrument when LabLink knows it (InvalidRequest naming
        the field, the value and the limit); the event records whether it was."""
        checked: list[AnyEvent] = []
        for event in events:
            if isinstance(event, JobCreated) or (
                isinstance(event, JobUpdated) and CHECKED_FIELDS & set(event.changed_fields)
            ):
                event = msgspec.structs.replace(
                    event, parameters_check=self.check_parameters(event.spec)
                )
            checked.append(event)
        return checked

    def check_parameters(self, spec: JobSpec) -> ParametersCheck:
        """ "passed" if the instrument's driver takes the job's parameters, "pending" if no
        agent has described the instrument yet; InvalidRequest naming what it refuses."""
        model = self.instruments.model(spec.equipment_id) if self.instruments else None
        if model is None:
            return "pending"
        problems = parameter_problems(model, spec.equipment_id, spec.schedule_type, spec.parameters)
        if problems:
            raise InvalidRequest(problems)
        return "passed"

    def create_job(self, body: bytes | str | Mapping[str, Any], actor: str) -> str:
        return self.create(
            parse_job_request(dict(body) if isinstance(body, Mapping) else body), actor
        )

    def create(self, request: JobRequest, actor: str) -> str:
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
        reason: str | None = None,
    ) -> list[RecordedEvent]:
        return self.execute(
            UpdateJob(
                job_id=job_id,
                changes=dict(changes),
                default_timezone=self.default_timezone,
                reason=reason,
                require_reason=self.require_reason,
            ),
            actor,
            expected_version=expected_version,
        )

    def pause_job(self, job_id: str, actor: str, reason: str | None = None) -> list[RecordedEvent]:
        return self.execute(
            PauseJob(job_id=job_id, reason=reason, require_reason=self.require_reason), actor
        )

    def resume_job(self, job_id: str, actor: str, reason: str | None = None) -> list[RecordedEvent]:
        return self.execute(
            ResumeJob(job_id=job_id, reason=reason, require_reason=self.require_reason), actor
        )

    def delete_job(self, job_id: str, actor: str, reason: str | None = None) -> list[RecordedEvent]:
        return self.execute(
            DeleteJob(job_id=job_id, reason=reason, require_reason=self.require_reason), actor
        )

    def complete_job(self, job_id: str, actor: str) -> list[RecordedEvent]:
        return self.execute(CompleteJob(job_id=job_id), actor)

    def get_state(self, job_id: str) -> JobState:
        state = self.load(job_id).state
        if not state.exists or state.status == "deleted":
            raise JobNotFound(job_id)
        return state
