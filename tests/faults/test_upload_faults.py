"""Faults during a capture's upload to the object store: NATS stopped under it, the agent
SIGKILLed under it. A real nats-server, a real `lablink agent` process reaching it through a
slow link (``ThrottledProxy``: the upload takes seconds, so the fault lands in the middle),
the scheduler's engine and executor on a real SQLite file.

Either way: the result says ``pending_upload``, the capture reaches the store once, under its
one name, with no chunk of the failed attempt left behind, ``ExecutionDataStored`` is
recorded once, and the agent's copy and ledger row are gone afterwards."""

from __future__ import annotations

import hashlib
import json
import signal
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats
import nats.js.errors
import pytest

from lablink.bus.data_bucket import DATA_STREAM, ensure_data_bucket
from lablink.bus.server import NatsServer
from lablink.clock import ManualClock
from lablink.events import ExecutionDataRemoved, ExecutionDataStored
from lablink.events.data import DATA_BUCKET
from lablink.handler import CommandHandler
from lablink.instruments.protocol import (
    REPORTS_CONSUMER,
    REPORTS_STREAM,
    Report,
    StoredData,
    encoder,
    report_subject,
)
from tests.support.agent_lab import AgentLab, bench_config, spawn_agent, write_lab_toml
from tests.support.bench import copy_bench
from tests.support.eventually import eventually
from tests.support.throttle import ThrottledProxy

pytestmark = [pytest.mark.nats, pytest.mark.e2e, pytest.mark.slow]

AGENT = "lab-pc-3"
# About 6.6 MB of CSV: some seconds through the 1 MB/s link.
CAPTURE: dict[str, Any] = {
    "name": "Slow link capture",
    "schedule_type": "acquisition",
    "equipment_id": "oscilloscope_1",
    "parameters": {"duration": 1, "sample_rate": 300_000, "channels": [1], "decimate": False},
}


@pytest.fixture
async def lab(
    tmp_path: Path, nats_server: NatsServer, clock: ManualClock
) -> AsyncIterator[AgentLab]:
    # A heartbeat timeout longer than the faults: the execution waits for its result.
    lab = await AgentLab(
        tmp_path / "scheduler" / "scheduler.db", nats_server.url, clock, heartbeat_timeout=120
    ).start()
    try:
        yield lab
    finally:
        await lab.close()


@pytest.fixture
async def proxy(nats_server: NatsServer) -> AsyncIterator[ThrottledProxy]:
    proxy = await ThrottledProxy(nats_server.port, bytes_per_second=1_000_000).start()
    try:
        yield proxy
    finally:
        await proxy.close()


async def start_agent(lab: AgentLab, tmp_path: Path, url: str) -> Path:
    config = bench_config(
        copy_bench(tmp_path / "bench"),
        tmp_path / "agent-data",
        agent_id=AGENT,
        only=("oscilloscope_1",),
    )
    toml = write_lab_toml(tmp_path / "lab.toml", config, url)
    lab.processes.append(await spawn_agent(toml))
    await lab.online("oscilloscope_1", within=30)
    return toml


async def store_state(url: str) -> tuple[int, list[Any]]:
    """(messages in the bucket's stream, the objects' infos)."""
    nc = await nats.connect(url, allow_reconnect=False)
    try:
        js = nc.jetstream()
        messages = (await js.stream_info(DATA_STREAM)).state.messages
        store = await js.object_store(DATA_BUCKET)
        try:
            infos = await store.list()
        except nats.js.errors.NotFoundError:
            infos = []
        return messages, infos
    finally:
        await nc.close()


async def upload_under_way(url: str) -> None:
    """Chunks are in the stream and no object is complete yet."""
    _, infos = await eventually(
        lambda: store_state(url),
        until=lambda s: s[0] >= 3,
        timeout=60,
        interval=0.05,
        what="chunks in the bucket",
    )
    assert infos == [], "the upload completed before the fault: the link is too fast"


async def fetch(url: str, name: str) -> bytes:
    nc = await nats.connect(url)
    try:
        found = await (await nc.jetstream().object_store(DATA_BUCKET)).get(name)
        return bytes(found.data or b"")
    finally:
        await nc.close()


def agent_ledger(tmp_path: Path, sql: str) -> list[tuple[Any, ...]]:
    path = tmp_path / "agent-data" / "agents" / f"{AGENT}.db"
    if not path.exists():
        return []
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute(sql).fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()


