"""The overview: the screen left open on the lab's wall."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get
from litestar.response import Template

from lablink.api.context import ApiContext
from lablink.api.probes import report
from lablink.api.queries import statistics
from lablink.dashboard.session import signed_in

VIEW = {"page_role": "viewer"}


def _context(request: Request[Any, Any, Any]) -> ApiContext:
    context: ApiContext = request.app.state["context"]
    return context


class OverviewController(Controller):
    path = "/"
    include_in_schema = False

    @get("/", opt=VIEW)
    async def overview(self, request: Request[Any, Any, Any]) -> Template:
        return Template(
            template_name="overview.html",
            context={"identity": signed_in(request), "page": "overview", **_today(request)},
        )

    @get("/fragments/overview/today", opt=VIEW)
    async def today(self, request: Request[Any, Any, Any]) -> Template:
        return Template(template_name="fragments/today.html", context=_today(request))


def _today(request: Request[Any, Any, Any]) -> dict[str, Any]:
    context = _context(request)
    stats = statistics(context.reader, now=context.clock.now(), zone=context.zone)
    done = stats["successful_today"] + stats["failed_today"]
    rate = None if done == 0 else 100.0 * stats["successful_today"] / done
    return {"stats": stats, "success_rate": rate, "health": report(context)}
