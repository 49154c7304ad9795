"""The dashboard's audit page shows why each change was made, the fields it changed (old and
new) and which records were amended later; ``/audit.csv`` exports what the page filters, for
the signed-in session only; and the dashboard's own changes (edit, pause, delete, bulk) ask
why. In-process, through the real app over a real SQLite file."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from lablink.clock import ManualClock
from lablink.events import FieldChange, JobPaused, JobUpdated
from tests.dashboard.test_equipment_alarms_audit import as_role, marked
from tests.dashboard.test_session import csrf
from tests.support.forms import Page
from tests.support.harness import Harness, api_client

JOB: dict[str, Any] = {
    "name": "Rail check",
    "schedule_type": "command",
    "equipment_id": "psu_1",
    "parameters": {"command": "measure_voltage", "parameters": {}},
    "trigger_type": "interval",
    "interval_minutes": 10,
}


@pytest.fixture
async def web(harness: Harness) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(harness, auth=True, dashboard=True) as client:
        yield client


def rows_between(page: str, position: int) -> str:
    """The HTML of the table row of one log position."""
    start = page.index(f'data-position="{position}"')
    end = page.find("</tr>", start)
    return page[start:end]


async def test_the_audit_page_shows_reasons_changes_and_amendments(
    harness: Harness, web: httpx.AsyncClient
) -> None:
    h = harness
    job_id = h.service.create_job(JOB, "alice")
    h.service.update_job(
        job_id,
        {"interval_minutes": 15, "description": "rail <B>"},
        "bob",
        reason="NC-12: the rail drifts, check it less often",
    )
    h.service.pause_job(job_id, "bob", reason="bench moved")
    await h.settle()
    api = await as_role(h, web, "viewer")
    events = (await web.get("/api/audit", params={"job_id": job_id}, headers=api)).json()["events"]
    created, updated, paused = events

    page = await web.get("/audit", params={"job_id": job_id})
    assert page.status_code == 200, page.text
    assert [int(p) for p in marked(page.text, "data-position")] == [e["position"] for e in events]
    update_row = rows_between(page.text, updated["position"])
    assert "NC-12: the rail drifts, check it less often" in update_row
    assert "<code>description</code>: <del></del> → <ins>rail &lt;B&gt;</ins>" in update_row
    assert "<code>interval_minutes</code>: <del>10.0</del> → <ins>15.0</ins>" in update_row
    assert "amended later" in update_row  # the pause changed it after
    assert "bench moved" in rows_between(page.text, paused["position"])
    assert "amended later" not in rows_between(page.text, paused["position"])
    created_row = rows_between(page.text, created["position"])
    assert f"amended later (#{updated['position']})" in created_row
    # The link shows the trail of the record from the change on.
    assert f"/audit?job_id={job_id}&amp;after={updated['position'] - 1}" in created_row, created_row
    # The export of what is shown, with the page's filters.
    assert f'href="/audit.csv?job_id={job_id}"' in page.text


async def test_the_csv_export_is_the_apis_with_the_pages_filters(
    harness: Harness, web: httpx.AsyncClient
) -> None:
    h = harness
    job_id = h.service.create_job(JOB, "alice")
    other = h.service.create_job({**JOB, "name": "Other"}, "alice")
    h.service.update_job(job_id, {"name": "Rail check 2"}, "bob", reason="typo")
    await h.settle()

    # Only for a signed-in session: without one, the browser is sent to sign in.
    anonymous = await web.get("/audit.csv")
    assert anonymous.status_code == 303
    assert anonymous.headers["location"].startswith("/signin")

    api = await as_role(h, web, "viewer")
    exported = await web.get("/audit.csv", params={"job_id": job_id})
    assert exported.status_code == 200, exported.text
    assert exported.headers["content-type"] == "text/csv; charset=utf-8"
    same = await web.get("/api/audit", params={"job_id": job_id, "format": "csv"}, headers=api)
    assert exported.text == same.text
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert {r["stream_id"] for r in rows} == {job_id}
    assert [(r["type"], r["reason"], r["field"], r["old"], r["new"]) for r in rows] == [
        ("job.created", "", "", "", ""),
        ("job.updated", "typo", "name", "Rail check", "Rail check 2"),
    ]
    assert rows[0]["amended"] == "true"
    everything = await web.get("/audit.csv")
    assert other in everything.text

    refused = await web.get("/audit.csv", params={"since": "yesterday"})
    assert refused.status_code == 400
    assert refused.headers["content-type"].startswith("text/plain")
    assert "since='yesterday'" in refused.text


@pytest.fixture
async def strict_web(tmp_path: Path, clock: ManualClock) -> AsyncIterator[tuple[Harness, Any]]:
    """The dashboard of a server that runs with LABLINK_REQUIRE_REASON=1."""
    h = await Harness(tmp_path / "data" / "scheduler.db", clock, require_reason=True).start()
    try:
        async with api_client(h, auth=True, dashboard=True) as client:
            yield h, client
    finally:
        await h.close()


async def test_the_dashboards_changes_ask_why_and_require_it_when_the_lab_does(
    strict_web: tuple[Harness, httpx.AsyncClient],
) -> None:
    h, web = strict_web
    job_id = h.service.create_job(JOB, "alice")
    other = h.service.create_job({**JOB, "name": "Other"}, "alice")
    await as_role(h, web, "operator")
    head = h.store.last_position()

    # The edit form has a reason field, required here; without it nothing is written and
    # the refusal stands beside the field, with what was typed kept.
    edit = await web.get(f"/jobs/{job_id}/edit")
    form = dict(Page.of(edit.text).forms["job-form"])
    assert 'name="reason"' in edit.text
    assert "Reason for the change (required)" in edit.text
    refused = await web.post(f"/jobs/{job_id}/edit", data={**form, "name": "Rail 2"})
    assert refused.status_code == 422
    assert 'id="e-reason"' in refused.text
    assert h.store.last_position() == head
    saved = await web.post(
        f"/jobs/{job_id}/edit", data={**form, "name": "Rail 2", "reason": "asset renamed"}
    )
    assert saved.status_code == 303, saved.text
    updated = h.store.read_stream(job_id)[-1].event
    assert isinstance(updated, JobUpdated)
    assert (updated.reason, updated.changes) == (
        "asset renamed",
        (FieldChange(field="name", old="Rail check", new="Rail 2"),),
    )

    # The job page's pause and delete carry a reason of their own.
    page = await web.get(f"/jobs/{job_id}")
    assert page.text.count('name="reason"') == 2
    token = csrf(page.text)
    head = h.store.last_position()
    no_reason = await web.post(f"/jobs/{job_id}/delete", data={"_csrf_token": token})
    assert no_reason.status_code == 422
    assert "reason" in no_reason.text
    assert h.store.last_position() == head
    paused = await web.post(
        f"/jobs/{job_id}/pause", data={"_csrf_token": token, "reason": "fixture swap"}
    )
    assert paused.status_code == 303, paused.text
    assert h.store.read_stream(job_id)[-1].event == JobPaused(job_id=job_id, reason="fixture swap")

    # A bulk resume asks once, and records the reason with each job's resume.
    listing = await web.get("/jobs")
    confirm = await web.post(
        "/jobs/bulk",
        data={"_csrf_token": csrf(listing.text), "action": "pause", "job_id": [other]},
    )
    assert 'name="reason"' in confirm.text
    done = await web.post(
        "/jobs/bulk",
        data={
            "_csrf_token": csrf(listing.text),
            "action": "pause",
            "job_id": [other],
            "confirmed": "yes",
            "reason": "line stopped",
        },
    )
    assert done.status_code == 200, done.text
    assert h.store.read_stream(other)[-1].event == JobPaused(job_id=other, reason="line stopped")
