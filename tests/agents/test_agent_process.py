"""`lablink serve` with its agent in a process of its own (LABLINK_EMBEDDED_AGENT=process).

A real `lablink serve`, its private nats-server and its `lablink agent` child throughout: jobs
run through the child; the child, SIGKILLed by its pid, shows failing in /health and comes
back by itself; a run command it already took, sent again to the new child, is answered from
the ledger and never recorded twice; SIGTERM of serve stops the child, SIGKILL of serve makes
the child exit by itself. Waits poll /health, the API or the log, within generous deadlines.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from typer.testing import CliRunner

from lablink.bus.connection import connect_nats
from lablink.bus.credentials import Credentials
from lablink.bus.permissions import SCHEDULER
from lablink.bus.private import URL_FILE
from lablink.cli import app
from lablink.equipment_agent.child import TASK, AgentProcessExited
from lablink.instruments.protocol import RunReply, run_subject
from lablink.instruments.simulated import SIMULATED_BENCH
from lablink.runtime import Runtime
from lablink.settings import Settings
from tests.support.eventually import eventually_sync
from tests.support.serve import Process, Server, alive, children, free_port

FINAL = {"completed", "failed", "timed_out", "cancelled", "interrupted", "skipped", "missed"}
PROCESS = {"LABLINK_EMBEDDED_AGENT": "process", "LABLINK_AUTH": "off"}
EQUIPMENT = "power_supply_1"
# The guide's Quick Start job, disabled: it runs when the test says so.
MEASURE: dict[str, Any] = {
    "name": "Voltage through the agent process",
    "schedule_type": "measurement",
    "equipment_id": EQUIPMENT,
    "trigger_type": "interval",
    "interval_hours": 1,
    "parameters": {"command": "get_voltage"},
    "enabled": False,
}


def agent_task(client: httpx.Client) -> dict[str, Any]:
    """``task.agent`` as /health shows it (the body is the same at 200 and 503)."""
    components: dict[str, Any] = client.get("/health").json()["components"]
    return dict(components[TASK])


def running_child(server: Server, client: httpx.Client, *, not_pid: int | None = None) -> Process:
    """The agent child /health names once it is ok (another than ``not_pid``), checked to be
    serve's own child running `lablink agent`; noted, so that cleanup kills it if it lingers."""
    task = eventually_sync(
        lambda: agent_task(client),
        until=lambda t: t["state"] == "ok" and t["details"]["pid"] != not_pid,
        what="task.agent ok with a new pid",
    )
    pid = task["details"]["pid"]
    (child,) = [p for p in children(server.proc.pid) if p[0] == pid]
    assert "-m lablink.cli agent" in child[2], child
    server.spawned.append(child)
    return child


def run_job(client: httpx.Client, job_id: str) -> dict[str, Any]:
    run = client.post(f"/api/scheduler/jobs/{job_id}/run")
    assert run.status_code == 200, run.text
    return final_execution(client, run.json()["execution_id"])


def final_execution(client: httpx.Client, execution_id: str) -> dict[str, Any]:
    def execution() -> dict[str, Any]:
        response = client.get(f"/api/scheduler/executions/{execution_id}")
        assert response.status_code == 200, response.text
        found: dict[str, Any] = response.json()["execution"]
        return found

    return eventually_sync(
        execution, until=lambda found: found["status"] in FINAL, what=f"{execution_id} final"
    )


def scheduler_connection(data: Path) -> Any:
    """A NATS connection as the scheduler's own user (it may see the agents' subjects)."""
    folder = data / "nats"
    url = (folder / URL_FILE).read_text().strip()
    credentials = Credentials.find(folder)
    assert credentials is not None
    return connect_nats(credentials.options(url, SCHEDULER), name="test-agent-process")


async def run_and_capture(data: Path, base: str, job_id: str) -> tuple[str, bytes]:
    """Run ``job_id`` now and capture the run command the scheduler sends its agent."""
    nc = await scheduler_connection(data)
    try:
        sub = await nc.subscribe(run_subject(EQUIPMENT))
        await nc.flush()
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            run = await client.post(f"/api/scheduler/jobs/{job_id}/run")
        assert run.status_code == 200, run.text
        command = await sub.next_msg(timeout=60)
        return str(run.json()["execution_id"]), bytes(command.data)
    finally:
        await nc.close()


