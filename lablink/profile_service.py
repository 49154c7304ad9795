"""Commands on equipment profiles, through the write path (``lablink.handler``).

Also what the rest of LabLink asks of profiles: whether a job may name one
(``StoredProfiles.check``, the job service's profile check) and the profiles LabLink ships for
the simulated bench (``load_shipped_profiles``, run when ``lablink serve`` starts).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import msgspec

from lablink.clock import Clock
from lablink.domain.profiles import (
    CreateProfile,
    DeleteProfile,
    Models,
    ProfileCommand,
    ProfileRequest,
    ProfileState,
    SaveProfile,
    UpdateProfile,
    decide,
    evolve,
    parse_profile_request,
    profile_id_of,
    stream_id,
)
from lablink.domain.requests import check_numbers, decode_json
from lablink.errors import (
    InvalidRequest,
    ProfileExists,
    ProfileNotFound,
    ProfileVersionConflict,
)
from lablink.events import RecordedEvent
from lablink.eventstore.base import EventStore
from lablink.handler import CommandHandler
from lablink.instrument_models import KnownInstruments
from lablink.instruments.drivers import MODELS
from lablink.instruments.simulated import SIMULATED_BENCH
from lablink.repository import Repository, keyed

SHIPPED_DIR = Path(__file__).parent / "equipment_agent" / "profiles"
SERVE_ACTOR = "lablink serve"

Saved = Literal["created", "updated", "unchanged"]


def profile_repository(store: EventStore) -> Repository[ProfileState]:
    return keyed(store, ProfileState, "profile_id", evolve, stream_id, exists=lambda s: s.exists)


def load_profile(store: EventStore, profile_id: str) -> tuple[ProfileState, int]:
    """The profile aggregate folded from its stream, with the version it reflects."""
    return profile_repository(store).current(profile_id)


class ProfileService:
    def __init__(
        self,
        store: EventStore,
        clock: Clock,
        *,
        models: Models = MODELS,
        require_reason: bool = False,
    ) -> None:
        self.store = store
        self.clock = clock
        self.models = models
        # LABLINK_REQUIRE_REASON: updates and deletions need a reason.
        self.require_reason = require_reason
        self.repository = profile_repository(store)
        self.handler = CommandHandler(store, clock)

    def load(self, profile_id: str) -> tuple[ProfileState, int]:
        return self.repository.current(profile_id)

    def get(self, profile_id: str) -> ProfileState:
        state, _ = self.load(profile_id)
        if not state.exists:
            raise ProfileNotFound(profile_id)
        return state

    def execute(
        self, command: ProfileCommand, actor: str, *, expected_version: int | None = None
    ) -> list[RecordedEvent]:
        return self.handler.handle(
            self.repository,
            command.profile_id,
            lambda state, _: decide(state, command, self.models),
            actor,
            expected_version=expected_version,
            stale=lambda expected, actual: ProfileVersionConflict(
                command.profile_id, expected, actual
            ),
        ).recorded

    def create(self, request: ProfileRequest, actor: str) -> str:
        profile_id = profile_id_of(request)
        self.execute(CreateProfile(profile_id=profile_id, request=request), actor)
        return profile_id

    def update(
        self,
        profile_id: str,
        changes: Mapping[str, Any],
        actor: str,
        *,
        expected_version: int | None = None,
        reason: str | None = None,
    ) -> list[RecordedEvent]:
        return self.execute(
            UpdateProfile(
                profile_id=profile_id,
                changes=dict(changes),
                reason=reason,
                require_reason=self.require_reason,
            ),
            actor,
            expected_version=expected_version,
        )

    def delete(self, profile_id: str, actor: str, reason: str | None = None) -> list[RecordedEvent]:
        return self.execute(
            DeleteProfile(profile_id=profile_id, reason=reason, require_reason=self.require_reason),
            actor,
        )

    def save(
        self, profile_id: str, request: ProfileRequest, actor: str, reason: str | None = None
    ) -> Saved:
        """Create the profile, or replace it whole (recording ``reason``); "unchanged" when
        it already says this."""
        existed = self.load(profile_id)[0].exists
        recorded = self.execute(
            SaveProfile(
                profile_id=profile_id,
                request=request,
                reason=reason,
                require_reason=self.require_reason,
            ),
            actor,
        )
        if not recorded:
            return "unchanged"
        return "updated" if existed else "created"


# -- profile files -----------------------------------------------------------------------------

# Bookkeeping some profile files carry; the log records when and by whom instead.
FILE_METADATA = ("created_at", "modified_at", "updated_at")


def read_profile_file(path: Path) -> tuple[str, ProfileRequest]:
    """A profile file: its id (``profile_id`` in the file, else the file's name) and body."""
    try:
        raw = decode_json(path.read_bytes())
    except (OSError, msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise InvalidRequest.one("file", path.name, f"not readable JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise InvalidRequest.one("file", path.name, "expected a JSON object")
    check_numbers(raw)
    for key in FILE_METADATA:
        raw.pop(key, None)
    request = parse_profile_request(raw)
    return profile_id_of(request, default=path.stem), request


def profile_files(directory: Path) -> Iterator[Path]:
    return iter(sorted(p for p in directory.glob("*.json") if p.is_file()))


def load_shipped_profiles(
    store: EventStore, clock: Clock, *, actor: str = SERVE_ACTOR, directory: Path = SHIPPED_DIR
) -> list[str]:
    """Create the profiles LabLink ships that the log has never held; returns their ids.

    Idempotent: a profile already in the log (even one an admin edited or deleted since) is
    left as it is. A shipped file that fails its own checks is a bug, so it raises.
    """
    service = ProfileService(store, clock)
    created: list[str] = []
    for path in profile_files(directory):
        profile_id, request = read_profile_file(path)
        if store.stream_version(stream_id(profile_id)) == 0:
            try:
                service.execute(CreateProfile(profile_id=profile_id, request=request), actor)
            except ProfileExists:
                continue  # another replica starting at the same time (cluster mode) was first
            created.append(profile_id)
    return created


# -- what jobs ask of profiles -----------------------------------------------------------------


class StoredProfiles:
    """The job service's profile check, from the log: the profile must exist, and be for the
    kind of instrument the job runs on when that kind is known (an agent reported it, or it
    is one of the simulated bench's ids). An instrument never seen is given the benefit of
    the doubt: only the profile's existence is checked."""

    def __init__(
        self,
        store: EventStore,
        *,
        bench: Mapping[str, tuple[str, str]] = SIMULATED_BENCH,
    ) -> None:
        self.store = store
        self.instruments = KnownInstruments(store, bench=bench)

    def instrument_kind(self, equipment_id: str) -> str | None:
        return self.instruments.kind(equipment_id)

    def check(self, profile_id: str, equipment_id: str) -> None:
        state, _ = load_profile(self.store, profile_id)
        if not state.exists or state.profile is None:
            raise InvalidRequest.one(
                "profile_id", profile_id, "no such profile (see GET /api/profiles)"
            )
        kind = self.instrument_kind(equipment_id)
        if kind is not None and state.profile.equipment_type != kind:
            raise InvalidRequest.one(
                "profile_id",
                profile_id,
                f"is a profile for equipment_type {state.profile.equipment_type!r}, but"
                f" {equipment_id} is {kind!r}",
            )
