"""Request bodies the API accepts beyond JobRequest (which lives with the domain)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec
from msgspec import UNSET, UnsetType

from lablink.domain.requests import optional_fields


class _JobUpdateBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The part of the PUT body that is not a job field (the type checker's view of it)."""

    version: int | UnsetType = UNSET
    # Why the job is changed: recorded with the change (docs/api.md, "Reasons").
    reason: str | UnsetType | None = UNSET

    def changes(self) -> dict[str, Any]:
        return {
            name: msgspec.to_builtins(value)
            for name in self.__struct_fields__
            if name not in _NOT_CHANGES and (value := getattr(self, name)) is not UNSET
        }

    def given_reason(self) -> str | None:
        return self.reason if isinstance(self.reason, str) else None


_NOT_CHANGES = frozenset({"version", "reason"})


_JOB_UPDATE_DOC = """PUT body: only the fields given change. ``version`` (from GET) guards against
    overwriting someone else's edit: a stale one is a 409 naming both versions. ``reason``
    says why (required with LABLINK_REQUIRE_REASON=1)."""

if TYPE_CHECKING:
    JobUpdate = _JobUpdateBody
else:
    # Every field of JobRequest, optional, after ``version`` and ``reason``: made from it,
    # so that the two cannot drift apart.
    JobUpdate = msgspec.defstruct(
        "JobUpdate",
        optional_fields(),
        bases=(_JobUpdateBody,),
        kw_only=True,
        forbid_unknown_fields=True,
        module=__name__,
    )
    JobUpdate.__doc__ = _JOB_UPDATE_DOC
