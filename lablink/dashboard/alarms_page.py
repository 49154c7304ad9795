"""The alarms page: every alarm, newest first, with its severity, filtered by state,
severity, instrument and job, paged by the alarms view's cursor; acknowledge and clear (with a
note) for operators, through the dashboard's own POST routes (alarm_actions.py).

The filters are read and checked as the API checks its query (``query_choices``), so a bad
value reads the same in both; here it is shown beside its field, never a 500."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from litestar import Controller, Request, get
from litestar.response import Template

from lablink.api.alarms import SEVERITIES, STATES
from lablink.api.bodies import query_choices
from lablink.api.queries import list_alarms, list_equipment
from lablink.dashboard.requests import context as context_of
from lablink.dashboard.requests import cursor, text
from lablink.dashboard.session import signed_in
from lablink.errors import InvalidRequest

VIEW = {"page_role": "viewer"}
PAGE_SIZE = 50
# What a page of alarms is filtered by, by query parameter.
FILTERS = ("state", "severity", "equipment_id", "job_id")


_context = context_of


_text = text


def _cursor(value: str | None) -> int | None:
    return cursor("cursor", value, "must be a whole number from a page's link")


def _listing(request: Request[Any, Any, Any]) -> tuple[dict[str, Any], int]:
    """The page's data and its HTTP status (400 when a filter was refused)."""
    query = request.query_params
    chosen = {name: (query.get(name) or "").strip() for name in FILTERS}
    errors: dict[str, str] = {}
    alarms: list[dict[str, Any]] = []
    next_cursor = None
    try:
        states = query_choices("state", query.getall("state", []), STATES)
        severities = query_choices("severity", query.getall("severity", []), SEVERITIES)
        equipment_id = _text("equipment_id", query.get("equipment_id"))
        job_id = _text("job_id", query.get("job_id"))
        cursor = _cursor(query.get("cursor"))
    except InvalidRequest as exc:
        errors = {e.field: f"{e.value!r} {e.reason}" for e in exc.errors}
    else:
        alarms, next_cursor = list_alarms(
            _context(request).reader,
            state=states,
            severity=severities,
            equipment_id=equipment_id,
            job_id=job_id,
            limit=PAGE_SIZE,
            before=cursor,
        )
    kept = {k: v for k, v in chosen.items() if v}
    return {
        "alarms": alarms,
        "chosen": chosen,
        "errors": errors,
        "states": STATES,
        "severities": SEVERITIES,
        "instruments": [
            e["equipment_id"] for e in list_equipment(_context(request).reader, live=None)
        ],
        "query": urlencode(kept),
        "paged": bool(query.get("cursor")),
        "next_query": (
            urlencode({**kept, "cursor": next_cursor}) if next_cursor is not None else None
        ),
        "can_act": signed_in(request).allows("operator"),
    }, (400 if errors else 200)


class AlarmsPageController(Controller):
    path = "/"
    include_in_schema = False

    @get("/alarms", opt=VIEW)
    async def alarms(self, request: Request[Any, Any, Any]) -> Template:
        data, status = _listing(request)
        return Template(
            template_name="alarms.html",
            context={"identity": signed_in(request), "page": "alarms", **data},
            status_code=status,
        )

    @get("/fragments/alarms/list", opt=VIEW)
    async def alarm_list(self, request: Request[Any, Any, Any]) -> Template:
        data, status = _listing(request)
        return Template(
            template_name="fragments/alarms_list.html", context=data, status_code=status
        )
