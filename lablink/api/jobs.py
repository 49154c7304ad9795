"""Job endpoints of the guide's API Reference, plus update, next-runs, preview and audit."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import msgspec
from litestar import Controller, Request, delete, get, post, put
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter

from lablink.api.auth import actor
from lablink.api.bodies import QueryFilter, ReasonQuery, takes
from lablink.api.context import ApiContext
from lablink.api.openapi import READ_ERRORS, WRITE_ERRORS
from lablink.api.paging import Limit, Offset
from lablink.api.queries import get_job, job_history, list_job_views
from lablink.api.reads import Reads
from lablink.api.responses import (
    HistoryAnswer,
    JobAnswer,
    JobCreatedAnswer,
    JobEvents,
    JobHistory,
    JobList,
    JobStreamEvent,
    JobUpdatedAnswer,
    JobView,
    Message,
    NextRuns,
    Preview,
    RunAnswer,
    embedded,
    view,
)
from lablink.api.schemas import JobUpdate
from lablink.domain import triggers
from lablink.domain.job import JobState
from lablink.domain.requests import JobRequest
from lablink.domain.schedule import Schedule
from lablink.domain.validation import normalise
from lablink.errors import JobNotFound
from lablink.events import SCHEDULE_TYPES
from lablink.projections.views import iso_instant

READ = {"role": "viewer"}
WRITE = {"role": "operator"}


def _job_view(context: ApiContext, job_id: str) -> JobView | None:
    job = get_job(context.reader, job_id)
    # Encoded as the view holds it: numbers and instants exactly as the projection wrote them.
    return None if job is None else embedded(msgspec.Raw(msgspec.json.encode(job)), JobView)


def _next_runs(schedule: Schedule, after: Any, count: int, zone: ZoneInfo) -> list[str]:
    return [iso_instant(t, zone) for t in triggers.next_fires(schedule, after, count)]


async def preview_job(
    context: ApiContext, data: JobRequest, count: int, *, anchor: datetime | None = None
) -> Preview:
    """``data`` validated and its next ``count`` runs, nothing written: the API's preview and
    the dashboard's form (which passes an edited job's ``anchor``, as its update would keep)."""
    now = context.clock.now()
    spec, anchor = normalise(
        data, now=now, default_timezone=context.settings.timezone, anchor=anchor
    )
    checked = await asyncio.to_thread(context.service.check_parameters, spec)
    zone = ZoneInfo(spec.timezone)
    runs = _next_runs(Schedule.from_spec(spec, anchor), now, count, zone)
    return Preview(success=True, valid=True, parameters_check=checked, job=spec, next_runs=runs)


def upcoming_runs(context: Reads, job_id: str, count: int) -> tuple[JobState, list[str]]:
    """The job's state and its next ``count`` fire times (ISO, the job's zone): from its
    next fire when enabled, else as they would come from now. Also the dashboard's."""
    state = context.service.get_state(job_id)
    assert state.spec is not None
    assert state.anchor is not None
    zone = ZoneInfo(state.spec.timezone)
    first = state.next_fire_time() if state.enabled else None
    schedule = Schedule.from_spec(state.spec, state.anchor)
    if first is not None:
        return state, [iso_instant(first, zone), *_next_runs(schedule, first, count - 1, zone)]
    return state, _next_runs(schedule, context.clock.now(), count, zone)


