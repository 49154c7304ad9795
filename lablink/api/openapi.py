"""The error answers every route can give, declared so the OpenAPI document is complete."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar.openapi.datastructures import ResponseSpec


class FieldProblem(msgspec.Struct, kw_only=True):
    field: str
    value: Any
    reason: str


class ErrorBody(msgspec.Struct, kw_only=True):
    success: bool
    status_code: int
    detail: str
    errors: list[FieldProblem]


def _spec(description: str) -> ResponseSpec:
    return ResponseSpec(data_container=ErrorBody, description=description, generate_examples=False)


READ_ERRORS: dict[int, ResponseSpec] = {
    400: _spec("a query or path parameter is invalid, or the Host is not an allowed host"),
    401: _spec("no API key, or an unknown one"),
    403: _spec(
        "the key's role is too low (the detail names the role needed), or a state-changing"
        " request came from a foreign Origin"
    ),
    404: _spec("no such job or execution"),
    429: _spec(
        "too many failed authentications from this address; Retry-After says when to try again"
    ),
    503: _spec(
        "the views are behind the log (LABLINK_VIEWS_WAIT passed, or they cannot be folded):"
        " errors[0] names the field views, the log position awaited and the lag; Retry-After"
    ),
}
WRITE_ERRORS: dict[int, ResponseSpec] = {
    **READ_ERRORS,
    400: _spec("the body is not JSON, a parameter is invalid, or the Host is not allowed"),
    409: _spec("a stale version, or run-now refused by the conflict policy"),
    413: _spec("the body is over 1 MB"),
    415: _spec("the body is not application/json"),
    422: _spec(
        "the body does not fit, or the reason is missing (LABLINK_REQUIRE_REASON=1) or"
        " malformed: each error names the field, the value and why"
    ),
    503: _spec(
        "the event log cannot be written (disk full, read-only database): nothing was"
        " written; the detail names the cause, Retry-After says when to try again. Or the"
        " views are behind the log (errors[0].field is views): the detail ends 'the write was"
        " recorded, the views cannot show it yet' (do not send it again) or 'nothing was"
        " written'"
    ),
}