def stored_events(lab: AgentLab, job_id: str) -> list[ExecutionDataStored]:
    events = lab.events(lab.jobs.stream_id(job_id))
    return [e for e in events if isinstance(e, ExecutionDataStored)]


async def assert_stored_once(
    lab: AgentLab, tmp_path: Path, url: str, job_id: str, execution_id: str
) -> None:
    row = await lab.finished(execution_id, within=90)
    assert row["status"] == "completed", row
    data = json.loads(row["result"])["data"]
    assert data["status"] == "pending_upload"
    # The agent's report is recorded, and the ledger lets the upload go only once it is.
    await eventually(lambda: stored_events(lab, job_id), timeout=90, what="ExecutionDataStored")
    await eventually(
        lambda: agent_ledger(tmp_path, "SELECT execution_id FROM uploads"),
        until=lambda rows: rows == [],
        timeout=30,
        what="the agent's uploads row gone",
    )
    (stored,) = stored_events(lab, job_id)
    assert (stored.execution_id, stored.object, stored.sha256, stored.size) == (
        execution_id,
        data["object"],
        data["sha256"],
        data["size"],
    )
    assert stored.agent_id == AGENT
    content = await fetch(url, data["object"])
    assert hashlib.sha256(content).hexdigest() == data["sha256"]
    messages, infos = await store_state(url)
    assert [info.name for info in infos] == [data["object"]]
    # The object's chunks and its description: nothing of the attempt that failed.
    assert messages == infos[0].chunks + 1
    assert list((tmp_path / "agent-data" / "acquisitions").iterdir()) == []


async def test_nats_stopped_during_an_upload_leaves_it_pending_until_nats_returns(
    lab: AgentLab,
    proxy: ThrottledProxy,
    nats_server: NatsServer,
    tmp_path: Path,
    invariants: Any,
) -> None:
    await start_agent(lab, tmp_path, proxy.url)
    job_id = lab.create(CAPTURE)
    execution_id = await lab.engine.run_now(job_id)
    await upload_under_way(nats_server.url)
    await nats_server.stop()
    # The agent gives up this attempt and keeps the result, saying pending_upload.
    await eventually(
        lambda: agent_ledger(
            tmp_path,
            'SELECT 1 FROM executions WHERE outcome LIKE \'%"status":"pending_upload"%\'',
        ),
        timeout=60,
        what="the agent's result saying pending_upload",
    )
    await nats_server.start()
    await assert_stored_once(lab, tmp_path, nats_server.url, job_id, execution_id)
    # The same word again (an agent killed after JetStream took its report, before its ledger
    # let the row go, says it again at its next start): nothing more is recorded.
    (stored,) = stored_events(lab, job_id)
    await say_again(nats_server.url, job_id, execution_id, stored)
    assert len(stored_events(lab, job_id)) == 1
    await invariants(lab.path)


async def say_again(url: str, job_id: str, execution_id: str, stored: ExecutionDataStored) -> None:
    """Publish the agent's stored report once more, and wait until the scheduler took it."""
    report = Report(
        execution_id=execution_id,
        job_id=job_id,
        equipment_id="oscilloscope_1",
        agent_id=AGENT,
        seq=1000,
        at=stored.stored_at,
        stored=StoredData(
            object=stored.object, size=stored.size, sha256=stored.sha256, stored_at=stored.stored_at
        ),
    )
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        ack = await js.publish(
            report_subject("oscilloscope_1", execution_id, 1000), encoder.encode(report)
        )

        async def taken() -> bool:
            info = await js.consumer_info(REPORTS_STREAM, REPORTS_CONSUMER)
            return bool(info.ack_floor.stream_seq >= ack.seq)

        await eventually(taken, timeout=30, what="the repeated report taken")
    finally:
        await nc.close()


async def test_an_agent_killed_mid_upload_completes_it_after_its_restart(
    lab: AgentLab,
    proxy: ThrottledProxy,
    nats_server: NatsServer,
    tmp_path: Path,
    invariants: Any,
) -> None:
    toml = await start_agent(lab, tmp_path, proxy.url)
    job_id = lab.create(CAPTURE)
    execution_id = await lab.engine.run_now(job_id)
    await upload_under_way(nats_server.url)
    (agent,) = lab.processes
    agent.send_signal(signal.SIGKILL)
    await agent.wait()
    lab.processes.clear()
    # Killed before the store had the object: chunks, no object.
    messages, infos = await store_state(nats_server.url)
    assert messages > 0
    assert infos == []
    lab.processes.append(await spawn_agent(toml))
    await assert_stored_once(lab, tmp_path, nats_server.url, job_id, execution_id)
    await invariants(lab.path)


