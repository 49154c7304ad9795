"""Acknowledge and clear an alarm from the dashboard (the overview's alarms card, the alarms
page): ``POST /alarms/{alarm_id}/acknowledge`` and ``POST /alarms/{alarm_id}/clear``, with an
optional form field ``note``.

The write goes through the same service as ``POST /api/alarms/{id}/acknowledge``
(``context.alarms``), with the signed-in key's name as who acknowledged and as the actor; the
answer waits for the views to show it (read-your-writes). An htmx request gets the overview's
alarms card again (htmx swaps only 2xx answers, so a refusal comes back as that card with an
alert in it); a plain form is sent back to ``next`` (303), or shown why nothing changed.
Viewers are refused by the guard (403), whatever the page showed them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, post
from litestar.enums import RequestEncodingType
from litestar.params import Body, FromPath
from litestar.response import Redirect, Response, Template

from lablink.dashboard.overview import alarms_card
from lablink.dashboard.requests import OPERATE, recorded, seen
from lablink.dashboard.requests import context as _context
from lablink.dashboard.session import safe_next, signed_in
from lablink.errors import AlarmNotFound, Conflict, InvalidRequest
from lablink.projections.follower import ViewsBehind

# The API's own bound on a note (api/alarms.py).
MAX_NOTE = 2000


class AlarmActionForm(msgspec.Struct, kw_only=True):
    note: str = ""
    next: str = "/"


async def _act(
    request: Request[Any, Any, Any],
    alarm_id: str,
    form: AlarmActionForm,
    command: Callable[[str, str, str, str], object],
    done: str,
) -> Response[Any]:
    context = _context(request)
    who = signed_in(request).name
    htmx = bool(request.headers.get("hx-request"))
    problem, status = None, 200
    try:
        if len(form.note) > MAX_NOTE:
            raise InvalidRequest.one(
                "note", form.note[:40] + "…", f"must be at most {MAX_NOTE} characters"
            )
        await asyncio.to_thread(command, alarm_id, who, form.note.strip(), who)
    except ViewsBehind as exc:
        # The alarm could not be found yet (the views are behind): nothing was written.
        problem, status = f"the page cannot act on it yet: {exc}", 503
    except AlarmNotFound as exc:
        problem, status = str(exc), 404
    except InvalidRequest as exc:
        problem, status = "; ".join(e.describe() for e in exc.errors), 422
    except Conflict as exc:
        problem, status = str(exc), 409
    lagging = await seen(context) if problem is None else None
    if htmx:
        notice = problem if problem is not None else f"alarm {alarm_id} {done}"
        notice = notice if lagging is None else f"{notice}. {lagging}"
        return alarms_card(request, notice=notice, failed=problem is not None)
    if lagging is not None:
        return recorded(request, safe_next(form.next), page="alarms")
    if problem is None:
        return Redirect(path=safe_next(form.next), status_code=303)
    return Template(
        template_name="alarm_refused.html",
        context={
            "identity": signed_in(request),
            "page": "alarms",
            "alarm_id": alarm_id,
            "reason": problem,
            "back": safe_next(form.next),
        },
        status_code=status,
    )


Form = Annotated[AlarmActionForm, Body(media_type=RequestEncodingType.URL_ENCODED)]


class AlarmActionsController(Controller):
    path = "/alarms"
    include_in_schema = False

    @post("/{alarm_id:str}/acknowledge", opt=OPERATE, status_code=200)
    async def acknowledge(
        self, request: Request[Any, Any, Any], alarm_id: FromPath[str], data: Form
    ) -> Response[Any]:
        alarms = _context(request).alarms
        return await _act(request, alarm_id, data, alarms.acknowledge, "acknowledged")

    @post("/{alarm_id:str}/clear", opt=OPERATE, status_code=200)
    async def clear(
        self, request: Request[Any, Any, Any], alarm_id: FromPath[str], data: Form
    ) -> Response[Any]:
        alarms = _context(request).alarms
        return await _act(request, alarm_id, data, alarms.clear, "cleared")
