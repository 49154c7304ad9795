"""Execution tracking: one execution, or a filtered, cursor-paged list (newest first)."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.params import FromPath, QueryParameter

from lablink.api.bodies import INSTANT_FORMAT, QueryFilter, api_choices, query_instant
from lablink.api.context import ApiContext
from lablink.api.openapi import READ_ERRORS
from lablink.api.paging import Limit, OlderThan
from lablink.api.queries import get_execution, list_executions
from lablink.api.responses import ExecutionAnswer, ExecutionList, ExecutionView, view, views
from lablink.errors import ExecutionNotFound
from lablink.events import EXECUTION_STATUSES

READ = {"role": "viewer"}


class ExecutionController(Controller):
    path = "/api/scheduler/executions"
    tags = ["executions"]  # noqa: RUF012 (Litestar declares it as an instance attribute)

    @get("/", opt=READ, responses=READ_ERRORS)
    async def list_executions(
        self,
        context: NamedDependency[ApiContext],
        job_id: QueryFilter = None,
        status: Annotated[
            list[str] | None,
            QueryParameter(
                description="repeat or comma-separate: " + ", ".join(EXECUTION_STATUSES)
            ),
        ] = None,
        since: Annotated[
            str | None,
            QueryParameter(
                format=INSTANT_FORMAT, description="actual_time >= since (ISO 8601 with offset)"
            ),
        ] = None,
        until: Annotated[
            str | None,
            QueryParameter(
                format=INSTANT_FORMAT, description="actual_time < until (ISO 8601 with offset)"
            ),
        ] = None,
        limit: Limit = 100,
        cursor: OlderThan = None,
    ) -> ExecutionList:
        statuses = api_choices("status", status, EXECUTION_STATUSES)
        page, next_cursor = list_executions(
            context.reader,
            job_id=job_id,
            status=statuses,
            since=query_instant("since", since),
            until=query_instant("until", until),
            limit=limit,
            before=cursor,
        )
        return ExecutionList(
            success=True,
            count=len(page),
            executions=views(page, ExecutionView),
            next_cursor=next_cursor,
        )

    @get("/{execution_id:str}", opt=READ, responses=READ_ERRORS)
    async def get_execution(
        self, execution_id: FromPath[str], context: NamedDependency[ApiContext]
    ) -> ExecutionAnswer:
        execution = get_execution(context.reader, execution_id)
        if execution is None:
            raise ExecutionNotFound(execution_id)
        return ExecutionAnswer(success=True, execution=view(execution, ExecutionView))
