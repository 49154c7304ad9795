"""A reason on every change (issue 20, point 4): updates and deletions of jobs, profiles and
API keys record the reason given and each changed field's old and new value; with
LABLINK_REQUIRE_REASON=1 a change without a reason is a 422 naming ``reason`` and writes
nothing; GET /api/audit shows reasons, changes and whether a record was amended after it was
first recorded, and prints them as CSV. Real SQLite, the real app, the real CLI."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from lablink.api.audit_export import COLUMNS
from lablink.cli import app as cli
from lablink.clock import ManualClock
from lablink.events import (
    ApiKeyRevoked,
    FieldChange,
    JobDeleted,
    JobPaused,
    JobResumed,
    JobUpdated,
    ProfileDeleted,
    ProfileUpdated,
)
from lablink.eventstore.sqlite import _AMENDMENTS
from lablink.keys import create_key
from tests.support.harness import Harness, api_client

JOB: dict[str, Any] = {
    "name": "Hourly Voltage Check",
    "schedule_type": "measurement",
    "equipment_id": "power_supply_1",
    "trigger_type": "interval",
    "interval_hours": 1,
    "parameters": {"command": "get_voltage"},
}
PROFILE: dict[str, Any] = {
    "name": "psu_5v",
    "equipment_type": "power_supply",
    "settings": {"voltage": 5.0, "current": 1.0},
}
Client = httpx.AsyncClient


@pytest.fixture
async def strict(tmp_path: Path, clock: ManualClock) -> AsyncIterator[Harness]:
    """A harness whose server runs with LABLINK_REQUIRE_REASON=1."""
    started = await Harness(tmp_path / "data" / "scheduler.db", clock, require_reason=True).start()
    yield started
    await started.close()


@pytest.fixture
async def strict_client(strict: Harness) -> AsyncIterator[Client]:
    async with api_client(strict, auth=False) as client:
        yield client


async def ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def create_job(client: Client, body: dict[str, Any] | None = None) -> str:
    created = await ok(await client.post("/api/scheduler/jobs/create", json=body or JOB))
    return str(created["job_id"])


def last(harness: Harness, stream_id: str) -> Any:
    return harness.store.read_stream(stream_id)[-1].event


async def trail(client: Client, **query: Any) -> list[dict[str, Any]]:
    body = await ok(await client.get("/api/audit", params={"limit": 1000, **query}))
    events: list[dict[str, Any]] = body["events"]
    return events


def refused_for_reason(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 422, response.text
    body: dict[str, Any] = response.json()
    (error,) = body["errors"]
    assert error["field"] == "reason", body
    assert "reason" in body["detail"], body
    return dict(error)


# -- recorded -----------------------------------------------------------------------------


async def test_an_update_records_its_reason_and_each_changed_fields_old_and_new_value(
    client: Client, harness: Harness
) -> None:
    job_id = await create_job(client)
    put = await client.put(
        f"/api/scheduler/jobs/{job_id}",
        json={
            "description": "rail A",
            "interval_hours": 2,
            "tags": ["rail"],
            "reason": "  CAPA-17: halve the load on the rail  ",
        },
    )
    assert (await ok(put))["message"] == "job updated"

    updated = last(harness, job_id)
    assert isinstance(updated, JobUpdated)
    assert updated.reason == "CAPA-17: halve the load on the rail"
    assert updated.changes == (
        FieldChange(field="description", old="", new="rail A"),
        FieldChange(field="interval_hours", old=1.0, new=2.0),
        FieldChange(field="tags", old=[], new=["rail"]),
    )
    assert updated.changed_fields == ("description", "interval_hours", "tags")

    events = await trail(client, job_id=job_id)
    assert [e["type"] for e in events] == ["job.created", "job.updated"]
    created, update = events
    assert update["reason"] == "CAPA-17: halve the load on the rail"
    assert update["changes"] == [
        {"field": "description", "old": "", "new": "rail A"},
        {"field": "interval_hours", "old": 1.0, "new": 2.0},
        {"field": "tags", "old": [], "new": ["rail"]},
    ]
    # The job as first recorded was changed afterwards, and the trail says where; the update
    # itself is the job as it stands.
    assert (created["amended"], created["amended_at_position"]) == (True, update["position"])
    assert (update["amended"], update["amended_at_position"]) == (False, None)
    assert created["reason"] is None
    assert created["changes"] == []


async def test_an_instant_changes_as_iso_text_and_a_trigger_change_drops_the_old_fields(
    client: Client, harness: Harness
) -> None:
    job_id = await create_job(client)
    await ok(
        await client.put(
            f"/api/scheduler/jobs/{job_id}",
            json={"trigger_type": "date", "run_date": "2026-04-01T09:00:00Z", "reason": "once"},
        )
    )
    updated = last(harness, job_id)
    assert isinstance(updated, JobUpdated)
    changes = {c.field: (c.old, c.new) for c in updated.changes}
    assert changes["trigger_type"] == ("interval", "date")
    assert changes["interval_hours"] == (1.0, None)
    assert changes["run_date"] == (None, "2026-04-01T09:00:00Z")


async def test_pause_resume_and_delete_take_a_reason_in_the_query(
    client: Client, harness: Harness
) -> None:
    job_id = await create_job(client)
    path = f"/api/scheduler/jobs/{job_id}"
    await ok(await client.post(f"{path}/pause", params={"reason": "PSU at calibration"}))
    paused = last(harness, job_id)
    assert paused == JobPaused(job_id=job_id, reason="PSU at calibration")
    await ok(await client.post(f"{path}/resume", params={"reason": "PSU back, cert C-9"}))
    resumed = last(harness, job_id)
    assert isinstance(resumed, JobResumed)
    assert resumed.reason == "PSU back, cert C-9"
    await ok(await client.delete(path, params={"reason": "rail retired"}))
    assert last(harness, job_id) == JobDeleted(job_id=job_id, reason="rail retired")

    events = await trail(client, job_id=job_id)
    assert [(e["type"], e["reason"]) for e in events] == [
        ("job.created", None),
        ("job.paused", "PSU at calibration"),
        ("job.resumed", "PSU back, cert C-9"),
        ("job.deleted", "rail retired"),
    ]
    assert events[0]["amended_at_position"] == events[1]["position"]


async def test_without_a_reason_changes_are_recorded_as_before(
    client: Client, harness: Harness
) -> None:
    """Off by default: the guide's calls, which give no reason, work as written."""
    job_id = await create_job(client)
    await ok(await client.put(f"/api/scheduler/jobs/{job_id}", json={"enabled": False}))
    assert last(harness, job_id) == JobPaused(job_id=job_id, reason="updated with enabled=false")
    await ok(await client.post(f"/api/scheduler/jobs/{job_id}/resume"))
    await ok(await client.delete(f"/api/scheduler/jobs/{job_id}"))
    assert last(harness, job_id) == JobDeleted(job_id=job_id, reason=None)


