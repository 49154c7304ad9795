"""The overview in a real browser against a real `lablink serve` (the issue's scenarios 4 and
7): a failing job's alarm appears live and is acknowledged there, as the API then shows; an
agent killed outright shows its instrument offline, without the page being reloaded."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from lablink.instruments.simulated import SIMULATED_BENCH
from tests.support.browser import Lab, signed_in
from tests.support.serve import LABLINK, Server, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.nats, pytest.mark.slow, pytest.mark.browser]

# The "unknown command" is refused when the job is created (422 naming
# parameters.command): `lablink serve` checks parameters against the instrument's driver.
# This capture passes that check and fails when it runs (a week at 1 Sa/s needs the scope
# below its slowest rate, which only its record length reveals): the e2e suite's recipe.
FAILING_JOB: dict[str, Any] = {
    "name": "Week-long capture",
    "schedule_type": "acquisition",
    "equipment_id": "scope_1",
    "trigger_type": "interval",
    "interval_hours": 12,
    "parameters": {"duration": 604_800, "sample_rate": 1, "channels": [1]},
    "enabled": False,
    "on_failure_alarm": True,
}
UNKNOWN_COMMAND: dict[str, Any] = {
    "name": "Voltage with a typo",
    "schedule_type": "command",
    "equipment_id": "multimeter_1",
    "trigger_type": "interval",
    "interval_hours": 12,
    "parameters": {"command": "no_such_command"},
}


def mark(page: Page) -> None:
    """Set a marker that a reload would wipe: checked after the page changed."""
    page.evaluate("window.__marker = 1")


def still_marked(page: Page) -> None:
    assert page.evaluate("window.__marker") == 1, "the page was reloaded"


def test_a_failing_job_raises_an_alarm_live_and_it_is_acknowledged_there(
    browser: Browser, lab: Lab
) -> None:
    page = signed_in(browser, lab)
    expect(page.locator("#live-state")).to_have_attribute("data-state", "open")
    expect(page.locator("#alarms")).to_contain_text("No active alarm")
    mark(page)
    # The cards come in the overview's stream: the page fetches none of them.
    fetched: list[str] = []
    page.on("request", lambda r: fetched.append(r.url) if "/fragments/overview/" in r.url else None)

    api = lab.api()
    refused = api.post("/api/scheduler/jobs/create", json=UNKNOWN_COMMAND)
    assert refused.status_code == 422, refused.text
    assert refused.json()["errors"][0]["field"] == "parameters.command"
    created = api.post("/api/scheduler/jobs/create", json=FAILING_JOB)
    assert created.status_code == 200, created.text
    job_id = created.json()["job_id"]
    ran = api.post(f"/api/scheduler/jobs/{job_id}/run")
    assert ran.status_code == 200, ran.text

    # Two scheduled jobs for the timeline, one of them paused (greyed there).
    for name, minutes in (("Voltage check", 30), ("Supply drift", 90)):
        made = api.post(
            "/api/scheduler/jobs/create",
            json={
                "name": name,
                "schedule_type": "measurement",
                "equipment_id": "multimeter_1",
                "trigger_type": "interval",
                "interval_minutes": minutes,
                "parameters": {"command": "get_voltage"},
            },
        )
        assert made.status_code == 200, made.text
    assert api.post(f"/api/scheduler/jobs/{made.json()['job_id']}/pause").status_code == 200
    expect(
        page.locator(f"#timeline .fire.paused[data-job-id='{made.json()['job_id']}']").first
    ).to_be_visible()

    alarm = page.locator("#alarms li.alarm")
    expect(alarm).to_have_count(1)
    expect(alarm).to_contain_text(FAILING_JOB["name"])
    alarm_id = alarm.get_attribute("data-alarm-id")
    assert alarm_id
    # The failure is listed too, with its error.
    failure = page.locator(f"#failures li.failure[data-job-id='{job_id}']")
    expect(failure).to_contain_text("failed")
    expect(failure.locator("code.error-type")).not_to_be_empty()
    still_marked(page)
    lab.shot(page, "overview-alarm")

    page.get_by_role("button", name=f"Acknowledge alarm {alarm_id}").click()
    expect(page.locator("#alarms")).to_contain_text(f"alarm {alarm_id} acknowledged")
    expect(alarm).to_contain_text("acknowledged by admin")
    still_marked(page)

    shown = api.get(f"/api/alarms/{alarm_id}").json()["alarm"]
    assert shown["state"] == "acknowledged"
    assert shown["acknowledged"]["by"] == "admin"
    assert fetched == []


def write_lab_toml(path: Path, agent_dir: Path) -> Path:
    kind, resource = SIMULATED_BENCH["multimeter_1"]
    path.write_text(
        "[agent]\n"
        'id = "bench-pc"\n'
        "heartbeat_seconds = 0.5\n"
        f'data_dir = "{agent_dir}"\n'
        "\n[[instruments]]\n"
        'id = "multimeter_1"\n'
        f'kind = "{kind}"\n'
        f'resource = "{resource}"\n'
        'backend = "@sim"\n'
    )
    return path


def wait_until_online(lab: Lab, equipment_id: str, timeout: float = 60) -> None:
    api = lab.api()
    deadline = time.monotonic() + timeout
    while True:
        found = api.get(f"/api/equipment/{equipment_id}")
        if found.status_code == 200 and found.json()["equipment"]["online"]:
            return
        assert time.monotonic() < deadline, f"{equipment_id} never came online: {found.text}"
        time.sleep(0.2)


def test_a_killed_agent_shows_its_instrument_offline(
    browser: Browser, tmp_path: Path, servers: list[Server]
) -> None:
    # The agent runs as its own process (`lablink agent`), not inside the server, so that it
    # can be killed alone.
    data = tmp_path / "data"
    port = free_port()
    server = Server(data, port, {"LABLINK_AGENTS": "off", "LABLINK_HEARTBEAT_TIMEOUT": "3"})
    servers.append(server)
    server.listening()
    lab = Lab(
        url=f"http://127.0.0.1:{port}",
        data_dir=data,
        admin_key=(data / "admin.key").read_text().strip(),
        server=server,
    )
    config = write_lab_toml(tmp_path / "lab.toml", tmp_path / "agent")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABLINK_")}
    agent = subprocess.Popen(
        [LABLINK, "agent", "--config", str(config), "--data-dir", str(data)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until_online(lab, "multimeter_1")
        page = signed_in(browser, lab)
        expect(page.locator("#live-state")).to_have_attribute("data-state", "open")
        row = page.locator("#instruments tr[data-equipment-id='multimeter_1']")
        expect(row.locator(".instrument-status")).to_contain_text("online")
        mark(page)
        lab.shot(page, "overview")

        agent.send_signal(signal.SIGKILL)
        agent.wait(timeout=30)
        # Offline once the heartbeat timeout (3 s) has passed without one: in words, live.
        expect(row.locator(".instrument-status")).to_contain_text("offline", timeout=60_000)
        expect(row.locator(".instrument-status")).not_to_contain_text("online")
        still_marked(page)
        shown = lab.api().get("/api/equipment/multimeter_1").json()["equipment"]
        assert shown["online"] is False
        lab.shot(page, "overview-offline")
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait(timeout=30)
