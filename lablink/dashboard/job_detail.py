"""The job detail page, ``/jobs/{job_id}``: the configuration in words, the next 10 runs, the
history counts, the executions (paged, newest first, live), a chart of a measurement job's
values, download links for acquisitions, and the buttons run now, pause/resume, edit and
delete.

Reads use the API's queries over ``context.reader``; writes go through the services the API
uses (``context.run_now``, ``context.service``), with the signed-in key's name as the
actor, and answer once the views show them (read-your-writes). An htmx action gets the
actions card again, with what happened or why not in it (htmx swaps only 2xx answers, so a
refusal is that card with an alert), and an ``HX-Trigger`` that makes the other parts
reload; a plain form is sent back to the page (303), or shown the page with the alert.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from litestar import Controller, Litestar, MediaType, Request, get, post
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect, Response, ServerSentEvent, Stream, Template

from lablink.api.context import ApiContext
from lablink.api.data import capture_stream, data_unavailable
from lablink.api.jobs import upcoming_runs
from lablink.api.queries import get_job, job_history, list_executions
from lablink.api.reads import Reads
from lablink.dashboard import chart as charts
from lablink.dashboard.drawer import drawer_of
from lablink.dashboard.drawings import Drawing, DrawingContext
from lablink.dashboard.live import stream
from lablink.dashboard.pushed import Card, PageCards
from lablink.dashboard.requests import OPERATE, VIEW, recorded, seen, whole_number
from lablink.dashboard.requests import context as _context
from lablink.dashboard.session import signed_in
from lablink.dashboard.words import describe, policies
from lablink.errors import (
    Conflict,
    DataBusUnavailable,
    DataUnavailable,
    InvalidRequest,
    JobNotFound,
    NoSchedulerLeader,
    NotFound,
)
from lablink.projections.executions import get_execution_row
from lablink.projections.results import series_envelope, series_mark

PAGE_SIZE = 25
NEXT_RUNS = 10
# Charts kept for the screens that ask again (per job and range).
CHARTS_KEPT = 64
# Sent with an action's answer: the parts of the page listening for it load again at once,
# without waiting for the live stream's next message.
CHANGED_EVENT = "job-changed"
# The topics each part of the page is sent anew on (job_cards).
LIVE_TOPICS = {
    "summary": ("jobs", "executions"),
    "chart": ("executions",),
    "executions": ("executions",),
}


class BadQuery(ValueError):
    """A query parameter of a dashboard page that cannot be used: named, with its value."""

    def __init__(self, field: str, value: str, reason: str) -> None:
        self.field, self.value, self.reason = field, value, reason
        super().__init__(f"{field}={value!r}: {reason}")


def _range(text: str | None) -> str:
    name = text or charts.DEFAULT_RANGE
    if name not in charts.RANGES:
        raise BadQuery("range", name, "must be one of " + ", ".join(charts.RANGES))
    return name


def _before(text: str | None) -> int | None:
    if text is None or text == "":
        return None
    position = whole_number(text)
    if position is None:
        raise BadQuery("before", text, "must be a position (a whole number) from the Older link")
    return position


# -- what the templates show -----------------------------------------------------------------


def summary(context: Reads, job: dict[str, Any]) -> dict[str, Any]:
    job_id = job["job_id"]
    try:
        state, runs = upcoming_runs(context, job_id, NEXT_RUNS)
    except JobNotFound:
        runs, enabled = [], False
    else:
        enabled = state.enabled
    return {
        "job": job,
        "words": describe(job),
        "policies": policies(job),
        "next_runs": runs,
        "next_runs_enabled": enabled,
        "history": job_history(context.reader, job_id),
    }


def executions(context: Reads, job_id: str, before: int | None) -> dict[str, Any]:
    page, cursor = list_executions(context.reader, job_id=job_id, limit=PAGE_SIZE, before=before)
    for execution in page:
        execution["lateness"] = _lateness(execution)
    return {"executions": page, "older": cursor, "before": before}


def _lateness(execution: dict[str, Any]) -> float | None:
    """How late the instrument began it, when its result says; else how late it started."""
    on_instrument = execution["lateness"]["instrument_started_seconds"]
    if on_instrument is not None:
        return float(on_instrument)
    scheduled, started = execution.get("scheduled_time"), execution.get("started_at")
    if not scheduled or not started:
        return None
    return (datetime.fromisoformat(started) - datetime.fromisoformat(scheduled)).total_seconds()


async def measurement_chart(app: Litestar, job: dict[str, Any], range_name: str) -> charts.Chart:
    """The chart, built once per job, range, newest result of the job and clock minute for
    every screen that asks: every execution anywhere in the lab refreshes the card, and
    costs the loop one index lookup when this job's series did not change. The build reads
    the window through SQLite's bucketing (``series_envelope``) on a thread, over its own
    connection."""
    context: ApiContext = app.state["context"]
    job_id, zone = job["job_id"], job["timezone"]
    now = context.clock.now()
    key = (series_mark(context.reader, job_id), int(now.timestamp()) // 60, zone)
    memo: dict[tuple[str, str], tuple[Any, asyncio.Future[charts.Chart]]] = app.state.setdefault(
        "job_charts", {}
    )
    hit = memo.get((job_id, range_name))
    if hit is None or hit[0] != key:
        build = asyncio.to_thread(_build_chart, context, job_id, zone, range_name, now)
        hit = memo[(job_id, range_name)] = (key, asyncio.ensure_future(build))
        while len(memo) > CHARTS_KEPT:
            del memo[next(iter(memo))]
    try:
        # Shielded: a screen that goes away does not cancel the build the others wait for.
        return await asyncio.shield(hit[1])
    except Exception:
        if memo.get((job_id, range_name)) is hit:
            del memo[(job_id, range_name)]
        raise


def _build_chart(
    context: ApiContext, job_id: str, zone: str, range_name: str, until: datetime
) -> charts.Chart:
    """On a worker thread: over a connection of its own."""
    reader = context.connect_reader()
    try:
        return chart_over(reader, job_id, zone, range_name, until)
    finally:
        reader.close()


def chart_over(
    reader: sqlite3.Connection, job_id: str, zone: str, range_name: str, until: datetime
) -> charts.Chart:
    """The chart of ``range_name`` up to ``until``, read over ``reader``."""
    since = until - charts.RANGES[range_name]
    envelope = series_envelope(
        reader, job_id, since, until, charts.columns_of(), newest=charts.TABLE_AT_MOST
    )
    return charts.chart_of(envelope, since=since, until=until, zone=zone)


async def chart_context(app: Litestar, job: dict[str, Any], range_name: str) -> dict[str, Any]:
    return {
        "job": job,
        "chart": await measurement_chart(app, job, range_name),
        "range": range_name,
        "ranges": charts.RANGE_LABELS,
    }


async def _page(
    request: Request[Any, Any, Any],
    job: dict[str, Any],
    *,
    before: int | None = None,
    range_name: str = charts.DEFAULT_RANGE,
    notice: str | None = None,
    problem: str | None = None,
    status_code: int = 200,
) -> Template:
    context = _context(request)
    values: dict[str, Any] = {
        "identity": signed_in(request),
        "page": "jobs",
        **summary(context, job),
        **executions(context, job["job_id"], before),
        "notice": notice,
        "problem": problem,
        "actions_key": actions_key(job),
        "range": range_name,
    }
    if job["schedule_type"] == "measurement":
        values.update(await chart_context(request.app, job, range_name))
    return Template(template_name="job.html", context=values, status_code=status_code)


def _not_found(request: Request[Any, Any, Any], job_id: str) -> Template:
    return Template(
        template_name="not_found.html",
        context={"identity": signed_in(request), "page": "jobs", "what": f"no job {job_id!r}"},
        status_code=404,
    )


def _refused(request: Request[Any, Any, Any], exc: BadQuery) -> Template:
    return Template(
        template_name="job_refused.html",
        context={"identity": signed_in(request), "page": "jobs", "problem": exc},
        status_code=400,
    )


def _fragment(name: str, values: dict[str, Any], status_code: int = 200) -> Template:
    values = {**values, "actions_key": actions_key(values["job"])} if "job" in values else values
    return Template(template_name=f"fragments/{name}.html", context=values, status_code=status_code)


def actions_key(job: dict[str, Any]) -> str:
    """What the actions card depends on: which buttons apply, and the name Delete confirms."""
    return f"{job['status']}|{job['enabled']}|{job['name']}"


def job_cards(app: Litestar, job_id: str, range_name: str, before: int | None) -> PageCards:
    """A job page's parts that its stream sends (job.html's ``sse-swap``). The actions card is
    not one of them: it holds the screen's CSRF token and what its last action came to, and
    is fetched on ``schedules`` only when the buttons that apply may have changed."""
    context: ApiContext = app.state["context"]
    parts = ["summary", "executions"]
    job = get_job(context.reader, job_id)
    if job is not None and job["schedule_type"] == "measurement":
        parts.append("chart")
    cards = {
        part: Card(frozenset(LIVE_TOPICS[part]), Drawing("job", (job_id, part, range_name, before)))
        for part in parts
    }
    return PageCards(drawer_of(app), ("job", job_id, range_name, before), cards)


def draw_job_part(
    context: DrawingContext, job_id: str, part: str, range_name: str, before: int | None
) -> str:
    """In the drawing process: one part of a job's page (job_cards), or that the job is gone."""
    job = context.job(job_id)
    if job is None:
        return context.fragment("job_gone", {"job_id": job_id})
    values: dict[str, Any]
    if part == "summary":
        values = summary(context, job)
    elif part == "executions":
        values = executions(context, job_id, before)
    elif part == "chart":
        now = context.clock.now()
        chart = chart_over(context.reader, job_id, job["timezone"], range_name, now)
        values = {"chart": chart, "range": range_name, "ranges": charts.RANGE_LABELS}
    else:
        raise ValueError(f"part {part!r}: a job's page has summary, executions and chart")
    return context.fragment(f"job_{part}", {**values, "job": job})