class JobController(Controller):
    path = "/api/scheduler"
    tags = ["jobs"]  # noqa: RUF012 (Litestar declares it as an instance attribute)

    @post("/jobs/create", status_code=200, opt=WRITE, responses=WRITE_ERRORS, **takes(JobRequest))
    async def create_job(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[JobRequest],
        context: NamedDependency[ApiContext],
    ) -> JobCreatedAnswer:
        """Create a job (the guide's "Create Job")."""
        who = actor(request)
        job_id = await asyncio.to_thread(context.service.create, data, who)
        return JobCreatedAnswer(success=True, job_id=job_id, message=f"job {data.name!r} created")

    @get("/jobs", opt=READ, responses=READ_ERRORS)
    async def list_jobs(
        self,
        context: NamedDependency[ApiContext],
        enabled: FromQuery[bool | None] = None,
        schedule_type: Annotated[
            str | None, QueryParameter(description="one of " + ", ".join(SCHEDULE_TYPES))
        ] = None,
        equipment_id: QueryFilter = None,
        tag: QueryFilter = None,
        search: Annotated[
            str | None,
            QueryParameter(description="substring of name or description", max_length=200),
        ] = None,
        limit: Limit = 1000,
        offset: Offset = 0,
    ) -> JobList:
        """List jobs (``?enabled=true`` for the active ones)."""
        total, views = list_job_views(
            context.reader,
            enabled=enabled,
            schedule_type=schedule_type,
            equipment_id=equipment_id,
            tag=tag,
            search=search,
            limit=limit,
            offset=offset,
        )
        # Each job's JSON was rendered when the view folded it: embed it as it is.
        jobs = [embedded(msgspec.Raw(view.encode()), JobView) for view in views]
        return JobList(success=True, count=len(jobs), total=total, jobs=jobs)

    @get("/jobs/{job_id:str}", opt=READ, responses=READ_ERRORS)
    async def get_job(
        self, job_id: FromPath[str], context: NamedDependency[ApiContext]
    ) -> JobAnswer:
        job = _job_view(context, job_id)
        if job is None:
            raise JobNotFound(job_id)
        return JobAnswer(success=True, job=job)

    @put("/jobs/{job_id:str}", opt=WRITE, responses=WRITE_ERRORS, **takes(JobUpdate))
    async def update_job(
        self,
        request: Request[Any, Any, Any],
        job_id: FromPath[str],
        data: JSONBody[JobUpdate],
        context: NamedDependency[ApiContext],
    ) -> JobUpdatedAnswer:
        """Change the fields given; pass the job's ``version`` to refuse stale edits (409)."""
        version = data.version if isinstance(data.version, int) else None
        recorded = await asyncio.to_thread(
            context.service.update_job,
            job_id,
            data.changes(),
            actor(request),
            expected_version=version,
            reason=data.given_reason(),
        )
        message = "job updated" if recorded else "nothing changed"
        await context.caught_up()
        return JobUpdatedAnswer(success=True, message=message, job=_job_view(context, job_id))

    @delete("/jobs/{job_id:str}", status_code=200, opt=WRITE, responses=WRITE_ERRORS)
    async def delete_job(
        self,
        request: Request[Any, Any, Any],
        job_id: FromPath[str],
        context: NamedDependency[ApiContext],
        reason: ReasonQuery = None,
    ) -> Message:
        """Delete a job (``?reason=`` says why)."""
        await asyncio.to_thread(context.service.delete_job, job_id, actor(request), reason)
        return Message(success=True, message=f"job {job_id} deleted")

    @post("/jobs/{job_id:str}/pause", status_code=200, opt=WRITE, responses=WRITE_ERRORS)
    async def pause_job(
        self,
        request: Request[Any, Any, Any],
        job_id: FromPath[str],
        context: NamedDependency[ApiContext],
        reason: ReasonQuery = None,
    ) -> Message:
        """Stop future fires (``?reason=`` says why); a running execution finishes."""
        await asyncio.to_thread(context.service.pause_job, job_id, actor(request), reason)
        return Message(success=True, message=f"job {job_id} paused")

    @post("/jobs/{job_id:str}/resume", status_code=200, opt=WRITE, responses=WRITE_ERRORS)
    async def resume_job(
        self,
        request: Request[Any, Any, Any],
        job_id: FromPath[str],
        context: NamedDependency[ApiContext],
        reason: ReasonQuery = None,
    ) -> Message:
        """Fire again from now on (``?reason=`` says why), without catching up the pause."""
        await asyncio.to_thread(context.service.resume_job, job_id, actor(request), reason)
        return Message(success=True, message=f"job {job_id} resumed")

    @post("/jobs/{job_id:str}/run", status_code=200, opt=WRITE, responses=WRITE_ERRORS)
    async def run_job(
        self,
        request: Request[Any, Any, Any],
        job_id: FromPath[str],
        context: NamedDependency[ApiContext],
    ) -> RunAnswer:
        """Run now: works on a disabled job, obeys the conflict policy (409 naming the
        running execution when it refuses), moves no schedule, counts toward no limit."""
        execution_id = await context.run_now(job_id, actor(request))
        return RunAnswer(success=True, execution_id=execution_id, message=f"job {job_id} started")

    @get("/jobs/{job_id:str}/history", opt=READ, responses=READ_ERRORS)
    async def job_history(
        self, job_id: FromPath[str], context: NamedDependency[ApiContext]
    ) -> HistoryAnswer:
        history = job_history(context.reader, job_id)
        if history is None:
            raise JobNotFound(job_id)
        return HistoryAnswer(success=True, history=view(history, JobHistory))

    @get("/jobs/{job_id:str}/next-runs", opt=READ, responses=READ_ERRORS)
    async def next_runs(
        self,
        job_id: FromPath[str],
        context: NamedDependency[ApiContext],
        count: Annotated[int, QueryParameter(ge=1, le=1000)] = 10,
    ) -> NextRuns:
        """The next ``count`` fire times, with UTC offsets, whether the job is enabled or not."""
        state, runs = upcoming_runs(context, job_id, count)
        assert state.spec is not None
        return NextRuns(
            success=True,
            job_id=job_id,
            enabled=state.enabled,
            status=state.status,
            timezone=state.spec.timezone,
            next_runs=runs,
        )

    @post("/preview", status_code=200, opt=READ, responses=WRITE_ERRORS, **takes(JobRequest))
    async def preview(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[JobRequest],
        context: NamedDependency[ApiContext],
        count: Annotated[int, QueryParameter(ge=1, le=1000)] = 10,
    ) -> Preview:
        """Validate a job body and list its next runs; nothing is created."""
        return await preview_job(context, data, count)

    @get("/jobs/{job_id:str}/events", opt=READ, responses=READ_ERRORS)
    async def job_events(
        self, job_id: FromPath[str], context: NamedDependency[ApiContext]
    ) -> JobEvents:
        """The job's audit trail: every event of its stream, with actor and time."""
        recorded = context.store.read_stream(job_id)
        if not recorded:
            raise JobNotFound(job_id)
        events = [
            JobStreamEvent(
                position=r.position,
                version=r.version,
                event_id=r.event_id,
                type=r.type,
                occurred_at=r.occurred_at.isoformat(),
                actor=r.actor,
                correlation_id=r.correlation_id,
                data=msgspec.to_builtins(r.event),
            )
            for r in recorded
        ]
        return JobEvents(success=True, job_id=job_id, count=len(events), events=events)
