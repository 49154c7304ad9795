"""Alarms: list and read (viewer), acknowledge and clear (operator)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, QueryParameter

from lablink.api.auth import actor
from lablink.api.bodies import QueryFilter, api_choices, strict_body
from lablink.api.context import ApiContext
from lablink.api.openapi import READ_ERRORS, WRITE_ERRORS
from lablink.api.paging import Limit, OlderThan
from lablink.api.queries import get_alarm, list_alarms
from lablink.api.responses import AlarmAnswer, AlarmList, AlarmView, view, views
from lablink.errors import AlarmNotFound, InvalidRequest

READ = {"role": "viewer"}
WRITE = {"role": "operator"}
STATES = ("active", "acknowledged", "cleared")
SEVERITIES = ("info", "warning", "critical")


class AlarmAction(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Who acknowledges or clears (default: the API key's name) and why."""

    by: str | None = msgspec.field(default=None)
    note: str = ""


async def _action(request: Request[Any, Any, Any]) -> AlarmAction:
    if not (await request.body()).strip():
        return AlarmAction()
    action = await strict_body(request, AlarmAction)
    # Body fields, like every other body field: 422.
    if action.by is not None and not action.by.strip():
        raise InvalidRequest.one("by", action.by, "must name someone, or be left out")
    if len(action.note) > 2000:
        raise InvalidRequest.one("note", action.note[:40] + "…", "must be at most 2000 characters")
    return action


async def _act(
    command: Callable[[str, str, str, str], object],
    alarm_id: str,
    request: Request[Any, Any, Any],
    context: ApiContext,
) -> AlarmAnswer:
    """Acknowledge or clear: ``by`` defaults to the key's name, which is the actor."""
    action = await _action(request)
    who = actor(request)
    await asyncio.to_thread(command, alarm_id, action.by or who, action.note, who)
    await context.caught_up()
    alarm = get_alarm(context.reader, alarm_id)
    return AlarmAnswer(success=True, alarm=None if alarm is None else view(alarm, AlarmView))


class AlarmController(Controller):
    path = "/api/alarms"
    tags = ["alarms"]  # noqa: RUF012 (Litestar declares it as an instance attribute)

    @get("/", opt=READ, responses=READ_ERRORS)
    async def list_alarms(
        self,
        context: NamedDependency[ApiContext],
        # "state" is a name Litestar reserves for its own kwarg: read it by its query name.
        alarm_state: Annotated[
            list[str] | None,
            QueryParameter(
                name="state", description="repeat or comma-separate: " + ", ".join(STATES)
            ),
        ] = None,
        severity: Annotated[
            list[str] | None,
            QueryParameter(description="repeat or comma-separate: " + ", ".join(SEVERITIES)),
        ] = None,
        equipment_id: QueryFilter = None,
        job_id: QueryFilter = None,
        limit: Limit = 100,
        cursor: OlderThan = None,
    ) -> AlarmList:
        """Alarms, newest first."""
        page, next_cursor = list_alarms(
            context.reader,
            state=api_choices("state", alarm_state, STATES),
            severity=api_choices("severity", severity, SEVERITIES),
            equipment_id=equipment_id,
            job_id=job_id,
            limit=limit,
            before=cursor,
        )
        return AlarmList(
            success=True, count=len(page), alarms=views(page, AlarmView), next_cursor=next_cursor
        )

    @get("/{alarm_id:str}", opt=READ, responses=READ_ERRORS)
    async def get_alarm(
        self, alarm_id: FromPath[str], context: NamedDependency[ApiContext]
    ) -> AlarmAnswer:
        alarm = get_alarm(context.reader, alarm_id)
        if alarm is None:
            raise AlarmNotFound(alarm_id)
        return AlarmAnswer(success=True, alarm=view(alarm, AlarmView))

    @post("/{alarm_id:str}/acknowledge", status_code=200, opt=WRITE, responses=WRITE_ERRORS)
    async def acknowledge(
        self,
        alarm_id: FromPath[str],
        request: Request[Any, Any, Any],
        context: NamedDependency[ApiContext],
    ) -> AlarmAnswer:
        """Someone has seen it: `{"by": name, "note": text}`, both optional."""
        return await _act(context.alarms.acknowledge, alarm_id, request, context)

    @post("/{alarm_id:str}/clear", status_code=200, opt=WRITE, responses=WRITE_ERRORS)
    async def clear(
        self,
        alarm_id: FromPath[str],
        request: Request[Any, Any, Any],
        context: NamedDependency[ApiContext],
    ) -> AlarmAnswer:
        """The cause is dealt with: `{"by": name, "note": text}`, both optional."""
        return await _act(context.alarms.clear, alarm_id, request, context)