async def send_again(data: Path, command: bytes) -> RunReply:
    """The same run command again, as a redelivery would bring it."""
    nc = await scheduler_connection(data)
    try:
        reply = await nc.request(run_subject(EQUIPMENT), command, timeout=30)
        return msgspec.json.decode(reply.data, type=RunReply)
    finally:
        await nc.close()


@pytest.mark.e2e  # `lablink serve`, its private nats-server and its agent child
@pytest.mark.nats
@pytest.mark.slow
def test_jobs_run_through_the_child_which_comes_back_after_sigkill_and_stops_with_serve(
    tmp_path: Path, servers: list[Server]
) -> None:
    data = tmp_path / "data"
    server = Server(data, free_port(), PROCESS)
    servers.append(server)
    server.listening()
    base = f"http://127.0.0.1:{server.port}"
    with httpx.Client(base_url=base, timeout=30) as client:
        first = running_child(server, client)
        assert "agent --simulated" in first[2], first

        created = client.post("/api/scheduler/jobs/create", json=MEASURE)
        assert created.status_code == 200, created.text
        job_id = created.json()["job_id"]
        before = run_job(client, job_id)
        assert before["status"] == "completed", before
        assert isinstance(before["result"]["value"], int | float), before
        # A command the child took and finished: sent again after its restart, below.
        taken, command = asyncio.run(run_and_capture(data, base, job_id))
        taken_before = final_execution(client, taken)
        assert taken_before["status"] == "completed", taken_before

        # SIGKILL: no goodbye. The supervisor sees the exit, logs it, shows it failing.
        os.kill(first[0], signal.SIGKILL)
        failing = eventually_sync(
            lambda: agent_task(client),
            until=lambda t: t["state"] == "failing",
            what="task.agent failing after its child was killed",
            interval=0.02,
        )
        assert f"pid {first[0]}" in failing["reason"], failing
        assert "SIGKILL" in failing["reason"], failing
        exited = server.wait_for("agent process exited")
        assert (exited["pid"], exited["returncode"], exited["exit"]) == (
            first[0],
            -signal.SIGKILL,
            "signal SIGKILL",
        )

        # Started again by itself, and jobs complete again through the new child.
        second = running_child(server, client, not_pid=first[0])
        assert not alive(first)
        assert agent_task(client)["details"]["failures"] == 1
        after = run_job(client, job_id)
        assert after["status"] == "completed", after

        # The command the first child finished, again: the new child's ledger answers it,
        # the instrument is not driven, nothing more is recorded.
        reply = asyncio.run(send_again(data, command))
        assert reply.status == "duplicate", reply
        ignored = server.wait_for("duplicate run ignored")
        assert ignored["execution_id"] == taken, ignored
        last = run_job(client, job_id)  # after it: any stray report would be in by now
        assert last["status"] == "completed", last
        assert final_execution(client, taken) == taken_before
        listed = client.get(f"/api/scheduler/executions?job_id={job_id}")
        assert listed.status_code == 200, listed.text
        ids = [e["execution_id"] for e in listed.json()["executions"]]
        expected = {before["execution_id"], taken, after["execution_id"], last["execution_id"]}
        assert sorted(ids) == sorted(expected), ids
        history = client.get(f"/api/scheduler/jobs/{job_id}/history").json()["history"]
        assert (history["total_executions"], history["successful"]) == (4, 4), history

    # SIGTERM of serve: the child is stopped (its agent says goodbye), then serve exits.
    server.terminate()
    assert server.proc.wait(timeout=60) == 0
    stopped = server.wait_for("agent process stopped")
    assert (stopped["pid"], stopped["returncode"]) == (second[0], 0), stopped
    assert not alive(second)


