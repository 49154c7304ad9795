"""The jobs list (``/jobs``): search, filters, sort and pages over the jobs view, and pause or
resume of many jobs at once.

The query lives in the URL (``?q=&type=&trigger=&enabled=&sort=&page=``), so a page can be
bookmarked and the page's stream (``/live/jobs?…``) sends exactly the table shown. Paging is
LIMIT/OFFSET over the jobs view (``list_job_views``), 50 a page: with 10,000 jobs a page
costs one indexed count and one sorted read.

A bulk pause or resume is two requests: the first names the jobs and writes nothing (the
confirmation, rendered by the server so that keyboards and screen readers get a real form);
the second, carrying ``confirmed``, runs each job through the same service as the API's
pause and resume, and the answer names what was done, what already was, and what failed.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import parse_qsl, urlencode

from litestar import Controller, Litestar, Request, get, post
from litestar.response import ServerSentEvent, Template
from markupsafe import Markup

from lablink.api.context import ApiContext
from lablink.api.queries import get_job, job_history, list_job_views
from lablink.api.reads import Reads
from lablink.dashboard.drawer import drawer_of
from lablink.dashboard.drawings import Drawing, DrawingContext
from lablink.dashboard.live import stream
from lablink.dashboard.pushed import Card, PageCards
from lablink.dashboard.rendering import instant
from lablink.dashboard.requests import OPERATE, VIEW, seen, whole_number
from lablink.dashboard.requests import context as _context
from lablink.dashboard.session import signed_in
from lablink.errors import LabLinkError, NotFound
from lablink.events import SCHEDULE_TYPES, TRIGGER_TYPES

PAGE_SIZE = 50
# One bulk request acts on at most this many jobs: a page holds 50; a forged form of a
# million ids is refused before any is read.
MAX_BULK = 500
SORTS = {"next_run": "next run", "name": "name", "created": "created"}
ENABLED = {"yes": True, "no": False}
ACTIONS = {"pause": ("Pause", "paused"), "resume": ("Resume", "resumed")}
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


@dataclass(frozen=True)
class JobsQuery:
    """What the list shows: the filters, the order and the page, as the URL carries them."""

    q: str = ""
    type: str = ""
    trigger: str = ""
    enabled: str = ""
    sort: str = "next_run"
    page: int = 1

    def params(self, **changes: Any) -> str:
        """The URL query of this listing (defaults left out), with ``changes``."""
        query = replace(self, **changes)
        pairs = {
            "q": query.q,
            "type": query.type,
            "trigger": query.trigger,
            "enabled": query.enabled,
            "sort": "" if query.sort == "next_run" else query.sort,
            "page": "" if query.page == 1 else str(query.page),
        }
        return urlencode({k: v for k, v in pairs.items() if v})


def parse_query(params: Mapping[str, Any]) -> tuple[JobsQuery, dict[str, str]]:
    """The listing asked for, and a message for each value refused, by field (naming the
    field, the value and why); a refused value is left out rather than failing the page."""
    problems: dict[str, str] = {}

    def one_of(name: str, allowed: Sequence[str], default: str = "") -> str:
        value = str(params.get(name) or "").strip()
        if value and value not in allowed:
            problems[name] = f"{name}: {value!r} is not one of {', '.join(allowed)}"
            return default
        return value or default

    q = str(params.get("q") or "").strip()
    if len(q) > 200:
        problems["q"] = f"q: {len(q)} characters; a search takes at most 200"
        q = q[:200]
    page_text = str(params.get("page") or "1").strip()
    page = whole_number(page_text, most=10**9 - 1) or 0
    if page == 0:
        problems["page"] = f"page: {page_text!r} is not a page number (1, 2, …)"
        page = 1
    query = JobsQuery(
        q=q,
        type=one_of("type", SCHEDULE_TYPES),
        trigger=one_of("trigger", TRIGGER_TYPES),
        enabled=one_of("enabled", tuple(ENABLED)),
        sort=one_of("sort", tuple(SORTS), "next_run"),
        page=page,
    )
    return query, problems


def _number(value: float) -> str:
    return f"{value:g}"


def trigger_words(job: Mapping[str, Any]) -> Markup:
    """The trigger in a few words: 'every 1 h', 'cron 0 8 * * 1-5', 'once at …'."""
    kind = job.get("trigger_type")
    at = str(job.get("time_of_day") or "")
    at = at[:5] if at.endswith(":00") else at
    if kind == "interval":
        seconds = (
            (job.get("interval_seconds") or 0)
            + (job.get("interval_minutes") or 0) * 60
            + (job.get("interval_hours") or 0) * 3600
            + (job.get("interval_days") or 0) * 86400
        )
        for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
            if seconds >= size and seconds % size == 0:
                return Markup("every {} {}").format(_number(seconds / size), unit)
        return Markup("every {} s").format(_number(seconds))
    if kind == "cron":
        return Markup("cron <code>{}</code>").format(job.get("cron_expression") or "")
    if kind == "daily":
        return Markup("daily at {}").format(at)
    if kind == "weekly":
        day = job.get("day_of_week")
        name = WEEKDAYS[day] if isinstance(day, int) and 0 <= day < 7 else str(day)
        return Markup("weekly on {} at {}").format(name, at)
    if kind == "monthly":
        return Markup("monthly on day {} at {}").format(job.get("day_of_month"), at)
    if kind == "date":
        return Markup("once at {}").format(instant(job.get("run_date"), job.get("timezone")))
    return Markup("{}").format(kind or "—")


@dataclass
class Listing:
    query: JobsQuery
    rows: list[dict[str, Any]]
    total: int
    pages: int
    problems: dict[str, str] = field(default_factory=dict)
    selected: set[str] = field(default_factory=set)


def listing(
    context: Reads,
    query: JobsQuery,
    problems: dict[str, str] | None = None,
    selected: Sequence[str] = (),
) -> Listing:
    """One page of the jobs view for ``query`` (the last page when it asks beyond it)."""

    def read(page: int) -> tuple[int, list[str]]:
        return list_job_views(
            context.reader,
            anywhere=query.q or None,
            schedule_type=query.type or None,
            trigger_type=query.trigger or None,
            enabled=ENABLED.get(query.enabled),
            order=query.sort,  # type: ignore[arg-type]  # checked by parse_query
            limit=PAGE_SIZE,
            offset=(page - 1) * PAGE_SIZE,
        )

    total, views = read(query.page)
    pages = max(1, -(-total // PAGE_SIZE))
    if query.page > pages:
        query = replace(query, page=pages)
        total, views = read(query.page)
        pages = max(1, -(-total // PAGE_SIZE))
    rows = []
    for text in views:
        job = json.loads(text)
        history = job_history(context.reader, job["job_id"])
        rows.append(
            {
                **job,
                "trigger_words": trigger_words(job),
                "last_status": history["last_status"] if history else None,
                "last_execution": history["last_execution"] if history else None,
            }
        )
    return Listing(query, rows, total, pages, problems or {}, set(selected))


def _table_context(request: Request[Any, Any, Any], found: Listing) -> dict[str, Any]:
    identity = signed_in(request)
    return {
        "identity": identity,
        "can_write": identity.allows("operator"),
        "listing": found,
        "query": found.query,
        "sorts": SORTS,
        "page_size": PAGE_SIZE,
    }


def _page_context(request: Request[Any, Any, Any], found: Listing) -> dict[str, Any]:
    return {
        **_table_context(request, found),
        "page": "jobs",
        "schedule_types": SCHEDULE_TYPES,
        "trigger_types": TRIGGER_TYPES,
    }


@dataclass
class BulkOutcome:
    """What a bulk pause or resume did, job by job: nothing left unsaid."""

    action: str
    done: list[dict[str, str]] = field(default_factory=list)
    already: list[dict[str, str]] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)


def _named(context: ApiContext, job_ids: Sequence[str]) -> list[dict[str, str]]:
    """Each id with its job's name (None-free: an unknown id is named by itself)."""
    named = []
    for job_id in job_ids:
        job = get_job(context.reader, job_id)
        named.append(
            {"job_id": job_id, "name": job["name"] if job else job_id, "known": "1" if job else ""}
        )
    return named


