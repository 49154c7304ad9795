"""Downloading an execution's captured data: ``GET /api/scheduler/executions/{id}/data``.

The bytes come from the captures' bucket (``lablink.bus.data_bucket``) chunk by chunk, never
the whole capture in memory. ``ETag`` is the capture's SHA-256 as its execution recorded it;
``Range`` (one range, ``bytes=a-b``, ``a-``, ``-n``) answers 206, a range past the end 416;
``If-None-Match`` with the ETag answers 304. The execution's data status decides the rest:
none (or no such execution) 404, ``pending_upload`` 409, ``removed`` 410 naming when and why
(and 410 "its record is pending" when the view says ``stored`` but the object is gone),
and a bus that cannot be reached 503 naming NATS.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import AsyncIterator
from typing import Any

import structlog
from litestar import Controller, Request, Response, get
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath
from litestar.response import Stream

from lablink.api.context import ApiContext
from lablink.api.openapi import READ_ERRORS, ErrorBody
from lablink.bus.data_bucket import DataBucket, StoredObject
from lablink.errors import (
    DataBusUnavailable,
    DataNotFound,
    DataPending,
    DataRemovalPending,
    DataRemoved,
    DataUnavailable,
    RangeNotSatisfiable,
)
from lablink.projections.executions import get_execution_row, removal_of
from lablink.projections.views import data_view, iso

log = structlog.get_logger(tag="api")

READ = {"role": "viewer"}
MEDIA_TYPE = "text/csv"
SEND_BYTES = 1024 * 1024
# At most 19 digits (a signed 64-bit integer, far past any capture): a longer number would
# make int() refuse it (more than 4,300 digits) or cost time; such a header does not match and
# is ignored, which RFC 9110 allows.
_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d{0,19})\s*-\s*(\d{0,19})\s*$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _spec(description: str) -> ResponseSpec:
    return ResponseSpec(data_container=ErrorBody, description=description, generate_examples=False)


DATA_ERRORS: dict[int, ResponseSpec] = {
    **READ_ERRORS,
    200: ResponseSpec(
        data_container=str,
        media_type=MEDIA_TYPE,
        generate_examples=False,
        description=(
            "the capture (CSV). Headers: Content-Length; ETag, its SHA-256 (hex, quoted);"
            " Content-Disposition, attachment named <job name>_<instrument>_<scheduled"
            " instant>.csv; Accept-Ranges: bytes"
        ),
    ),
    206: ResponseSpec(
        data_container=str,
        media_type=MEDIA_TYPE,
        generate_examples=False,
        description="the bytes of the Range; Content-Range: bytes first-last/size",
    ),
    304: ResponseSpec(
        data_container=None, description="If-None-Match named the ETag: not sent again"
    ),
    404: _spec("no such execution, or it captured no data (errors[0] names the execution)"),
    409: _spec("the capture is still pending_upload: its agent retries until the store has it"),
    410: _spec(
        "retention or the byte bound removed the capture: the detail says when and why (or"
        " that the removal's record is pending)"
    ),
    416: _spec("the Range selects no byte of the capture; Content-Range: bytes */<size>"),
    503: _spec(
        "NATS, which holds the captures, cannot be reached (errors[0].field is nats); or the"
        " views are behind the log. Retry-After"
    ),
}


def _problem(status: int, exc: DataUnavailable, field: str, value: Any) -> Response[Any]:
    return Response(
        {
            "success": False,
            "status_code": status,
            "detail": str(exc),
            "errors": [{"field": field, "value": value, "reason": exc.reason}],
        },
        status_code=status,
    )


def data_unavailable(request: Request[Any, Any, Any], exc: DataUnavailable) -> Response[Any]:
    if isinstance(exc, DataRemoved):
        response = _problem(410, exc, "execution_id", exc.execution_id)
        response.content["removed_at"] = exc.removed_at
        response.content["removal_reason"] = exc.removal
        return response
    if isinstance(exc, DataPending):
        return _problem(409, exc, "execution_id", exc.execution_id)
    if isinstance(exc, RangeNotSatisfiable):
        response = _problem(416, exc, "Range", exc.range_header)
        response.headers["Content-Range"] = f"bytes */{exc.size}"
        return response
    return _problem(404, exc, "execution_id", exc.execution_id)


def bus_unavailable(request: Request[Any, Any, Any], exc: DataBusUnavailable) -> Response[Any]:
    log.warning("data download: NATS unavailable", url=exc.url, error=exc.cause)
    response = Response(
        {
            "success": False,
            "status_code": 503,
            "detail": f"{exc}: the captures are in its object store; try again later",
            "errors": [{"field": "nats", "value": exc.url, "reason": exc.cause}],
        },
        status_code=503,
    )
    response.headers["Retry-After"] = "5"
    return response


def file_name(row: dict[str, Any], stored: dict[str, Any]) -> str:
    """What the download is called: job name, instrument and scheduled instant (UTC), so a
    folder of downloads sorts and reads well; the agent's own name if those are unknown."""
    parts = [row.get("job_name"), row.get("equipment_id")]
    scheduled = row.get("scheduled_time") or row.get("actual_time")
    if scheduled:
        # "2026-03-02T08:05:40.423000Z" -> "20260302T080540Z"
        parts.append(scheduled[:19].replace("-", "").replace(":", "") + "Z")
    name = "_".join(_UNSAFE.sub("-", p).strip("-") for p in parts if p)
    if not name:
        name = str(stored.get("file_name") or row["execution_id"]).removesuffix(".csv")
    return f"{name}.csv"