@pytest.mark.e2e  # `lablink serve`, its private nats-server and its agent child
@pytest.mark.nats
@pytest.mark.slow
def test_a_killed_serve_leaves_no_agent_process_behind(
    tmp_path: Path, servers: list[Server]
) -> None:
    """With LABLINK_AGENT_CONFIG: the child serves the same lab.toml (`--config`)."""
    kind, resource = SIMULATED_BENCH[EQUIPMENT]
    lab = tmp_path / "lab.toml"
    lab.write_text(
        '[agent]\nid = "bench_pc"\n'
        f'data_dir = "{tmp_path / "agent"}"\n\n'
        f'[[instruments]]\nid = "{EQUIPMENT}"\nkind = "{kind}"\n'
        f'resource = "{resource}"\nbackend = "@sim"\n'
    )
    server = Server(tmp_path / "data", free_port(), {**PROCESS, "LABLINK_AGENT_CONFIG": str(lab)})
    servers.append(server)
    server.listening()
    with httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=30) as client:
        child = running_child(server, client)
        assert f"agent --config {lab}" in child[2], child
        created = client.post("/api/scheduler/jobs/create", json=MEASURE)
        assert created.status_code == 200, created.text
        execution = run_job(client, created.json()["job_id"])
        assert execution["status"] == "completed", execution
    # The lab.toml's own agent did it, with its ledger where the file says.
    assert (tmp_path / "agent" / "agents" / "bench_pc.db").exists()

    server.crash()  # SIGKILL: serve cannot stop its child; the kernel tells the child
    eventually_sync(lambda: not alive(child), what=f"agent process {child[0]} gone")


@pytest.mark.e2e  # a `python -m lablink.cli agent` child, beside a private nats-server
@pytest.mark.nats
@pytest.mark.slow
async def test_a_child_that_cannot_start_stops_the_start_and_leaves_nothing_running(
    tmp_path: Path,
) -> None:
    """As an in-process agent that cannot open its instruments does: the start fails, naming
    the child and how it ended, and closes the rest (the nats-server, the lock)."""
    kind, resource = SIMULATED_BENCH[EQUIPMENT]
    lab = tmp_path / "lab.toml"
    lab.write_text(  # valid as a file; the bench it names does not exist
        f'[agent]\nid = "lab_a"\ndata_dir = "{tmp_path / "agent"}"\n\n'
        f'[[instruments]]\nid = "{EQUIPMENT}"\nkind = "{kind}"\n'
        f'resource = "{resource}"\nbackend = "no-such-bench.yaml"\n'
    )
    data = tmp_path / "data"
    settings = Settings(data_dir=data, timezone="UTC", agent_config=lab, embedded_agent="process")
    before = {p[0] for p in children(os.getpid())}
    with pytest.raises(AgentProcessExited, match="before it was ready with code 1") as caught:
        async with Runtime(settings):
            pytest.fail("the runtime started without its agent")
    assert caught.value.ready is False
    assert {p[0] for p in children(os.getpid())} - before == set()
    # The data-directory lock is free again: the same directory starts in process.
    async with Runtime(Settings(data_dir=data, timezone="UTC", agents=False)) as runtime:
        assert runtime.agent_process is None


def test_the_agent_command_wants_config_or_simulated_not_both() -> None:
    runner = CliRunner()
    for args in ([], ["--config", "lab.toml", "--simulated"]):
        result = runner.invoke(app, ["agent", *args])
        assert result.exit_code == 2, result.output
        text = " ".join(result.output.split())
        assert "--config" in text, text
        assert "--simulated" in text, text
    neither = runner.invoke(app, ["agent"])
    assert "neither was given" in " ".join(neither.output.split())


def test_the_embedded_agent_setting_names_the_variable_and_the_choices(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LABLINK_EMBEDDED_AGENT", "thread")
    with pytest.raises(ValueError, match="LABLINK_EMBEDDED_AGENT 'thread': expected") as caught:
        Settings.from_env()
    assert "'inprocess'" in str(caught.value)
    assert "'process'" in str(caught.value)
    monkeypatch.setenv("LABLINK_EMBEDDED_AGENT", "inprocess")
    assert Settings.from_env().embedded_agent == "inprocess"
    monkeypatch.delenv("LABLINK_EMBEDDED_AGENT")
    assert Settings.from_env().embedded_agent == "process"
