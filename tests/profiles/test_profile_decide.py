"""The profile aggregate, given/when/then on plain events: every setting is checked against the
driver's limits when a profile is saved, and a refusal names the field, the value and why."""

from __future__ import annotations

from typing import Any

import pytest

from lablink.domain.profiles import (
    CreateProfile,
    DeleteProfile,
    ProfileCommand,
    ProfileState,
    SaveProfile,
    UpdateProfile,
    decide,
    equipment_kind,
    evolve,
    parse_profile_request,
    profile_id_of,
)
from lablink.errors import FieldError, InvalidRequest, ProfileExists, ProfileNotFound
from lablink.events import AnyEvent, ProfileCreated, ProfileDeleted, ProfileUpdated
from lablink.instruments.drivers import MODELS

SCOPE: dict[str, Any] = {
    "name": "high_res_1GS",
    "description": "1 GS/s",
    "equipment_type": "oscilloscope",
    "model": "DSO-1104",
    "settings": {"sample_rate": 1e9, "trigger_level": 0.5},
    "tags": ["guide"],
}
CREATED = ProfileCreated(
    profile_id="high_res_1GS",
    name="high_res_1GS",
    description="1 GS/s",
    equipment_type="oscilloscope",
    model="DSO-1104",
    settings={"sample_rate": 1e9, "trigger_level": 0.5},
    tags=("guide",),
)


def given(*events: AnyEvent, profile_id: str = "high_res_1GS") -> ProfileState:
    state = ProfileState(profile_id=profile_id)
    for event in events:
        state = evolve(state, event)
    return state


def when(state: ProfileState, command: ProfileCommand) -> list[AnyEvent]:
    return decide(state, command, MODELS)


def create(body: dict[str, Any], profile_id: str = "high_res_1GS") -> CreateProfile:
    return CreateProfile(profile_id=profile_id, request=parse_profile_request(body))


def refused(state: ProfileState, command: ProfileCommand) -> list[FieldError]:
    with pytest.raises(InvalidRequest) as caught:
        when(state, command)
    return list(caught.value.errors)


def test_create_records_the_whole_profile() -> None:
    assert when(given(), create(SCOPE)) == [CREATED]


def test_create_twice_is_a_conflict_but_again_after_delete_is_not() -> None:
    with pytest.raises(ProfileExists, match="'high_res_1GS' already exists"):
        when(given(CREATED), create(SCOPE))
    deleted = ProfileDeleted(profile_id="high_res_1GS")
    assert when(given(CREATED, deleted), create(SCOPE)) == [CREATED]


@pytest.mark.parametrize(
    ("setting", "value", "reason"),
    [
        ("sample_rate", 2e9, "is above the maximum 1e+09 Sa/s of the oscilloscope driver"),
        ("sample_rate", 0.5, "is below the minimum 1 Sa/s of the oscilloscope driver"),
        ("trigger_level", 7.5, "is above the maximum 5 V of the oscilloscope driver"),
        ("trigger_level", "high", "is not a number"),
        ("trigger_level", True, "is not a number"),
    ],
)
def test_a_setting_beyond_the_drivers_limit_is_refused_naming_setting_value_and_limit(
    setting: str, value: Any, reason: str
) -> None:
    body = {**SCOPE, "settings": {**SCOPE["settings"], setting: value}}
    assert refused(given(), create(body)) == [
        FieldError(field=f"settings.{setting}", value=value, reason=reason)
    ]


def test_every_bad_setting_is_reported_at_once() -> None:
    body = {
        **SCOPE,
        "equipment_type": "electronic_load",
        "settings": {"mode": "WATTS", "current": 31, "input": "yes", "slew_rate": 3},
    }
    errors = refused(given(), create(body))
    assert [(e.field, e.value) for e in errors] == [
        ("settings.mode", "WATTS"),
        ("settings.current", 31),
        ("settings.input", "yes"),
        ("settings.slew_rate", 3),
    ]
    assert errors[0].reason == "is not one of CURR, VOLT, RES, POW (or CC, CV, CR, CP)"
    assert errors[1].reason == "is above the maximum 30 A of the electronic_load driver"
    assert "is not on/off" in errors[2].reason
    assert errors[3].reason.startswith("the electronic_load driver has no setting 'slew_rate'")
    assert "settable: current, mode, voltage, resistance, power, input" in errors[3].reason
    assert errors[3].reason.endswith("; also accepted: load_enabled")


def test_read_only_settings_cannot_be_in_a_profile() -> None:
    body = {**SCOPE, "settings": {"record_length": 1000}}
    (error,) = refused(given(), create(body))
    assert error.field == "settings.record_length"
    assert error.reason.startswith(
        "is read-only on the oscilloscope; settable: sample_rate, trigger_level, trigger_mode,"
    )


def test_values_are_stored_in_the_settings_own_type_and_order() -> None:
    body = {
        **SCOPE,
        "equipment_type": "electronic_load",
        "settings": {"mode": "curr", "current": 2, "input": 0},
    }
    (event,) = when(given(), create(body))
    assert isinstance(event, ProfileCreated)
    assert list(event.settings.items()) == [("mode", "CURR"), ("current", 2), ("input", False)]
    assert event.equipment_type == "electronic_load"


