"""The audit page: the event log as the audit trail (``GET /api/audit``'s reads), filtered by
job, actor, event family and time range, paged by log position (keyset: each page starts just
past the last position of the one before, so paging never skips or repeats an event while the
log grows). Each event shows its type, actor, time, the reason it was made, the fields it
changed (old and new), whether the record it made was amended later, and its payload,
collapsed. ``/audit.csv`` is the same trail, filtered alike, as the API's printable CSV
(``format=csv``), for the signed-in session.

Times typed into the form have no offset (``datetime-local``): they are read in the
browser's zone, which the page's script puts in the hidden ``tz`` field, else in the lab's
zone (LABLINK_TIMEZONE). A time with an offset is taken as it is."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from litestar import Controller, Request, get
from litestar.response import Response, Template

from lablink.api.audit import event_types
from lablink.api.audit_export import audit_csv
from lablink.api.audit_queries import list_audit
from lablink.dashboard.requests import context as context_of
from lablink.dashboard.requests import cursor, text
from lablink.dashboard.session import signed_in
from lablink.domain.validation import zone_problem
from lablink.errors import InvalidRequest
from lablink.events import EVENT_TYPES

VIEW = {"page_role": "viewer"}
PAGE_SIZE = 50
FILTERS = ("job_id", "actor", "type", "since", "until", "tz")
# SQLite's largest integer: a larger cursor cannot be a position (and would not bind).
FAMILIES = sorted({t.split(".", 1)[0] for t in EVENT_TYPES})


_context = context_of


_text = text


def _zone(value: str, default: ZoneInfo) -> ZoneInfo:
    if not value:
        return default
    # The scheduler's own check: it also refuses folder names ("Europe") and long ones.
    if zone_problem(value) is not None:
        raise InvalidRequest.one(
            "tz", value[:64], "is not an IANA time zone, e.g. Europe/Berlin"
        ) from None
    return ZoneInfo(value)


def _instant(name: str, value: str, zone: ZoneInfo) -> datetime | None:
    if not value:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidRequest.one(
            name, value, "is not a date and time, e.g. 2026-03-02T08:00 or 2026-03-02T08:00+01:00"
        ) from None
    when = when if when.tzinfo is not None else when.replace(tzinfo=zone)
    try:
        # Stored instants are UTC: 9999-12-31T23:59:59-23:59 or 0001-01-01 east of UTC has none.
        when.astimezone(UTC)
    except OverflowError:
        raise InvalidRequest.one(name, value, "is beyond the instants UTC can express") from None
    return when


def _after(value: str) -> int | None:
    return cursor("after", value, "must be a log position from a page's link")


def _filters(request: Request[Any, Any, Any], chosen: dict[str, str]) -> dict[str, Any]:
    """The filters typed into the form, as ``list_audit`` takes them; InvalidRequest naming
    the one refused."""
    zone = _zone(chosen["tz"], _context(request).zone)
    since = _instant("since", chosen["since"], zone)
    until = _instant("until", chosen["until"], zone)
    if since is not None and until is not None and since > until:
        raise InvalidRequest.one("until", chosen["until"], "is before the start (since)")
    return {
        "since": since,
        "until": until,
        "actor": _text("actor", chosen["actor"]),
        "job_id": _text("job_id", chosen["job_id"]),
        "types": event_types([chosen["type"]] if chosen["type"] else []),
    }


def _chosen(request: Request[Any, Any, Any]) -> dict[str, str]:
    return {name: (request.query_params.get(name) or "").strip() for name in FILTERS}


# A changed value longer than this is cut on the page (the payload, and the CSV, hold it all).
SHOWN_VALUE = 300


def _shown(value: Any) -> str:
    """A changed field's value as the page prints it: text as it is, anything else as JSON
    (``null``: none)."""
    shown = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return shown if len(shown) <= SHOWN_VALUE else shown[:SHOWN_VALUE] + "…"


def _trail(request: Request[Any, Any, Any]) -> tuple[dict[str, Any], int]:
    """The page's data and its HTTP status (400 when a filter was refused)."""
    context = _context(request)
    chosen = _chosen(request)
    after_text = (request.query_params.get("after") or "").strip()
    events: list[dict[str, Any]] = []
    next_after = None
    errors: dict[str, str] = {}
    try:
        filters = _filters(request, chosen)
        events, next_after = list_audit(
            context.reader, limit=PAGE_SIZE, after=_after(after_text), **filters
        )
    except InvalidRequest as exc:
        errors = {e.field: f"{e.value!r} {e.reason}" for e in exc.errors}
    for event in events:
        event["payload"] = json.dumps(event["data"], indent=2, sort_keys=True, ensure_ascii=False)
        event["shown_changes"] = [
            {"field": c["field"], "old": _shown(c["old"]), "new": _shown(c["new"])}
            for c in event["changes"]
        ]
    kept_filters = {k: v for k, v in chosen.items() if v}
    # In the lab's zone, without an offset, so that the form's datetime-local field shows it.
    last_day = (context.clock.now() - timedelta(days=1)).astimezone(context.zone)
    last_day_text = last_day.replace(tzinfo=None).isoformat(timespec="seconds")
    return {
        "events": events,
        "chosen": chosen,
        "errors": errors,
        "families": FAMILIES,
        "paged": bool(after_text),
        "first_query": urlencode(kept_filters),
        "next_query": (
            urlencode({**kept_filters, "after": next_after}) if next_after is not None else None
        ),
        "last_day_query": urlencode({"since": last_day_text, "tz": context.zone.key}),
        "csv_query": urlencode(kept_filters),
        "lab_zone": context.zone.key,
    }, (400 if errors else 200)


class AuditPageController(Controller):
    path = "/"
    include_in_schema = False

    @get("/audit", opt=VIEW)
    async def audit(self, request: Request[Any, Any, Any]) -> Template:
        data, status = _trail(request)
        return Template(
            template_name="audit.html",
            context={"identity": signed_in(request), "page": "audit", **data},
            status_code=status,
        )

    @get("/audit.csv", opt=VIEW)
    async def audit_csv(self, request: Request[Any, Any, Any]) -> Response[Any]:
        """The trail as the page filters it, every page of it, as the API's CSV
        (``GET /api/audit?format=csv``); a refused filter is a 400 naming it, as text."""
        try:
            filters = _filters(request, _chosen(request))
        except InvalidRequest as exc:
            return Response(content=f"{exc}\n", status_code=400, media_type="text/plain")
        return audit_csv(_context(request).reader, after=None, **filters)
