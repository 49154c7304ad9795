"""`lablink data get EXECUTION_ID [-o FILE]` (issue 15 point 5) against a real HTTP server:
the real app under uvicorn on a loopback port (on the test's loop, beside the harness's
engine), a real nats-server holding the capture. The file is byte-identical; a SHA-256 that
differs from the recorded one, or an error answer, exits 1 and leaves no file behind."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lablink.bus.data_bucket import DataBucket
from lablink.bus.options import NatsOptions
from lablink.bus.server import NatsServer
from lablink.cli import app
from lablink.keys import create_key
from tests.support.captures import ACQUISITION, bucket, capture, csv_bytes, settle
from tests.support.harness import Harness
from tests.support.series import served as serve_app

pytestmark = pytest.mark.nats


@pytest.fixture
async def served(harness: Harness, nats_server: NatsServer) -> AsyncIterator[str]:
    """The app over HTTP on 127.0.0.1 (a free port), with keys on: its base URL."""
    data = DataBucket(NatsOptions(url=nats_server.url))
    try:
        async with serve_app(harness, auth=True, data=data) as url:
            yield url
    finally:
        await data.aclose()


def viewer_key(harness: Harness) -> str:
    _, secret = create_key(
        harness.store, name="viewer", role="viewer", actor="test", now=harness.clock.now()
    )
    settle(harness)
    return secret


async def lablink(*args: str) -> tuple[int, str]:
    """The command, in a thread (it blocks on HTTP; the server runs on this loop)."""
    result = await asyncio.to_thread(CliRunner().invoke, app, list(args))
    return result.exit_code, result.output


async def test_data_get_writes_the_capture_verified(
    harness: Harness, nats_server: NatsServer, served: str, tmp_path: Path
) -> None:
    job_id = harness.service.create_job(ACQUISITION, actor="alice")
    # Over the progress bar's threshold: several chunks of the object store and of the CLI.
    payload = csv_bytes(80_000)
    assert len(payload) > 1024 * 1024
    async with bucket(nats_server.url) as store:
        execution_id, data = await capture(harness, job_id, payload, store=store)
    key = viewer_key(harness)
    target = tmp_path / "out" / "capture.csv"
    target.parent.mkdir()

    code, output = await lablink(
        "data", "get", execution_id, "-o", str(target), "--url", served, "--key", key
    )

    assert code == 0, output
    assert target.read_bytes() == payload
    assert hashlib.sha256(target.read_bytes()).hexdigest() == data["sha256"]
    assert data["sha256"] in output
    assert list(target.parent.iterdir()) == [target]  # no .partial left


async def test_data_get_names_the_file_as_the_server_does(
    harness: Harness,
    nats_server: NatsServer,
    served: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    job_id = harness.service.create_job(ACQUISITION, actor="alice")
    async with bucket(nats_server.url) as store:
        execution_id, _ = await capture(harness, job_id, csv_bytes(20), store=store)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LABLINK_URL", served)
    monkeypatch.setenv("LABLINK_API_KEY", viewer_key(harness))
    code, output = await lablink("data", "get", execution_id)
    assert code == 0, output
    (written,) = await asyncio.to_thread(lambda: list(tmp_path.glob("*.csv")))
    assert written.name.startswith("Line-check_oscilloscope_1_")
    assert written.read_bytes() == csv_bytes(20)


async def test_a_sha256_mismatch_fails_and_leaves_no_file(
    harness: Harness, nats_server: NatsServer, served: str, tmp_path: Path
) -> None:
    job_id = harness.service.create_job(ACQUISITION, actor="alice")
    async with bucket(nats_server.url) as store:
        execution_id, data = await capture(harness, job_id, csv_bytes(300), store=store)
        # The bucket's object is not the capture the execution recorded (replaced, damaged).
        await store.put(data["object"], csv_bytes(300, seed=9))
    target = tmp_path / "out" / "capture.csv"
    target.parent.mkdir()
    code, output = await lablink(
        "data", "get", execution_id, "-o", str(target), "--url", served,
        "--key", viewer_key(harness),
    )  # fmt: skip
    assert code == 1
    assert "SHA-256 mismatch" in output
    assert data["sha256"] in output
    assert list(target.parent.iterdir()) == []


async def test_errors_exit_1_with_the_servers_reason(
    harness: Harness, served: str, tmp_path: Path
) -> None:
    key = viewer_key(harness)
    target = tmp_path / "out" / "capture.csv"
    target.parent.mkdir()
    code, output = await lablink(
        "data", "get", "exec_nope", "-o", str(target), "--url", served, "--key", key
    )
    assert code == 1
    assert "HTTP 404" in output
    assert "no such execution" in output
    code, output = await lablink("data", "get", "exec_nope", "-o", str(target), "--url", served)
    assert code == 1
    assert "HTTP 401" in output
    assert list(target.parent.iterdir()) == []
