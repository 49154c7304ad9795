"""The create / edit job form, in-process through the real app: each trigger's fields render
and the form creates the very job the API creates from the equivalent JSON; an edit page
submitted untouched changes nothing; a refused field is shown beside itself (the API's
field, value and reason) with the values typed kept and nothing written; a stale edit shows
the conflict and the job as it is now, and saving again applies the user's values; the
preview is the API's; a viewer is refused; an unknown job is a 404 page."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from lablink.domain.validation import ALL_TRIGGER_FIELDS, TRIGGER_FIELDS
from tests.dashboard.test_session import csrf, new_key, sign_in
from tests.support.forms import Page
from tests.support.harness import Harness, api_client

# Each trigger with a job of the guide (its Quick Start, Job Types and Examples): the JSON a
# client sends, and what a user types into the form for it.
CASES: dict[str, tuple[dict[str, Any], dict[str, str]]] = {
    "interval": (
        {
            "name": "Hourly Voltage Check",
            "description": "Measure output voltage every hour",
            "schedule_type": "measurement",
            "equipment_id": "power_supply_1",
            "trigger_type": "interval",
            "interval_hours": 1,
            "parameters": {"command": "get_voltage"},
            "enabled": True,
        },
        {
            "name": "Hourly Voltage Check",
            "description": "Measure output voltage every hour",
            "schedule_type": "measurement",
            "equipment_id": "power_supply_1",
            "trigger_type": "interval",
            "interval_hours": "1",
            "parameters.command": "get_voltage",
            "enabled": "true",
            "coalesce": "true",
        },
    ),
    "cron": (
        {
            "name": "Business Hours Load Testing",
            "schedule_type": "command",
            "equipment_id": "load_1",
            "trigger_type": "cron",
            "cron_expression": "0 9-17 * * 1-5",
            "parameters": {
                "command": "run_load_test",
                "parameters": {"duration": 60, "current": 5.0},
            },
            "conflict_policy": "queue",
        },
        {
            "name": "Business Hours Load Testing",
            "schedule_type": "command",
            "equipment_id": "load_1",
            "trigger_type": "cron",
            "cron_expression": "0 9-17 * * 1-5",
            "parameters.command": "run_load_test",
            "parameters.parameters": '{"duration": 60, "current": 5.0}',
            "conflict_policy": "queue",
            "enabled": "true",
            "coalesce": "true",
        },
    ),
    "daily": (
        {
            "name": "Nightly Equipment Test",
            "schedule_type": "equipment_test",
            "equipment_id": "oscilloscope_1",
            "trigger_type": "daily",
            "time_of_day": "03:00:00",
            "parameters": {"test_name": "connection"},
            "on_failure_alarm": True,
        },
        {
            "name": "Nightly Equipment Test",
            "schedule_type": "equipment_test",
            "equipment_id": "oscilloscope_1",
            "trigger_type": "daily",
            # What <input type="time"> sends when the seconds are zero.
            "time_of_day": "03:00",
            "parameters.test_name": "connection",
            "on_failure_alarm": "true",
            "enabled": "true",
            "coalesce": "true",
        },
    ),
    "weekly": (
        {
            "name": "Weekly High-Resolution Waveform Capture",
            "schedule_type": "acquisition",
            "equipment_id": "scope_1",
            "profile_id": "high_res_1GS",
            "trigger_type": "weekly",
            "day_of_week": 1,
            "time_of_day": "08:00:00",
            "parameters": {"duration": 600, "sample_rate": 1000000, "channels": [1, 2, 3, 4]},
            "on_failure_alarm": True,
            "tags": ["weekly-report", "high-priority"],
        },
        {
            "name": "Weekly High-Resolution Waveform Capture",
            "schedule_type": "acquisition",
            "equipment_id": "scope_1",
            "profile_id": "high_res_1GS",
            "trigger_type": "weekly",
            "day_of_week": "1",
            "time_of_day": "08:00:00",
            "parameters.duration": "600",
            "parameters.sample_rate": "1000000",
            "parameters.channels": "1, 2, 3, 4",
            "on_failure_alarm": "true",
            "tags": "weekly-report, high-priority",
            "enabled": "true",
            "coalesce": "true",
        },
    ),
    "monthly": (
        {
            "name": "Monthly State Backup",
            "schedule_type": "state_capture",
            "equipment_id": "power_supply_1",
            "trigger_type": "monthly",
            "day_of_month": -1,
            "time_of_day": "12:00:00",
            "timezone": "America/New_York",
            "max_executions": 30,
            "start_date": "2026-04-01T00:00:00",
            "end_date": "2026-12-01T00:00:00",
            "tags": ["backup"],
            "max_instances": 2,
            "conflict_policy": "replace",
        },
        {
            "name": "Monthly State Backup",
            "schedule_type": "state_capture",
            "equipment_id": "power_supply_1",
            "trigger_type": "monthly",
            "day_of_month": "-1",
            "time_of_day": "12:00:00",
            "timezone": "America/New_York",
            "max_executions": "30",
            # What <input type="datetime-local"> sends when the seconds are zero.
            "start_date": "2026-04-01T00:00",
            "end_date": "2026-12-01T00:00:00",
            "tags": "backup",
            "max_instances": "2",
            "conflict_policy": "replace",
            "enabled": "true",
            "coalesce": "true",
        },
    ),
    "date": (
        {
            "name": "Christmas reading",
            "schedule_type": "measurement",
            "equipment_id": "multimeter_1",
            "trigger_type": "date",
            "run_date": "2026-12-25T10:00:00",
            "parameters": {"command": "get_voltage", "channel": 2},
            "enabled": False,
            "coalesce": False,
            "timeout_seconds": 30,
            "misfire_grace_time": 600,
            "alarm_after_missed": 2,
        },
        {
            "name": "Christmas reading",
            "schedule_type": "measurement",
            "equipment_id": "multimeter_1",
            "trigger_type": "date",
            "run_date": "2026-12-25T10:00",
            "parameters.command": "get_voltage",
            "parameters_extra": '{"channel": 2}',
            "timeout_seconds": "30",
            "misfire_grace_time": "600",
            "alarm_after_missed": "2",
        },
    ),
}

LEFTOVERS = {
    "cron_expression": "0 * * * *",
    "interval_minutes": "7",
    "time_of_day": "01:00:00",
    "day_of_week": "3",
    "day_of_month": "2",
    "run_date": "2030-01-01T00:00",
}


@pytest.fixture
async def web(harness: Harness) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(harness, auth=True, dashboard=True) as client:
        yield client


async def signed_in_as(harness: Harness, web: httpx.AsyncClient, role: str) -> str:
    """Sign ``web`` in with a new key of ``role`` (named ``alice``); its secret."""
    _, secret = new_key(harness, role, "alice")
    answer = await sign_in(web, secret)
    assert answer.status_code == 303, answer.text
    return secret


async def token(web: httpx.AsyncClient, path: str = "/jobs/new") -> str:
    page = await web.get(path)
    assert page.status_code == 200, page.text
    return csrf(page.text)


async def create_by_api(web: httpx.AsyncClient, secret: str, body: dict[str, Any]) -> str:
    answer = await web.post("/api/scheduler/jobs/create", json=body, headers={"X-API-Key": secret})
    assert answer.status_code == 200, answer.text
    job_id: str = answer.json()["job_id"]
    return job_id


async def job_of(web: httpx.AsyncClient, secret: str, job_id: str) -> dict[str, Any]:
    answer = await web.get(f"/api/scheduler/jobs/{job_id}", headers={"X-API-Key": secret})
    assert answer.status_code == 200, answer.text
    job: dict[str, Any] = answer.json()["job"]
    return job


async def job_count(web: httpx.AsyncClient, secret: str) -> int:
    answer = await web.get("/api/scheduler/jobs", headers={"X-API-Key": secret})
    total: int = answer.json()["total"]
    return total


@pytest.mark.parametrize("trigger", sorted(CASES))
async def test_each_trigger_renders_its_fields_and_makes_the_job_the_api_makes(
    harness: Harness, web: httpx.AsyncClient, trigger: str
) -> None:
    secret = await signed_in_as(harness, web, "operator")
    body, typed = CASES[trigger]

    # Only the chosen trigger's fields are in the form, first as a page, then as the part
    # htmx swaps in when the trigger changes.
    page = Page.of((await web.get(f"/jobs/new?trigger_type={trigger}")).text)
    swapped = await web.post(
        "/fragments/form/trigger",
        data={"trigger_type": trigger},
        headers={"x-csrftoken": csrf((await web.get("/jobs/new")).text)},
    )
    assert swapped.status_code == 200, swapped.text
    for html in (page, Page.of(f'<form id="job-form">{swapped.text}</form>')):
        names = {name for name, _ in html.forms["job-form"]}
        assert TRIGGER_FIELDS[trigger] <= names
        assert not (ALL_TRIGGER_FIELDS - TRIGGER_FIELDS[trigger]) & names, names

    by_api = await create_by_api(web, secret, body)
    # Fields another trigger left in the form (a browser without scripts keeps them when the
    # trigger changes) are not the chosen trigger's: they are left out, as the API needs.
    leftovers = {k: v for k, v in LEFTOVERS.items() if k not in TRIGGER_FIELDS[trigger]}
    answer = await web.post(
        "/jobs/new", data={**leftovers, **typed, "_csrf_token": await token(web)}
    )
    assert answer.status_code == 303, answer.text
    by_form = answer.headers["location"].removeprefix("/jobs/")
    assert by_form != by_api

    api_job = await job_of(web, secret, by_api)
    form_job = await job_of(web, secret, by_form)
    api_job.pop("job_id")
    form_job.pop("job_id")
    assert form_job == api_job

    # The edit page shows the job as it is: submitted untouched, it changes nothing.
    edit = await web.get(f"/jobs/{by_form}/edit")
    assert edit.status_code == 200, edit.text
    submitted = Page.of(edit.text).forms["job-form"]
    saved = await web.post(f"/jobs/{by_form}/edit", data=dict(submitted))
    assert saved.status_code == 303, saved.text
    assert (await job_of(web, secret, by_form))["version"] == api_job["version"]


async def test_a_refused_field_is_shown_beside_it_with_what_was_typed_and_nothing_written(
    harness: Harness, web: httpx.AsyncClient
) -> None:
    secret = await signed_in_as(harness, web, "operator")
    body, typed = CASES["interval"]
    api = await web.post(
        "/api/scheduler/jobs/create",
        json={**body, "interval_hours": 0},
        headers={"X-API-Key": secret},
    )
    assert api.status_code == 422
    (refusal,) = api.json()["errors"]
    assert refusal["field"] == "interval_hours"

    answer = await web.post(
        "/jobs/new", data={**typed, "interval_hours": "0", "_csrf_token": await token(web)}
    )
    assert answer.status_code == 422
    page = Page.of(answer.text)
    field = page.by_id["f-interval_hours"].attrs
    assert field["aria-invalid"] == "true"
    assert "e-interval_hours" in field["aria-describedby"].split()
    assert refusal["reason"] in page.text_of("e-interval_hours")
    assert page.text_of("e-interval_hours").endswith("(got 0)")
    # No other field is marked, and what was typed is still there.
    assert [k for k, e in page.by_id.items() if e.attrs.get("aria-invalid")] == ["f-interval_hours"]
    kept = dict(page.forms["job-form"])
    assert kept["name"] == typed["name"]
    assert kept["parameters.command"] == "get_voltage"
    assert kept["interval_hours"] == "0"
    assert "The job was not saved: 1 problem" in answer.text

    # A bad cron expression, and "more parameters" that are not JSON: each beside itself.
    cron = {**CASES["cron"][1], "cron_expression": "61 * * * *", "parameters_extra": "{oops"}
    answer = await web.post("/jobs/new", data={**cron, "_csrf_token": await token(web)})
    assert answer.status_code == 422
    page = Page.of(answer.text)
    assert page.by_id["f-parameters_extra"].attrs["aria-invalid"] == "true"
    assert "not valid JSON" in page.text_of("e-parameters_extra")
    answer = await web.post(
        "/jobs/new",
        data={**cron, "parameters_extra": "", "_csrf_token": await token(web)},
    )
    assert answer.status_code == 422
    page = Page.of(answer.text)
    assert page.by_id["f-cron_expression"].attrs["aria-invalid"] == "true"
    assert "61" in page.text_of("e-cron_expression")
    assert dict(page.forms["job-form"])["cron_expression"] == "61 * * * *"

    assert await job_count(web, secret) == 0


async def test_a_stale_edit_shows_the_conflict_and_the_job_as_it_is_now(
    harness: Harness, web: httpx.AsyncClient
) -> None:
    secret = await signed_in_as(harness, web, "operator")
    job_id = await create_by_api(web, secret, CASES["interval"][0])
    edit = await web.get(f"/jobs/{job_id}/edit")
    mine = dict(Page.of(edit.text).forms["job-form"])
    assert mine["version"] == "1"

    # Another client renames it meanwhile.
    other = await web.put(
        f"/api/scheduler/jobs/{job_id}",
        json={"name": "Renamed elsewhere", "version": 1},
        headers={"X-API-Key": secret},
    )
    assert other.status_code == 200, other.text

    mine.update(name="My name", interval_hours="2")
    answer = await web.post(f"/jobs/{job_id}/edit", data=mine)
    assert answer.status_code == 409, answer.text
    page = Page.of(answer.text)
    assert "Someone changed this job" in page.text_of("conflict")
    assert "version 1" in page.text_of("conflict")
    assert "version 2" in page.text_of("conflict")
    assert "Renamed elsewhere" in page.text_of("conflict")
    assert "My name" in page.text_of("conflict")
    # Nothing of mine was written; my values stay in the form, now on the current version.
    assert (await job_of(web, secret, job_id))["name"] == "Renamed elsewhere"
    again = dict(page.forms["job-form"])
    assert (again["name"], again["interval_hours"], again["version"]) == ("My name", "2", "2")

    # Saving again applies them.
    answer = await web.post(f"/jobs/{job_id}/edit", data=again)
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == f"/jobs/{job_id}"
    job = await job_of(web, secret, job_id)
    assert (job["name"], job["interval_hours"], job["version"]) == ("My name", 2, 3)


async def test_the_preview_is_the_apis_and_an_incomplete_trigger_is_told_calmly(
    harness: Harness, web: httpx.AsyncClient
) -> None:
    secret = await signed_in_as(harness, web, "operator")
    body, typed = CASES["interval"]
    api = await web.post("/api/scheduler/preview?count=5", json=body, headers={"X-API-Key": secret})
    assert api.status_code == 200, api.text
    header = {"x-csrftoken": await token(web)}
    answer = await web.post("/fragments/form/preview", data=typed, headers=header)
    assert answer.status_code == 200
    shown = re.findall(r'<time datetime="([^"]+)"', answer.text)
    assert shown == api.json()["next_runs"]
    assert len(shown) == 5

    incomplete = {**typed, "interval_hours": ""}
    answer = await web.post("/fragments/form/preview", data=incomplete, headers=header)
    assert answer.status_code == 200
    assert "The next runs show once the job is complete" in answer.text
    assert "an interval job needs one of" in answer.text
    assert "<time" not in answer.text
    assert await job_count(web, secret) == 0


async def test_a_viewer_gets_no_form_and_cannot_post_one(
    harness: Harness, web: httpx.AsyncClient
) -> None:
    secret = await signed_in_as(harness, web, "viewer")
    page = await web.get("/jobs/new")
    assert page.status_code == 403
    assert "operator" in page.text
    # A forged POST from that session, with a good CSRF token, is refused all the same.
    forged = await web.post(
        "/jobs/new", data={**CASES["interval"][1], "_csrf_token": await token(web, "/")}
    )
    assert forged.status_code == 403
    assert await job_count(web, secret) == 0


async def test_editing_an_unknown_job_is_a_404_page(
    harness: Harness, web: httpx.AsyncClient
) -> None:
    await signed_in_as(harness, web, "operator")
    page = await web.get("/jobs/no-such-job/edit")
    assert page.status_code == 404
    assert page.headers["content-type"].startswith("text/html")
    assert "no-such-job" in page.text


@pytest.mark.parametrize(
    ("kind", "fields"),
    [
        ("measurement", {"parameters.command", "parameters.parameters"}),
        ("command", {"parameters.command", "parameters.parameters"}),
        ("equipment_test", {"parameters.test_name"}),
        ("acquisition", {"parameters.duration", "parameters.sample_rate", "parameters.channels"}),
        ("state_capture", set()),
    ],
)
async def test_each_type_of_job_shows_its_parameters(
    harness: Harness, web: httpx.AsyncClient, kind: str, fields: set[str]
) -> None:
    await signed_in_as(harness, web, "operator")
    swapped = await web.post(
        "/fragments/form/parameters",
        data={"schedule_type": kind, "parameters.command": "get_voltage"},
        headers={"x-csrftoken": await token(web)},
    )
    assert swapped.status_code == 200, swapped.text
    names = {name for name, _ in Page.of(f'<form id="f">{swapped.text}</form>').forms["f"]}
    assert names == {*fields, "parameters_extra"}


async def test_without_scripts_the_form_is_redrawn_for_the_trigger_chosen(
    harness: Harness, web: httpx.AsyncClient
) -> None:
    secret = await signed_in_as(harness, web, "operator")
    typed = {**CASES["interval"][1], "trigger_type": "weekly", "_action": "refresh"}
    answer = await web.post("/jobs/new", data={**typed, "_csrf_token": await token(web)})
    assert answer.status_code == 200
    form = dict(Page.of(answer.text).forms["job-form"])
    assert {"day_of_week", "time_of_day"} <= form.keys()
    assert "interval_hours" not in form
    assert form["name"] == "Hourly Voltage Check"
    assert await job_count(web, secret) == 0


@pytest.mark.parametrize(
    ("typed", "marked"),
    [
        ({"interval_hours": "1e400"}, "interval_hours"),
        ({"interval_hours": "an hour"}, "interval_hours"),
        ({"interval_hours": "", "interval_minutes": "-5"}, "interval_minutes"),
        ({"timezone": "Mars/Olympus_Mons"}, "timezone"),
        ({"start_date": "yesterday"}, "start_date"),
        ({"max_instances": "1.5"}, "max_instances"),
        ({"parameters.parameters": "[1, 2]"}, "parameters.parameters"),
        ({"tags": ", ".join(f"t{i}" for i in range(40))}, "tags"),
        ({"name": "x" * 300}, "name"),
        ({"equipment_id": "power supply 1"}, "equipment_id"),
    ],
)
async def test_odd_values_are_refused_beside_their_field_never_a_server_error(
    harness: Harness, web: httpx.AsyncClient, typed: dict[str, str], marked: str
) -> None:
    secret = await signed_in_as(harness, web, "operator")
    data = {**CASES["interval"][1], **typed}
    answer = await web.post("/jobs/new", data={**data, "_csrf_token": await token(web)})
    assert answer.status_code == 422, answer.text
    page = Page.of(answer.text)
    field_id = "f-" + marked.replace(".", "-")
    assert page.by_id[field_id].attrs.get("aria-invalid") == "true"
    preview = await web.post(
        "/fragments/form/preview", data=data, headers={"x-csrftoken": await token(web)}
    )
    assert preview.status_code == 200
    assert "The next runs show once the job is complete" in preview.text
    assert await job_count(web, secret) == 0
