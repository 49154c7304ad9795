"""Regenerate the screenshots of docs/dashboard.md: ``python docs/dashboard_screenshots.py``.

Starts a real `lablink serve` (with its simulated bench) in a temporary directory, gives it
something to show over the JSON API (the guide's example jobs, runs of a measurement, a
failing capture's alarms, a paused job, a change with its reason, a calibration
certificate), then drives Debian's chromium through Playwright and writes one PNG per page
into docs/img/dashboard/ (a 1400×900 window; long pages in full).
The server and everything it started are stopped at the end, whatever happened.

Needs what the browser tests need (the README's test command): the dev dependencies and
``chromium``. ``SHOTS`` names every PNG written; tests/dashboard/test_dashboard_docs.py checks
that docs/dashboard.md links exactly these.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "img" / "dashboard"
# name → what it shows (the alt text docs/dashboard.md uses).
SHOTS: dict[str, str] = {
    "signin": "the sign-in page",
    "overview": "the overview",
    "jobs": "the jobs list",
    "job": "a measurement job with its chart",
    "job-form": "the create form with the preview of the next runs",
    "equipment": "the equipment list",
    "instrument": "one instrument",
    "alarms": "the alarms page",
    "audit": "the audit trail",
}
WINDOW: Any = {"width": 1400, "height": 900}  # Playwright's ViewportSize
FINAL = {"completed", "failed", "timed_out", "cancelled", "interrupted", "skipped", "missed"}

QUICK_START: dict[str, Any] = {
    "name": "Hourly Voltage Check",
    "description": "Measure output voltage every hour",
    "schedule_type": "measurement",
    "equipment_id": "power_supply_1",
    "trigger_type": "interval",
    "interval_hours": 1,
    "parameters": {"command": "get_voltage"},
}
NIGHTLY: dict[str, Any] = {
    "name": "Nightly Equipment Test",
    "schedule_type": "equipment_test",
    "equipment_id": "oscilloscope_1",
    "trigger_type": "daily",
    "time_of_day": "03:00:00",
    "parameters": {"test_name": "connection"},
    "on_failure_alarm": True,
}
WEEKDAYS: dict[str, Any] = {
    "name": "Weekday morning temperature",
    "schedule_type": "measurement",
    "equipment_id": "sensor_1",
    "trigger_type": "cron",
    "cron_expression": "0 8 * * 1-5",
    "timezone": "Europe/Berlin",
    "parameters": {"command": "get_temperature"},
    "tags": ["environment"],
}
LOAD: dict[str, Any] = {
    "name": "Load bank soak",
    "schedule_type": "measurement",
    "equipment_id": "load_1",
    "trigger_type": "interval",
    "interval_minutes": 30,
    "parameters": {"command": "get_current"},
}
# Longer than the simulated scope can capture: fails at once and raises an alarm.
FAILING: dict[str, Any] = {
    "name": "Week-long capture",
    "schedule_type": "acquisition",
    "equipment_id": "scope_1",
    "trigger_type": "interval",
    "interval_hours": 6,
    "parameters": {"duration": 604_800, "sample_rate": 1, "channels": [1]},
    "enabled": False,
    "on_failure_alarm": True,
}


def waited(what: str, check: Callable[[], Any], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise SystemExit(f"gave up waiting for {what}")
        time.sleep(0.2)


def demo(api: Any) -> dict[str, str]:
    """Jobs, executions and alarms for the pages to show; the ids the shots need."""

    def create(body: dict[str, Any]) -> str:
        answer = api.post("/api/scheduler/jobs/create", json=body)
        if answer.status_code != 200:
            raise SystemExit(f"could not create {body['name']!r}: {answer.text}")
        job_id: str = answer.json()["job_id"]
        return job_id

    def run(job_id: str) -> dict[str, Any]:
        execution_id = api.post(f"/api/scheduler/jobs/{job_id}/run").json()["execution_id"]

        def final() -> dict[str, Any] | None:
            found: dict[str, Any] = api.get(f"/api/scheduler/executions/{execution_id}").json()[
                "execution"
            ]
            return found if found["status"] in FINAL else None

        done: dict[str, Any] = waited(f"{execution_id} to end", final)
        return done

    quick = create(QUICK_START)
    for _ in range(8):
        run(quick)
    create(NIGHTLY)
    create(WEEKDAYS)
    load = create(LOAD)
    api.post(f"/api/scheduler/jobs/{load}/pause")
    failing = create(FAILING)
    run(failing)
    run(failing)
    alarms = api.get("/api/alarms", params={"job_id": failing}).json()["alarms"]
    api.post(
        f"/api/alarms/{alarms[-1]['alarm_id']}/acknowledge",
        json={"note": "scope_1 buffer too small for a week: shorten the capture"},
    )
    # A change with its reason and old/new values, for the audit trail (docs/audit.md).
    changed = api.put(
        f"/api/scheduler/jobs/{quick}",
        json={"description": "PSU rail A, every hour", "reason": "CAPA-2026-014: name the rail"},
    )
    if changed.status_code != 200:
        raise SystemExit(f"could not update the quick-start job: {changed.text}")
    # A certificate for the instrument page's calibration panel (docs/calibration.md).
    calibrated = api.post(
        "/api/equipment/power_supply_1/calibrations",
        json={
            "certificate": "CAL-2026-0042",
            "performed": "2026-01-15",
            "due": "2027-01-15",
            "by": "Metrology Lab GmbH",
        },
    )
    if calibrated.status_code != 200:
        raise SystemExit(f"could not record a certificate: {calibrated.text}")
    return {"quick": quick}


def main() -> None:
    sys.path.insert(0, str(ROOT))
    from playwright.sync_api import sync_playwright

    from tests.support.browser import CHROMIUM, PAGE_TIMEOUT_MS, Lab
    from tests.support.serve import Server, free_port

    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="lablink-shots-") as tmp:
        data = Path(tmp) / "data"
        port = free_port()
        # The lab's zone and the browser's the same, as on a lab PC.
        server = Server(data, port, {"LABLINK_TIMEZONE": "Europe/Berlin"})
        try:
            server.listening()
            lab = Lab(
                url=f"http://127.0.0.1:{port}",
                data_dir=data,
                admin_key=(data / "admin.key").read_text().strip(),
                server=server,
            )
            with lab.api() as api:
                ids = demo(api)
            operator = lab.key("operator", "Dana (operator)")
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=CHROMIUM, args=["--no-sandbox"]
                )
                context = browser.new_context(viewport=WINDOW, timezone_id="Europe/Berlin")
                context.set_default_timeout(PAGE_TIMEOUT_MS)
                page = context.new_page()
                shots(page, lab.url, operator, ids)
                browser.close()
        finally:
            server.cleanup()
    total = sum((OUT / f"{name}.png").stat().st_size for name in SHOTS)
    print(f"{len(SHOTS)} screenshots in {OUT.relative_to(ROOT)} ({total / 1e6:.2f} MB)")


def shots(page: Any, url: str, key: str, ids: dict[str, str]) -> None:
    def shot(name: str, *, full: bool = True) -> None:
        # Not "networkidle": the live stream is a request that never ends.
        page.wait_for_selector('#live-state[data-state="open"], form[action="/signin"]')
        page.wait_for_function("() => !document.querySelector('.htmx-request')")
        page.screenshot(path=str(OUT / f"{name}.png"), full_page=full)

    def settle(selector: str) -> None:
        # A page whose part is missing is still worth a picture: say so, and go on.
        try:
            page.wait_for_selector(selector, timeout=15_000)
        except Exception:
            print(f"warning: {page.url}: {selector} did not appear", file=sys.stderr)

    page.goto(f"{url}/signin?next=/")
    shot("signin", full=False)
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{url}/")
    settle('#live-state[data-state="open"]')
    shot("overview")
    page.goto(f"{url}/jobs")
    shot("jobs")
    page.goto(f"{url}/jobs/{ids['quick']}")
    settle("svg")
    shot("job")
    page.goto(f"{url}/jobs/new")
    page.fill("#f-name", "Rail check every 15 minutes")
    page.select_option("#f-equipment_id", "power_supply_1")
    page.get_by_label("Command", exact=True).fill("get_voltage")
    page.get_by_label("Minutes", exact=True).fill("15")
    settle("#preview time")
    shot("job-form")
    page.goto(f"{url}/equipment")
    shot("equipment")
    page.goto(f"{url}/equipment/power_supply_1")
    shot("instrument")
    page.goto(f"{url}/alarms")
    shot("alarms")
    page.goto(f"{url}/audit?job_id={ids['quick']}")
    page.locator("details").first.click()
    shot("audit")


if __name__ == "__main__":
    main()