def run_bulk(
    context: ApiContext,
    action: str,
    jobs: Sequence[dict[str, str]],
    actor: str,
    reason: str | None = None,
) -> BulkOutcome:
    """Pause or resume each job through the job service, one after another, each with the
    reason given; each job's outcome is its own (one refused does not stop the others)."""
    outcome = BulkOutcome(action=action)
    command = context.service.pause_job if action == "pause" else context.service.resume_job
    for job in jobs:
        try:
            recorded = command(job["job_id"], actor, reason)
        except NotFound:
            outcome.failed.append({**job, "reason": f"no job has the id {job['job_id']!r}"})
        except LabLinkError as exc:
            outcome.failed.append({**job, "reason": str(exc)})
        else:
            (outcome.done if recorded else outcome.already).append(job)
    return outcome


def table_cards(app: Litestar, params: Mapping[str, Any], *, can_write: bool) -> PageCards:
    """The list page's table, sent by its stream for the page's query (jobs.html), drawn once
    per frame for every screen of the same query and role. It carries no box ticked: each
    screen keeps its own (dashboard.js); a screen that changed its query in place fetches
    its table instead (``data-pushed-if``)."""
    query, problems = parse_query(params)
    asked = urlencode({name: str(params.get(name)) for name in params})
    # The refusals too: two queries that list the same jobs may refuse different values, and
    # each screen names its own.
    kind = ("jobs", query.params(), tuple(sorted(problems.items())), can_write)
    card = Card(frozenset({"jobs"}), Drawing("jobs_table", (asked, can_write)))
    return PageCards(drawer_of(app), kind, {"table": card})