async def test_profiles_record_the_reason_and_the_settings_before_and_after(
    client: Client, harness: Harness
) -> None:
    await ok(await client.post("/api/profiles", json=PROFILE))
    put = await client.put(
        "/api/profiles/psu_5v",
        json={"settings": {"voltage": 5.1, "current": 1.0}, "reason": "rail measured 4.9 V"},
    )
    await ok(put)
    updated = last(harness, "profile:psu_5v")
    assert isinstance(updated, ProfileUpdated)
    assert updated.reason == "rail measured 4.9 V"
    assert updated.changes == (
        FieldChange(
            field="settings",
            old={"voltage": 5.0, "current": 1.0},
            new={"voltage": 5.1, "current": 1.0},
        ),
    )
    await ok(await client.delete("/api/profiles/psu_5v", params={"reason": "superseded"}))
    assert last(harness, "profile:psu_5v") == ProfileDeleted(
        profile_id="psu_5v", reason="superseded"
    )
    events = await trail(client, job_id="profile:psu_5v")
    assert [(e["type"], e["amended"]) for e in events] == [
        ("profile.created", True),
        ("profile.updated", True),
        ("profile.deleted", False),
    ]
    assert [e["amended_at_position"] for e in events] == [
        events[1]["position"],
        events[2]["position"],
        None,
    ]


