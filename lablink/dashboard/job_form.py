"""Creating and editing a job from the browser (``/jobs/new``, ``/jobs/{id}/edit``).

The form's values are turned into the JSON a client would send (form_values.py: numbers as
JSON numbers, a blank field as absent) and then converted and validated exactly as the API does it
(``convert_body``: the same msgspec conversion, ``normalise``, the parameters check), so a
refusal names the same field, value and reason, shown beside that field. The preview beside
the form is the API's preview (``preview_job``). An edit carries the version it started
from: a stale one is refused (``JobVersionConflict``) and the page shows what the job is now.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from litestar import Controller, Request, get, post
from litestar.params import FromPath
from litestar.response import Redirect, Response, Template

from lablink.api.bodies import convert_body
from lablink.api.context import ApiContext
from lablink.api.jobs import preview_job
from lablink.api.queries import get_job, list_equipment
from lablink.api.schemas import JobUpdate
from lablink.dashboard.form_values import (
    DAYS,
    DEFAULTS,
    LABELS,
    SCHEDULE_WORDS,
    TRIGGER_WORDS,
    body_from_values,
    form_keys,
    place_errors,
    request_from_values,
    shown,
    values_from_form,
    values_from_job,
    version_of,
)
from lablink.dashboard.requests import OPERATE, recorded, seen
from lablink.dashboard.requests import context as _context
from lablink.dashboard.session import signed_in
from lablink.errors import (
    Conflict,
    FieldError,
    InvalidRequest,
    JobNotFound,
    JobVersionConflict,
    NotFound,
)
from lablink.events.jobs import CONFLICT_POLICIES, SCHEDULE_TYPES, TRIGGER_TYPES

WRITE = OPERATE
PREVIEW_RUNS = 5


# -- the page ----------------------------------------------------------------------------------


def _equipment(context: ApiContext, current: str) -> list[dict[str, Any]]:
    known = [
        {"id": item["equipment_id"], "kind": item["kind"], "online": item["online"]}
        for item in list_equipment(context.reader, live=context.sightings())
    ]
    if current and all(item["id"] != current for item in known):
        known.append({"id": current, "kind": None, "online": None})
    return known


def _page(
    request: Request[Any, Any, Any],
    values: Mapping[str, Any],
    *,
    job: Mapping[str, Any] | None = None,
    problems: tuple[FieldError, ...] = (),
    alert: str | None = None,
    conflict: Mapping[str, Any] | None = None,
    status_code: int = 200,
) -> Template:
    context = _context(request)
    # An edit also asks why (recorded with the change); its errors go beside it.
    shown = [*form_keys(values), *(["reason"] if job is not None else [])]
    placed, loose = place_errors(problems, shown)
    return Template(
        template_name="job_form.html",
        context={
            "identity": signed_in(request),
            "page": "jobs",
            "job": job,
            "values": values,
            "errors": placed,
            "loose_errors": loose,
            "problem_count": len(problems),
            "alert": alert,
            "conflict": conflict,
            "equipment": _equipment(context, str(values.get("equipment_id") or "")),
            "default_zone": context.settings.timezone,
            **CHOICES,
        },
        status_code=status_code,
    )


CHOICES: dict[str, Any] = {
    "labels": LABELS,
    "shown": shown,
    "schedule_types": [(t, SCHEDULE_WORDS[t]) for t in SCHEDULE_TYPES],
    "trigger_types": [(t, TRIGGER_WORDS[t]) for t in TRIGGER_TYPES],
    "conflict_policies": CONFLICT_POLICIES,
    "days": list(enumerate(DAYS)),
}


async def _fragment(request: Request[Any, Any, Any], template: str) -> Template:
    """A part of the form for the values it holds now (no errors: nothing was submitted)."""
    values = values_from_form(await request.form())
    return Template(
        template_name=template,
        context={
            "values": values,
            "errors": {},
            "default_zone": _context(request).settings.timezone,
            **CHOICES,
        },
    )


def not_found(request: Request[Any, Any, Any], job_id: str) -> Template:
    return Template(
        template_name="not_found.html",
        context={"identity": signed_in(request), "page": "jobs", "what": f"job {job_id!r}"},
        status_code=404,
    )


def _differences(mine: Mapping[str, Any], now: Mapping[str, Any]) -> list[dict[str, Any]]:
    """What the job is now where it differs from what the user submitted, field by field."""
    rows = []
    for field in dict.fromkeys([*form_keys(now), *form_keys(mine)]):
        theirs, yours = now.get(field, ""), mine.get(field, "")
        if (theirs or "") != (yours or ""):
            rows.append(
                {"field": field, "label": LABELS.get(field, field), "now": theirs, "yours": yours}
            )
    return rows


class JobFormController(Controller):
    path = "/"
    include_in_schema = False

    @get("/jobs/new", opt=WRITE)
    async def new_job(self, request: Request[Any, Any, Any]) -> Template:
        values = dict(DEFAULTS)
        # A link may choose the instrument or the kind of job (/jobs/new?equipment_id=...).
        for key in ("equipment_id", "schedule_type", "trigger_type"):
            if key in request.query_params:
                values[key] = request.query_params[key]
        return _page(request, values)

    @post("/jobs/new", opt=WRITE, status_code=200)
    async def create_job(self, request: Request[Any, Any, Any]) -> Response[Any]:
        form = await request.form()
        values = values_from_form(form)
        if form.get("_action") == "refresh":
            return _page(request, values)
        context = _context(request)
        try:
            data = request_from_values(values)
            job_id = await asyncio.to_thread(context.service.create, data, signed_in(request).name)
        except InvalidRequest as exc:
            return _page(request, values, problems=exc.errors, status_code=422)
        if await seen(context) is not None:
            return recorded(request, f"/jobs/{job_id}")
        return Redirect(path=f"/jobs/{job_id}", status_code=303)

    @get("/jobs/{job_id:str}/edit", opt=WRITE)
    async def edit_job(self, request: Request[Any, Any, Any], job_id: FromPath[str]) -> Template:
        job = get_job(_context(request).reader, job_id)
        if job is None:
            return not_found(request, job_id)
        return _page(request, values_from_job(job), job=job)

    @post("/jobs/{job_id:str}/edit", opt=WRITE, status_code=200)
    async def update_job(
        self, request: Request[Any, Any, Any], job_id: FromPath[str]
    ) -> Response[Any]:
        context = _context(request)
        job = get_job(context.reader, job_id)
        if job is None:
            return not_found(request, job_id)
        form = await request.form()
        values = values_from_form(form)
        if form.get("_action") == "refresh":
            return _page(request, values, job=job)
        try:
            version = version_of(values)
            data = convert_body(body_from_values(values, update=True), JobUpdate)
            await asyncio.to_thread(
                context.service.update_job,
                job_id,
                data.changes(),
                signed_in(request).name,
                expected_version=version,
                reason=str(values.get("reason") or "") or None,
            )
        except InvalidRequest as exc:
            return _page(request, values, job=job, problems=exc.errors, status_code=422)
        except JobVersionConflict as exc:
            return await self._stale(request, job_id, values, exc)
        except JobNotFound:
            return not_found(request, job_id)
        except Conflict as exc:
            return _page(request, values, job=job, alert=str(exc), status_code=409)
        if await seen(context) is not None:
            return recorded(request, f"/jobs/{job_id}")
        return Redirect(path=f"/jobs/{job_id}", status_code=303)

    async def _stale(
        self,
        request: Request[Any, Any, Any],
        job_id: str,
        values: dict[str, Any],
        exc: JobVersionConflict,
    ) -> Response[Any]:
        """Someone else saved first: what the job is now, beside what this user typed; their
        values stay in the form with the current version, so saving again applies them."""
        context = _context(request)
        # Nothing written here: what the views show is the job as it is now, or soon after.
        await seen(context)
        job = get_job(context.reader, job_id)
        if job is None:
            return not_found(request, job_id)
        now = values_from_job(job)
        conflict = {
            "expected": exc.expected,
            "actual": exc.actual,
            "job": job,
            "differences": _differences(values, now),
        }
        return _page(
            request,
            {**values, "version": str(job["version"])},
            job=job,
            conflict=conflict,
            status_code=409,
        )

    @post("/fragments/form/trigger", opt=WRITE, status_code=200)
    async def trigger_fields(self, request: Request[Any, Any, Any]) -> Template:
        """The trigger's fieldset for the trigger chosen (htmx swaps it on change)."""
        return await _fragment(request, "fragments/form_trigger.html")

    @post("/fragments/form/parameters", opt=WRITE, status_code=200)
    async def parameter_fields(self, request: Request[Any, Any, Any]) -> Template:
        """The parameters' fields for the type of job chosen."""
        return await _fragment(request, "fragments/form_parameters.html")

    @post("/fragments/form/preview", opt=WRITE, status_code=200)
    async def preview(self, request: Request[Any, Any, Any]) -> Template:
        """The next runs of the job as typed so far, from the API's preview; an incomplete
        form is a list of what is missing, not a failure."""
        context = _context(request)
        values = values_from_form(await request.form())
        job_id = str(values.get("job_id") or "")
        anchor = None
        if job_id and not str(values.get("start_date") or "").strip():
            try:
                anchor = context.service.get_state(job_id).anchor
            except NotFound:
                anchor = None
        runs: list[str] = []
        problems: tuple[FieldError, ...] = ()
        zone = None
        check = None
        try:
            answer = await preview_job(
                context, request_from_values(values), PREVIEW_RUNS, anchor=anchor
            )
            runs, zone, check = answer.next_runs, answer.job.timezone, answer.parameters_check
        except InvalidRequest as exc:
            problems = exc.errors
        return Template(
            template_name="fragments/form_preview.html",
            context={
                "runs": runs,
                "zone": zone,
                "check": check,
                "problems": problems,
                "labels": LABELS,
                "wanted": PREVIEW_RUNS,
            },
        )
