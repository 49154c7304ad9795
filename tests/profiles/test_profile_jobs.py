"""Jobs naming profiles: with the profile check on, a job's profile must exist and be for the
kind of instrument the job runs on (422 naming profile_id, the value and why); the shipped
profiles apply on the simulated bench and are read back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from lablink.application import JobService
from lablink.clock import ManualClock
from lablink.equipment_agent.inprocess import InProcessExecutor
from lablink.equipment_service import EquipmentService
from lablink.errors import InvalidRequest
from lablink.eventstore.sqlite import SQLiteEventStore
from lablink.ids import SequentialIds
from lablink.instruments.protocol import Presence
from lablink.profile_service import ProfileService, StoredProfiles, load_shipped_profiles
from lablink.projections.profiles import list_profiles, profile_lookup
from lablink.projections.reading import reading_views
from tests.support.bench import ProgressLog, copy_bench, execution_request
from tests.support.harness import Harness, api_client

JOB: dict[str, Any] = {
    "name": "capture",
    "schedule_type": "acquisition",
    "equipment_id": "oscilloscope_1",
    "trigger_type": "interval",
    "interval_hours": 1,
    "parameters": {"duration": 1},
    "profile_id": "high_res_1GS",
}


@pytest.fixture
def checked(store: SQLiteEventStore, clock: ManualClock) -> JobService:
    load_shipped_profiles(store, clock)
    return JobService(
        store,
        clock,
        default_timezone="Europe/Berlin",
        ids=SequentialIds(),
        profiles=StoredProfiles(store),
    )


def refusal(service: JobService, body: dict[str, Any]) -> tuple[str, Any, str]:
    with pytest.raises(InvalidRequest) as caught:
        service.create_job(body, "test")
    (error,) = caught.value.errors
    return error.field, error.value, error.reason


def test_an_unknown_profile_is_refused_and_nothing_is_written(
    checked: JobService, store: SQLiteEventStore
) -> None:
    before = store.last_position()
    field, value, reason = refusal(checked, {**JOB, "profile_id": "profile_name"})
    assert (field, value) == ("profile_id", "profile_name")
    assert reason.startswith("no such profile")
    assert store.last_position() == before


def test_a_profile_for_another_kind_of_instrument_is_refused(checked: JobService) -> None:
    body = {
        **JOB,
        "equipment_id": "power_supply_1",
        "schedule_type": "state_capture",
        "parameters": {},
    }
    assert refusal(checked, body) == (
        "profile_id",
        "high_res_1GS",
        "is a profile for equipment_type 'oscilloscope', but power_supply_1 is 'power_supply'",
    )
    assert checked.create_job({**body, "profile_id": "psu_5v_logic"}, "test")


def test_the_jobs_own_fields_are_reported_before_the_profile(checked: JobService) -> None:
    field, _, _ = refusal(checked, {**JOB, "profile_id": "profile_name", "interval_hours": -1})
    assert field == "interval_hours"


def test_the_kind_an_agent_reported_wins_and_unseen_instruments_only_need_the_profile(
    checked: JobService, store: SQLiteEventStore, clock: ManualClock
) -> None:
    # Never seen: any existing profile is accepted, a missing one is not.
    unseen = {**JOB, "equipment_id": "rig_7"}
    assert checked.create_job(unseen, "test")
    assert refusal(checked, {**unseen, "profile_id": "nope"})[0] == "profile_id"
    # An agent reports rig_7 as a multimeter: now the kind is checked.
    EquipmentService(store, clock).record(
        Presence(equipment_id="rig_7", agent_id="lab-pc", state="online", kind="multimeter")
    )
    assert "but rig_7 is 'multimeter'" in refusal(checked, unseen)[2]
    assert checked.create_job({**unseen, "profile_id": "dmm_fast_dc"}, "test")


def test_updates_are_checked_when_they_change_the_profile_or_the_instrument(
    checked: JobService, store: SQLiteEventStore, clock: ManualClock
) -> None:
    job_id = checked.create_job(JOB, "test")
    with pytest.raises(InvalidRequest, match="profile_id='profile_name': no such profile"):
        checked.update_job(job_id, {"profile_id": "profile_name"}, "test")
    with pytest.raises(InvalidRequest, match="but sensor_1 is 'temperature_sensor'"):
        checked.update_job(job_id, {"equipment_id": "sensor_1"}, "test")
    assert checked.update_job(job_id, {"equipment_id": "scope_1"}, "test")
    assert checked.update_job(
        job_id, {"equipment_id": "sensor_1", "profile_id": "sensor_fast"}, "test"
    )
    # A profile deleted later does not block edits that leave it alone.
    ProfileService(store, clock).delete("sensor_fast", "admin")
    assert checked.update_job(job_id, {"name": "renamed"}, "test")
    assert checked.update_job(job_id, {"profile_id": None}, "test")


def test_without_a_check_profile_ids_are_only_identifiers(service: JobService) -> None:
    assert service.create_job({**JOB, "profile_id": "profile_name"}, "test")


@pytest.fixture
async def checked_client(tmp_path: Path, clock: ManualClock) -> AsyncIterator[httpx.AsyncClient]:
    harness = await Harness(tmp_path / "data" / "scheduler.db", clock, profiles=True).start()
    try:
        async with api_client(harness, auth=False) as client:
            yield client
    finally:
        await harness.close()


async def test_job_create_and_update_over_http_are_422_naming_profile_id(
    checked_client: httpx.AsyncClient,
) -> None:
    client = checked_client
    refused = await client.post("/api/scheduler/jobs/create", json={**JOB, "profile_id": "nope"})
    assert refused.status_code == 422
    assert refused.json()["errors"] == [
        {"field": "profile_id", "value": "nope", "reason": refused.json()["errors"][0]["reason"]}
    ]
    assert "no such profile" in refused.json()["detail"]
    created = await client.post("/api/scheduler/jobs/create", json=JOB)
    assert created.status_code == 200, created.text
    job_id = created.json()["job_id"]
    wrong_kind = await client.put(
        f"/api/scheduler/jobs/{job_id}", json={"profile_id": "load_cc_1a"}
    )
    assert wrong_kind.status_code == 422
    (error,) = wrong_kind.json()["errors"]
    assert error["field"] == "profile_id"
    assert error["value"] == "load_cc_1a"
    assert "'electronic_load'" in error["reason"]
    assert "oscilloscope_1 is 'oscilloscope'" in error["reason"]
    # A profile created over the API can be named at once.
    made = await client.post(
        "/api/profiles",
        json={"name": "slow", "equipment_type": "oscilloscope", "settings": {"sample_rate": 10}},
    )
    assert made.status_code == 200, made.text
    moved = await client.put(f"/api/scheduler/jobs/{job_id}", json={"profile_id": "slow"})
    assert moved.status_code == 200, moved.text
    assert moved.json()["job"]["profile_id"] == "slow"


async def test_every_shipped_profile_applies_on_the_simulated_bench(
    tmp_path: Path, store: SQLiteEventStore, clock: ManualClock
) -> None:
    """The shipped settings are within the drivers' limits and the simulated instruments'
    own (bench.yaml): each applies and reads back, through the lookup agents are given."""
    load_shipped_profiles(store, clock)
    with reading_views(store) as views:
        profiles = list_profiles(views)
    executor = InProcessExecutor.simulated(
        tmp_path / "data", bench_yaml=copy_bench(tmp_path / "bench"), profiles=profile_lookup(store)
    )
    instrument = {
        "oscilloscope": "scope_1",
        "power_supply": "power_supply_1",
        "multimeter": "multimeter_1",
        "electronic_load": "load_1",
        "temperature_sensor": "sensor_1",
    }
    try:
        for profile in profiles:
            request = execution_request(
                instrument[profile["equipment_type"]],
                "state_capture",
                profile_id=profile["profile_id"],
            )
            outcome = await executor.execute(request, ProgressLog())
            assert outcome.status == "completed", (profile["profile_id"], outcome.error)
            applied = outcome.result["profile"]
            assert applied["applied"] is True
            assert applied["id"] == profile["profile_id"]
            assert set(applied["settings"]) == set(profile["settings"])
            for name, value in profile["settings"].items():
                assert outcome.result["settings"][name]["value"] == pytest.approx(value)
        missing = await executor.execute(
            execution_request("scope_1", "state_capture", profile_id="gone"), ProgressLog()
        )
        assert missing.status == "failed"
        assert missing.error is not None
        assert missing.error.type == "profile_error"
    finally:
        await executor.aclose()