# -- the controller ---------------------------------------------------------------------------


class JobDetailController(Controller):
    path = "/"
    include_in_schema = False

    @get("/jobs/{job_id:str}", opt=VIEW)
    async def job_page(
        self,
        request: Request[Any, Any, Any],
        job_id: FromPath[str],
        before: FromQuery[str | None] = None,
        range: FromQuery[str | None] = None,
    ) -> Template:
        job = get_job(_context(request).reader, job_id)
        if job is None:
            return _not_found(request, job_id)
        try:
            return await _page(request, job, before=_before(before), range_name=_range(range))
        except BadQuery as exc:
            return _refused(request, exc)

    @get("/live/job/{job_id:str}", opt=VIEW)
    async def live(
        self,
        request: Request[Any, Any, Any],
        job_id: FromPath[str],
        before: FromQuery[str | None] = None,
        range: FromQuery[str | None] = None,
    ) -> ServerSentEvent | Response[str]:
        """The page's stream: the topics, and after them its summary, chart and executions
        as the page shows them (at its chart range and executions page), drawn once for
        every screen of the same page (pushed.PageCards)."""
        try:
            cards = job_cards(request.app, job_id, _range(range), _before(before))
        except BadQuery as exc:
            return Response(content=str(exc), status_code=400, media_type=MediaType.TEXT)
        return stream(request, cards)

    @get("/fragments/job/{job_id:str}/summary", opt=VIEW)
    async def summary_fragment(
        self, request: Request[Any, Any, Any], job_id: FromPath[str]
    ) -> Template:
        context = _context(request)
        job = get_job(context.reader, job_id)
        if job is None:
            return _fragment("job_gone", {"job_id": job_id}, 404)
        return _fragment("job_summary", summary(context, job))

    @get("/fragments/job/{job_id:str}/actions", opt=VIEW)
    async def actions_fragment(
        self,
        request: Request[Any, Any, Any],
        job_id: FromPath[str],
        shown: FromQuery[str | None] = None,
    ) -> Template | Response[None]:
        """The buttons again, or 204 (htmx keeps what it has) when the buttons shown are still
        the right ones: every execution event names the jobs topic, and swapping the card
        each time would take the keyboard focus off a button and the last notice away."""
        job = get_job(_context(request).reader, job_id)
        if job is None:
            return _fragment("job_gone", {"job_id": job_id}, 404)
        if shown is not None and shown == actions_key(job):
            return Response(content=None, status_code=204)
        return _fragment("job_actions", {"job": job, "identity": signed_in(request)})

    @get("/fragments/job/{job_id:str}/executions", opt=VIEW)
    async def executions_fragment(
        self,
        request: Request[Any, Any, Any],
        job_id: FromPath[str],
        before: FromQuery[str | None] = None,
    ) -> Template:
        context = _context(request)
        job = get_job(context.reader, job_id)
        if job is None:
            return _fragment("job_gone", {"job_id": job_id}, 404)
        try:
            values = executions(context, job_id, _before(before))
        except BadQuery as exc:
            return _fragment("job_bad_query", {"problem": exc}, 400)
        return _fragment("job_executions", {"job": job, **values})

    @get("/fragments/job/{job_id:str}/chart", opt=VIEW)
    async def chart_fragment(
        self,
        request: Request[Any, Any, Any],
        job_id: FromPath[str],
        range: FromQuery[str | None] = None,
    ) -> Template:
        context = _context(request)
        job = get_job(context.reader, job_id)
        if job is None:
            return _fragment("job_gone", {"job_id": job_id}, 404)
        try:
            range_name = _range(range)
        except BadQuery as exc:
            return _fragment("job_bad_query", {"problem": exc}, 400)
        return _fragment("job_chart", await chart_context(request.app, job, range_name))

    @get("/jobs/{job_id:str}/executions/{execution_id:str}/data", opt=VIEW)
    async def download(
        self,
        request: Request[Any, Any, Any],
        job_id: FromPath[str],
        execution_id: FromPath[str],
    ) -> Stream | Template:
        """The acquisition's captured file, through the API's own download code (ranges, ETag,
        file name); the session stands in for the API key."""
        context = _context(request)
        row = get_execution_row(context.reader, execution_id)
        if row is not None and row["job_id"] != job_id:
            row = None
        try:
            if row is None:
                raise NotFound(execution_id)
            return await capture_stream(context, execution_id, request)
        except (NotFound, DataUnavailable, DataBusUnavailable) as exc:
            status = _data_status(request, exc)
            return Template(
                template_name="job_refused.html",
                context={
                    "identity": signed_in(request),
                    "page": "jobs",
                    "problem": f"execution {execution_id!r} of job {job_id!r}: {exc}",
                    "back": f"/jobs/{job_id}",
                },
                status_code=status,
            )

    @post("/jobs/{job_id:str}/run", opt=OPERATE, status_code=200)
    async def run(self, request: Request[Any, Any, Any], job_id: FromPath[str]) -> Response[Any]:
        context = _context(request)
        who = signed_in(request).name

        async def act() -> str:
            execution_id = await context.run_now(job_id, who)
            return f"Started: execution {execution_id}."

        return await _act(request, job_id, act)

    @post("/jobs/{job_id:str}/pause", opt=OPERATE, status_code=200)
    async def pause(self, request: Request[Any, Any, Any], job_id: FromPath[str]) -> Response[Any]:
        act = _service(request, "pause_job", job_id, await _reason(request), "Paused.")
        return await _act(request, job_id, act)

    @post("/jobs/{job_id:str}/resume", opt=OPERATE, status_code=200)
    async def resume(self, request: Request[Any, Any, Any], job_id: FromPath[str]) -> Response[Any]:
        act = _service(request, "resume_job", job_id, await _reason(request), "Resumed.")
        return await _act(request, job_id, act)

    @post("/jobs/{job_id:str}/delete", opt=OPERATE, status_code=200)
    async def delete(self, request: Request[Any, Any, Any], job_id: FromPath[str]) -> Response[Any]:
        context = _context(request)
        who = signed_in(request).name
        reason = await _reason(request)
        try:
            await asyncio.to_thread(context.service.delete_job, job_id, who, reason)
        except (NotFound, Conflict, InvalidRequest) as exc:
            return await _answer(request, job_id, None, str(exc), _status(exc))
        lagging = await seen(context)
        if lagging is not None:
            # Recorded, but the views still show the job: said so, never an error.
            if request.headers.get("hx-request"):
                return await _answer(request, job_id, lagging, None, 200)
            return recorded(request, "/jobs")
        if request.headers.get("hx-request"):
            return Response(content=None, status_code=200, headers={"HX-Redirect": "/jobs"})
        return Redirect(path="/jobs", status_code=303)