async def test_a_revoked_key_records_the_reason_and_its_creation_reads_amended(
    harness: Harness,
) -> None:
    _, admin = create_key(
        harness.store, name="root", role="admin", actor="t", now=harness.clock.now()
    )
    bob_id, _ = create_key(
        harness.store, name="bob", role="viewer", actor="t", now=harness.clock.now()
    )
    headers = {"Authorization": f"Bearer {admin}"}
    async with api_client(harness, auth=True) as client:
        revoked = await client.delete(
            f"/api/keys/{bob_id}", params={"reason": "left the lab"}, headers=headers
        )
        assert revoked.status_code == 200, revoked.text
        body = await ok(await client.get("/api/audit", params={"type": "apikey."}, headers=headers))
    assert last(harness, f"apikey:{bob_id}") == ApiKeyRevoked(key_id=bob_id, reason="left the lab")
    by_stream = {(e["stream_id"], e["type"]): e for e in body["events"]}
    created = by_stream[(f"apikey:{bob_id}", "apikey.created")]
    revocation = by_stream[(f"apikey:{bob_id}", "apikey.revoked")]
    assert (created["amended"], created["amended_at_position"]) == (True, revocation["position"])
    assert revocation["reason"] == "left the lab"
    assert revocation["actor"] == "root"
    # The admin's own key was never changed.
    assert not [e for e in body["events"] if e["amended"] and e["data"]["name"] == "root"]


async def test_a_change_that_changes_nothing_needs_no_reason_and_records_nothing(
    strict_client: Client, strict: Harness
) -> None:
    job_id = await create_job(strict_client)
    head = strict.store.last_position()
    same = await strict_client.put(f"/api/scheduler/jobs/{job_id}", json={"name": JOB["name"]})
    assert (await ok(same))["message"] == "nothing changed"
    await ok(await strict_client.post(f"/api/scheduler/jobs/{job_id}/resume"))
    assert strict.store.last_position() == head


# -- required -----------------------------------------------------------------------------


async def test_with_reasons_required_a_change_without_one_is_a_422_and_writes_nothing(
    strict_client: Client, strict: Harness
) -> None:
    # Creating needs no reason: there is nothing before it to change.
    job_id = await create_job(strict_client)
    await ok(await strict_client.post("/api/profiles", json=PROFILE))
    _, admin = create_key(
        strict.store, name="root", role="admin", actor="t", now=strict.clock.now()
    )
    key_id, _ = create_key(
        strict.store, name="bob", role="viewer", actor="t", now=strict.clock.now()
    )
    head = strict.store.last_position()
    job = f"/api/scheduler/jobs/{job_id}"

    attempts = [
        strict_client.put(job, json={"description": "x"}),
        strict_client.put(job, json={"description": "x", "reason": "   "}),
        strict_client.put(job, json={"enabled": False}),
        strict_client.post(f"{job}/pause"),
        strict_client.post(f"{job}/pause", params={"reason": ""}),
        strict_client.delete(job),
        strict_client.put("/api/profiles/psu_5v", json={"model": "PSU-3005"}),
        strict_client.delete("/api/profiles/psu_5v"),
    ]
    for attempt in attempts:
        error = refused_for_reason(await attempt)
        assert "LABLINK_REQUIRE_REASON=1" in error["reason"]
    async with api_client(strict, auth=True) as keyed:
        revoke = await keyed.delete(
            f"/api/keys/{key_id}", headers={"Authorization": f"Bearer {admin}"}
        )
    refused_for_reason(revoke)
    assert strict.store.last_position() == head

    # Given, each goes through.
    await ok(await strict_client.put(job, json={"description": "x", "reason": "CC-4"}))
    await ok(await strict_client.post(f"{job}/pause", params={"reason": "CC-4"}))
    await ok(await strict_client.delete(job, params={"reason": "CC-4"}))
    await ok(
        await strict_client.put(
            "/api/profiles/psu_5v", json={"model": "PSU-3005", "reason": "CC-4"}
        )
    )
    written = [r.event for r in strict.store.read_all(head)]
    assert [getattr(e, "reason", None) for e in written] == ["CC-4"] * 4


