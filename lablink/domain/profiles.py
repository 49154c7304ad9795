"""Equipment profiles: named instrument settings a job applies before it runs.

A profile is the aggregate of its own stream (``profile:<profile_id>``). ``decide`` checks a
profile whole, in the format of LabLink's profile files (``name``, ``description``,
``equipment_type``, ``model``, ``settings``, ``tags``), and every setting against the limits of
the driver for its equipment type: a value the instrument would refuse is refused when the
profile is saved, not when a job runs at 3 a.m. The driver tables are passed in (``models``),
so this module stays pure. ``evolve`` folds one event and never raises.

Settings may use the names of the original LabLink server's profiles (``current_limit``,
``output_enabled``, ``load_enabled``, a load's ``CC`` mode, a multimeter's ``range: "AUTO"``):
each driver table lists them as aliases of its own settings. They are checked through the
setting they stand for and stored as written, so a profile reads back as it was sent.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import msgspec
from msgspec import UNSET, UnsetType
from msgspec.structs import replace

from lablink.domain.changes import field_changes
from lablink.domain.reasons import Reasoned
from lablink.domain.requests import field_error_from_msgspec
from lablink.domain.validation import ID_PATTERN, ID_RULE, text_problem
from lablink.errors import FieldError, InvalidRequest, ProfileExists, ProfileNotFound
from lablink.events import AnyEvent, ProfileCreated, ProfileDeleted, ProfileUpdated
from lablink.instruments.errors import InvalidParameter
from lablink.instruments.scpi import InstrumentModel

Models = Mapping[str, InstrumentModel]

MAX_NAME = 200
MAX_MODEL = 200
MAX_DESCRIPTION = 5000
MAX_TAG = 64
MAX_TAGS = 50

# Names other LabLink tools and files give the instrument kinds, mapped to the driver kinds.
EQUIPMENT_TYPE_ALIASES: Mapping[str, str] = {
    "scope": "oscilloscope",
    "dso": "oscilloscope",
    "psu": "power_supply",
    "power": "power_supply",
    "dmm": "multimeter",
    "meter": "multimeter",
    "load": "electronic_load",
    "eload": "electronic_load",
    "dc_load": "electronic_load",
    "sensor": "temperature_sensor",
    "temperature": "temperature_sensor",
    "thermometer": "temperature_sensor",
}


def stream_id(profile_id: str) -> str:
    return f"profile:{profile_id}"


# -- what a client or a file sends -------------------------------------------------------------


class ProfileRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A whole profile, as LabLink's profile files hold it. ``profile_id`` defaults to
    ``name`` (the files are named after it)."""

    name: str
    equipment_type: str
    # The original LabLink server writes null for a profile without a description.
    description: str | None = ""
    model: str = ""
    settings: dict[str, Any] = msgspec.field(default_factory=dict)
    tags: list[str] = msgspec.field(default_factory=list)
    profile_id: str | None = None


class ProfileUpdate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """PUT body: only the fields given change (``settings`` is replaced whole). ``version``
    (from GET) refuses an edit made from a stale copy; ``reason`` says why (required with
    LABLINK_REQUIRE_REASON=1)."""

    version: int | UnsetType = UNSET
    reason: str | UnsetType | None = UNSET
    name: str | UnsetType = UNSET
    equipment_type: str | UnsetType = UNSET
    description: str | UnsetType | None = UNSET
    model: str | UnsetType = UNSET
    settings: dict[str, Any] | UnsetType = UNSET
    tags: list[str] | UnsetType = UNSET

    def changes(self) -> dict[str, Any]:
        return {
            name: getattr(self, name)
            for name in self.__struct_fields__
            if name not in ("version", "reason") and getattr(self, name) is not UNSET
        }

    def given_reason(self) -> str | None:
        return self.reason if isinstance(self.reason, str) else None


def parse_profile_request(raw: Mapping[str, Any]) -> ProfileRequest:
    try:
        return msgspec.convert(dict(raw), ProfileRequest)
    except msgspec.ValidationError as exc:
        raise InvalidRequest([field_error_from_msgspec(exc, dict(raw))]) from exc


# -- state and commands ------------------------------------------------------------------------


class Profile(msgspec.Struct, frozen=True, kw_only=True):
    """A checked profile: the equipment type is a driver kind, every setting within limits."""

    name: str
    equipment_type: str
    description: str = ""
    model: str = ""
    settings: dict[str, Any] = msgspec.field(default_factory=dict)
    tags: tuple[str, ...] = ()


