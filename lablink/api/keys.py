"""API keys: list, read and revoke (admin only). A key's secret is never returned, only its
id and first characters; keys are made with ``lablink keys create`` on the server."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from litestar import Controller, Request, delete, get
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath

from lablink.api.auth import actor
from lablink.api.bodies import ReasonQuery
from lablink.api.context import ApiContext
from lablink.api.openapi import READ_ERRORS, WRITE_ERRORS, ErrorBody
from lablink.errors import KeyNotFound
from lablink.keys import KeyUsage, key_listing, revoke_key
from lablink.projections.keys import read_key

ADMIN = {"role": "admin"}
_NO_SUCH_KEY = ResponseSpec(
    data_container=ErrorBody, description="no key with this id", generate_examples=False
)
READ = {**READ_ERRORS, 404: _NO_SUCH_KEY}
REVOKE = {
    **{s: spec for s, spec in WRITE_ERRORS.items() if s in (400, 401, 403, 422, 429, 503)},
    404: _NO_SUCH_KEY,
    409: ResponseSpec(
        data_container=ErrorBody,
        description="the key is already revoked; the detail says when and by whom",
        generate_examples=False,
    ),
}


class ApiKeyInfo(msgspec.Struct, kw_only=True):
    key_id: str
    name: str
    role: str
    # The key's first characters, as failed-authentication logs show them; null for keys
    # made before LabLink recorded them.
    prefix: str | None
    created_at: str
    created_by: str
    # When the API last accepted it (to the minute), null if never seen.
    last_used_at: str | None
    revoked: bool
    revoked_at: str | None
    revoked_by: str | None


class KeyList(msgspec.Struct, kw_only=True):
    success: bool
    count: int
    keys: list[ApiKeyInfo]


class KeyAnswer(msgspec.Struct, kw_only=True):
    success: bool
    key: ApiKeyInfo


class KeyRevokedAnswer(msgspec.Struct, kw_only=True):
    success: bool
    message: str
    key: ApiKeyInfo


def _usage(request: Request[Any, Any, Any]) -> KeyUsage:
    usage: KeyUsage = request.app.state["key_usage"]
    return usage


def _info(row: dict[str, Any], usage: dict[str, str]) -> ApiKeyInfo:
    return msgspec.convert({**row, "last_used_at": usage.get(row["key_id"])}, ApiKeyInfo)


def _one(context: ApiContext, request: Request[Any, Any, Any], key_id: str) -> ApiKeyInfo:
    row = read_key(context.reader, key_id)
    if row is None:
        raise KeyNotFound(key_id)
    return _info(row, _usage(request).last_used(context.reader))


class KeyController(Controller):
    path = "/api/keys"
    tags = ["keys"]  # noqa: RUF012 (Litestar declares it as an instance attribute)

    @get("/", opt=ADMIN, responses=READ_ERRORS)
    async def list_keys(
        self, request: Request[Any, Any, Any], context: NamedDependency[ApiContext]
    ) -> KeyList:
        """Every key ever made, oldest first, revoked ones included."""
        rows = key_listing(context.reader, _usage(request).last_used(context.reader))
        keys = [msgspec.convert(row, ApiKeyInfo) for row in rows]
        return KeyList(success=True, count=len(keys), keys=keys)

    @get("/{key_id:str}", opt=ADMIN, responses=READ)
    async def get_key(
        self,
        key_id: FromPath[str],
        request: Request[Any, Any, Any],
        context: NamedDependency[ApiContext],
    ) -> KeyAnswer:
        return KeyAnswer(success=True, key=_one(context, request, key_id))

    @delete("/{key_id:str}", status_code=200, opt=ADMIN, responses=REVOKE)
    async def revoke(
        self,
        key_id: FromPath[str],
        request: Request[Any, Any, Any],
        context: NamedDependency[ApiContext],
        reason: ReasonQuery = None,
    ) -> KeyRevokedAnswer:
        """Revoke a key (``?reason=`` says why): it fails from the next request on. 404 for
        an unknown id, 409 if it is already revoked (naming when and by whom). Your own key
        may be revoked too."""
        await asyncio.to_thread(
            revoke_key,
            context.store,
            key_id,
            actor=actor(request),
            now=context.clock.now(),
            reason=reason,
            require_reason=context.settings.require_reason,
        )
        await context.caught_up()
        return KeyRevokedAnswer(
            success=True,
            message=f"key {key_id!r} revoked",
            key=_one(context, request, key_id),
        )
