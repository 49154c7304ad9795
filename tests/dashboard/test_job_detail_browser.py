"""The job detail page in a real browser against a real `lablink serve` with its simulated bench.

- Run now from the page and watch the execution go running → completed without reloading;
  the captured data then downloads through the page's link with the session alone.
- A measurement job's chart shows the values the results API gives.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Dialog, expect

from tests.support.browser import Lab, signed_in
from tests.support.serve import Server, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.nats, pytest.mark.slow, pytest.mark.browser]

QUICK_START: dict[str, Any] = {
    "name": "Hourly Voltage Check",
    "description": "Measure output voltage every hour",
    "schedule_type": "measurement",
    "equipment_id": "power_supply_1",
    "trigger_type": "interval",
    "interval_hours": 1,
    "parameters": {"command": "get_voltage"},
    "enabled": False,
}
# How long the slow run takes: long enough for a page to see it running (the live stream
# sends at most one message a second), short enough for a test.
CAPTURE_SECONDS = 6
# Playwright's expect waits 5 s by default: a loaded machine deserves more.
WAIT_MS = 30_000


@pytest.fixture
def realtime_lab(tmp_path: Path, servers: list[Server]) -> Lab:
    """A lab whose simulated instruments take real time (LABLINK_REALTIME=1): an acquisition
    of ``duration`` seconds runs that long, as on a real bench."""
    data = tmp_path / "data"
    port = free_port()
    server = Server(data, port, {"LABLINK_REALTIME": "1"})
    servers.append(server)
    server.listening()
    key = (data / "admin.key").read_text().strip()
    return Lab(url=f"http://127.0.0.1:{port}", data_dir=data, admin_key=key, server=server)


def create(api: httpx.Client, body: dict[str, Any]) -> str:
    answer = api.post("/api/scheduler/jobs/create", json=body)
    assert answer.status_code == 200, answer.text
    job_id: str = answer.json()["job_id"]
    return job_id


def ended(api: httpx.Client, execution_id: str, deadline: float = 60) -> dict[str, Any]:
    """Poll until the execution has ended (generous deadline: a slow machine is not a bug)."""
    until = time.monotonic() + deadline
    while True:
        execution: dict[str, Any] = api.get(f"/api/scheduler/executions/{execution_id}").json()[
            "execution"
        ]
        if execution["status"] not in ("pending", "queued", "running"):
            return execution
        assert time.monotonic() < until, execution
        time.sleep(0.2)


def test_run_now_goes_running_then_completed_without_reloading(
    browser: Browser, realtime_lab: Lab
) -> None:
    lab = realtime_lab
    api = lab.api()
    # The guide's Quick Start job, created disabled ("test before enabling"), made an
    # acquisition of a few seconds (the guide's `duration` parameter) so that its run can be
    # seen running: a single measurement on the simulated bench ends within milliseconds.
    job_id = create(
        api,
        {
            **QUICK_START,
            "schedule_type": "acquisition",
            "parameters": {"duration": CAPTURE_SECONDS, "sample_rate": 1},
        },
    )
    page = signed_in(browser, lab, path=f"/jobs/{job_id}")
    expect(page.get_by_role("heading", name="Hourly Voltage Check")).to_be_visible(timeout=WAIT_MS)
    expect(page.locator(".job-words")).to_contain_text("every 1 h from", timeout=WAIT_MS)
    expect(page.locator("#live-state")).to_have_attribute("data-state", "open", timeout=WAIT_MS)
    expect(page.locator("#executions-empty")).to_be_visible(timeout=WAIT_MS)
    page.evaluate("window.__marker = 1")

    page.get_by_role("button", name="Run now").click()
    expect(page.locator("#job-notice")).to_contain_text("Started: execution", timeout=WAIT_MS)
    row = page.locator("#executions tbody tr").first
    expect(row).to_have_attribute("data-status", "running", timeout=WAIT_MS)
    expect(row.locator(".status")).to_have_text(re.compile(r"running"), timeout=WAIT_MS)
    lab.shot(page, "job-detail-running")
    execution_id = row.get_attribute("data-execution-id")
    assert execution_id is not None

    expect(row).to_have_attribute("data-status", "completed", timeout=60_000)
    expect(row.locator(".status")).to_have_text(re.compile(r"completed"), timeout=WAIT_MS)
    assert page.evaluate("window.__marker") == 1, "the page was reloaded"
    assert ended(api, execution_id)["status"] == "completed"

    # The captured data downloads through the page's link, with the session (no API key),
    # byte for byte what the API's download gives.
    link = row.get_by_role("link", name=re.compile("Download data"))
    expect(link).to_be_visible(timeout=60_000)
    href = link.get_attribute("href")
    assert href == f"/jobs/{job_id}/executions/{execution_id}/data"
    through_page = page.request.get(f"{lab.url}{href}")
    assert through_page.status == 200
    through_api = api.get(f"/api/scheduler/executions/{execution_id}/data")
    assert through_api.status_code == 200
    assert through_page.body() == through_api.content
    assert through_page.headers["etag"] == through_api.headers["etag"]
    assert page.evaluate("window.__marker") == 1
    lab.shot(page, "job-detail")


def test_a_measurement_jobs_chart_shows_the_recorded_values(browser: Browser, lab: Lab) -> None:
    api = lab.api()
    job_id = create(api, QUICK_START)
    runs = []
    for _ in range(3):
        answer = api.post(f"/api/scheduler/jobs/{job_id}/run")
        assert answer.status_code == 200, answer.text
        runs.append(ended(api, answer.json()["execution_id"]))
    assert [r["status"] for r in runs] == ["completed"] * 3

    results = api.get(f"/api/scheduler/jobs/{job_id}/results").json()["results"]
    assert len(results) == 3
    page = signed_in(browser, lab, path=f"/jobs/{job_id}")
    figure = page.locator("figure.chart")
    expect(figure).to_have_attribute("data-count", "3", timeout=WAIT_MS)
    points = page.locator("svg.chart-svg circle[data-value]")
    expect(points).to_have_count(3, timeout=WAIT_MS)
    drawn = [
        (c.get_attribute("data-execution-id"), float(c.get_attribute("data-value") or "nan"))
        for c in points.all()
    ]
    assert drawn == [(r["execution_id"], r["value"]) for r in results]
    unit = results[-1]["unit"]
    assert unit
    expect(figure).to_have_attribute("data-unit", unit, timeout=WAIT_MS)
    expect(page.locator("svg.chart-svg .y-axis .axis-title")).to_have_text(unit, timeout=WAIT_MS)
    expect(page.locator("#chart-title")).to_contain_text(f"in {unit}", timeout=WAIT_MS)
    # The text alternative lists the same points, newest first.
    table = page.locator("table.chart-points tbody tr")
    listed = [
        (r.get_attribute("data-execution-id"), float(r.get_attribute("data-value") or "nan"))
        for r in table.all()
    ]
    assert listed == list(reversed(drawn))
    lab.shot(page, "job-detail-chart")

    # A new value reaches the chart through the page's stream (at the page's range, 24 h).
    page.evaluate("window.__marker = 1")
    more = api.post(f"/api/scheduler/jobs/{job_id}/run")
    assert more.status_code == 200, more.text
    assert ended(api, more.json()["execution_id"])["status"] == "completed"
    expect(points).to_have_count(4, timeout=WAIT_MS)
    expect(figure).to_have_attribute("data-range", "24h", timeout=WAIT_MS)

    # The range switch swaps the chart in place; the week holds the same four points.
    page.get_by_role("link", name="Last 7 d").click()
    expect(page.get_by_role("link", name="Last 7 d")).to_have_attribute(
        "aria-current", "true", timeout=WAIT_MS
    )
    expect(page.locator("svg.chart-svg circle[data-value]")).to_have_count(4, timeout=WAIT_MS)
    # Switched in place, the chart stays at its range as values come: the stream's 24 h
    # chart is not swapped over it, the week's is fetched instead.
    again = api.post(f"/api/scheduler/jobs/{job_id}/run")
    assert again.status_code == 200, again.text
    assert ended(api, again.json()["execution_id"])["status"] == "completed"
    expect(page.locator("svg.chart-svg circle[data-value]")).to_have_count(5, timeout=WAIT_MS)
    expect(page.locator("figure.chart")).to_have_attribute("data-range", "7d", timeout=WAIT_MS)
    expect(page.get_by_role("link", name="Last 7 d")).to_have_attribute(
        "aria-current", "true", timeout=WAIT_MS
    )
    assert page.evaluate("window.__marker") == 1

    # Delete asks first, naming the job, then goes to the jobs list; the API knows it no more.
    asked: list[str] = []

    def accept(dialog: Dialog) -> None:
        asked.append(dialog.message)
        dialog.accept()

    page.once("dialog", accept)
    page.get_by_role("button", name="Delete").click()
    expect(page).to_have_url(f"{lab.url}/jobs", timeout=WAIT_MS)
    assert "Hourly Voltage Check" in asked[0]
    assert job_id in asked[0]
    assert api.get(f"/api/scheduler/jobs/{job_id}").status_code == 404
