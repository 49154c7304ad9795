"""A job's results as a time series: JSON pages or one CSV stream, from the results view.

Oldest first (by scheduled time, ties by execution id), the order a spreadsheet or a plot
wants. ``cursor`` is the opaque ``next_cursor`` of the previous page: everything after its
last row. ``format=csv`` streams the whole range (or ``limit`` rows, the next cursor in the
``X-Next-Cursor`` header) with a header row, a few thousand rows read at a time.
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import sqlite3
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.params import FromPath, QueryParameter

from lablink.api.bodies import INSTANT_FORMAT, BadRequest, query_instant
from lablink.api.context import ApiContext
from lablink.api.csv_answers import CSV_MEDIA_TYPE, CsvStream, csv_or_json
from lablink.api.openapi import READ_ERRORS
from lablink.api.paging import MAX_POSITION
from lablink.errors import JobNotFound
from lablink.projections.results import (
    iter_series,
    job_known,
    page_end,
    series_rows,
    series_shape,
)

READ = {"role": "viewer"}
# A JSON page holds at most this many points; CSV streams any number.
MAX_JSON_LIMIT = 1000
DEFAULT_JSON_LIMIT = 100
# Rows read per query while a CSV streams.
CSV_CHUNK = 2000
NEXT_CURSOR_HEADER = "X-Next-Cursor"
ACQUISITION_COLUMNS = ("object", "file_name", "size", "rows", "sha256", "data_status")

Format = Literal["json", "csv"]


class FieldReading(msgspec.Struct, kw_only=True):
    value: Any
    unit: str


class DataSummary(msgspec.Struct, kw_only=True):
    object: str | None
    file_name: str | None
    size: int | None
    rows: int | None
    sha256: str | None
    status: str | None


class ResultPoint(msgspec.Struct, kw_only=True):
    """One execution of the job that ran to an end."""

    execution_id: str
    scheduled_time: str
    started_at: str | None
    completed_at: str | None
    status: str
    kind: str
    # Measurements: the value read (a number, text or a boolean) and its unit.
    value: Any
    unit: str | None
    # State captures: each reading ("measurements.<name>") and setting ("settings.<name>").
    fields: dict[str, FieldReading] | None
    # Acquisitions: the captured file's summary (download it from
    # /api/scheduler/executions/{execution_id}/data).
    data: DataSummary | None
    # The value came with a late result (the execution had ended without it).
    late: bool


class ResultSeries(msgspec.Struct, kw_only=True):
    success: bool
    job_id: str
    count: int
    results: list[ResultPoint]
    next_cursor: str | None


def encode_cursor(scheduled_time: str, execution_id: str) -> str:
    raw = msgspec.json.encode([scheduled_time, execution_id])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(text: str | None) -> tuple[str, str] | None:
    if text is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        after = msgspec.json.decode(raw, type=tuple[str, str])
    except (binascii.Error, ValueError, msgspec.DecodeError):
        raise BadRequest.one(
            "cursor", text, "is not a cursor of this list: pass next_cursor of the previous page"
        ) from None
    return after


class ResultController(Controller):
    path = "/api/scheduler/jobs"
    tags = ["results"]  # noqa: RUF012 (Litestar declares it as an instance attribute)

    @get(
        "/{job_id:str}/results",
        opt=READ,
        responses=READ_ERRORS,
        operation_class=csv_or_json("one row per result"),
        description=(
            "The job's results, oldest first: scheduled time, start, end, status, then the"
            " value and unit (measurements), the readings and settings (state captures) or the"
            " captured file's summary (acquisitions). JSON pages by cursor; format=csv streams"
            " the whole range as text/csv with a header row."
        ),
    )
    async def job_results(
        self,
        job_id: FromPath[str],
        context: NamedDependency[ApiContext],
        since: Annotated[
            str | None,
            QueryParameter(
                format=INSTANT_FORMAT,
                description="scheduled_time >= since (ISO 8601 with offset)",
            ),
        ] = None,
        until: Annotated[
            str | None,
            QueryParameter(
                format=INSTANT_FORMAT,
                description="scheduled_time < until (ISO 8601 with offset)",
            ),
        ] = None,
        limit: Annotated[
            int | None,
            QueryParameter(
                ge=1,
                le=MAX_POSITION,
                description=(
                    f"points per page: JSON {DEFAULT_JSON_LIMIT} by default, at most"
                    f" {MAX_JSON_LIMIT}; CSV: every point in range by default"
                ),
            ),
        ] = None,
        cursor: Annotated[
            str | None, QueryParameter(description="next_cursor of the previous page")
        ] = None,
        format: Annotated[Format, QueryParameter(description="json (default) or csv")] = "json",
    ) -> ResultSeries:
        start = query_instant("since", since)
        end = query_instant("until", until)
        if start is not None and end is not None and end <= start:
            raise BadRequest.one("until", until, f"must be after since ({since})")
        after = decode_cursor(cursor)
        conn = context.reader
        if not job_known(conn, job_id):
            raise JobNotFound(job_id)
        if format == "csv":
            return csv_answer(conn, job_id, start, end, after, limit)  # type: ignore[return-value]
        if limit is None:
            limit = DEFAULT_JSON_LIMIT
        elif limit > MAX_JSON_LIMIT:
            raise BadRequest.one(
                "limit",
                limit,
                f"must be at most {MAX_JSON_LIMIT} with format=json (format=csv streams any"
                " number)",
            )
        rows = series_rows(conn, job_id, since=start, until=end, after=after, limit=limit + 1)
        page = rows[:limit]
        next_cursor = (
            encode_cursor(page[-1]["scheduled_time"], page[-1]["execution_id"])
            if len(rows) > limit
            else None
        )
        return ResultSeries(
            success=True,
            job_id=job_id,
            count=len(page),
            results=[msgspec.convert(r, ResultPoint) for r in page],
            next_cursor=next_cursor,
        )


# -- CSV ------------------------------------------------------------------------------------


def csv_header(kinds: Sequence[str], fields: Sequence[tuple[str, str]]) -> list[str]:
    """scheduled_time, started_at, status, then what the rows' kinds hold, then completed_at
    and execution_id. A state field is named ``<name> [<unit>]``."""
    header = ["scheduled_time", "started_at", "status"]
    if "measurement" in kinds:
        header += ["value", "unit"]
    header += [f"{name} [{unit}]" if unit else name for name, unit in fields]
    if "acquisition" in kinds:
        header += list(ACQUISITION_COLUMNS)
    return [*header, "completed_at", "execution_id"]


def csv_cell(value: Any) -> str:
    """What a spreadsheet reads back as the same value: floats to their shortest exact text,
    booleans as true/false, nothing as an empty cell."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def csv_row(
    row: dict[str, Any], kinds: Sequence[str], fields: Sequence[tuple[str, str]]
) -> list[str]:
    cells: list[Any] = [row["scheduled_time"], row["started_at"], row["status"]]
    if "measurement" in kinds:
        cells += [row["value"], row["unit"]]
    readings = row["fields"] or {}
    for name, _unit in fields:
        reading = readings.get(name)
        cells.append(reading["value"] if reading else None)
    if "acquisition" in kinds:
        data = row["data"] or {}
        cells += [data.get(c if c != "data_status" else "status") for c in ACQUISITION_COLUMNS]
    cells += [row["completed_at"], row["execution_id"]]
    return [csv_cell(c) for c in cells]


def csv_answer(
    conn: sqlite3.Connection,
    job_id: str,
    since: datetime | None,
    until: datetime | None,
    after: tuple[str, str] | None,
    limit: int | None,
) -> CsvStream:
    kinds, fields = series_shape(conn, job_id, since, until)
    headers = {
        "Content-Disposition": f'attachment; filename="{_file_name(job_id)}.csv"',
    }
    if limit is not None:
        last = page_end(conn, job_id, since=since, until=until, after=after, limit=limit)
        if last is not None:
            headers[NEXT_CURSOR_HEADER] = encode_cursor(*last)

    async def lines() -> AsyncIterator[bytes]:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\r\n")
        writer.writerow(csv_header(kinds, fields))
        left = limit
        for rows in iter_series(
            conn, job_id, since=since, until=until, after=after, chunk=CSV_CHUNK
        ):
            if left is not None:
                rows = rows[:left]
                left -= len(rows)
            writer.writerows(csv_row(r, kinds, fields) for r in rows)
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
            if left == 0:
                return
        if buffer.tell():
            yield buffer.getvalue().encode()

    return CsvStream(lines(), media_type=CSV_MEDIA_TYPE, headers=headers)


def _file_name(job_id: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in job_id)
    return f"{safe or 'job'}-results"
