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
    400: _spec("a query or path parameter is invalid"),
    401: _spec("no API key, or an unknown one"),
    403: _spec("the key's role is too low; the detail names the role needed"),
    404: _spec("no such job or execution"),
}
WRITE_ERRORS: dict[int, ResponseSpec] = {
    **READ_ERRORS,
    400: _spec("the body is not JSON, or a parameter is invalid"),
    409: _spec("a stale version, or run-now refused by the conflict policy"),
    413: _spec("the body is over 1 MB"),
    415: _spec("the body is not application/json"),
    422: _spec("the body does not fit: each error names the field, the value and why"),
}
