"""Finding 13: with LABLINK_AUTH=off, any web page the operator visits could drive the API.

A request with ``Host: attacker.example`` created a job (DNS rebinding), and bodiless
``POST …/run``, ``/pause`` and ``/resume`` with a foreign ``Origin`` returned 200. Now a
foreign Host is a 400, a state-changing request from a foreign Origin is a 403, and keys off
on a non-loopback address refuses to start. Checked through the real app (httpx in-process),
through a real ``lablink serve`` process, and by starting one on 0.0.0.0.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from lablink.api.app import create_app
from lablink.api.context import ApiContext
from lablink.keys import create_key
from lablink.settings import Settings
from tests.support.eventually import eventually_sync
from tests.support.harness import Harness, api_client

LABLINK = str(Path(sys.executable).parent / "lablink")
JOB: dict[str, Any] = {
    "name": "Hourly Voltage Check",
    "schedule_type": "measurement",
    "equipment_id": "power_supply_1",
    "trigger_type": "interval",
    "interval_hours": 1,
    "parameters": {"command": "get_voltage"},
}
FOREIGN = "http://attacker.example"


@contextlib.asynccontextmanager
async def app_for(harness: Harness, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The real app with these settings; the client sends whatever Host a test gives it."""
    context = ApiContext(
        settings=settings,
        clock=harness.clock,
        store=harness.store,
        service=harness.service,
        engine=harness.engine,
        auth_enabled=settings.auth,
    )
    try:
        transport = httpx.ASGITransport(app=create_app(context))  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as c:
            yield c
    finally:
        context.close()


def job_count(harness: Harness) -> int:
    return len(harness.rows("SELECT job_id FROM jobs"))


async def test_a_foreign_host_is_refused_and_writes_nothing(
    harness: Harness, invariants: Any
) -> None:
    async with api_client(harness, auth=False) as client:
        created = await client.post(
            "/api/scheduler/jobs/create", json=JOB, headers={"Host": "attacker.example"}
        )
        read = await client.get("/api/scheduler/jobs", headers={"Host": "attacker.example:8000"})
        ours = await client.get("/api/scheduler/jobs")

    assert created.status_code == 400, created.text
    assert "'attacker.example'" in created.json()["detail"]
    assert created.json()["errors"] == [
        {"field": "Host", "value": "attacker.example", "reason": "not an allowed host"}
    ]
    assert read.status_code == 400
    assert ours.status_code == 200
    assert job_count(harness) == 0
    await invariants(harness.path)


async def test_state_changing_requests_from_a_foreign_origin_are_refused(
    harness: Harness, invariants: Any
) -> None:
    async with api_client(harness, auth=False) as client:
        created = await client.post("/api/scheduler/jobs/create", json=JOB)
        job_id = created.json()["job_id"]
        base = f"/api/scheduler/jobs/{job_id}"
        refused = {
            "create": await client.post(
                "/api/scheduler/jobs/create", json=JOB, headers={"Origin": FOREIGN}
            ),
            "run": await client.post(f"{base}/run", headers={"Origin": FOREIGN}),
            "pause": await client.post(f"{base}/pause", headers={"Origin": FOREIGN}),
            "resume": await client.post(f"{base}/resume", headers={"Origin": "null"}),
            "update": await client.put(base, json={"name": "x"}, headers={"Origin": FOREIGN}),
            "delete": await client.delete(base, headers={"Origin": FOREIGN + ":8000"}),
        }
        await harness.settle()
        # Reading is not changing: a page cannot read the answer without CORS anyway.
        read = await client.get(base, headers={"Origin": FOREIGN})
        same_origin = await client.post(f"{base}/pause", headers={"Origin": "http://testserver"})

    for name, response in refused.items():
        assert response.status_code == 403, f"{name}: {response.status_code} {response.text}"
        detail = response.json()["detail"]
        assert "Origin" in detail, detail
        assert "attacker.example" in detail or "'null'" in detail, detail
    assert read.status_code == 200
    assert read.json()["job"]["name"] == JOB["name"]
    assert read.json()["job"]["enabled"] is True
    assert same_origin.status_code == 200, same_origin.text
    assert job_count(harness) == 1
    assert harness.rows("SELECT execution_id FROM executions") == []
    await invariants(harness.path, acknowledged_jobs=[job_id])


async def test_the_default_hosts_are_the_bound_address_names(harness: Harness) -> None:
    settings = Settings(data_dir=harness.path.parent, timezone=harness.tz, auth=False)
    async with app_for(harness, settings) as client:
        answers = {
            host: (await client.get("/api/scheduler/jobs", headers={"Host": host})).status_code
            for host in (
                "127.0.0.1:8000",
                "localhost:8000",
                "localhost",
                "[::1]:8000",
                "LOCALHOST:8000",
                "testserver",
                "127.0.0.1.attacker.example",
                "localhost:8000.attacker.example",
                "",
            )
        }
        same_origin = await client.post(
            "/api/scheduler/jobs/create", json=JOB, headers={"Origin": "http://localhost:8000"}
        )
        other_port = await client.post(
            "/api/scheduler/jobs/create", json=JOB, headers={"Origin": "http://localhost:9999"}
        )
    assert answers == {
        "127.0.0.1:8000": 200,
        "localhost:8000": 200,
        "localhost": 200,
        "[::1]:8000": 200,
        "LOCALHOST:8000": 200,
        "testserver": 400,
        "127.0.0.1.attacker.example": 400,
        "localhost:8000.attacker.example": 400,
        "": 400,
    }
    assert same_origin.status_code == 200
    # Another local port is another origin (another web app on this machine).
    assert other_port.status_code == 403


