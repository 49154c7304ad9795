"""The issue's third scenario in a real browser against a real `lablink serve`: pause three
jobs in bulk from the jobs list (the confirmation names them and writes nothing until
confirmed), and their next fires leave the overview's active timeline while the fourth's stay;
the API shows them paused, and the list follows a change made elsewhere without reloading
(the boxes ticked stay ticked)."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Browser, expect

from tests.support.browser import PAGE_TIMEOUT_MS, Lab, signed_in

pytestmark = [pytest.mark.e2e, pytest.mark.nats, pytest.mark.slow, pytest.mark.browser]
# expect() waits 5 s unless told otherwise (new_page sets only the page's own timeouts).
expect.set_options(timeout=PAGE_TIMEOUT_MS)

NAMES = ("Bulk A", "Bulk B", "Bulk C", "Bulk D", "Bulk E")


def test_pause_three_jobs_in_bulk_and_their_fires_leave_the_timeline(
    browser: Browser, lab: Lab
) -> None:
    api = lab.api()
    ids: dict[str, str] = {}
    for name in NAMES:
        answer = api.post(
            "/api/scheduler/jobs/create",
            json={
                "name": name,
                "schedule_type": "measurement",
                "equipment_id": "power_supply_1",
                "trigger_type": "interval",
                "interval_hours": 2,
                "parameters": {"command": "get_voltage"},
                "tags": ["bulk-test"],
            },
        )
        assert answer.status_code == 200, answer.text
        ids[name] = answer.json()["job_id"]

    def status(name: str) -> str:
        job: dict[str, str] = api.get(f"/api/scheduler/jobs/{ids[name]}").json()["job"]
        return job["status"]

    page = signed_in(browser, lab, path="/jobs")
    page.evaluate("window.__marker = 1")
    # The search box filters as you type, and the address bar keeps the query.
    page.get_by_label("Search").fill("bulk")
    rows = page.locator("#jobs-results tbody tr")
    expect(rows).to_have_count(len(NAMES))
    expect(page).to_have_url(re.compile(r"/jobs\?q=bulk$"))

    chosen = NAMES[:3]
    for name in chosen:
        page.get_by_label(f"Select {name}", exact=True).check()
    # Paused elsewhere (the API): the list shows it live, the boxes ticked stay ticked.
    assert api.post(f"/api/scheduler/jobs/{ids['Bulk E']}/pause").status_code == 200
    expect(page.locator(f'tr[data-job-id="{ids["Bulk E"]}"]')).to_contain_text("paused")
    for name in chosen:
        expect(page.get_by_label(f"Select {name}", exact=True)).to_be_checked()
    expect(page.get_by_label("Select Bulk D", exact=True)).not_to_be_checked()

    page.get_by_role("button", name="Pause selected").click()
    dialog = page.get_by_role("alertdialog")
    expect(dialog.get_by_role("heading")).to_have_text("Pause 3 jobs: Bulk A, Bulk B, Bulk C?")
    lab.shot(page, "jobs-confirm")
    # Asked, not yet done.
    assert [status(name) for name in chosen] == ["active"] * 3

    dialog.get_by_role("button", name="Confirm: pause 3 jobs").click()
    expect(page.get_by_role("status").filter(has_text="Paused 3 jobs")).to_contain_text(
        "Bulk A, Bulk B, Bulk C"
    )
    for name in chosen:
        expect(page.locator(f'tr[data-job-id="{ids[name]}"]')).to_contain_text("paused")
    expect(page.locator(f'tr[data-job-id="{ids["Bulk D"]}"]')).to_contain_text("active")
    assert [status(name) for name in chosen] == ["paused"] * 3
    assert status("Bulk D") == "active"

    # All of it without reloading the page.
    assert page.evaluate("window.__marker") == 1
    lab.shot(page, "jobs")

    # Opened at that query, the page's stream sends the table itself (no fetch), and the boxes
    # ticked stay ticked.
    page.goto(f"{lab.url}/jobs?q=bulk")
    page.evaluate("window.__marker = 2")
    fetched: list[str] = []
    page.on("request", lambda request: fetched.append(request.url))
    page.get_by_label("Select Bulk D", exact=True).check()
    assert api.post(f"/api/scheduler/jobs/{ids['Bulk E']}/resume").status_code == 200
    expect(page.locator(f'tr[data-job-id="{ids["Bulk E"]}"]')).to_contain_text("active")
    expect(page.get_by_label("Select Bulk D", exact=True)).to_be_checked()
    expect(page.get_by_label("Select Bulk C", exact=True)).not_to_be_checked()
    assert [url for url in fetched if "/fragments/jobs/table" in url] == []
    assert page.evaluate("window.__marker") == 2

    # On the overview, the paused jobs have no active fire left on the timeline.
    page.goto(f"{lab.url}/")
    fires = page.locator("#timeline .fire")
    expect(page.locator(f'#timeline .fire[data-job-id="{ids["Bulk D"]}"]').first).to_be_attached()
    for name in chosen:
        active = page.locator(f'#timeline .fire:not(.paused)[data-job-id="{ids[name]}"]')
        expect(active).to_have_count(0)
        # Shown greyed out instead.
        expect(
            fires.and_(page.locator(f'.paused[data-job-id="{ids[name]}"]')).first
        ).to_be_attached()
    d_active = page.locator(f'#timeline .fire:not(.paused)[data-job-id="{ids["Bulk D"]}"]')
    assert d_active.count() > 0