class ProfileState(msgspec.Struct, frozen=True, kw_only=True):
    profile_id: str
    exists: bool = False
    profile: Profile | None = None


class CreateProfile(msgspec.Struct, frozen=True, kw_only=True):
    profile_id: str
    request: ProfileRequest


class UpdateProfile(Reasoned, frozen=True, kw_only=True):
    profile_id: str
    changes: dict[str, Any]


class SaveProfile(Reasoned, frozen=True, kw_only=True):
    """Create, or replace whole (an import): nothing is written when nothing changes. The
    reason is recorded when it replaces a profile (creating one needs none)."""

    profile_id: str
    request: ProfileRequest


class DeleteProfile(Reasoned, frozen=True, kw_only=True):
    profile_id: str


ProfileCommand = CreateProfile | UpdateProfile | SaveProfile | DeleteProfile


# -- evolve ------------------------------------------------------------------------------------


def _profile_of(event: ProfileCreated | ProfileUpdated) -> Profile:
    return Profile(
        name=event.name,
        equipment_type=event.equipment_type,
        description=event.description,
        model=event.model,
        settings=dict(event.settings),
        tags=tuple(event.tags),
    )


def evolve(state: ProfileState, event: AnyEvent) -> ProfileState:
    match event:
        case ProfileCreated() | ProfileUpdated():
            return replace(state, exists=True, profile=_profile_of(event))
        case ProfileDeleted():
            return replace(state, exists=False, profile=None)
    return state


# -- decide ------------------------------------------------------------------------------------


def decide(state: ProfileState, command: ProfileCommand, models: Models) -> list[AnyEvent]:
    match command:
        case CreateProfile():
            if state.exists:
                raise ProfileExists(command.profile_id)
            return [_created(command.profile_id, check(command.request, models))]
        case SaveProfile():
            profile = check(command.request, models)
            replaces = state.profile is not None and profile != state.profile
            reason = command.checked_reason(writes=replaces)
            if state.profile is None:
                return [_created(command.profile_id, profile)]
            if not replaces:
                return []
            return [_updated(command.profile_id, state.profile, profile, reason)]
        case UpdateProfile():
            current = _require(state, command.profile_id)
            if "version" in command.changes:
                raise InvalidRequest.one(
                    "version", command.changes["version"], "pass the version as expected_version"
                )
            if "profile_id" in command.changes:
                raise InvalidRequest.one(
                    "profile_id", command.changes["profile_id"], "a profile's id cannot change"
                )
            base = {**msgspec.to_builtins(current), "tags": list(current.tags)}
            profile = check(parse_profile_request({**base, **command.changes}), models)
            reason = command.checked_reason(writes=profile != current)
            if profile == current:
                return []
            return [_updated(command.profile_id, current, profile, reason)]
        case DeleteProfile():
            _require(state, command.profile_id)
            reason = command.checked_reason(writes=True)
            return [ProfileDeleted(profile_id=command.profile_id, reason=reason)]


def _require(state: ProfileState, profile_id: str) -> Profile:
    if not state.exists or state.profile is None:
        raise ProfileNotFound(profile_id)
    return state.profile


def _created(profile_id: str, profile: Profile) -> ProfileCreated:
    return ProfileCreated(profile_id=profile_id, **msgspec.structs.asdict(profile))


def _updated(
    profile_id: str, before: Profile, profile: Profile, reason: str | None
) -> ProfileUpdated:
    return ProfileUpdated(
        profile_id=profile_id,
        **msgspec.structs.asdict(profile),
        reason=reason,
        changes=field_changes(before, profile),
    )


def profile_id_of(request: ProfileRequest, default: str | None = None) -> str:
    """The id a request names: its ``profile_id``, else ``default`` (a file's name), else its
    ``name``. Refused unless it is a NATS subject token."""
    if request.profile_id is not None:
        field, value = "profile_id", request.profile_id
    elif default is not None:
        field, value = "profile_id", default
    else:
        field, value = "name", request.name
    if not ID_PATTERN.match(value):
        reason = ID_RULE if field == "profile_id" else f"is the profile's id, so it {ID_RULE}"
        raise InvalidRequest.one(field, value, reason + "; or give a profile_id")
    return value