async def test_lablink_allowed_hosts_widens_the_list(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LABLINK_ALLOWED_HOSTS", " lab-pc.example, *.lab.example ,10.0.0.5:9000")
    monkeypatch.setenv("LABLINK_AUTH", "off")
    monkeypatch.setenv("LABLINK_DATA_DIR", str(harness.path.parent))
    settings = Settings.from_env(timezone=harness.tz)
    assert settings.allowed_hosts == ("lab-pc.example", "*.lab.example", "10.0.0.5:9000")
    async with app_for(harness, settings) as client:

        async def status(host: str, origin: str | None = None) -> int:
            headers = {"Host": host} | ({"Origin": origin} if origin else {})
            response = await client.post("/api/scheduler/preview", json=JOB, headers=headers)
            return response.status_code

        assert await status("lab-pc.example") == 200
        assert await status("lab-pc.example:8000") == 200
        assert await status("bench.lab.example:8000") == 200
        assert await status("10.0.0.5:9000") == 200
        assert await status("10.0.0.5:8000") == 400  # that entry named its port
        assert await status("lab.example.attacker.example") == 400
        assert await status("localhost:8000", "http://lab-pc.example:8000") == 200
        assert await status("localhost:8000", "https://bench.lab.example") == 200
        assert await status("localhost:8000", "http://evil.example") == 403


def test_a_malformed_allowed_host_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABLINK_ALLOWED_HOSTS", "lab.*.example")
    with pytest.raises(ValueError, match=r"allowed host 'lab\.\*\.example'"):
        Settings.from_env(timezone="UTC")


async def test_the_checks_hold_with_keys_on_too(harness: Harness) -> None:
    _, secret = create_key(
        harness.store, name="root", role="admin", actor="test", now=harness.clock.now()
    )
    auth = {"Authorization": f"Bearer {secret}"}
    async with api_client(harness, auth=True) as client:
        foreign_origin = await client.post(
            "/api/scheduler/jobs/create", json=JOB, headers=auth | {"Origin": FOREIGN}
        )
        foreign_host = await client.get(
            "/api/scheduler/jobs", headers=auth | {"Host": "attacker.example"}
        )
    assert foreign_origin.status_code == 403
    assert foreign_host.status_code == 400
    assert job_count(harness) == 0


# -- a real `lablink serve` ----------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def lablink_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABLINK_")}
    env.update(
        LABLINK_DATA_DIR=str(data_dir),
        LABLINK_TIMEZONE="UTC",
        LABLINK_AUTH="off",
        LABLINK_NATS="off",
        **extra,
    )
    return env


@contextlib.contextmanager
def serving(data_dir: Path, port: int) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [LABLINK, "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=lablink_env(data_dir),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        def answers() -> httpx.Response:
            assert proc.poll() is None, f"lablink serve exited: {proc.communicate()[1]}"
            return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)

        eventually_sync(
            answers, interval=0.1, ignoring=(httpx.TransportError,), what="lablink serve answers"
        )
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


@pytest.mark.e2e
@pytest.mark.slow
def test_a_real_server_refuses_a_foreign_host_and_origin(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with serving(tmp_path / "data", port), httpx.Client(base_url=base, timeout=30) as client:
        rebinding = client.post(
            "/api/scheduler/jobs/create", json=JOB, headers={"Host": "attacker.example"}
        )
        ours = client.post("/api/scheduler/jobs/create", json=JOB)
        job_id = ours.json()["job_id"]
        cross = {
            action: client.post(
                f"/api/scheduler/jobs/{job_id}/{action}", headers={"Origin": FOREIGN}
            )
            for action in ("run", "pause", "resume")
        }
        listed = client.get("/api/scheduler/jobs").json()
        same_origin = client.post(
            f"/api/scheduler/jobs/{job_id}/pause", headers={"Origin": f"http://localhost:{port}"}
        )

    assert rebinding.status_code == 400
    assert "attacker.example" in rebinding.json()["detail"]
    assert ours.status_code == 200, ours.text
    for action, response in cross.items():
        assert response.status_code == 403, f"{action}: {response.text}"
        assert FOREIGN in response.json()["detail"]
    assert [job["job_id"] for job in listed["jobs"]] == [job_id]
    assert listed["jobs"][0]["enabled"] is True
    assert same_origin.status_code == 200, same_origin.text


@pytest.mark.e2e
@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10"])
def test_keys_off_refuses_to_start_on_a_non_loopback_address(tmp_path: Path, host: str) -> None:
    data_dir = tmp_path / "data"
    done = subprocess.run(
        [LABLINK, "serve", "--host", host, "--port", str(free_port())],
        env=lablink_env(data_dir),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert f"'{host}'" in lines[0]
    assert "LABLINK_AUTH=off" in lines[0]
    assert "Traceback" not in done.stderr + done.stdout
    # Refused before anything was opened.
    assert not data_dir.exists()
