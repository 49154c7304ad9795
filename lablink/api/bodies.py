"""Request bodies, decoded strictly.

Litestar converts a declared body leniently ("1" becomes 1, epoch seconds become a date);
the body is decoded again here with msgspec's strict rules, so the API accepts exactly what
its OpenAPI document says, and every refusal names the field, the value and the reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, TypeVar

import msgspec
from litestar import Request
from litestar.exceptions import HTTPException
from litestar.openapi.spec import OpenAPIFormat

from lablink.domain.requests import check_numbers, decode_json, field_error_from_msgspec
from lablink.errors import InvalidRequest

T = TypeVar("T")


class BadRequest(InvalidRequest):
    """Not a body that fails to fit, but a request that cannot be read: a body that is not
    JSON at all, or a query parameter with an impossible value (HTTP 400, not 422)."""


class UnsupportedMediaType(HTTPException):
    status_code = 415


async def strict_body(request: Request[Any, Any, Any], type_: type[T]) -> T:
    media_type = request.content_type[0]
    if media_type != "application/json":
        raise UnsupportedMediaType(
            detail=f"content-type {media_type!r} is not supported: send application/json"
        )
    raw = await request.body()
    try:
        decoded = decode_json(raw)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise BadRequest.one("body", None, f"not valid JSON: {type(exc).__name__}") from exc
    if not isinstance(decoded, dict):
        raise InvalidRequest.one("body", decoded, "expected a JSON object")
    # A 400-digit integer (or 1e400) is valid JSON: 422 naming its field, before any check
    # compares it with a float and overflows.
    check_numbers(decoded)
    try:
        return msgspec.convert(decoded, type_)
    except msgspec.ValidationError as exc:
        raise InvalidRequest([field_error_from_msgspec(exc, decoded)]) from exc


# An instant in a query string: ISO 8601 with a UTC offset. Typed as text, not datetime, so
# that Litestar does not take "0.0" for a Unix timestamp.
INSTANT_FORMAT = OpenAPIFormat.DATE_TIME


def query_instant(name: str, text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise BadRequest.one(
            name, text, "is not an ISO 8601 time, e.g. 2026-01-01T00:00:00Z"
        ) from None
    if value.tzinfo is None:
        raise BadRequest.one(name, text, "needs a UTC offset, e.g. 2026-01-01T00:00:00Z")
    return value


def query_choices(name: str, values: list[str] | None, allowed: Sequence[str]) -> list[str]:
    """A repeated or comma-separated query parameter, each value one of ``allowed``."""
    chosen = [v.strip() for item in values or [] for v in item.split(",") if v.strip()]
    for value in chosen:
        if value not in allowed:
            raise BadRequest.one(name, value, "must be one of " + ", ".join(allowed))
    return chosen