def equipment_kind(equipment_type: str, models: Models) -> str | None:
    """The driver kind an equipment type names (``"Oscilloscope"``, ``"scope"``, ...)."""
    key = equipment_type.strip().lower().replace(" ", "_").replace("-", "_")
    key = EQUIPMENT_TYPE_ALIASES.get(key, key)
    return key if key in models else None


def check(request: ProfileRequest, models: Models) -> Profile:
    """The profile a request describes, or InvalidRequest naming every bad field, its value
    and why (a setting: its name, the value and the driver's limit)."""
    errors: list[FieldError] = []

    def add(field: str, value: Any, reason: str) -> None:
        errors.append(FieldError(field=field, value=value, reason=reason))

    name = request.name.strip()
    if not name or len(name) > MAX_NAME:
        add("name", request.name, f"must be 1 to {MAX_NAME} characters")
    elif problem := text_problem(request.name):
        add("name", request.name, problem)
    description = request.description or ""
    if len(description) > MAX_DESCRIPTION:
        add(
            "description",
            description[:40] + "…",
            f"must be at most {MAX_DESCRIPTION} characters",
        )
    elif problem := text_problem(description, multiline=True):
        add("description", description[:40], problem)
    if len(request.model) > MAX_MODEL:
        add("model", request.model[:40] + "…", f"must be at most {MAX_MODEL} characters")
    elif problem := text_problem(request.model):
        add("model", request.model, problem)
    if len(request.tags) > MAX_TAGS:
        add("tags", len(request.tags), f"at most {MAX_TAGS} tags")
    for index, tag in enumerate(request.tags[:MAX_TAGS]):
        if not tag or len(tag) > MAX_TAG:
            add(f"tags[{index}]", tag, f"must be 1 to {MAX_TAG} characters")
        elif problem := text_problem(tag):
            add(f"tags[{index}]", tag, problem)
    kind = equipment_kind(request.equipment_type, models)
    settings: dict[str, Any] = {}
    if kind is None:
        add(
            "equipment_type",
            request.equipment_type,
            f"is not an instrument kind LabLink drives; known: {', '.join(models)}",
        )
    else:
        settings = _check_settings(request.settings, models[kind], add)
    if errors:
        raise InvalidRequest(errors)
    assert kind is not None
    return Profile(
        name=name,
        equipment_type=kind,
        description=description,
        model=request.model.strip(),
        settings=settings,
        tags=tuple(request.tags),
    )


def _check_settings(
    settings: Mapping[str, Any], model: InstrumentModel, add: Callable[[str, Any, str], None]
) -> dict[str, Any]:
    """Each setting against the driver's table, in the order given (the order they are
    applied), under its own name or an alias. Names are kept as written; values come back in
    the setting's own type (``"curr"`` -> ``"CURR"``), except a word an alias reads as another
    value (``"AUTO"``, ``"SLOW"``), kept as written."""
    settable = [s.name for s in model.settings if s.writable]
    also = f"; also accepted: {', '.join(a.name for a in model.aliases)}" if model.aliases else ""
    checked: dict[str, Any] = {}
    set_by: dict[str, str] = {}  # the table's setting -> the name that set it
    for name, value in settings.items():
        field = f"settings.{name}"
        resolved = model.resolve(name, value)
        if resolved is None:
            add(
                field,
                value,
                f"the {model.kind} driver has no setting {name!r}; settable: "
                f"{', '.join(settable)}{also}",
            )
            continue
        setting, meant = resolved
        if not setting.writable:
            add(field, value, f"is read-only on the {model.kind}; settable: {', '.join(settable)}")
            continue
        if setting.name in set_by:
            add(field, value, f"sets {setting.name}, which {set_by[setting.name]} already sets")
            continue
        set_by[setting.name] = name
        try:
            normal = setting.validate(model.kind, meant, parameter=name, context="profile")
        except InvalidParameter as exc:
            add(field, value, _limit_reason(exc, model.kind))
            continue
        checked[name] = normal if meant is value else value
    return checked


def _limit_reason(exc: InvalidParameter, kind: str) -> str:
    """The driver's own reason, naming the limit: ``is above the maximum 1e+09 Sa/s of the
    oscilloscope driver``."""
    text = str(exc)
    marker = f": {exc.value!r} "
    at = text.find(marker)
    reason = text[at + len(marker) :] if at >= 0 else text
    if isinstance(exc.limit, int | float) and not isinstance(exc.limit, bool):
        return f"{reason} of the {kind} driver"
    return reason
