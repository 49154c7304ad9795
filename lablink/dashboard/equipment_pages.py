"""The equipment pages: every instrument an agent has reported (``/equipment``) and one
instrument (``/equipment/{id}``): its ``*IDN?`` identity, agent and resource, online since /
last seen, what it runs now, its calibration (status, certificates, override, quarantine),
the jobs that use it and its recent executions.

Everything comes from the API's own reads: the equipment view (identity as the agent's
``equipment.online`` recorded it) with this process's heartbeats (``ApiContext.sightings``,
newer than the log) and each instrument's queue (``ApiContext.queues``), the jobs view by
``equipment_id`` and the executions view."""

from __future__ import annotations

import json
from typing import Any

import msgspec
from litestar import Controller, Litestar, Request, get
from litestar.params import FromPath
from litestar.response import ServerSentEvent, Template

from lablink.api.calibration_views import one_summary, record_views
from lablink.api.context import ApiContext
from lablink.api.queries import list_equipment, list_executions, list_job_views
from lablink.api.reads import Reads
from lablink.dashboard.drawer import drawer_of
from lablink.dashboard.drawings import Drawing, DrawingContext
from lablink.dashboard.live import stream
from lablink.dashboard.pushed import Card, PageCards
from lablink.dashboard.session import signed_in

VIEW = {"page_role": "viewer"}
# A page, not an export: enough to see what an instrument has been doing lately.
RECENT_EXECUTIONS = 20
JOBS_SHOWN = 200
# What each page's part shows (its stream sends it anew on these): ``tick`` for the last seen
# and online state, which change without an event of the log.
LIST_TOPICS = frozenset({"equipment", "executions", "tick"})
DETAIL_TOPICS = frozenset({"equipment", "executions", "schedules", "tick"})


def _context(request: Request[Any, Any, Any]) -> ApiContext:
    context: ApiContext = request.app.state["context"]
    return context


def _instruments(context: Reads) -> list[dict[str, Any]]:
    return list_equipment(
        context.reader,
        live=context.sightings(),
        queues=context.queues(),
        calibration=context.calibration_rules(),
    )


def _detail(context: Reads, equipment_id: str) -> dict[str, Any] | None:
    rules = context.calibration_rules()
    found = list_equipment(
        context.reader,
        live=context.sightings(),
        equipment_id=equipment_id,
        queues=context.queues(),
        calibration=rules,
    )
    if not found:
        return None
    total, views = list_job_views(context.reader, equipment_id=equipment_id, limit=JOBS_SHOWN)
    executions, more = list_executions(
        context.reader, equipment_id=equipment_id, limit=RECENT_EXECUTIONS
    )
    _, certificates = one_summary(context.reader, equipment_id, rules)
    return {
        "instrument": found[0],
        "certificates": [msgspec.to_builtins(c) for c in record_views(certificates)],
        "jobs": [json.loads(v) for v in views],
        "jobs_total": total,
        "executions": executions,
        "more_executions": more is not None,
    }


def not_found(request: Request[Any, Any, Any], page: str, what: str) -> Template:
    return Template(
        template_name="not_found.html",
        context={"identity": signed_in(request), "page": page, "what": what},
        status_code=404,
    )


def list_cards(app: Litestar) -> PageCards:
    """The equipment page's list, sent by its stream (equipment.html's ``sse-swap``), drawn
    once for every screen."""
    cards = {"list": Card(LIST_TOPICS, Drawing("equipment_list"))}
    return PageCards(drawer_of(app), ("equipment",), cards)


def detail_cards(app: Litestar, equipment_id: str) -> PageCards:
    """An instrument's page, sent by its stream, drawn once for every screen showing it."""
    cards = {"detail": Card(DETAIL_TOPICS, Drawing("equipment_detail", (equipment_id,)))}
    return PageCards(drawer_of(app), ("equipment", equipment_id), cards)


def draw_equipment_list(context: DrawingContext) -> str:
    """In the drawing process: the equipment page's list."""
    return context.fragment("equipment_list", {"instruments": _instruments(context)})


def draw_equipment_detail(context: DrawingContext, equipment_id: str) -> str:
    """In the drawing process: an instrument's page, or that it is gone."""
    detail = _detail(context, equipment_id)
    if detail is None:
        return context.fragment("equipment_gone", {"equipment_id": equipment_id})
    return context.fragment("equipment_detail", detail)


class EquipmentPagesController(Controller):
    path = "/"
    include_in_schema = False

    @get("/equipment", opt=VIEW)
    async def equipment(self, request: Request[Any, Any, Any]) -> Template:
        return Template(
            template_name="equipment.html",
            context={
                "identity": signed_in(request),
                "page": "equipment",
                "instruments": _instruments(_context(request)),
            },
        )

    @get("/live/equipment", opt=VIEW)
    async def live_list(self, request: Request[Any, Any, Any]) -> ServerSentEvent:
        return stream(request, list_cards(request.app))

    @get("/live/equipment/{equipment_id:str}", opt=VIEW)
    async def live_detail(
        self, request: Request[Any, Any, Any], equipment_id: FromPath[str]
    ) -> ServerSentEvent:
        return stream(request, detail_cards(request.app, equipment_id))

    @get("/fragments/equipment/list", opt=VIEW)
    async def equipment_list(self, request: Request[Any, Any, Any]) -> Template:
        return Template(
            template_name="fragments/equipment_list.html",
            context={"instruments": _instruments(_context(request))},
        )

    @get("/equipment/{equipment_id:str}", opt=VIEW)
    async def instrument(
        self, request: Request[Any, Any, Any], equipment_id: FromPath[str]
    ) -> Template:
        detail = _detail(_context(request), equipment_id)
        if detail is None:
            return not_found(request, "equipment", f"no instrument {equipment_id!r}")
        return Template(
            template_name="equipment_detail.html",
            context={"identity": signed_in(request), "page": "equipment", **detail},
        )

    @get("/fragments/equipment/{equipment_id:str}/detail", opt=VIEW)
    async def instrument_fragment(
        self, request: Request[Any, Any, Any], equipment_id: FromPath[str]
    ) -> Template:
        detail = _detail(_context(request), equipment_id)
        if detail is None:
            return not_found(request, "equipment", f"no instrument {equipment_id!r}")
        return Template(template_name="fragments/equipment_detail.html", context=detail)
