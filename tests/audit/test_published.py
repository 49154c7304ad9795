"""The checkpoints' copy on the bus: LABLINK_AUDIT on a real nats-server refuses deletes and
purges, gets every checkpoint the log holds (again after a bus outage, once after a
restart), and a real `lablink serve` signs and publishes on its graceful stop."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import httpx
import nats
import pytest
from nats.js.errors import APIError
from typer.testing import CliRunner

from lablink.audit.checkpoints import Checkpointer
from lablink.audit.note import open_note
from lablink.audit.publisher import BusCheckpoints
from lablink.bus.audit_stream import AUDIT_STREAM
from lablink.bus.options import NatsOptions
from lablink.bus.server import NatsServer
from lablink.cli import app
from tests.audit.conftest import JOB, Lab
from tests.support.eventually import eventually_sync
from tests.support.serve import Server, admin_client

pytestmark = pytest.mark.nats


async def test_every_checkpoint_is_published_and_cannot_be_deleted_or_purged(
    lab: Lab, nats_server: NatsServer
) -> None:
    sink = BusCheckpoints(NatsOptions(url=nats_server.url))
    lab.checkpoints.sink = sink
    try:
        lab.work(2)
        lab.checkpoints.checkpoint(lab.clock.now())
        lab.work(1)
        lab.checkpoints.checkpoint(lab.clock.now())
        assert await lab.checkpoints.publish_pending() == 2
        assert await lab.checkpoints.publish_pending() == 0
        notes = await sink.all_published(lab.signer.name)
        assert [open_note(n, lab.signer.verifier).size for n in notes] == [6, 10]
        nc = await nats.connect(nats_server.url)
        try:
            js = nc.jetstream()
            with pytest.raises(APIError, match="message delete not permitted"):
                await js.delete_msg(AUDIT_STREAM, 1)
            with pytest.raises(APIError, match="stream purge not permitted"):
                await js.purge_stream(AUDIT_STREAM)
        finally:
            await nc.close()
        # A restart learns what the stream has, and publishes only what it lacks.
        lab.work(1)
        again = Checkpointer(lab.store, lab.clock, lab.signer, sink=sink)
        again.checkpoint(lab.clock.now())
        assert await again.publish_pending() == 1
        sizes = [
            open_note(n, lab.signer.verifier).size
            for n in await sink.all_published(lab.signer.name)
        ]
        assert sizes == [6, 10, 14]
    finally:
        await sink.aclose()


@pytest.mark.slow
async def test_checkpoints_signed_while_the_bus_was_away_are_published_when_it_is_back(
    lab: Lab, tmp_path: Path
) -> None:
    server = NatsServer(tmp_path / "nats")
    await server.start()
    url = server.url
    sink = BusCheckpoints(NatsOptions(url=url))
    lab.checkpoints.sink = sink
    try:
        await server.stop()
        lab.work(1)
        lab.checkpoints.checkpoint(lab.clock.now())
        with pytest.raises(Exception):  # noqa: B017, PT011  (refused, or timed out: either)
            await lab.checkpoints.publish_pending()
        lab.work(1)
        lab.checkpoints.checkpoint(lab.clock.now())
        port = int(url.rsplit(":", 1)[1])
        server = NatsServer(tmp_path / "nats", port=port)
        await server.start()
        assert await lab.checkpoints.publish_pending() == 2
        published = await sink.all_published(lab.signer.name)
        assert [open_note(n, lab.signer.verifier).size for n in published] == [3, 7]
    finally:
        await sink.aclose()
        await server.stop()


@pytest.mark.e2e
@pytest.mark.slow
def test_serve_signs_and_publishes_and_an_auditor_verifies(
    tmp_path: Path, servers: list[Server]
) -> None:
    data = tmp_path / "data"
    base, auth = admin_client(data, servers)
    runner = CliRunner()
    with httpx.Client(base_url=base, timeout=30) as client:
        created = client.post("/api/scheduler/jobs/create", json=JOB, headers=auth)
        assert created.status_code == 200, created.text
        job_id = created.json()["job_id"]
        assert client.post(f"/api/scheduler/jobs/{job_id}/pause", headers=auth).status_code == 200
    servers[-1].terminate()
    assert servers[-1].proc.wait(timeout=60) == 0
    log = sqlite3.connect(data / "scheduler.db")
    ((size, payload),) = log.execute(
        "SELECT json_extract(payload, '$.size'), payload FROM events"
        " WHERE type = 'audit.checkpoint' ORDER BY position DESC LIMIT 1"
    ).fetchall()
    (last,) = log.execute("SELECT MAX(position) FROM events").fetchone()
    log.close()
    assert size == last - 1  # the stop signed everything before its own event
    # Started again: the bus holds the stop's checkpoint, read as the read-only user.
    admin_client(data, servers)
    out = tmp_path / "published.jsonl"
    result = runner.invoke(
        app, ["audit", "checkpoints", "--out", str(out), "--data-dir", str(data)]
    )
    assert result.exit_code == 0, result.output
    notes = [json.loads(line)["published_checkpoint"] for line in out.read_text().splitlines()]
    assert json.loads(payload)["note"] in notes

    def verified() -> str:
        run = runner.invoke(app, ["audit", "verify", "--data-dir", str(data)])
        assert run.exit_code == 0, run.output
        return run.stdout

    summary = eventually_sync(verified, until=lambda text: "published checkpoints" in text)
    assert summary.startswith("ok: ")
