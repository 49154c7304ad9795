"""The data path end to end on a real `lablink serve` (its private nats-server and its own
simulated bench agent): an acquisition runs, its capture lands in the LABLINK_DATA bucket,
and it downloads over HTTP and with `lablink data get`, byte-identical, with the SHA-256 the
execution recorded."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.test_e2e_serve import final_execution
from tests.support.captures import ACQUISITION
from tests.support.eventually import eventually_sync
from tests.support.serve import LABLINK, Server, admin_client

pytestmark = [pytest.mark.e2e, pytest.mark.nats, pytest.mark.slow]


def test_a_capture_downloads_over_http_and_with_data_get(
    tmp_path: Path,
    servers: list[Server],
) -> None:
    data = tmp_path / "data"
    base, auth = admin_client(data, servers)
    with httpx.Client(base_url=base, headers=auth, timeout=60) as client:
        created = client.post(
            "/api/scheduler/jobs/create",
            json={**ACQUISITION, "enabled": False},
        )
        assert created.status_code == 200, created.text
        job_id = created.json()["job_id"]
        execution_id = client.post(f"/api/scheduler/jobs/{job_id}/run").json()["execution_id"]
        assert final_execution(client, execution_id)["status"] == "completed"

        def stored() -> dict[str, Any]:
            found: dict[str, Any] = client.get(f"/api/scheduler/executions/{execution_id}").json()
            return dict(found["execution"]["data"])

        described = eventually_sync(
            stored, until=lambda d: d["status"] == "stored", what="the capture stored"
        )
        assert described["url"] == f"/api/scheduler/executions/{execution_id}/data"

        response = client.get(described["url"])
        assert response.status_code == 200, response.text
        body = response.content
        assert len(body) == described["size"]
        assert hashlib.sha256(body).hexdigest() == described["sha256"]
        assert response.headers["etag"] == f'"{described["sha256"]}"'
        assert response.headers["content-type"].startswith("text/csv")
        tail = client.get(described["url"], headers={"Range": "bytes=-100"})
        assert tail.status_code == 206
        assert tail.content == body[-100:]

    target = tmp_path / "capture.csv"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABLINK_")}
    env.update(LABLINK_URL=base, LABLINK_API_KEY=auth["Authorization"].removeprefix("Bearer "))
    done = subprocess.run(
        [LABLINK, "data", "get", execution_id, "-o", str(target)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert target.read_bytes() == body
