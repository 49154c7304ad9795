"""The create / edit job form in a real browser against a real `lablink serve` (issue 16's
scenarios 1 and 5, and a refused field): the guide's Quick Start job made through the form
with its next runs previewed, run now and watched to completion without reloading; a stale
edit shows the conflict and the job as it is now; a refused field is marked beside itself."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.support.browser import Lab, signed_in
from tests.support.eventually import eventually_sync

pytestmark = [pytest.mark.e2e, pytest.mark.nats, pytest.mark.slow, pytest.mark.browser]

QUICK_START = {
    "name": "Hourly Voltage Check",
    "description": "Measure output voltage every hour",
    "schedule_type": "measurement",
    "equipment_id": "power_supply_1",
    "trigger_type": "interval",
    "interval_hours": 1,
    "parameters": {"command": "get_voltage"},
    "enabled": True,
}

# Every status a row of the executions table shows, in order, whatever replaced the row.
WATCH_STATUSES = """() => {
  window.__statuses = [];
  const seen = () => document.querySelectorAll("#executions tr[data-status]").forEach((row) => {
    const last = window.__statuses[window.__statuses.length - 1];
    if (last !== row.dataset.status) window.__statuses.push(row.dataset.status);
  });
  new MutationObserver(seen).observe(document.body,
    {subtree: true, childList: true, attributes: true, attributeFilter: ["data-status"]});
}"""


def instrument_reported(lab: Lab, equipment_id: str) -> None:
    """Wait until the bench's agent has reported the instrument (the form lists it then)."""
    with lab.api() as api:
        eventually_sync(
            lambda: [e["equipment_id"] for e in api.get("/api/equipment").json()["equipment"]],
            until=lambda ids: equipment_id in ids,
        )


def open_form(browser: Browser, lab: Lab, path: str = "/jobs/new") -> Page:
    page = signed_in(browser, lab, path=path)
    expect(page.get_by_role("heading", level=1)).to_be_visible()
    return page


def test_create_the_quick_start_job_with_its_preview_then_run_it_now(
    browser: Browser, lab: Lab
) -> None:
    instrument_reported(lab, "power_supply_1")
    page = open_form(browser, lab)
    page.get_by_label("Name", exact=True).fill("Hourly Voltage Check")
    page.get_by_label("Description").fill("Measure output voltage every hour")
    page.get_by_label("Type of job").select_option("measurement")
    # As a person does: type into the fields once the chosen type's have replaced the old
    # ones (on a loaded machine a swap can land after a fill and take its value).
    expect(page.locator("#parameter-fields legend")).to_contain_text("(measurement)")
    page.get_by_label("Instrument", exact=True).select_option("power_supply_1")
    page.get_by_label("Trigger").select_option("interval")
    expect(
        page.locator("#trigger-fields.htmx-request, #trigger-fields .htmx-request")
    ).to_have_count(0)
    page.get_by_label("Hours").fill("1")
    page.get_by_label("Command", exact=True).fill("get_voltage")
    expect(page.get_by_label("Enabled")).to_be_checked()

    # The next runs, as the API's preview computes them, before anything is saved.
    runs = page.locator("#preview ol.next-runs li")
    expect(runs).to_have_count(5)
    lab.shot(page, "job-form")
    with lab.api() as api:
        assert api.get("/api/scheduler/jobs").json()["total"] == 0

    page.get_by_role("button", name="Create job").click()
    expect(page).to_have_url(re.compile(rf"{re.escape(lab.url)}/jobs/[^/]+$"))
    job_id = page.url.rsplit("/", 1)[1]
    with lab.api() as api:
        job = api.get(f"/api/scheduler/jobs/{job_id}").json()["job"]
    expected = {k: v for k, v in QUICK_START.items() if k != "interval_hours"}
    assert {k: job[k] for k in expected} == expected
    assert job["interval_hours"] == 1

    # Run it now and watch the execution finish, on the same page (never reloaded).
    page.evaluate("window.__marker = 1")
    page.evaluate(WATCH_STATUSES)
    page.get_by_role("button", name="Run now").click()
    row = page.locator("#executions tr[data-status]").first
    expect(row).to_have_attribute("data-status", "completed", timeout=60_000)
    expect(row).to_contain_text("completed")
    # The simulated get_voltage takes milliseconds: the page shows "running" when its refresh
    # falls inside them (most runs), always "completed" at the end, and never goes back.
    statuses = page.evaluate("window.__statuses")
    assert statuses[-1] == "completed", statuses
    order = ["pending", "running", "completed"]
    assert [order.index(s) for s in statuses] == sorted(order.index(s) for s in statuses)
    assert page.evaluate("window.__marker") == 1
    lab.shot(page, "job-after-run-now")
    with lab.api() as api:
        (execution,) = api.get(f"/api/scheduler/executions?job_id={job_id}").json()["executions"]
    assert execution["status"] == "completed"
    assert execution["execution_id"] == row.get_attribute("data-execution-id")