# A capture small enough to go inline, when the store can take it.
SMALL: dict[str, Any] = {
    "name": "Small capture",
    "schedule_type": "acquisition",
    "equipment_id": "oscilloscope_1",
    "parameters": {"duration": 2, "sample_rate": 1000, "channels": [1, 2]},
}


async def pending_capture(lab: AgentLab, tmp_path: Path, url: str) -> tuple[str, str, Path]:
    """A capture by an in-process agent while the bucket is missing (its upload fails and
    is retried): (job id, execution id, the agent's file)."""
    nc = await nats.connect(url)
    try:
        await nc.jetstream().delete_object_store(DATA_BUCKET)
    finally:
        await nc.close()
    config = bench_config(
        copy_bench(tmp_path / "bench"),
        tmp_path / "agent-data",
        agent_id=AGENT,
        only=("oscilloscope_1",),
    )
    await lab.start_agent(config)
    job_id = lab.create(SMALL)
    execution_id = await lab.engine.run_now(job_id)
    row = await lab.finished(execution_id, within=60)
    assert json.loads(row["result"])["data"]["status"] == "pending_upload", row
    return job_id, execution_id, tmp_path / "agent-data" / "acquisitions" / f"{execution_id}.csv"


async def bucket_back(url: str) -> None:
    nc = await nats.connect(url)
    try:
        await ensure_data_bucket(nc.jetstream())
    finally:
        await nc.close()


async def test_a_capture_changed_before_its_upload_is_recorded_lost(
    lab: AgentLab, nats_server: NatsServer, tmp_path: Path, invariants: Any
) -> None:
    job_id, execution_id, path = await pending_capture(lab, tmp_path, nats_server.url)
    with path.open("ab") as f:
        f.write(b"0.999,tampered\n")
    await bucket_back(nats_server.url)

    def removed() -> list[ExecutionDataRemoved]:
        events = lab.events(lab.jobs.stream_id(job_id))
        return [e for e in events if isinstance(e, ExecutionDataRemoved)]

    (event,) = await eventually(removed, timeout=60, what="ExecutionDataRemoved (lost)")
    assert (event.execution_id, event.reason) == (execution_id, "lost")
    assert "changed since its SHA-256" in event.detail
    assert stored_events(lab, job_id) == []
    row = await eventually(
        lambda: lab.rows("SELECT * FROM executions WHERE execution_id = ?", execution_id)[0],
        until=lambda r: r["data_status"] == "removed",
        what="the capture shown removed",
    )
    assert json.loads(row["data"])["removal_reason"] == "lost"
    await eventually(
        lambda: agent_ledger(tmp_path, "SELECT execution_id FROM uploads"),
        until=lambda rows: rows == [],
        timeout=30,
        what="the agent's uploads row gone",
    )
    # The chunks of the attempt that found the change went with it.
    messages, infos = await store_state(nats_server.url)
    assert (messages, infos) == (0, [])
    await invariants(lab.path)


async def test_an_upload_completing_after_its_capture_was_removed_is_deleted(
    lab: AgentLab, nats_server: NatsServer, tmp_path: Path
) -> None:
    job_id, execution_id, _ = await pending_capture(lab, tmp_path, nats_server.url)
    # Retention prunes the execution while its upload still waits.
    data = json.loads((await lab.finished(execution_id))["result"])["data"]
    removal = ExecutionDataRemoved(
        job_id=job_id,
        execution_id=execution_id,
        object=data["object"],
        size=data["size"],
        removed_at=lab.clock.now(),
        reason="retention",
    )
    CommandHandler(lab.store).record_together(
        [(lab.jobs.stream_id(job_id), [removal])], "retention"
    )
    await bucket_back(nats_server.url)
    # The agent uploads it and says so; nothing names the object any more: it goes.
    await eventually(
        lambda: agent_ledger(tmp_path, "SELECT execution_id FROM uploads"),
        until=lambda rows: rows == [],
        timeout=60,
        what="the agent's uploads row gone",
    )

    async def in_store() -> bool:
        nc = await nats.connect(nats_server.url)
        try:
            await (await nc.jetstream().object_store(DATA_BUCKET)).get_info(data["object"])
        except nats.js.errors.NotFoundError:
            return False
        finally:
            await nc.close()
        return True

    await eventually(in_store, until=lambda found: not found, timeout=30, what="object deleted")
    assert stored_events(lab, job_id) == []
