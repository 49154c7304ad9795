"""Equipment profiles: list, get, create, update, delete (admins write, viewers read)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from litestar import Controller, Request, delete, get, post, put
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, QueryParameter

from lablink.api.auth import actor
from lablink.api.bodies import BadRequest, ReasonQuery, takes
from lablink.api.context import ApiContext
from lablink.api.openapi import READ_ERRORS, WRITE_ERRORS
from lablink.api.responses import (
    Message,
    ProfileAnswer,
    ProfileCreatedAnswer,
    ProfileList,
    ProfileUpdatedAnswer,
    ProfileView,
    view,
    views,
)
from lablink.domain.profiles import (
    ProfileRequest,
    ProfileUpdate,
    equipment_kind,
)
from lablink.errors import ProfileNotFound
from lablink.instruments.drivers import MODELS
from lablink.profile_service import ProfileService
from lablink.projections.profiles import list_profiles, read_profile

T = TypeVar("T")
READ = {"role": "viewer"}
WRITE = {"role": "admin"}


def _service(context: ApiContext) -> ProfileService:
    return ProfileService(
        context.store, context.clock, require_reason=context.settings.require_reason
    )


async def _write(call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a write off the event loop (a conflict becomes a 409 naming the field)."""
    return await asyncio.to_thread(call, *args, **kwargs)


def _read(context: ApiContext, profile_id: str) -> ProfileView:
    profile = read_profile(context.reader, profile_id)
    if profile is None:
        raise ProfileNotFound(profile_id)
    return view(profile, ProfileView)


class ProfileController(Controller):
    path = "/api/profiles"
    tags = ["profiles"]  # noqa: RUF012 (Litestar declares it as an instance attribute)

    @get("/", opt=READ, responses=READ_ERRORS)
    async def list_profiles(
        self,
        context: NamedDependency[ApiContext],
        equipment_type: Annotated[
            str | None,
            QueryParameter(description="one of " + ", ".join(MODELS), max_length=64),
        ] = None,
        tag: Annotated[str | None, QueryParameter(min_length=1, max_length=64)] = None,
    ) -> ProfileList:
        """Every profile, by id (``?equipment_type=oscilloscope``, ``?tag=...``)."""
        if equipment_type is not None:
            kind = equipment_kind(equipment_type, MODELS)
            if kind is None:
                raise BadRequest.one(
                    "equipment_type", equipment_type, "must be one of " + ", ".join(MODELS)
                )
            equipment_type = kind  # the aliases a profile may be saved with ("scope", ...)
        items = views(
            list_profiles(context.reader, equipment_type=equipment_type, tag=tag), ProfileView
        )
        return ProfileList(success=True, count=len(items), profiles=items)

    @get("/{profile_id:str}", opt=READ, responses=READ_ERRORS)
    async def get_profile(
        self, context: NamedDependency[ApiContext], profile_id: FromPath[str]
    ) -> ProfileAnswer:
        """One profile: its settings in the order they are applied, and its ``version``."""
        return ProfileAnswer(success=True, profile=_read(context, profile_id))

    @post("/", status_code=200, opt=WRITE, responses=WRITE_ERRORS, **takes(ProfileRequest))
    async def create_profile(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[ProfileRequest],
        context: NamedDependency[ApiContext],
    ) -> ProfileCreatedAnswer:
        """Create a profile (id: ``profile_id``, else ``name``); its settings are checked
        against the limits of the driver for its ``equipment_type`` (422 naming each)."""
        profile_id = await _write(_service(context).create, data, actor(request))
        await context.caught_up()
        return ProfileCreatedAnswer(
            success=True,
            profile_id=profile_id,
            message=f"profile {profile_id!r} created",
            profile=_read(context, profile_id),
        )

    @put("/{profile_id:str}", opt=WRITE, responses=WRITE_ERRORS, **takes(ProfileUpdate))
    async def update_profile(
        self,
        request: Request[Any, Any, Any],
        profile_id: FromPath[str],
        data: JSONBody[ProfileUpdate],
        context: NamedDependency[ApiContext],
    ) -> ProfileUpdatedAnswer:
        """Change the fields given (``settings`` is replaced whole); pass the profile's
        ``version`` to refuse stale edits (409)."""
        version = data.version if isinstance(data.version, int) else None
        recorded = await _write(
            _service(context).update,
            profile_id,
            data.changes(),
            actor(request),
            expected_version=version,
            reason=data.given_reason(),
        )
        await context.caught_up()
        return ProfileUpdatedAnswer(
            success=True,
            message="profile updated" if recorded else "nothing changed",
            profile=_read(context, profile_id),
        )

    @delete("/{profile_id:str}", status_code=200, opt=WRITE, responses=WRITE_ERRORS)
    async def delete_profile(
        self,
        request: Request[Any, Any, Any],
        profile_id: FromPath[str],
        context: NamedDependency[ApiContext],
        reason: ReasonQuery = None,
    ) -> Message:
        """Delete a profile (``?reason=`` says why). Jobs naming it fail before they run
        until they name another."""
        await _write(_service(context).delete, profile_id, actor(request), reason)
        return Message(success=True, message=f"profile {profile_id} deleted")
