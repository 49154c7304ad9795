"""The audit trail: two keys with different names create, edit, pause and run jobs;
GET /api/audit says exactly who did what and when, and `lablink replay --until` rebuilds the
job list of any past instant. Once in-process, once against a real `lablink serve`."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from lablink.api.queries import list_job_views
from lablink.cli import app
from lablink.keys import create_key
from lablink.projections.reading import reading_views
from tests.support.harness import Harness, api_client

BODY: dict[str, Any] = {
    "name": "Hourly Voltage Check",
    "schedule_type": "measurement",
    "equipment_id": "power_supply_1",
    "trigger_type": "interval",
    "interval_hours": 1,
    "parameters": {"command": "get_voltage"},
}
Did = tuple[str, str, str, str]  # (occurred_at, actor, type, stream_id)


@pytest.fixture
async def secured(harness: Harness) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(harness, auth=True) as client:
        yield client


def bearer(harness: Harness, name: str, role: str) -> dict[str, str]:
    _, secret = create_key(
        harness.store, name=name, role=role, actor="test", now=harness.clock.now()
    )
    return {"Authorization": f"Bearer {secret}"}


def did(events: list[dict[str, Any]]) -> list[Did]:
    return [(e["occurred_at"], e["actor"], e["type"], e["stream_id"]) for e in events]


async def audit(client: httpx.AsyncClient, headers: dict[str, str], **query: Any) -> Any:
    response = await client.get("/api/audit", params=query, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def jobs_table(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
    return conn.execute("SELECT * FROM jobs ORDER BY job_id").fetchall()


async def test_who_did_what_and_when_and_the_job_list_of_a_past_instant(
    secured: httpx.AsyncClient, harness: Harness, tmp_path: Path
) -> None:
    clock = harness.clock
    alice = bearer(harness, "alice", "operator")
    bob = bearer(harness, "bob", "operator")
    auditor = bearer(harness, "auditor", "viewer")
    t0 = clock.now()

    async def act(who: dict[str, str], method: str, path: str, body: Any = None) -> dict[str, Any]:
        response = await secured.request(method, path, json=body, headers=who)
        assert response.status_code == 200, response.text
        await harness.settle()
        result: dict[str, Any] = response.json()
        return result

    first = (await act(alice, "POST", "/api/scheduler/jobs/create", BODY))["job_id"]
    clock.advance(timedelta(minutes=5))
    second = (
        await act(bob, "POST", "/api/scheduler/jobs/create", {**BODY, "name": "Bench check"})
    )["job_id"]
    clock.advance(timedelta(minutes=5))
    await act(bob, "PUT", f"/api/scheduler/jobs/{first}", {"name": "Voltage, renamed"})
    clock.advance(timedelta(minutes=5))
    await act(alice, "POST", f"/api/scheduler/jobs/{second}/pause")
    clock.advance(timedelta(minutes=5))
    run = (await act(alice, "POST", f"/api/scheduler/jobs/{first}/run"))["execution_id"]

    # The instant to come back to: the job list as the API showed it then.
    instant = clock.now()
    listed_then = (await secured.get("/api/scheduler/jobs", headers=auditor)).json()["jobs"]
    with reading_views(harness.store) as views:
        table_then = jobs_table(views)

    clock.advance(timedelta(minutes=10))
    await act(bob, "POST", f"/api/scheduler/jobs/{second}/resume")
    await act(bob, "POST", f"/api/scheduler/jobs/{first}/pause")
    clock.advance(timedelta(minutes=10))
    await act(alice, "DELETE", f"/api/scheduler/jobs/{second}")
    await harness.at(t0 + timedelta(hours=1))  # the first job is paused: no fire

    def at(minutes: int) -> str:
        return (t0 + timedelta(minutes=minutes)).isoformat()

    trail = await audit(secured, auditor, type="job.")
    assert did(trail["events"]) == [
        (at(0), "alice", "job.created", first),
        (at(5), "bob", "job.created", second),
        (at(10), "bob", "job.updated", first),
        (at(15), "alice", "job.paused", second),
        (at(30), "bob", "job.resumed", second),
        (at(30), "bob", "job.paused", first),
        (at(40), "alice", "job.deleted", second),
    ]
    assert trail["events"][2]["data"]["spec"]["name"] == "Voltage, renamed"

    by_alice = await audit(secured, auditor, actor="alice")
    assert did(by_alice["events"]) == [
        (at(0), "alice", "job.created", first),
        (at(15), "alice", "job.paused", second),
        # Run now is alice's act, and so is the start it decided on; the outcome is not.
        (at(20), "alice", "execution.pending", first),
        (at(20), "alice", "execution.started", first),
        (at(40), "alice", "job.deleted", second),
    ]
    assert by_alice["events"][2]["correlation_id"] == run
    ran = await audit(secured, auditor, job_id=first, type="execution.")
    assert [(e["actor"], e["type"]) for e in ran["events"]] == [
        ("alice", "execution.pending"),
        ("alice", "execution.started"),
        ("scheduler", "execution.progressed"),
        ("scheduler", "execution.completed"),
    ]
    assert {e["correlation_id"] for e in ran["events"]} == {run}

    # since and until are inclusive; until=T is what a replay until T folds.
    window = await audit(secured, auditor, since=at(10), until=at(20), type="job,execution")
    assert [e["type"] for e in window["events"]] == [
        "job.updated",
        "job.paused",
        "execution.pending",
        "execution.started",
        "execution.progressed",
        "execution.completed",
    ]
    keys = await audit(secured, auditor, type="apikey.created")
    assert [(e["actor"], e["data"]["name"]) for e in keys["events"]] == [
        ("test", "alice"),
        ("test", "bob"),
        ("test", "auditor"),
    ]
    assert all("key_hash" not in e["data"] for e in keys["events"])

    # Paging by position: pages of two, in log order, add up to the whole trail.
    everything = await audit(secured, auditor, limit=1000)
    assert everything["next_cursor"] is None
    positions = [e["position"] for e in everything["events"]]
    assert positions == sorted(positions)
    assert len(positions) == everything["count"]
    paged: list[dict[str, Any]] = []
    cursor = None
    while True:
        query: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = await audit(secured, auditor, **query)
        paged += page["events"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert paged == everything["events"]
    first_event = everything["events"][0]
    assert set(first_event) == {
        "position",
        "event_id",
        "type",
        "stream_id",
        "version",
        "occurred_at",
        "actor",
        "correlation_id",
        "reason",
        "changes",
        "amended",
        "amended_at_position",
        "data",
    }

    # A replay up to the instant, on a copy of the database, gives that instant's job list.
    copy = tmp_path / "copy.db"
    with harness.store.lock:
        target = sqlite3.connect(copy)
        harness.store.conn.backup(target)
        target.close()
    output = tmp_path / "at-instant.db"
    result = CliRunner().invoke(
        app, ["replay", "--db", str(copy), "--until", instant.isoformat(), "--output", str(output)]
    )
    assert result.exit_code == 0, result.output
    replayed = sqlite3.connect(output)
    try:
        assert jobs_table(replayed) == table_then
        total, replayed_views = list_job_views(replayed)
        assert (total, [json.loads(v) for v in replayed_views]) == (len(listed_then), listed_then)
    finally:
        replayed.close()
    # The instant's job list is not today's: the second job was deleted since.
    now_listed = (await secured.get("/api/scheduler/jobs", headers=auditor)).json()["jobs"]
    assert [j["job_id"] for j in listed_then] == [first, second]
    assert [j["job_id"] for j in now_listed] == [first]


async def test_bad_filters_are_400s_naming_field_value_and_reason(
    secured: httpx.AsyncClient, harness: Harness
) -> None:
    viewer = bearer(harness, "auditor", "viewer")
    cases: list[tuple[dict[str, Any], str, Any]] = [
        ({"type": "job.exploded"}, "type", "job.exploded"),
        ({"type": "jobs."}, "type", "jobs."),
        ({"type": "job.*"}, "type", "job.*"),
        ({"since": "2026-03-02T09:00:00"}, "since", "2026-03-02T09:00:00"),
        ({"until": "yesterday"}, "until", "yesterday"),
        (
            {"since": "2026-03-02T10:00:00Z", "until": "2026-03-02T09:00:00Z"},
            "until",
            "2026-03-02T09:00:00Z",
        ),
        ({"since": "0.0"}, "since", "0.0"),  # not a Unix time: ISO 8601 only
        ({"limit": 0}, "limit", "0"),
        ({"limit": 1001}, "limit", "1001"),
        ({"cursor": -1}, "cursor", "-1"),
        ({"actor": ""}, "actor", ""),
    ]
    for query, field, value in cases:
        response = await secured.get("/api/audit", params=query, headers=viewer)
        assert response.status_code == 400, (query, response.text)
        body = response.json()
        (error,) = body["errors"]
        assert (error["field"], error["value"]) == (field, value), (query, body)
        assert error["reason"], body
        assert body["detail"].startswith("invalid request"), body
    assert (await secured.get("/api/audit")).status_code == 401
    unknown = await audit(secured, viewer, job_id="job_nope", type="job.paused,job.resumed")
    assert (unknown["count"], unknown["events"], unknown["next_cursor"]) == (0, [], None)


# -- a real `lablink serve` -------------------------------------------------------------------

LABLINK = str(Path(sys.executable).parent / "lablink")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def environment(data: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABLINK_")}
    env.update(
        LABLINK_DATA_DIR=str(data),
        LABLINK_TIMEZONE="UTC",
        LABLINK_NATS="off",  # the bench in-process: this test is about the API and the log
        LABLINK_LOG_LEVEL="info",
    )
    return env


class Serve:
    """`lablink serve` as a child process, whose JSON log lines the test waits for."""

    def __init__(self, data: Path, port: int) -> None:
        self.proc = subprocess.Popen(
            [LABLINK, "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=environment(data),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                record = {"event": "raw", "line": line}
            self.lines.put(record if isinstance(record, dict) else {"event": "raw"})
        self.lines.put({"event": "eof"})

    def wait_for(self, event: str, timeout: float = 60) -> dict[str, Any]:
        seen: list[dict[str, Any]] = []
        while True:
            try:
                record = self.lines.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"no {event!r} within {timeout}s: {seen}") from None
            seen.append(record)
            if record.get("event") == event:
                return record
            if record.get("event") == "eof":
                raise AssertionError(f"the server exited before {event!r}: {seen}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, dict[str, dict[str, str]]]]:
    """A server on a free loopback port, with keys for alice and bob (operators) made by
    `lablink keys create` before it starts."""
    data = tmp_path / "data"
    keys: dict[str, dict[str, str]] = {}
    for name in ("alice", "bob"):
        made = subprocess.run(
            [LABLINK, "keys", "create", "--role", "operator", "--name", name],
            env=environment(data),
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        keys[name] = {"Authorization": f"Bearer {made.stdout.strip().splitlines()[0]}"}
    port = free_port()
    server = Serve(data, port)
    try:
        server.wait_for("api listening")
        yield f"http://127.0.0.1:{port}", keys
    finally:
        server.stop()
    assert server.proc.returncode == 0


@pytest.mark.e2e
def test_a_real_server_says_who_did_what(
    served: tuple[str, dict[str, dict[str, str]]],
) -> None:
    base, keys = served
    alice, bob = keys["alice"], keys["bob"]
    with httpx.Client(base_url=base, timeout=30) as client:

        def act(who: dict[str, str], method: str, path: str, body: Any = None) -> Any:
            response = client.request(method, path, json=body, headers=who)
            assert response.status_code == 200, response.text
            return response.json()

        job_id = act(alice, "POST", "/api/scheduler/jobs/create", {**BODY, "enabled": False})[
            "job_id"
        ]
        act(bob, "POST", f"/api/scheduler/jobs/{job_id}/resume")
        act(alice, "PUT", f"/api/scheduler/jobs/{job_id}", {"name": "Renamed by alice"})
        execution_id = act(bob, "POST", f"/api/scheduler/jobs/{job_id}/run")["execution_id"]
        act(alice, "POST", f"/api/scheduler/jobs/{job_id}/pause")

        refused = client.get("/api/audit")
        assert refused.status_code == 401, refused.text
        trail = act(bob, "GET", f"/api/audit?job_id={job_id}&type=job.,execution.pending")
        assert [(e["actor"], e["type"]) for e in trail["events"]] == [
            ("alice", "job.created"),
            ("bob", "job.resumed"),
            ("alice", "job.updated"),
            ("bob", "execution.pending"),
            ("alice", "job.paused"),
        ]
        assert trail["events"][3]["correlation_id"] == execution_id
        instants = [datetime.fromisoformat(e["occurred_at"]) for e in trail["events"]]
        assert instants == sorted(instants)
        assert all(t.utcoffset() == timedelta(0) for t in instants)

        by_bob = act(alice, "GET", "/api/audit?actor=bob&type=job.")
        assert [(e["type"], e["stream_id"]) for e in by_bob["events"]] == [("job.resumed", job_id)]
        keys_made = act(alice, "GET", "/api/audit?type=apikey.")
        assert [(e["actor"], e["data"]["name"]) for e in keys_made["events"]] == [
            ("lablink keys create", "alice"),
            ("lablink keys create", "bob"),
        ]
        bad = client.get("/api/audit?type=job.nope", headers=alice)
        assert bad.status_code == 400, bad.text
        assert bad.json()["errors"][0]["field"] == "type"