@pytest.mark.parametrize(
    ("reason", "why"),
    [
        ("a\u202eb", "U+202E"),
        ("ring\x07", "U+0007"),
        ("x" * 1001, "at most 1000 characters"),
    ],
)
async def test_a_malformed_reason_is_a_422_naming_it_and_writes_nothing(
    client: Client, harness: Harness, reason: str, why: str
) -> None:
    job_id = await create_job(client)
    head = harness.store.last_position()
    for response in (
        await client.put(f"/api/scheduler/jobs/{job_id}", json={"name": "n", "reason": reason}),
        await client.delete(f"/api/scheduler/jobs/{job_id}", params={"reason": reason}),
    ):
        error = refused_for_reason(response)
        assert why in error["reason"]
    assert harness.store.last_position() == head


async def test_a_reason_that_is_not_text_is_a_422_naming_it(client: Client) -> None:
    job_id = await create_job(client)
    response = await client.put(f"/api/scheduler/jobs/{job_id}", json={"reason": 42})
    error = refused_for_reason(response)
    assert error["value"] == 42


# -- the CLI ------------------------------------------------------------------------------


def test_keys_revoke_records_the_reason_and_refuses_without_one_when_required(
    tmp_path: Path, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lablink.logstore import open_store

    data_dir = tmp_path / "data"
    store = open_store(data_dir / "scheduler.db")
    first, _ = create_key(store, name="alice", role="viewer", actor="t", now=clock.now())
    second, _ = create_key(store, name="bob", role="viewer", actor="t", now=clock.now())
    head = store.last_position()
    runner = CliRunner()
    args = ["--by", "carol", "--data-dir", str(data_dir)]
    try:
        done = runner.invoke(cli, ["keys", "revoke", first, "--reason", "lost laptop", *args])
        assert done.exit_code == 0, done.output
        assert last_event(store, f"apikey:{first}") == ApiKeyRevoked(
            key_id=first, reason="lost laptop"
        )
        monkeypatch.setenv("LABLINK_REQUIRE_REASON", "1")
        refused = runner.invoke(cli, ["keys", "revoke", second, *args])
        assert refused.exit_code == 1
        assert "reason=None" in refused.output
        assert "LABLINK_REQUIRE_REASON=1" in refused.output
        malformed = runner.invoke(cli, ["keys", "revoke", second, "--reason", "\x1b[2J", *args])
        assert malformed.exit_code == 2
        assert "--reason" in malformed.output
        assert store.last_position() == head + 1
    finally:
        store.close()


def last_event(store: Any, stream_id: str) -> Any:
    return store.read_stream(stream_id)[-1].event


def test_profiles_import_records_the_reason_for_what_it_changes(
    tmp_path: Path, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lablink.logstore import open_store

    data_dir = tmp_path / "data"
    folder = tmp_path / "profiles"
    folder.mkdir()
    (folder / "psu_5v.json").write_text(json.dumps(PROFILE))
    runner = CliRunner()
    base = ["profiles", "import", str(folder), "--data-dir", str(data_dir)]
    assert runner.invoke(cli, base).exit_code == 0  # created: no reason needed

    (folder / "psu_5v.json").write_text(json.dumps({**PROFILE, "model": "PSU-3005"}))
    (folder / "scope.json").write_text(
        json.dumps({"name": "scope", "equipment_type": "oscilloscope", "settings": {}})
    )
    monkeypatch.setenv("LABLINK_REQUIRE_REASON", "1")
    refused = runner.invoke(cli, base)
    # The new profile loads; the change is refused naming reason, and written nowhere.
    assert refused.exit_code == 1, refused.output
    assert "created   scope (scope.json)" in refused.output
    assert "refused   psu_5v.json" in refused.output
    assert "reason=None: a reason is required" in refused.output

    done = runner.invoke(cli, [*base, "--reason", "model from the asset register"])
    assert done.exit_code == 0, done.output
    assert "updated   psu_5v (psu_5v.json)" in done.output
    store = open_store(data_dir / "scheduler.db")
    try:
        updated = last_event(store, "profile:psu_5v")
        assert isinstance(updated, ProfileUpdated)
        assert updated.reason == "model from the asset register"
        assert updated.changes == (FieldChange(field="model", old="", new="PSU-3005"),)
        assert [r.type for r in store.read_stream("profile:psu_5v")] == [
            "profile.created",
            "profile.updated",
        ]
    finally:
        store.close()


# -- the printable export -----------------------------------------------------------------


def rows_of(response: httpx.Response) -> list[dict[str, str]]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert "attachment" in response.headers["content-disposition"]
    reader = csv.DictReader(io.StringIO(response.text))
    assert tuple(reader.fieldnames or ()) == COLUMNS
    return list(reader)


async def test_the_csv_export_has_a_row_per_event_and_per_changed_field(
    client: Client, harness: Harness
) -> None:
    job_id = await create_job(client)
    other = await create_job(client, {**JOB, "name": "Other"})
    await ok(
        await client.put(
            f"/api/scheduler/jobs/{job_id}",
            json={"name": "=HYPERLINK(1)", "interval_hours": 3, "reason": "-2 V offset, see NC-5"},
        )
    )
    await ok(await client.post(f"/api/scheduler/jobs/{job_id}/pause", params={"reason": "why"}))

    rows = rows_of(await client.get("/api/audit", params={"format": "csv", "job_id": job_id}))
    events = await trail(client, job_id=job_id)
    created, update, pause = events
    assert [r["position"] for r in rows] == [
        str(created["position"]),
        str(update["position"]),
        str(update["position"]),
        str(pause["position"]),
    ]
    assert rows[0] == {
        "position": str(created["position"]),
        "occurred_at": created["occurred_at"],
        "actor": "local",
        "type": "job.created",
        "stream_id": job_id,
        "reason": "",
        "field": "",
        "old": "",
        "new": "",
        "amended": "true",
        "amended_at_position": str(update["position"]),
    }
    # Text a spreadsheet would run as a formula is shown as text; the JSON keeps it as it is.
    assert [(r["reason"], r["field"], r["old"], r["new"], r["amended"]) for r in rows[1:3]] == [
        ("'-2 V offset, see NC-5", "name", JOB["name"], "'=HYPERLINK(1)", "true"),
        ("'-2 V offset, see NC-5", "interval_hours", "1.0", "3.0", "true"),
    ]
    assert update["reason"] == "-2 V offset, see NC-5"
    assert rows[1]["amended_at_position"] == str(pause["position"])
    assert (rows[3]["type"], rows[3]["reason"], rows[3]["amended"]) == (
        "job.paused",
        "why",
        "false",
    )

    # The whole log, every page of it; and the filters and limit as the JSON pages take them.
    everything = rows_of(await client.get("/api/audit", params={"format": "csv"}))
    assert {r["stream_id"] for r in everything} >= {job_id, other}
    assert len({r["position"] for r in everything}) == len(await trail(client))
    first_two = rows_of(await client.get("/api/audit", params={"format": "csv", "limit": 2}))
    assert [r["position"] for r in first_two] == [r["position"] for r in everything[:2]]
    refused = await client.get("/api/audit", params={"format": "csv", "since": "yesterday"})
    assert refused.status_code == 400
    assert refused.json()["errors"][0]["field"] == "since"


async def test_the_openapi_document_offers_the_csv_and_the_reason_parameter(
    client: Client,
) -> None:
    document = await ok(await client.get("/schema/openapi.json"))
    paths = document["paths"]
    audit = paths["/api/audit"]["get"]
    assert "text/csv" in audit["responses"]["200"]["content"]
    assert "format" in {p["name"] for p in audit["parameters"]}
    for path, method in [
        ("/api/scheduler/jobs/{job_id}", "delete"),
        ("/api/scheduler/jobs/{job_id}/pause", "post"),
        ("/api/scheduler/jobs/{job_id}/resume", "post"),
        ("/api/profiles/{profile_id}", "delete"),
        ("/api/keys/{key_id}", "delete"),
    ]:
        operation = paths[path][method]
        assert "reason" in {p["name"] for p in operation["parameters"]}, path
        assert "422" in operation["responses"], path


async def test_amendments_are_found_through_their_index_not_a_walk_of_the_stream(
    harness: Harness,
) -> None:
    plan = harness.store.conn.execute(f"EXPLAIN QUERY PLAN {_AMENDMENTS}", ('["job_1"]', 0))
    details = " ".join(str(row[3]) for row in plan)
    assert "USING INDEX events_amendments_v2" in details, details
