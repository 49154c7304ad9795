"""Request bodies, decoded once and strictly.

A handler declares its body as ``data: JSONBody[T]`` with ``dto=StrictBody[T]``: the bytes are
parsed once and converted once with msgspec's strict rules (no "1" for 1, no epoch seconds for
a date), so the API accepts exactly what its OpenAPI document says, and every refusal names
the field, the value and the reason. The OpenAPI document describes ``T`` as Litestar would.

Refusals keep the answers clients know: before, Litestar parsed the body and converted it
leniently, and the handler decoded it again strictly. When the strict conversion refuses a
body, the lenient one is tried (on that path only) so that a body Litestar would have refused
is answered as Litestar answered it (``validation_failed`` in errors.py, with ``source``);
a body only the strict rules refuse is answered as before by ``InvalidRequest``.
"""

from __future__ import annotations

import re
from collections.abc import Generator, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, TypeVar

import msgspec
from litestar import Request
from litestar.connection import ASGIConnection
from litestar.dto import AbstractDTO, DTOConfig, DTOFieldDefinition
from litestar.exceptions import ClientException, HTTPException, ValidationException
from litestar.openapi.spec import OpenAPIFormat
from litestar.params import QueryParameter
from litestar.typing import FieldDefinition

if TYPE_CHECKING:
    from litestar._openapi.schema_generation import SchemaCreator
    from litestar.dto._backend import DTOBackend
    from litestar.openapi.spec import Reference, Schema

from lablink.domain.requests import check_numbers, decode_json, field_error_from_msgspec
from lablink.errors import InvalidRequest

T = TypeVar("T")


class BadRequest(InvalidRequest):
    """Not a body that fails to fit, but a request that cannot be read: a body that is not
    JSON at all, or a query parameter with an impossible value (HTTP 400, not 422)."""


class UnsupportedMediaType(HTTPException):
    status_code = 415


