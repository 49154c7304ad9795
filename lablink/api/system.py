"""Statistics, running jobs and health."""

from __future__ import annotations

import msgspec
from litestar import Controller, Response, get
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec

from lablink.api.context import ApiContext
from lablink.api.openapi import READ_ERRORS
from lablink.api.probes import HealthReport, Liveness, Readiness, components, readiness, report
from lablink.api.queries import alarm_counts, running_jobs, statistics
from lablink.api.responses import RunningJobs, Statistics, StatisticsAnswer, embedded
from lablink.eventstore.sqlite import LogReader

READ = {"role": "viewer"}


class SystemController(Controller):
    tags = ["monitoring"]  # noqa: RUF012 (Litestar declares it as an instance attribute)

    @get("/api/scheduler/statistics", opt=READ, responses=READ_ERRORS)
    async def statistics(self, context: NamedDependency[ApiContext]) -> StatisticsAnswer:
        """Totals, today's counts (in the server's time zone), jobs by type, next 10 runs."""
        now = context.clock.now()
        # The answer changes only with the views or the date: reuse it until either moves.
        # The follower's position is in memory; the log's would be a query per request
        # (8.5 % of the server's time under load, BENCHMARKS.md "HTTP API", 2026-12-05).
        views = context.views
        position = (
            views.position if views is not None else LogReader(context.reader).last_position()
        )
        key = (position, now.astimezone(context.zone).date())
        cached = context.statistics_cache
        if cached is None or cached[0] != key:
            stats = statistics(context.reader, now=now, zone=context.zone)
            stats.update(alarm_counts(context.reader))
            # Cached encoded: a repeated answer costs no serialisation either.
            body = msgspec.Raw(msgspec.json.encode(stats))
            context.statistics_cache = cached = (key, body)
        return StatisticsAnswer(success=True, statistics=embedded(cached[1], Statistics))

    @get("/api/scheduler/running", opt=READ, responses=READ_ERRORS)
    async def running(self, context: NamedDependency[ApiContext]) -> RunningJobs:
        """Ids of the jobs with an execution running now."""
        jobs = running_jobs(context.reader)
        return RunningJobs(success=True, count=len(jobs), running_jobs=jobs)

    @get(
        "/health",
        responses={
            503: ResponseSpec(
                data_container=HealthReport,
                description="a component is failing: the same body, naming it and why",
                generate_examples=False,
            )
        },
    )
    async def health(self, context: NamedDependency[ApiContext]) -> Response[HealthReport]:
        """Every component (scheduler, event log, relay, NATS, agents, background tasks) with
        its state (ok, degraded, failing), reason and since when. 200 unless a component is
        failing (degraded is 200), then 503. No key needed."""
        # On the event loop: probes may read the state of asyncio tasks, and each is cheap
        # (a stat, a statvfs, a one-row query).
        body = report(context)
        return Response(body, status_code=503 if body.status == "failing" else 200)

    @get("/health/live")
    async def live(self) -> Liveness:
        """Liveness: the process and its event loop answer (always 200). No key needed."""
        return Liveness()

    @get(
        "/health/ready",
        responses={
            503: ResponseSpec(
                data_container=Readiness,
                description="not ready: the store is not open, the engine has not started, or"
                " a component is failing; ``reasons`` says which",
                generate_examples=False,
            )
        },
    )
    async def ready(self, context: NamedDependency[ApiContext]) -> Response[Readiness]:
        """Readiness: 200 once the store is open, the engine started and nothing is failing;
        503 with the reasons otherwise. No key needed."""
        body = readiness(components(context))
        return Response(body, status_code=200 if body.ready else 503)