def test_a_stale_edit_shows_the_conflict_and_the_current_values(browser: Browser, lab: Lab) -> None:
    with lab.api() as api:
        made = api.post("/api/scheduler/jobs/create", json=QUICK_START)
        assert made.status_code == 200, made.text
        job_id = made.json()["job_id"]
    page = open_form(browser, lab, f"/jobs/{job_id}/edit")
    expect(page.get_by_label("Name", exact=True)).to_have_value("Hourly Voltage Check")
    expect(page.get_by_label("Hours")).to_have_value("1")

    # Another client changes the job while the form is open.
    with lab.api() as api:
        changed = api.put(
            f"/api/scheduler/jobs/{job_id}",
            json={"name": "Voltage check (renamed by the API)", "version": 1},
        )
        assert changed.status_code == 200, changed.text

    page.get_by_label("Name", exact=True).fill("Voltage check, every 2 h")
    page.get_by_label("Hours").fill("2")
    page.get_by_role("button", name="Save changes").click()
    conflict = page.get_by_role("alert").filter(has_text="Someone changed this job")
    expect(conflict).to_be_visible()
    expect(conflict).to_contain_text("Voltage check (renamed by the API)")
    expect(conflict).to_contain_text("version 2")
    # What the user typed is still in the form, and nothing of it was saved.
    expect(page.get_by_label("Name", exact=True)).to_have_value("Voltage check, every 2 h")
    with lab.api() as api:
        assert api.get(f"/api/scheduler/jobs/{job_id}").json()["job"]["name"] == (
            "Voltage check (renamed by the API)"
        )
    lab.shot(page, "job-form-conflict")

    # Saving again applies the user's values over the other client's.
    page.get_by_role("button", name="Save changes").click()
    expect(page).to_have_url(f"{lab.url}/jobs/{job_id}")
    with lab.api() as api:
        job = api.get(f"/api/scheduler/jobs/{job_id}").json()["job"]
    assert (job["name"], job["interval_hours"], job["version"]) == (
        "Voltage check, every 2 h",
        2,
        3,
    )


def test_a_refused_field_is_marked_beside_itself(browser: Browser, lab: Lab) -> None:
    instrument_reported(lab, "power_supply_1")
    page = open_form(browser, lab)
    page.get_by_label("Name", exact=True).fill("Every 61st minute")
    page.get_by_label("Instrument", exact=True).select_option("power_supply_1")
    page.get_by_label("Command", exact=True).fill("get_voltage")
    # Choosing another trigger swaps its fields in: the interval's go, the cron's come.
    page.evaluate("window.__marker = 1")
    page.get_by_label("Trigger").select_option("cron")
    cron = page.get_by_label("Cron expression")
    expect(cron).to_be_visible()
    expect(page.get_by_label("Hours")).to_have_count(0)
    assert page.evaluate("window.__marker") == 1
    cron.fill("61 * * * *")
    # The preview says calmly what is wrong; it is not an error of the page.
    expect(page.locator("#preview")).to_contain_text("invalid value '61' in minute field")
    expect(page.locator("#preview ol.next-runs li")).to_have_count(0)
    page.get_by_role("button", name="Create job").click()

    cron = page.get_by_label("Cron expression")
    expect(cron).to_have_attribute("aria-invalid", "true")
    expect(cron).to_have_accessible_description(re.compile("invalid value '61' in minute field"))
    expect(cron).to_have_value("61 * * * *")
    expect(page.get_by_role("alert").filter(has_text="The job was not saved")).to_be_visible()
    expect(page.get_by_label("Name", exact=True)).to_have_value("Every 61st minute")
    expect(page.locator("[aria-invalid=true]")).to_have_count(1)
    lab.shot(page, "job-form-refused")
    with lab.api() as api:
        assert api.get("/api/scheduler/jobs").json()["total"] == 0

    # Put right, the same form is taken.
    cron.fill("*/15 * * * *")
    expect(page.locator("#preview ol.next-runs li")).to_have_count(5)
    page.get_by_role("button", name="Create job").click()
    expect(page).to_have_url(re.compile(rf"{re.escape(lab.url)}/jobs/[^/]+$"))
    with lab.api() as api:
        (job,) = api.get("/api/scheduler/jobs").json()["jobs"]
    assert (job["trigger_type"], job["cron_expression"]) == ("cron", "*/15 * * * *")
    assert job["interval_hours"] is None