def draw_jobs_table(context: DrawingContext, asked: str, can_write: bool) -> str:
    """In the drawing process: the table of the listing the URL query ``asked`` names."""
    query, problems = parse_query(dict(parse_qsl(asked, keep_blank_values=True)))
    found = listing(context, query, problems)
    values = {
        "can_write": can_write,
        "listing": found,
        "query": found.query,
        "sorts": SORTS,
        "page_size": PAGE_SIZE,
        "shared": True,
    }
    return context.fragment("jobs_table", values)


class JobsListController(Controller):
    path = "/"
    include_in_schema = False

    @get("/jobs", opt=VIEW)
    async def jobs(self, request: Request[Any, Any, Any]) -> Template:
        query, problems = parse_query(request.query_params)
        found = listing(_context(request), query, problems)
        return Template(template_name="jobs.html", context=_page_context(request, found))

    @get("/live/jobs", opt=VIEW)
    async def live(self, request: Request[Any, Any, Any]) -> ServerSentEvent:
        can_write = signed_in(request).allows("operator")
        return stream(request, table_cards(request.app, request.query_params, can_write=can_write))

    @get("/fragments/jobs/table", opt=VIEW)
    async def table(self, request: Request[Any, Any, Any]) -> Template:
        """The results (live refreshes, filters as typed): the boxes ticked stay ticked."""
        query, problems = parse_query(request.query_params)
        selected = request.query_params.getall("job_id", [])
        found = listing(_context(request), query, problems, selected)
        return Template(
            template_name="fragments/jobs_table.html",
            context={**_table_context(request, found), "fragment": True},
            # The address bar follows the filters, so that what is shown can be bookmarked.
            headers={
                "HX-Replace-Url": "/jobs"
                + (f"?{found.query.params()}" if found.query.params() else "")
            },
        )

    @post("/jobs/bulk", opt=OPERATE, status_code=200)
    async def bulk(self, request: Request[Any, Any, Any]) -> Template:
        """Pause or resume the jobs ticked: first a confirmation naming them, then (with
        ``confirmed``) the writes, one job at a time, and what each came to."""
        context = _context(request)
        form = await request.form()
        action = str(form.get("action") or "")
        # The listing the form was sent from, to show again after the writes.
        back_query, _ = parse_query(dict(parse_qsl(str(form.get("back") or ""))))
        job_ids = list(dict.fromkeys(str(j).strip() for j in form.getall("job_id", []) if j))
        htmx = bool(request.headers.get("hx-request"))
        base = {
            "identity": signed_in(request),
            "page": "jobs",
            "back": back_query.params(),
            "htmx": htmx,
        }

        def answer(template: str, status: int = 200, **extra: Any) -> Template:
            name = f"fragments/{template}" if htmx else "jobs_bulk.html"
            return Template(
                template_name=name,
                context={**base, "part": f"fragments/{template}", **extra},
                status_code=status,
            )

        problem = None
        if action not in ACTIONS:
            problem = f"action: {action!r} is not one of {', '.join(ACTIONS)}"
        elif not job_ids:
            problem = "job_id: no job was selected; tick the jobs to " + action
        elif len(job_ids) > MAX_BULK:
            problem = f"job_id: {len(job_ids)} jobs given; one request acts on at most {MAX_BULK}"
        if problem is not None:
            # htmx swaps only a 2xx answer into the page; a plain form is told 422.
            return answer("jobs_problem.html", 200 if htmx else 422, problem=problem)

        jobs = _named(context, job_ids)
        verb, _ = ACTIONS[action]
        if not form.get("confirmed"):
            # The confirmation: names every job, writes nothing.
            return answer("jobs_confirm.html", action=action, verb=verb, jobs=jobs)

        actor = signed_in(request).name
        reason = str(form.get("reason") or "") or None
        outcome = await asyncio.to_thread(run_bulk, context, action, jobs, actor, reason)
        lagging = await seen(context)
        found = listing(context, back_query)
        return answer(
            "jobs_result.html",
            action=action,
            verb=verb,
            outcome=outcome,
            lagging=lagging,
            **_table_context(request, found),
        )