def disposition(name: str) -> str:
    ascii_name = name.encode("ascii", "replace").decode().replace('"', "")
    quoted = urllib.parse.quote(name)
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quoted}"


def byte_range(header: str | None, size: int, execution_id: str) -> tuple[int, int] | None:
    """(first, last) byte of a single ``Range``; None: the whole capture (no header, or one
    this server ignores, as RFC 9110 allows: several ranges, another unit, bad syntax)."""
    if not header:
        return None
    match = _RANGE.match(header)
    if match is None:
        return None
    first, last = match.group(1), match.group(2)
    if not first and not last:
        return None
    if not first:  # a suffix: the last n bytes
        count = int(last)
        if count == 0 or size == 0:
            raise RangeNotSatisfiable(execution_id, header, size)
        return max(size - count, 0), size - 1
    start = int(first)
    if last and int(last) < start:
        return None  # invalid syntax: ignored
    if start >= size:
        raise RangeNotSatisfiable(execution_id, header, size)
    end = int(last) if last else size - 1
    return start, min(end, size - 1)


def _matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    tags = [t.strip().removeprefix("W/") for t in header.split(",")]
    return "*" in tags or etag in tags


def _stored_capture(
    context: ApiContext, execution_id: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The execution's row and its data, if the capture is in the bucket; else the error that
    says why not."""
    row = get_execution_row(context.reader, execution_id)
    if row is None:
        removal = removal_of(context.reader, execution_id)
        if removal is not None:  # pruned by retention with its row
            raise DataRemoved(execution_id, iso(removal["removed_at"]), removal["reason"])
        raise DataNotFound(execution_id, "no such execution")
    data = data_view(row)
    status = data["status"]
    if status == "stored":
        return row, data
    if status == "pending_upload":
        raise DataPending(
            execution_id, "its data is pending_upload: the agent still holds the file"
        )
    if status == "removed":
        raise DataRemoved(execution_id, data["removed_at"], data["removal_reason"])
    raise DataNotFound(execution_id, "it has no captured data")


class DataController(Controller):
    path = "/api/scheduler/executions"
    tags = ["executions"]  # noqa: RUF012 (Litestar declares it as an instance attribute)
    exception_handlers = {  # noqa: RUF012
        DataUnavailable: data_unavailable,
        DataBusUnavailable: bus_unavailable,
    }

    @get(
        "/{execution_id:str}/data",
        opt=READ,
        media_type=MEDIA_TYPE,
        responses=DATA_ERRORS,
        summary="Download an execution's captured data (CSV)",
        description=(
            "Streams the capture from the LABLINK_DATA object store. Range: bytes=a-b, a- or -n"
            " answers 206 with Content-Range; If-None-Match with the ETag answers 304."
        ),
        status_code=200,
    )
    async def download(
        self,
        execution_id: FromPath[str],
        context: NamedDependency[ApiContext],
        request: Request[Any, Any, Any],
    ) -> Stream:
        return await capture_stream(context, execution_id, request)


async def capture_stream(
    context: ApiContext, execution_id: str, request: Request[Any, Any, Any]
) -> Stream:
    """The capture's bytes as the request asks for them (whole, a range, or 304): the API's
    download and the dashboard's link both answer through here. DataUnavailable or
    DataBusUnavailable when it cannot be sent."""
    row, data = _stored_capture(context, execution_id)
    bucket = context.data
    if bucket is None:
        raise DataBusUnavailable("(none)", "this server runs without NATS (LABLINK_NATS=off)")
    object_name = str(data.get("object") or "")
    found = await bucket.find(object_name)
    if found is None:
        # The view says stored: retention or the bound deleted the object and has not
        # recorded it yet (or the record failed). Gone, not unknown: 410.
        raise DataRemovalPending(execution_id, object_name)
    etag = f'"{data.get("sha256") or ""}"'
    headers = {
        "ETag": etag,
        "Accept-Ranges": "bytes",
        "Content-Disposition": disposition(file_name(row, data)),
    }
    if _matches(request.headers.get("if-none-match"), etag):
        return Stream(_nothing(), status_code=304, headers=headers, media_type=MEDIA_TYPE)
    selected = byte_range(request.headers.get("range"), found.size, execution_id)
    if_range = request.headers.get("if-range")
    if selected is not None and if_range and if_range.strip() != etag:
        selected = None  # the client's copy is another capture: send all of this one
    status = 200
    first, last = 0, found.size - 1
    if selected is not None:
        status = 206
        first, last = selected
        headers["Content-Range"] = f"bytes {first}-{last}/{found.size}"
    headers["Content-Length"] = str(max(last - first + 1, 0))
    return Stream(
        _body(bucket, found, first, last),
        status_code=status,
        headers=headers,
        media_type=MEDIA_TYPE,
    )


async def _body(
    bucket: DataBucket, found: StoredObject, first: int, last: int
) -> AsyncIterator[bytes]:
    # The store's chunks (128 KiB) sent in writes of about SEND_BYTES: fewer trips through
    # the ASGI server per byte, for a bounded buffer.
    pending = bytearray()
    try:
        async for chunk in bucket.read(found, first, last):
            pending += chunk
            if len(pending) >= SEND_BYTES:
                yield bytes(pending)
                pending.clear()
        if pending:
            yield bytes(pending)
    except DataBusUnavailable as exc:
        # Headers are sent: the client sees a short body (fewer bytes than Content-Length).
        log.warning("data download cut short", object=found.name, error=str(exc))
        raise


async def _nothing() -> AsyncIterator[bytes]:
    return
    yield b""
