"""Statistics, running jobs and health."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Controller, get
from litestar.di import NamedDependency

from lablink.api.context import ApiContext
from lablink.api.openapi import READ_ERRORS
from lablink.api.queries import alarm_counts, running_jobs, statistics

READ = {"role": "viewer"}


class SystemController(Controller):
    tags = ["monitoring"]  # noqa: RUF012 (Litestar declares it as an instance attribute)

    @get("/api/scheduler/statistics", opt=READ, responses=READ_ERRORS)
    async def statistics(self, context: NamedDependency[ApiContext]) -> dict[str, Any]:
        """Totals, today's counts (in the server's time zone), jobs by type, next 10 runs."""
        now = context.clock.now()
        # The answer changes only with the log or the date: reuse it until either moves.
        (position,) = context.reader.execute("SELECT MAX(position) FROM events").fetchone()
        key = (position, now.astimezone(context.zone).date())
        cached = context.statistics_cache
        if cached is None or cached[0] != key:
            stats = statistics(context.reader, now=now, zone=context.zone)
            stats.update(alarm_counts(context.reader))
            # Cached encoded: a repeated answer costs no serialisation either.
            body = msgspec.Raw(msgspec.json.encode(stats))
            context.statistics_cache = cached = (key, body)
        return {"success": True, "statistics": cached[1]}

    @get("/api/scheduler/running", opt=READ, responses=READ_ERRORS)
    async def running(self, context: NamedDependency[ApiContext]) -> dict[str, Any]:
        """Ids of the jobs with an execution running now."""
        jobs = running_jobs(context.reader)
        return {"success": True, "count": len(jobs), "running_jobs": jobs}

    @get("/health")
    async def health(self, context: NamedDependency[ApiContext]) -> dict[str, Any]:
        """Database, scheduler, NATS and agents. No key needed."""
        try:
            (position,) = context.reader.execute(
                "SELECT COALESCE(MAX(position), 0) FROM events"
            ).fetchone()
            database: dict[str, Any] = {
                "status": "ok",
                "path": str(context.settings.db_path),
                "events": position,
            }
        except Exception as exc:  # reported, not raised: health must answer
            database = {"status": "error", "error": str(exc)}
        nats = context.nats_health()
        if database["status"] != "ok":
            status = "error"
        elif nats["status"] == "degraded":
            status = "degraded"  # scheduling goes on; the bus lags behind the log
        else:
            status = "ok"
        return {
            "status": status,
            "database": database,
            "scheduler": {
                "status": "ok",
                "planned_jobs": len(context.engine.timers),
                "running_executions": len(context.engine.tasks()),
                "timezone": context.settings.timezone,
            },
            "nats": nats,
            "agents": context.agents_health(),
        }
