"""GET /api/audit: who did what, when and why, straight from the event log.

Every event names its actor (the API key's name, ``scheduler``, ``retention``…), so the log
is the audit trail; changes carry the reason given and their old and new values, and
``format=csv`` prints it (``audit_export.py``). To see the system as it stood at a moment,
rebuild the views with ``lablink replay --until TIME`` (docs/api.md, "Audit").
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.params import QueryParameter

from lablink.api.audit_export import audit_csv
from lablink.api.audit_queries import list_audit
from lablink.api.bodies import INSTANT_FORMAT, BadRequest, query_instant
from lablink.api.context import ApiContext
from lablink.api.csv_answers import csv_or_json
from lablink.api.openapi import READ_ERRORS
from lablink.api.paging import MAX_POSITION, After
from lablink.api.responses import AuditEvent, AuditPage, views
from lablink.events import EVENT_TYPES

READ = {"role": "viewer"}
# A JSON page holds at most this many events; CSV streams any number.
MAX_JSON_LIMIT = 1000
DEFAULT_JSON_LIMIT = 100


def event_types(values: list[str] | None) -> list[str]:
    """Each ``type``: a full type (``job.paused``) or a family prefix ending with a dot
    (``job.``); a bare family name (``job``) is read as its prefix."""
    known = sorted(EVENT_TYPES)
    families = sorted({t.split(".", 1)[0] + "." for t in known})
    chosen: list[str] = []
    for item in values or []:
        for value in (v.strip() for v in item.split(",")):
            if not value:
                continue
            if value in EVENT_TYPES:
                chosen.append(value)
            elif value in families or value + "." in families:
                chosen.append(value if value.endswith(".") else value + ".")
            else:
                raise BadRequest.one(
                    "type",
                    value,
                    "not an event type nor a family prefix; families: "
                    + ", ".join(families)
                    + "; types: "
                    + ", ".join(known),
                )
    return chosen


def _text(name: str, value: str | None) -> str | None:
    if value is not None and (not value or len(value) > 200):
        raise BadRequest.one(name, value, "must be 1 to 200 characters")
    return value


class AuditController(Controller):
    path = "/api/audit"
    tags = ["audit"]  # noqa: RUF012 (Litestar declares it as an instance attribute)

    @get(
        "/",
        opt=READ,
        responses=READ_ERRORS,
        operation_class=csv_or_json(
            "one row per event (one per changed field): position, occurred_at, actor, type,"
            " stream_id, reason, field, old, new, amended, amended_at_position"
        ),
    )
    async def list_events(
        self,
        context: NamedDependency[ApiContext],
        since: Annotated[
            str | None,
            QueryParameter(
                format=INSTANT_FORMAT, description="occurred_at >= since (ISO 8601 with offset)"
            ),
        ] = None,
        until: Annotated[
            str | None,
            QueryParameter(
                format=INSTANT_FORMAT,
                description="occurred_at <= until (ISO 8601 with offset): the events"
                " `lablink replay --until` folds",
            ),
        ] = None,
        actor: Annotated[
            str | None,
            QueryParameter(description="who: an API key's name, scheduler, retention…"),
        ] = None,
        job_id: Annotated[
            str | None, QueryParameter(description="only this job's events (its stream)")
        ] = None,
        type: Annotated[
            list[str] | None,
            QueryParameter(
                description="a full type (job.paused) or a family prefix (job., execution.);"
                " repeat or comma-separate"
            ),
        ] = None,
        limit: Annotated[
            int | None,
            QueryParameter(
                ge=1,
                le=MAX_POSITION,
                description=f"events per page: JSON {DEFAULT_JSON_LIMIT} by default, at most"
                f" {MAX_JSON_LIMIT}; CSV: every event in range by default",
            ),
        ] = None,
        cursor: After = None,
        format: Annotated[
            Literal["json", "csv"],
            QueryParameter(description="json (default) or csv: the whole range, printable"),
        ] = "json",
    ) -> AuditPage:
        """The event log, oldest first, filtered by time, actor, job and type; each entry
        with its reason, the fields it changed (old and new) and whether the record it made
        was amended later. ``format=csv`` streams the whole range as text/csv."""
        start = query_instant("since", since)
        end = query_instant("until", until)
        if start is not None and end is not None and start > end:
            raise BadRequest.one("until", until, f"is before since={since}")
        filters: dict[str, Any] = {
            "since": start,
            "until": end,
            "actor": _text("actor", actor),
            "job_id": _text("job_id", job_id),
            "types": event_types(type),
        }
        if format == "csv":
            answer = audit_csv(context.reader, after=cursor, limit=limit, **filters)
            return answer  # type: ignore[return-value]
        if limit is None:
            limit = DEFAULT_JSON_LIMIT
        elif limit > MAX_JSON_LIMIT:
            raise BadRequest.one(
                "limit",
                str(limit),  # as the query said it, as Litestar's own bounds name it
                f"must be at most {MAX_JSON_LIMIT} with format=json (format=csv streams any"
                " number)",
            )
        page, next_cursor = list_audit(context.reader, limit=limit, after=cursor, **filters)
        return AuditPage(
            success=True, count=len(page), events=views(page, AuditEvent), next_cursor=next_cursor
        )