@pytest.mark.parametrize(
    ("given_type", "kind"),
    [
        ("oscilloscope", "oscilloscope"),
        ("Oscilloscope", "oscilloscope"),
        ("scope", "oscilloscope"),
        ("power supply", "power_supply"),
        ("PSU", "power_supply"),
        ("dmm", "multimeter"),
        ("electronic-load", "electronic_load"),
        ("temperature sensor", "temperature_sensor"),
        ("function_generator", None),
    ],
)
def test_equipment_types_map_onto_driver_kinds(given_type: str, kind: str | None) -> None:
    assert equipment_kind(given_type, MODELS) == kind


def test_an_unknown_equipment_type_is_refused_listing_the_kinds() -> None:
    (error,) = refused(given(), create({**SCOPE, "equipment_type": "spectrum_analyzer"}))
    assert error.field == "equipment_type"
    assert error.value == "spectrum_analyzer"
    assert "oscilloscope" in error.reason
    assert "power_supply" in error.reason


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", ""),
        ("name", "x" * 201),
        ("name", "bell\x07"),
        ("model", "DSO\x00"),
        ("description", "d" * 5001),
        ("tags", [""]),
        ("tags", ["t" * 65]),
    ],
)
def test_text_fields_are_checked(field: str, value: Any) -> None:
    errors = refused(given(), create({**SCOPE, field: value}))
    assert [e.field.split("[")[0] for e in errors] == [field]


def test_the_id_is_profile_id_else_the_file_name_else_the_name() -> None:
    assert profile_id_of(parse_profile_request(SCOPE)) == "high_res_1GS"
    assert profile_id_of(parse_profile_request(SCOPE), default="from_file") == "from_file"
    named = parse_profile_request({**SCOPE, "profile_id": "explicit"})
    assert profile_id_of(named, default="from_file") == "explicit"
    with pytest.raises(InvalidRequest) as caught:
        profile_id_of(parse_profile_request({**SCOPE, "name": "High res 1 GS/s"}))
    (error,) = caught.value.errors
    assert (error.field, error.value) == ("name", "High res 1 GS/s")
    assert "^[A-Za-z0-9_-]{1,64}$" in error.reason
    with pytest.raises(InvalidRequest, match=r"profile_id='a\.b'"):
        profile_id_of(parse_profile_request({**SCOPE, "profile_id": "a.b"}))


def test_unknown_fields_are_refused_by_name() -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_profile_request({**SCOPE, "colour": "blue"})
    (error,) = caught.value.errors
    assert (error.field, error.value, error.reason) == ("colour", "blue", "unknown field")


def test_update_changes_only_the_fields_given_and_checks_the_result() -> None:
    update = UpdateProfile(profile_id="high_res_1GS", changes={"settings": {"sample_rate": 5e8}})
    (event,) = when(given(CREATED), update)
    assert isinstance(event, ProfileUpdated)
    assert event.settings == {"sample_rate": 5e8}
    assert event.name == "high_res_1GS"
    assert event.tags == ("guide",)
    # The new equipment type is checked against the settings the profile keeps.
    errors = refused(
        given(CREATED),
        UpdateProfile(profile_id="high_res_1GS", changes={"equipment_type": "multimeter"}),
    )
    assert [e.field for e in errors] == ["settings.sample_rate", "settings.trigger_level"]


def test_an_update_that_changes_nothing_records_nothing() -> None:
    same = UpdateProfile(profile_id="high_res_1GS", changes={"tags": ["guide"]})
    assert when(given(CREATED), same) == []


def test_update_and_delete_of_a_missing_profile_are_not_found() -> None:
    with pytest.raises(ProfileNotFound, match="profile 'nope' not found"):
        when(given(profile_id="nope"), UpdateProfile(profile_id="nope", changes={}))
    gone = given(CREATED, ProfileDeleted(profile_id="high_res_1GS"))
    with pytest.raises(ProfileNotFound):
        when(gone, DeleteProfile(profile_id="high_res_1GS"))
    assert when(given(CREATED), DeleteProfile(profile_id="high_res_1GS")) == [
        ProfileDeleted(profile_id="high_res_1GS")
    ]


def test_save_creates_replaces_or_does_nothing() -> None:
    save = SaveProfile(profile_id="high_res_1GS", request=parse_profile_request(SCOPE))
    assert when(given(), save) == [CREATED]
    assert when(given(CREATED), save) == []
    changed = SaveProfile(
        profile_id="high_res_1GS",
        request=parse_profile_request({**SCOPE, "settings": {"sample_rate": 1e6}}),
    )
    (event,) = when(given(CREATED), changed)
    assert isinstance(event, ProfileUpdated)
    assert event.settings == {"sample_rate": 1e6}


def test_evolve_folds_created_and_deleted() -> None:
    state = given(CREATED)
    assert evolve(state, ProfileDeleted(profile_id="high_res_1GS")).exists is False
    assert state.profile is not None
    assert state.profile.settings == {"sample_rate": 1e9, "trigger_level": 0.5}
