"""One exception map: domain errors and Litestar's own become clear JSON answers.

Every 4xx body has ``detail`` (one sentence) and ``errors`` (field, value, reason), so a
client always learns which field, which value and why. Nothing a client sends becomes a 500.
A storage failure (full disk, read-only database) is a 503 naming the cause, with
Retry-After: the request wrote nothing and may be sent again.
"""

from __future__ import annotations

import re
import sqlite3
from typing import Any

import msgspec
import structlog
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.utils.scope.state import ScopeState

from lablink.api.bodies import BadRequest
from lablink.api.consistency import behind_body
from lablink.domain.requests import decode_json, number_problems
from lablink.errors import (
    AlarmStateConflict,
    CalibrationBlocked,
    CalibrationStateConflict,
    Conflict,
    DuplicateId,
    ExecutionRefused,
    FieldError,
    InvalidRequest,
    JobStateConflict,
    JobVersionConflict,
    KeyAlreadyRevoked,
    NoSchedulerLeader,
    NotFound,
    ProfileVersionConflict,
    StorageError,
)
from lablink.eventstore.sqlite import storage_error
from lablink.projections.follower import ViewsBehind

log = structlog.get_logger(tag="api")

_UNKNOWN = re.compile(r"unknown field `([^`]+)`")
_MISSING = re.compile(r"missing required field `([^`]+)`")
_PATH = re.compile(r"at `\$\.data\.([A-Za-z0-9_]+)")


def _body(request: Request[Any, Any, Any]) -> dict[str, Any]:
    raw = ScopeState.from_scope(request.scope).body
    if not isinstance(raw, bytes) or not raw:
        return {}
    try:
        decoded = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return {}
    return decoded if isinstance(decoded, dict) else {}


def _problem(
    status: int, detail: str, errors: list[dict[str, Any]], **extra: Any
) -> Response[dict[str, Any]]:
    return Response(
        {"success": False, "status_code": status, "detail": detail, "errors": errors, **extra},
        status_code=status,
    )


def _field(error: FieldError) -> dict[str, Any]:
    return {"field": error.field, "value": error.value, "reason": error.reason}


def invalid_request(request: Request[Any, Any, Any], exc: InvalidRequest) -> Response[Any]:
    errors = [_field(e) for e in exc.errors]
    status = 400 if isinstance(exc, BadRequest) else 422
    return _problem(status, f"invalid request: {exc}", errors)