def _media_type(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    request = connection if isinstance(connection, Request) else Request(connection.scope)
    return request.content_type[0]


def _unsupported(media_type: str) -> UnsupportedMediaType:
    return UnsupportedMediaType(
        detail=f"content-type {media_type!r} is not supported: send application/json"
    )


# How Litestar names the field of a conversion error (litestar/_signature/model.py, ERR_RE).
_ERROR_PATH = re.compile(r"`\$\.(.+)`$")


def _lenient_refusal(
    connection: ASGIConnection[Any, Any, Any, Any], decoded: Any, type_: type[Any]
) -> ValidationException | None:
    """The refusal Litestar's own (lenient) conversion gave this body, None if it took it."""
    try:
        msgspec.convert(decoded, type_, strict=False, str_keys=True)
    except msgspec.ValidationError as exc:
        text = str(exc)
        match = _ERROR_PATH.search(text)
        key = ".".join(["data", match.group(1)] if match else ["data"]).replace("data.", "")
        message = {"message": text.split(" - ", maxsplit=1)[0], "key": key, "source": "body"}
        return ValidationException(
            detail=f"Validation failed for {connection.scope.get('method')} {connection.url}",
            extra=[message],
        )
    return None


def decode_body(connection: ASGIConnection[Any, Any, Any, Any], raw: bytes, type_: type[T]) -> T:
    """The body as ``type_``: parsed once, converted once, strictly."""
    try:
        decoded = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        # Not JSON (400), or a number no float holds (errors.http_error names its field: 422).
        raise ClientException(detail=str(exc)) from exc
    media_type = _media_type(connection)
    try:
        if media_type != "application/json":
            raise _unsupported(media_type)
        return _convert(decoded, type_)
    except (UnsupportedMediaType, InvalidRequest):
        refusal = _lenient_refusal(connection, decoded, type_)
        if refusal is not None:
            raise refusal from None
        raise


def _convert(decoded: Any, type_: type[T]) -> T:
    if not isinstance(decoded, dict):
        raise InvalidRequest.one("body", decoded, "expected a JSON object")
    # A 400-digit integer (or 1e400) is valid JSON: 422 naming its field, before any check
    # compares it with a float and overflows.
    check_numbers(decoded)
    try:
        return msgspec.convert(decoded, type_)
    except msgspec.ValidationError as exc:
        raise InvalidRequest([field_error_from_msgspec(exc, decoded)]) from exc


# The dashboard's forms, once turned into JSON values, are converted as a JSON body is.
convert_body = _convert


class StrictBody(AbstractDTO[T]):
    """``dto=StrictBody[T]``: the body decoded by ``decode_body``, documented as ``T``.

    Litestar's DTOs build transfer models; this one only decodes, so the parts of the DTO
    interface that build them do nothing, and no response goes through it (handlers that use
    it declare ``return_dto=None``)."""

    config: ClassVar[DTOConfig] = DTOConfig()

    @classmethod
    def generate_field_definitions(
        cls, model_type: type[Any]
    ) -> Generator[DTOFieldDefinition, None, None]:
        yield from ()

    @classmethod
    def detect_nested_field(cls, field_definition: FieldDefinition) -> bool:
        return False

    @classmethod
    def create_for_field_definition(
        cls,
        field_definition: FieldDefinition,
        handler_id: str,
        backend_cls: type[DTOBackend] | None = None,
    ) -> None:
        return None

    @classmethod
    def create_openapi_schema(
        cls, field_definition: FieldDefinition, handler_id: str, schema_creator: SchemaCreator
    ) -> Reference | Schema:
        return schema_creator.for_field_definition(field_definition)

    def decode_bytes(self, value: bytes) -> T:
        return decode_body(self.asgi_connection, value, self.model_type)


async def strict_body(request: Request[Any, Any, Any], type_: type[T]) -> T:
    """A body read by the handler itself (one that may be empty, such as an alarm's)."""
    media_type = _media_type(request)
    if media_type != "application/json":
        raise _unsupported(media_type)
    raw = await request.body()
    try:
        decoded = decode_json(raw)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise BadRequest.one("body", None, f"not valid JSON: {type(exc).__name__}") from exc
    return _convert(decoded, type_)


def takes(type_: type[Any]) -> dict[str, Any]:
    """The route options of a handler whose body (``data``) is a ``type_``: decoded by
    StrictBody; the answer goes through no DTO."""
    return {"dto": StrictBody.__class_getitem__(type_), "return_dto": None}


# Why a change without a body is made (a deletion, a pause): checked, and required with
# LABLINK_REQUIRE_REASON=1, by the command (lablink/domain/reasons.py), so every way in
# refuses it alike (422 naming ``reason``).
ReasonQuery = Annotated[
    str | None,
    QueryParameter(
        description="why: recorded with the change in the audit trail; required when the"
        " server runs with LABLINK_REQUIRE_REASON=1 (422 naming reason otherwise)"
    ),
]


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
    try:
        # Stored instants are UTC: 9999-12-31T23:59:59-23:59 has none.
        value.astimezone(UTC)
    except OverflowError:
        raise BadRequest.one(name, text, "is beyond the last instant UTC can express") from None
    return value


# A filter of the API given with no value would match nothing and say nothing: a 400 naming
# it, as the OpenAPI document says (no empty values). The dashboard's forms send empty
# fields for "any" and read their own query, so this is the API's alone.
QueryFilter = Annotated[str | None, QueryParameter(min_length=1, max_length=200)]


def api_choices(name: str, values: list[str] | None, allowed: Sequence[str]) -> list[str]:
    """``query_choices`` for the API: a value given empty is refused, not skipped."""
    for value in values or []:
        if not value.strip(" ,"):
            raise BadRequest.one(name, value, "must be one of " + ", ".join(allowed))
    return query_choices(name, values, allowed)


def query_choices(name: str, values: list[str] | None, allowed: Sequence[str]) -> list[str]:
    """A repeated or comma-separated query parameter, each value one of ``allowed``."""
    chosen = [v.strip() for item in values or [] for v in item.split(",") if v.strip()]
    for value in chosen:
        if value not in allowed:
            raise BadRequest.one(name, value, "must be one of " + ", ".join(allowed))
    return chosen
