"""The overview: the screen left open on the lab's wall.

Each card is a fragment of its own, sent anew by the page's live stream (pushed.py) when it
names a topic the card shows (``SHOWS``): today's figures and the running executions on
``executions``, the timeline on ``schedules`` (job definitions, not fires), the alarms on
``alarms``, the instruments on ``equipment``; and on ``tick`` whatever changes without an
event (health, last seen, the timeline's window moving on). ``/fragments/overview/<card>``
serves the same HTML to a page that lost its stream. Every read is the API's own query over
the views.
"""

from __future__ import annotations

import contextlib
from datetime import datetime
from typing import Any

from litestar import Controller, Litestar, MediaType, Request, get
from litestar.params import FromPath
from litestar.response import Response, Template

from lablink.api.context import ApiContext
from lablink.api.probes import report
from lablink.api.queries import (
    FAILED_TODAY,
    alarm_counts,
    list_alarms,
    list_equipment,
    list_executions,
    statistics,
)
from lablink.dashboard import timeline
from lablink.dashboard.live import folded_position
from lablink.dashboard.rendering import no_token
from lablink.dashboard.session import signed_in
from lablink.health import GRAVITY, Component, worst
from lablink.projections.jobs import count_due_by, due_by, paused_states

VIEW = {"page_role": "viewer"}
FAILURES_SHOWN = 10
ALARMS_SHOWN = 20
RUNNING_SHOWN = 100
# Health entries named "<group>.<member>" are shown as one line per group, opened when one
# of its members is not ok.
HEALTH_GROUPS = {"agent": "agents", "task": "supervised tasks"}


def _context(request: Request[Any, Any, Any]) -> ApiContext:
    context: ApiContext = request.app.state["context"]
    return context


def today(context: ApiContext) -> dict[str, Any]:
    stats = statistics(context.reader, now=context.clock.now(), zone=context.zone)
    # The rate counts what ended with or without its result; skipped and missed fires never
    # ran, and are shown on their own.
    ended = stats["successful_today"] + stats["failed_today"]
    rate = None if ended == 0 else 100.0 * stats["successful_today"] / ended
    return {"stats": stats, "success_rate": rate, "ended": ended, "failed_kinds": FAILED_TODAY}


def health(context: ApiContext) -> dict[str, Any]:
    """The components of /health, gravest first, the agent.* and task.* lines grouped."""
    found = report(context)
    singles: list[tuple[str, Component]] = []
    groups: dict[str, list[tuple[str, Component]]] = {}
    for name, component in found.components.items():
        prefix = name.split(".", 1)[0] if "." in name else ""
        if prefix in HEALTH_GROUPS:
            groups.setdefault(prefix, []).append((name, component))
        else:
            singles.append((name, component))

    def gravest_first(item: tuple[str, Component]) -> tuple[int, str]:
        return (-GRAVITY[item[1].state], item[0])

    lines: list[dict[str, Any]] = [
        {"name": name, "state": c.state, "reason": c.reason, "members": None} for name, c in singles
    ]
    for prefix, members in groups.items():
        members.sort(key=gravest_first)
        counts: dict[str, int] = {}
        for _, c in members:
            counts[c.state] = counts.get(c.state, 0) + 1
        lines.append(
            {
                "name": HEALTH_GROUPS[prefix],
                "state": worst([c.state for _, c in members]),
                "reason": ", ".join(
                    f"{n} {s}" for s, n in sorted(counts.items(), key=lambda i: -GRAVITY[i[0]])
                ),
                "members": [
                    {"name": name, "state": c.state, "reason": c.reason} for name, c in members
                ],
            }
        )
    lines.sort(key=lambda line: (-GRAVITY[line["state"]], line["name"]))
    return {"health": {"status": found.status, "lines": lines}}


def running(context: ApiContext) -> dict[str, Any]:
    """The running executions by instrument, with the progress their agents report."""
    page, _ = list_executions(context.reader, status=["running"], limit=RUNNING_SHOWN)
    now = context.clock.now()
    by_equipment: dict[str, list[dict[str, Any]]] = {}
    for execution in sorted(page, key=lambda e: e["started_at"] or ""):
        started = execution["started_at"]
        # The page's script counts it on from started_at each second; this is its first value
        # (never below 0: a fire decided ahead starts at its time, a fraction of a second on).
        execution["elapsed"] = (
            max((now - datetime.fromisoformat(started)).total_seconds(), 0.0) if started else None
        )
        by_equipment.setdefault(execution["equipment_id"] or "—", []).append(execution)
    return {
        "running": sorted(by_equipment.items()),
        "running_count": len(page),
        "running_capped": len(page) >= RUNNING_SHOWN,
    }


def upcoming(context: ApiContext) -> dict[str, Any]:
    now = context.clock.now()
    end = now + timeline.WINDOW
    conn = context.reader
    with contextlib.closing(due_by(conn, end)) as active:
        found = timeline.build(active, paused_states(conn), now, active_due=count_due_by(conn, end))
    # The render's clock, read again: a fire passed since the build is not shown.
    shown = context.clock.now()
    return {
        "timeline": found,
        "hours": found.hours(context.zone, shown),
        "shown": len(found.shown(shown)),
        "cap": timeline.CAP,
    }