def unreadable_body(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    # Raised while Litestar decodes a body: invalid UTF-8, or nesting deeper than Python's
    # recursion limit. The client sent it, so it is a 400, never a 500.
    reason = f"not valid JSON: {type(exc).__name__}"
    return _problem(
        400,
        f"invalid request: body: {reason}",
        [{"field": "body", "value": None, "reason": reason}],
    )


def validation_failed(request: Request[Any, Any, Any], exc: ValidationException) -> Response[Any]:
    body = _body(request)
    errors: list[dict[str, Any]] = []
    for item in exc.extra if isinstance(exc.extra, list) else []:
        message = str(item.get("message", ""))
        key = str(item.get("key", ""))
        source = item.get("source", "")
        if (
            key == "data"
            and source == "body"
            and not _UNKNOWN.search(message)
            and not (_MISSING.search(message))
        ):
            # Litestar names its own parameter; the client sent a body that is not an object.
            raw = ScopeState.from_scope(request.scope).body
            sent: Any = None
            if isinstance(raw, bytes) and raw:
                try:
                    sent = msgspec.json.decode(raw)
                except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
                    sent = None
            errors.append(
                {
                    "field": "body",
                    "value": sent,
                    "reason": "expected a JSON object" if raw else "a JSON body is required",
                    "source": "body",
                }
            )
            continue
        if match := _UNKNOWN.search(message):
            field, reason = match.group(1), "unknown field"
        elif match := _MISSING.search(message):
            field, reason = match.group(1), "field required"
        else:
            field, reason = key, message
        if source == "body":
            value = body.get(field)
        elif source == "query":
            value = request.query_params.get(field)
        elif source == "path":
            value = request.path_params.get(field)
        else:
            value = None
        errors.append({"field": field, "value": value, "reason": reason, "source": source})
    if not errors:
        errors.append({"field": "body", "value": None, "reason": exc.detail})
    detail = "; ".join(f"{e['field']}={e['value']!r}: {e['reason']}" for e in errors)
    # A body that parses but does not fit the schema is unprocessable (422); a bad query or
    # path parameter is a bad request (400).
    status = 422 if errors[0].get("source") == "body" else 400
    return _problem(status, f"invalid request: {detail}", errors)


def not_found(request: Request[Any, Any, Any], exc: NotFound) -> Response[Any]:
    field = getattr(exc, "field", f"{exc.kind}_id")
    return _problem(
        404, str(exc), [{"field": field, "value": exc.object_id, "reason": "not found"}]
    )


def conflict(request: Request[Any, Any, Any], exc: Conflict) -> Response[Any]:
    extra: dict[str, Any] = {}
    errors: list[dict[str, Any]] = []
    if isinstance(exc, JobVersionConflict | ProfileVersionConflict):
        extra = {"expected_version": exc.expected, "current_version": exc.actual}
        errors = [{"field": "version", "value": exc.expected, "reason": str(exc)}]
    elif isinstance(exc, DuplicateId):
        errors = [{"field": exc.field, "value": exc.object_id, "reason": "already exists"}]
    elif isinstance(exc, ExecutionRefused):
        extra = {"running": list(exc.blocking)}
        errors = [{"field": "job_id", "value": exc.job_id, "reason": exc.reason}]
    elif isinstance(exc, AlarmStateConflict):
        extra = {"state": exc.state}
        errors = [{"field": "alarm_id", "value": exc.alarm_id, "reason": exc.reason}]
    elif isinstance(exc, JobStateConflict):
        errors = [{"field": "job_id", "value": exc.job_id, "reason": exc.reason}]
    elif isinstance(exc, CalibrationBlocked):
        extra = {"cause": exc.cause}
        errors = [{"field": "equipment_id", "value": exc.equipment_id, "reason": exc.reason}]
    elif isinstance(exc, CalibrationStateConflict):
        errors = [{"field": "equipment_id", "value": exc.equipment_id, "reason": exc.reason}]
    elif isinstance(exc, KeyAlreadyRevoked):
        extra = {"revoked_at": exc.revoked_at, "revoked_by": exc.revoked_by}
        errors = [{"field": "key_id", "value": exc.key_id, "reason": "already revoked"}]
    return _problem(409, str(exc), errors, **extra)


def _out_of_range(request: Request[Any, Any, Any]) -> list[FieldError]:
    """The numbers of the body beyond a float's range (``1e400``), each by its field."""
    raw = ScopeState.from_scope(request.scope).body
    if not isinstance(raw, bytes) or not raw:
        return []
    try:
        return number_problems(decode_json(raw))
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return []


def http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    if exc.status_code == 400 and "Number out of range" in str(exc.detail):
        # Litestar's own decoding refused 1e400 without naming the field: name it (422).
        problems = _out_of_range(request)
        if problems:
            return invalid_request(request, InvalidRequest(problems))
    response = _problem(
        exc.status_code,
        exc.detail,
        [{"field": "request", "value": None, "reason": exc.detail}],
    )
    response.headers.update(exc.headers or {})
    return response


def storage_unavailable(request: Request[Any, Any, Any], exc: StorageError) -> Response[Any]:
    log.error("storage error", path=request.url.path, error=str(exc), kind=type(exc).__name__)
    response = _problem(
        503,
        str(exc),
        [{"field": "storage", "value": exc.path, "reason": exc.cause}],
    )
    response.headers["Retry-After"] = str(exc.retry_after)
    return response


def no_scheduler_leader(request: Request[Any, Any, Any], exc: NoSchedulerLeader) -> Response[Any]:
    log.warning("no scheduler leader answered", path=request.url.path, error=str(exc))
    response = _problem(
        503, str(exc), [{"field": "scheduler", "value": exc.subject, "reason": exc.why}]
    )
    response.headers["Retry-After"] = str(exc.retry_after)
    return response


def views_behind(request: Request[Any, Any, Any], exc: ViewsBehind) -> Response[Any]:
    log.warning("views behind", path=request.url.path, error=str(exc))
    response = Response(behind_body(exc), status_code=503)
    response.headers["Retry-After"] = "1"
    return response


def sqlite_error(request: Request[Any, Any, Any], exc: sqlite3.Error) -> Response[Any]:
    # A read through the API's own connection (not the store) met a storage failure.
    context = request.app.state.get("context")
    path = context.settings.db_path if context is not None else "scheduler.db"
    translated = storage_error(exc, path)
    if translated is not None:
        return storage_unavailable(request, translated)
    return internal_error(request, exc)


def internal_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    log.exception("unhandled error", path=request.url.path)
    return _problem(500, "internal error: the server logged the details", [])


EXCEPTION_HANDLERS: dict[type[Exception] | int, Any] = {
    InvalidRequest: invalid_request,
    UnicodeDecodeError: unreadable_body,
    RecursionError: unreadable_body,
    ValidationException: validation_failed,
    NotFound: not_found,
    Conflict: conflict,
    HTTPException: http_error,
    StorageError: storage_unavailable,
    NoSchedulerLeader: no_scheduler_leader,
    ViewsBehind: views_behind,
    sqlite3.Error: sqlite_error,
    Exception: internal_error,
}
