"""The original LabLink client's scheduler calls keep working, byte for byte.

``LabLinkClient`` (X9X0/LabLink, ``client/api/client.py``) is a ``requests.Session`` with a
Bearer token. Its scheduler methods send exactly these requests:

- ``list_jobs(enabled)``: ``GET {api}/scheduler/jobs`` with ``params={"enabled": enabled}``
  (requests writes ``enabled=True``), and reads ``["jobs"]``; its scheduler panel shows each
  job's ``job_id``, ``name``, ``schedule_type``, ``trigger_type`` and ``enabled``;
- ``create_job(job_config)``: ``POST {api}/scheduler/jobs/create`` with ``json=job_config``,
  the caller's dict as it is (the guide's bodies);
- ``run_job_now``, ``pause_job``, ``resume_job``: ``POST`` with no body at all;
- ``delete_job``: ``DELETE`` with no body;
- ``get_scheduler_statistics()``: ``GET {api}/scheduler/statistics``, reads ``["statistics"]``.

Each request is prepared here by ``requests`` itself, as that client's session would (headers,
query string, body bytes), and sent to the real app as prepared, with job parameters checked
against the simulated bench's drivers as ``lablink serve`` does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests

from lablink.clock import ManualClock
from lablink.keys import create_key
from tests.support.harness import Harness, api_client

API = "http://testserver/api"
# Bodies a user of that client passes to create_job: the guide's.
JOB_CONFIGS: list[dict[str, Any]] = [
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
        "name": "Nightly Equipment Test",
        "schedule_type": "equipment_test",
        "equipment_id": "oscilloscope_1",
        "trigger_type": "daily",
        "time_of_day": "03:00:00",
        "parameters": {"test_name": "connection"},
        "on_failure_alarm": True,
    },
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
]


class OriginalClient:
    """The scheduler half of LabLinkClient: the same session, the same calls, sent through
    the app instead of a socket."""

    def __init__(self, app: httpx.AsyncClient, token: str) -> None:
        self.app = app
        self._session = requests.Session()
        # LabLinkClient._update_auth_header after login.
        self._session.headers.update({"Authorization": f"Bearer {token}"})
        self.api_base_url = API

    async def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        prepared = self._session.prepare_request(requests.Request(method, url, **kwargs))
        assert prepared.url is not None
        body = prepared.body or b""
        assert isinstance(body, bytes | str)
        response = await self.app.request(
            prepared.method or method,
            prepared.url,
            headers={k: str(v) for k, v in prepared.headers.items()},
            content=body,
        )
        assert response.status_code < 400, (method, url, response.text)  # raise_for_status
        return response

    async def list_jobs(self, enabled: bool | None = None) -> list[dict[str, Any]]:
        params = {"enabled": enabled} if enabled is not None else {}
        response = await self._send("GET", f"{self.api_base_url}/scheduler/jobs", params=params)
        jobs: list[dict[str, Any]] = response.json()["jobs"]
        return jobs

    async def create_job(self, job_config: dict[str, Any]) -> dict[str, Any]:
        url = f"{self.api_base_url}/scheduler/jobs/create"
        body: dict[str, Any] = (await self._send("POST", url, json=job_config)).json()
        return body

    async def run_job_now(self, job_id: str) -> dict[str, Any]:
        url = f"{self.api_base_url}/scheduler/jobs/{job_id}/run"
        body: dict[str, Any] = (await self._send("POST", url)).json()
        return body

    async def get_scheduler_statistics(self) -> dict[str, Any]:
        response = await self._send("GET", f"{self.api_base_url}/scheduler/statistics")
        statistics: dict[str, Any] = response.json()["statistics"]
        return statistics

    async def delete_job(self, job_id: str) -> dict[str, Any]:
        url = f"{self.api_base_url}/scheduler/jobs/{job_id}"
        body: dict[str, Any] = (await self._send("DELETE", url)).json()
        return body

    async def pause_job(self, job_id: str) -> dict[str, Any]:
        url = f"{self.api_base_url}/scheduler/jobs/{job_id}/pause"
        body: dict[str, Any] = (await self._send("POST", url)).json()
        return body

    async def resume_job(self, job_id: str) -> dict[str, Any]:
        url = f"{self.api_base_url}/scheduler/jobs/{job_id}/resume"
        body: dict[str, Any] = (await self._send("POST", url)).json()
        return body


@pytest.fixture
async def original(tmp_path: Path, clock: ManualClock) -> AsyncIterator[OriginalClient]:
    harness = await Harness(
        tmp_path / "data" / "scheduler.db", clock, profiles=True, instruments=True
    ).start()
    try:
        _, token = create_key(
            harness.store, name="gui", role="operator", actor="t", now=clock.now()
        )
        async with api_client(harness, auth=True) as app:
            yield OriginalClient(app, token)
    finally:
        await harness.close()


def test_the_requests_are_what_requests_prepares() -> None:
    session = requests.Session()
    listed = session.prepare_request(
        requests.Request("GET", f"{API}/scheduler/jobs", params={"enabled": True})
    )
    assert listed.url == f"{API}/scheduler/jobs?enabled=True"
    run = session.prepare_request(requests.Request("POST", f"{API}/scheduler/jobs/j/run"))
    assert run.body is None
    assert "Content-Type" not in run.headers
    created = session.prepare_request(
        requests.Request("POST", f"{API}/scheduler/jobs/create", json=JOB_CONFIGS[0])
    )
    assert created.headers["Content-Type"] == "application/json"


async def test_every_scheduler_call_of_the_original_client(original: OriginalClient) -> None:
    created = [await original.create_job(config) for config in JOB_CONFIGS]
    assert all(c["success"] is True and c["job_id"].startswith("job_") for c in created)
    ids = [c["job_id"] for c in created]

    listed = await original.list_jobs()
    assert [j["job_id"] for j in listed] == ids
    for job, config in zip(listed, JOB_CONFIGS, strict=True):
        # What its scheduler panel shows.
        assert (job["name"], job["schedule_type"], job["trigger_type"], job["enabled"]) == (
            config["name"],
            config["schedule_type"],
            config["trigger_type"],
            True,
        )

    paused = await original.pause_job(ids[1])
    assert paused["success"] is True
    assert [j["job_id"] for j in await original.list_jobs(enabled=True)] == [
        ids[0],
        ids[2],
        ids[3],
    ]
    assert [j["job_id"] for j in await original.list_jobs(enabled=False)] == [ids[1]]
    assert (await original.resume_job(ids[1]))["success"] is True

    ran = await original.run_job_now(ids[0])
    assert ran["success"] is True
    assert ran["execution_id"].startswith("exec_")

    statistics = await original.get_scheduler_statistics()
    assert statistics["total_jobs"] == len(JOB_CONFIGS)
    assert statistics["active_jobs"] == len(JOB_CONFIGS)

    assert (await original.delete_job(ids[3]))["success"] is True
    assert len(await original.list_jobs()) == len(JOB_CONFIGS) - 1