def failures(context: ApiContext) -> dict[str, Any]:
    page, _ = list_executions(context.reader, status=FAILED_TODAY, limit=FAILURES_SHOWN)
    return {"failures": page}


def alarms(context: ApiContext) -> dict[str, Any]:
    page, _ = list_alarms(context.reader, state=["active", "acknowledged"], limit=ALARMS_SHOWN)
    return {"alarms": page, "alarm_counts": alarm_counts(context.reader)}


def instruments(context: ApiContext) -> dict[str, Any]:
    return {"instruments": list_equipment(context.reader, live=context.sightings())}


CARDS = {
    "today": today,
    "health": health,
    "running": running,
    "timeline": upcoming,
    "failures": failures,
    "alarms": alarms,
    "instruments": instruments,
}

TEMPLATES = {"today": "fragments/today.html"}

# The topics of the live stream (live.py) each card shows: a message naming one brings the
# card anew (pushed.py); ``tick``: what changes without an event (health, last seen, elapsed
# times, the timeline's window).
SHOWS: dict[str, tuple[str, ...]] = {
    "today": ("executions", "jobs", "tick"),
    "health": ("equipment", "tick"),
    "alarms": ("alarms",),
    "running": ("executions", "tick"),
    "instruments": ("equipment", "executions", "tick"),
    "failures": ("executions",),
    "timeline": ("schedules", "tick"),
}


def template_of(name: str) -> str:
    return TEMPLATES.get(name, f"fragments/overview_{name}.html")


def card_data(app: Litestar, name: str) -> dict[str, Any]:
    """What a card shows, read once per log position and clock second for every screen: all
    of them ask for the same card on the same SSE message, and 20 screens reading it 20 times
    cost the engine's loop more than the issue's target allows (BENCHMARKS.md, "Dashboard")."""
    context: ApiContext = app.state["context"]
    memo: dict[str, tuple[tuple[int, int], dict[str, Any]]] = app.state.setdefault(
        "overview_cards", {}
    )
    key = _moment(context)
    hit = memo.get(name)
    if hit is not None and hit[0] == key:
        return hit[1]
    data = CARDS[name](context)
    memo[name] = (key, data)
    return data


def _moment(context: ApiContext) -> tuple[int, int]:
    """What a card depends on: the log's folded position and the clock's second."""
    return (folded_position(context), int(context.clock.now().timestamp()))


def render_card(app: Litestar, name: str, can_write: bool) -> str:
    """A card as every screen of a role sees it: nothing of one screen in it (``shared``: its
    forms leave the CSRF token to htmx's header; a template asking for the token fails)."""
    engine = app.template_engine
    if engine is None:
        raise RuntimeError("the dashboard's templates are not configured")
    template = engine.get_template(template_of(name))
    html: str = template.render(
        can_write=can_write, shared=True, csrf_token=no_token, **card_data(app, name)
    )
    return html


def shared_card(request: Request[Any, Any, Any], name: str) -> Response[Any]:
    """A card rendered once per log position, clock second and role for every screen that
    fetches it: rendering, not only reading, is what the screens cost (20 screens rendering
    the 100-row table of running executions each second took a fifth of the engine's loop
    at 1,000 fires/s). The overview's own stream sends the cards without a fetch (pushed.py);
    a screen fetches one when its stream was lost."""
    can_write = signed_in(request).allows("operator")
    key = (*_moment(_context(request)), can_write)
    memo: dict[str, tuple[tuple[int, int, bool], str]] = request.app.state.setdefault(
        "overview_html", {}
    )
    hit = memo.get(name)
    if hit is None or hit[0] != key:
        hit = memo[name] = (key, render_card(request.app, name, can_write))
    return Response(content=hit[1], media_type=MediaType.HTML)


def _card(request: Request[Any, Any, Any], name: str, **extra: Any) -> Template:
    identity = signed_in(request)
    return Template(
        template_name=template_of(name),
        context={
            "identity": identity,
            "can_write": identity.allows("operator"),
            **card_data(request.app, name),
            **extra,
        },
    )


def alarms_card(request: Request[Any, Any, Any], *, notice: str, failed: bool) -> Template:
    """The alarms card after an acknowledge or a clear, with what happened (alarm_actions)."""
    return _card(request, "alarms", notice=notice, failed=failed)


class OverviewController(Controller):
    path = "/"
    include_in_schema = False

    @get("/", opt=VIEW)
    async def overview(self, request: Request[Any, Any, Any]) -> Template:
        context = _context(request)
        identity = signed_in(request)
        data: dict[str, Any] = {}
        for build in CARDS.values():
            data.update(build(context))
        return Template(
            template_name="overview.html",
            context={
                "identity": identity,
                "page": "overview",
                "can_write": identity.allows("operator"),
                **data,
            },
        )

    @get("/fragments/overview/{card:str}", opt=VIEW)
    async def fragment(self, request: Request[Any, Any, Any], card: FromPath[str]) -> Response[Any]:
        if card not in CARDS:
            return Response(
                content=f"no overview card {card!r}: expected one of {', '.join(CARDS)}",
                status_code=404,
                media_type=MediaType.TEXT,
            )
        return shared_card(request, card)
