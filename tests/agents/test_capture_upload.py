"""Captures travel to the JetStream object store (issue 15 points 1, 2, 7 and the disk check):
a `lablink agent` process with its own data folder, a real nats-server, the scheduler's
engine and executor on a real SQLite file."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats
import pytest

from lablink.bus.data_bucket import DATA_STREAM, chunk_subject, ensure_data_bucket
from lablink.bus.server import NatsServer
from lablink.clock import ManualClock
from lablink.equipment_agent.upload import file_sha256, new_nuid, object_name, put_file
from lablink.events import ExecutionDataStored
from lablink.events.data import DATA_BUCKET
from lablink.profile_service import SHIPPED_DIR
from tests.support.agent_lab import AgentLab, bench_config, spawn_agent, write_lab_toml
from tests.support.bench import copy_bench
from tests.support.eventually import eventually
from tests.support.objects import fetch_object, object_names

pytestmark = [pytest.mark.nats, pytest.mark.e2e, pytest.mark.slow]

SHIPPED = {
    path.stem: json.loads(path.read_text())["settings"] for path in SHIPPED_DIR.glob("*.json")
}
# The guide's Example 3, run now instead of weekly.
EXAMPLE_3: dict[str, Any] = {
    "name": "Weekly High-Resolution Waveform Capture",
    "schedule_type": "acquisition",
    "equipment_id": "scope_1",
    "profile_id": "high_res_1GS",
    "parameters": {"duration": 600, "sample_rate": 1000000, "channels": [1, 2, 3, 4]},
    "on_failure_alarm": True,
    "tags": ["weekly-report", "high-priority"],
}


@pytest.fixture
async def lab(
    tmp_path: Path, nats_server: NatsServer, clock: ManualClock
) -> AsyncIterator[AgentLab]:
    lab = await AgentLab(
        tmp_path / "scheduler" / "scheduler.db", nats_server.url, clock, profiles=SHIPPED.get
    ).start()
    try:
        yield lab
    finally:
        await lab.close()


async def agent_process(lab: AgentLab, tmp_path: Path, **agent: int) -> Path:
    """`lablink agent` with its own data folder (not the scheduler's); returns that folder.
    ``agent``: more ``[agent]`` keys of its lab.toml."""
    data = tmp_path / "agent-data"
    config = bench_config(
        copy_bench(tmp_path / "bench"),
        data,
        agent_id="lab-pc-2",
        only=("oscilloscope_1", "scope_1"),
    )
    toml = write_lab_toml(tmp_path / "lab.toml", config, lab.options.url)
    more = "".join(f"{key} = {value}\n" for key, value in agent.items())
    toml.write_text(toml.read_text().replace("[agent]\n", "[agent]\n" + more, 1))
    lab.processes.append(await spawn_agent(toml))
    await lab.online("oscilloscope_1", "scope_1", within=30)
    return data


def result_of(row: dict[str, Any]) -> dict[str, Any]:
    assert row["status"] == "completed", row
    value: dict[str, Any] = json.loads(row["result"])
    return value


def header_block(text: str) -> dict[str, str]:
    lines = [line[2:] for line in text.splitlines() if line.startswith("# ")]
    return dict(line.split(": ", 1) for line in lines)


async def test_a_capture_from_an_agent_with_its_own_data_dir_lands_in_the_store(
    lab: AgentLab, tmp_path: Path, nats_server: NatsServer
) -> None:
    data_dir = await agent_process(lab, tmp_path)
    row = await lab.run(
        {
            "name": "Line check",
            "schedule_type": "acquisition",
            "equipment_id": "oscilloscope_1",
            "parameters": {"duration": 2, "sample_rate": 1000, "channels": [1, 2]},
        },
        within=60,
    )
    result = result_of(row)
    data = result["data"]
    execution_id = row["execution_id"]
    assert data["status"] == "stored"
    assert data["bucket"] == DATA_BUCKET
    assert data["object"] == f"acquisitions/{execution_id}.csv"
    assert data["file_name"] == f"Line_check_{execution_id}.csv"
    assert data["rows"] == 2000
    assert data["columns"] == [
        {"name": "time_s", "unit": "s"},
        {"name": "ch1_V", "unit": "V"},
        {"name": "ch2_V", "unit": "V"},
    ]
    assert data["sample_rate"] == 1000

    content, info = await fetch_object(nats_server.url, data["object"])
    # The SHA-256 the agent took of the file it wrote is the one of the stored bytes.
    assert hashlib.sha256(content).hexdigest() == data["sha256"]
    assert len(content) == data["size"] == info.size
    text = content.decode()
    rows = list(csv.reader(io.StringIO("\n".join(x for x in text.splitlines() if x[:1] != "#"))))
    assert rows[0] == ["time_s", "ch1_V", "ch2_V"]
    assert len(rows) - 1 == data["rows"]
    header = header_block(text)
    assert header["execution_id"] == execution_id
    assert header["agent_id"] == "lab-pc-2"
    assert header["resource"] == "TCPIP0::10.20.0.13::inst0::INSTR"
    assert header["ended_at"] == data["provenance"]["ended_at"]
    assert info.headers["Lablink-Execution-Id"] == [execution_id]
    assert info.headers["Lablink-Agent-Id"] == ["lab-pc-2"]

    # The agent's copy went once the store had it; the scheduler's folder never had one.
    assert list((data_dir / "acquisitions").iterdir()) == []
    assert not (tmp_path / "scheduler" / "acquisitions").exists()
    assert await object_names(nats_server.url) == [data["object"]]


async def test_the_guides_example_3_records_the_profile_and_the_settings_read_back(
    lab: AgentLab, tmp_path: Path, nats_server: NatsServer
) -> None:
    await agent_process(lab, tmp_path)
    row = await lab.run(EXAMPLE_3, within=90)
    data = result_of(row)["data"]
    provenance = data["provenance"]
    assert provenance["profile"].startswith("high_res_1GS (applied: ")
    assert provenance["profile_settings"] == {"sample_rate": 1e9, "trigger_level": 0.5}
    assert provenance["job_name"] == EXAMPLE_3["name"]
    assert provenance["instrument"].startswith("LabLink Sim,")  # the scope's *IDN?
    assert data["sample_rate"] == pytest.approx(1e6 / 6000)  # 100,000 samples per channel
    assert data["rows"] == 100_000

    content, info = await fetch_object(nats_server.url, data["object"])
    header = header_block(content.decode())
    assert header["profile"] == provenance["profile"]
    assert json.loads(header["profile_settings"]) == {"sample_rate": 1e9, "trigger_level": 0.5}
    assert header["lablink_version"] == provenance["lablink_version"]
    assert json.loads(info.headers["Lablink-Profile-Settings"][0]) == {
        "sample_rate": 1e9,
        "trigger_level": 0.5,
    }
    assert info.headers["Lablink-Profile"] == [provenance["profile"]]


async def test_a_capture_that_would_not_leave_the_space_kept_free_is_refused(
    lab: AgentLab, tmp_path: Path, nats_server: NatsServer
) -> None:
    # More than the disk holds must stay free: every capture is refused, by the real reading.
    data_dir = await agent_process(lab, tmp_path, keep_free_bytes=2**60)
    await lab.online("oscilloscope_1", within=30)
    row = await lab.run(
        {
            "schedule_type": "acquisition",
            "equipment_id": "oscilloscope_1",
            "parameters": {"duration": 2, "sample_rate": 1000},
        },
        within=60,
    )
    assert row["status"] == "failed"
    error = json.loads(row["error"])
    assert error["type"] == "capture_refused"
    folder = str(data_dir / "acquisitions")
    assert error["details"]["folder"] == folder
    assert error["details"]["keep_free_bytes"] == 2**60
    assert f"bytes are free in {folder}" in error["message"]
    assert "it needs up to" in error["message"]
    assert list((data_dir / "acquisitions").iterdir()) == []
    assert await object_names(nats_server.url) == []


async def test_a_full_rate_capture_over_the_maximum_size_is_refused_with_the_limit(
    lab: AgentLab, tmp_path: Path
) -> None:
    await agent_process(lab, tmp_path)
    body = {**EXAMPLE_3, "parameters": {**EXAMPLE_3["parameters"], "decimate": False}}
    row = await lab.run(body, within=60)
    error = json.loads(row["error"])
    assert error["type"] == "capture_refused", row
    assert error["details"]["limit_bytes"] == 8 * 1024**3
    assert "maximum size of one capture" in error["message"]


async def test_a_full_rate_capture_keeps_the_requested_rate(
    lab: AgentLab, tmp_path: Path, nats_server: NatsServer
) -> None:
    await agent_process(lab, tmp_path)
    row = await lab.run(
        {
            "schedule_type": "acquisition",
            "equipment_id": "oscilloscope_1",
            "parameters": {
                "duration": 1,
                "sample_rate": 300_000,
                "channels": [1],
                "decimate": False,
            },
        },
        within=90,
    )
    result = result_of(row)
    assert result["decimated"] is False
    assert result["data"]["rows"] == 300_000
    assert result["data"]["sample_rate"] == 300_000
    content, _ = await fetch_object(nats_server.url, result["data"]["object"])
    assert hashlib.sha256(content).hexdigest() == result["data"]["sha256"]


async def test_a_capture_larger_than_the_inline_bound_is_reported_first_then_stored_once(
    lab: AgentLab, tmp_path: Path, nats_server: NatsServer
) -> None:
    config = bench_config(
        copy_bench(tmp_path / "bench"), tmp_path / "agent-data", only=("oscilloscope_1",)
    )
    agent = await lab.start_agent(config)
    agent.inline_upload_bytes = 0  # every capture is "large": its result goes first
    job_id = lab.create(
        {
            "schedule_type": "acquisition",
            "equipment_id": "oscilloscope_1",
            "parameters": {"duration": 2, "sample_rate": 1000, "channels": [1, 2]},
        }
    )
    row = await lab.finished(await lab.engine.run_now(job_id), within=60)
    data = result_of(row)["data"]
    assert data["status"] == "pending_upload"

    def stored() -> list[ExecutionDataStored]:
        events = lab.events(lab.jobs.stream_id(job_id))
        return [e for e in events if isinstance(e, ExecutionDataStored)]

    (event,) = await eventually(stored, timeout=60, what="ExecutionDataStored")
    assert (event.execution_id, event.object, event.sha256) == (
        row["execution_id"],
        data["object"],
        data["sha256"],
    )
    content, _ = await fetch_object(nats_server.url, data["object"])
    assert hashlib.sha256(content).hexdigest() == data["sha256"]
    await eventually(lambda: not list((tmp_path / "agent-data" / "acquisitions").iterdir()))
    assert len(stored()) == 1


async def test_a_retry_finding_the_object_whole_sends_nothing_and_purges_dead_chunks(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    # An agent killed after the store took the object's description, before its ledger said
    # so, tries again at its next start: the object is there with this SHA-256, so nothing is
    # sent again, and the chunks of another attempt that died (their nuid in the ledger) go.
    path = tmp_path / "exec_1.csv"
    path.write_bytes(b"time_s,ch1_V\n" + b"0.001,1.25\n" * 40_000)
    sha256 = file_sha256(path)
    name = object_name("exec_1")
    recorded: list[list[str]] = []

    async def record(nuids: list[str]) -> None:
        recorded.append(nuids)

    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        await ensure_data_bucket(js)
        first = await put_file(
            js, path, execution_id="exec_1", name=name, nuid=new_nuid(), sha256=sha256,
            headers={}, on_start=record,
        )  # fmt: skip
        dead = new_nuid()
        for _ in range(3):
            await js.publish(chunk_subject(dead), b"a chunk of an attempt that died")
        again = await put_file(
            js, path, execution_id="exec_1", name=name, nuid=new_nuid(), sha256=sha256,
            headers={}, stale_nuids=[first.nuid, dead], on_start=record,
        )  # fmt: skip
        assert again.nuid == first.nuid
        assert recorded == [[first.nuid]]  # the second attempt never started sending
        messages = (await js.stream_info(DATA_STREAM)).state.messages
        assert messages == first.chunks + 1  # the object's chunks and its description
    finally:
        await nc.close()
    content, _ = await fetch_object(nats_server.url, name)
    assert hashlib.sha256(content).hexdigest() == sha256
