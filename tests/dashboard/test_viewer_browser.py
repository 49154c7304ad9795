"""Scenario 2 of issue 16, in a real browser against a real `lablink serve`: a viewer key sees
no write control on any page, and a POST forged from that very session (its cookie and its
page's CSRF token) is refused, with nothing changed as the API shows it."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.support.browser import Lab, signed_in
from tests.support.eventually import eventually_sync

pytestmark = [pytest.mark.e2e, pytest.mark.nats, pytest.mark.slow, pytest.mark.browser]

# The guide's Quick Start job (enabled: a pause would change it).
QUICK_START: dict[str, Any] = {
    "name": "Hourly Voltage Check",
    "description": "Measure output voltage every hour",
    "schedule_type": "measurement",
    "equipment_id": "power_supply_1",
    "trigger_type": "interval",
    "interval_hours": 1,
    "parameters": {"command": "get_voltage"},
}
# Longer than the simulated scope can capture: it fails at once, and raises an alarm.
FAILING: dict[str, Any] = {
    "name": "Week-long capture",
    "schedule_type": "acquisition",
    "equipment_id": "scope_1",
    "trigger_type": "interval",
    "interval_hours": 1,
    "parameters": {"duration": 604_800, "sample_rate": 1, "channels": [1]},
    "enabled": False,
    "on_failure_alarm": True,
}
WRITE_NAMES = ("Run now", "Pause", "Resume", "Edit", "Delete", "Acknowledge", "Clear", "New job")
WRITE_CONTROL = re.compile(r"\b(" + "|".join(WRITE_NAMES) + r")\b", re.IGNORECASE)
# The one form a viewer may post: signing out.
ALLOWED_POSTS = {"/signout"}


def created(api: httpx.Client, body: dict[str, Any]) -> str:
    answer = api.post("/api/scheduler/jobs/create", json=body)
    assert answer.status_code == 200, answer.text
    job_id: str = answer.json()["job_id"]
    return job_id


def active_alarm(api: httpx.Client, job_id: str, count: int = 1) -> dict[str, Any]:
    """Run the failing job; its ``count``-th alarm, the newest."""
    run = api.post(f"/api/scheduler/jobs/{job_id}/run")
    assert run.status_code == 200, run.text

    def alarms() -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = api.get("/api/alarms", params={"job_id": job_id}).json()[
            "alarms"
        ]
        return found

    found = eventually_sync(
        alarms, until=lambda a: len(a) == count, what=f"alarm {count} for {job_id}", timeout=60
    )
    alarm = found[0]
    assert alarm["state"] == "active"
    return alarm


def write_controls(page: Page) -> list[str]:
    """What on the page would write: controls named for a write, forms that post (but
    sign-out), htmx attributes that send an unsafe request."""
    found: list[str] = []
    for role in ("button", "link", "menuitem"):
        named = page.get_by_role(role, name=WRITE_CONTROL)
        found += [f"{role} {text!r}" for text in named.all_inner_texts()]
    posts = page.eval_on_selector_all(
        "form", "els => els.filter(f => f.method === 'post').map(f => new URL(f.action).pathname)"
    )
    found += [f"form posting to {action}" for action in posts if action not in ALLOWED_POSTS]
    found += page.eval_on_selector_all(
        "[hx-post], [hx-put], [hx-patch], [hx-delete], [data-hx-post]",
        "els => els.map(e => e.tagName + ' ' + e.outerHTML.slice(0, 120))",
    )
    return found


def test_a_viewer_sees_no_write_control_and_a_forged_post_is_refused(
    browser: Browser, lab: Lab
) -> None:
    admin = lab.api()
    job_id = created(admin, QUICK_START)
    alarm = active_alarm(admin, created(admin, FAILING))
    before_job = admin.get(f"/api/scheduler/jobs/{job_id}").json()["job"]
    assert before_job["enabled"] is True

    page = signed_in(browser, lab, lab.key("viewer", "visitor"))
    expect(page.locator(".identity")).to_contain_text("viewer")
    pages = {
        "/": "overview",
        "/jobs": "jobs",
        f"/jobs/{job_id}": "job",
        "/alarms": "alarms",
        "/equipment": "equipment",
        "/equipment/power_supply_1": "instrument",
        "/audit": "audit",
    }
    offered: dict[str, list[str]] = {}
    for path, name in pages.items():
        answer = page.goto(f"{lab.url}{path}")
        assert answer is not None, path
        assert answer.status == 200, (path, answer.status)
        expect(page.locator("#live-state")).to_have_attribute("data-state", "open")
        offered[path] = write_controls(page)
        lab.shot(page, f"viewer-{name}")
    # Every page looked at before failing: the message names all that a viewer was offered.
    assert {path: found for path, found in offered.items() if found} == {}
    # The alarm is there for the viewer to see, without its buttons.
    page.goto(f"{lab.url}/alarms")
    expect(page.locator(f'tr[data-alarm="{alarm["alarm_id"]}"]')).to_contain_text("critical")

    # Forged from this session: its cookie and the page's own CSRF token.
    token = json.loads(page.locator("body").get_attribute("hx-headers") or "{}")["x-csrftoken"]
    forged = {
        f"/jobs/{job_id}/pause": {},
        f"/jobs/{job_id}/run": {},
        "/jobs/bulk": {"action": "pause", "job_id": job_id, "confirmed": "1"},
        f"/alarms/{alarm['alarm_id']}/acknowledge": {"note": "not mine to say"},
        f"/alarms/{alarm['alarm_id']}/clear": {"note": "not mine to say"},
    }
    for path, fields in forged.items():
        refused = page.request.post(
            f"{lab.url}{path}",
            form={"_csrf_token": token, **fields},
            headers={"x-csrftoken": token},
            max_redirects=0,
        )
        assert refused.status == 403, (path, refused.status, refused.text()[:300])
        assert "viewer" in refused.text()

    after_job = admin.get(f"/api/scheduler/jobs/{job_id}").json()["job"]
    assert (after_job["enabled"], after_job["version"]) == (True, before_job["version"])
    after_alarm = admin.get(f"/api/alarms/{alarm['alarm_id']}").json()["alarm"]
    assert (after_alarm["state"], after_alarm["acknowledged"]) == ("active", None)
    # Nothing the viewer did is in the trail.
    trail = admin.get("/api/audit", params={"actor": "visitor", "limit": 1000}).json()
    assert trail["events"] == []

    # What the viewer watches updates without reloading: the instrument's executions and
    # the alarms list, each refreshed by the live stream.
    page.goto(f"{lab.url}/equipment/power_supply_1")
    expect(page.locator("#live-state")).to_have_attribute("data-state", "open")
    page.evaluate("window.__marker = 1")
    expect(page.locator("tr[data-execution]")).to_have_count(0)
    run = admin.post(f"/api/scheduler/jobs/{job_id}/run").json()["execution_id"]
    expect(page.locator(f'tr[data-execution="{run}"]')).to_contain_text("completed")
    assert page.evaluate("window.__marker") == 1

    page.goto(f"{lab.url}/alarms?state=active")
    expect(page.locator("#live-state")).to_have_attribute("data-state", "open")
    page.evaluate("window.__marker = 2")
    again = active_alarm(admin, alarm["job_id"], count=2)
    expect(page.locator(f'tr[data-alarm="{again["alarm_id"]}"]')).to_contain_text("active")
    assert page.evaluate("window.__marker") == 2