async def _reason(request: Request[Any, Any, Any]) -> str | None:
    """The reason typed beside a pause, resume or delete (checked by the command)."""
    return str((await request.form()).get("reason") or "") or None


def _service(
    request: Request[Any, Any, Any], command: str, job_id: str, reason: str | None, done: str
) -> Callable[[], Awaitable[str]]:
    context = _context(request)
    who = signed_in(request).name

    async def act() -> str:
        await asyncio.to_thread(getattr(context.service, command), job_id, who, reason)
        return done

    return act


def _status(exc: Exception) -> int:
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, InvalidRequest):
        return 422
    if isinstance(exc, NoSchedulerLeader):
        return 503
    return 409


def _data_status(request: Request[Any, Any, Any], exc: Exception) -> int:
    """The status the API's download answers with for the same reason."""
    if isinstance(exc, DataBusUnavailable):
        return 503
    if isinstance(exc, DataUnavailable):
        return data_unavailable(request, exc).status_code or 404
    return 404


async def _act(
    request: Request[Any, Any, Any], job_id: str, act: Callable[[], Awaitable[str]]
) -> Response[Any]:
    context = _context(request)
    notice, problem, status = None, None, 200
    try:
        notice = await act()
    except (NotFound, Conflict, InvalidRequest, NoSchedulerLeader) as exc:
        problem, status = str(exc), _status(exc)
    lagging = await seen(context)
    if lagging is not None and problem is None:
        # Recorded, but the views do not show it yet: said so, never an error.
        notice = f"{notice} {lagging}"
        if not request.headers.get("hx-request"):
            return recorded(request, f"/jobs/{job_id}")
    return await _answer(request, job_id, notice, problem, status)


async def _answer(
    request: Request[Any, Any, Any],
    job_id: str,
    notice: str | None,
    problem: str | None,
    status: int,
) -> Response[Any]:
    context = _context(request)
    job = get_job(context.reader, job_id)
    if job is None:
        return _not_found(request, job_id)
    if request.headers.get("hx-request"):
        values = {"job": job, "identity": signed_in(request), "notice": notice, "problem": problem}
        answer = _fragment("job_actions", values)
        answer.headers["HX-Trigger"] = CHANGED_EVENT
        return answer
    if problem is None:
        return Redirect(path=f"/jobs/{job_id}", status_code=303)
    return await _page(request, job, problem=problem, status_code=status)
