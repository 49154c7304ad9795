"""Finding 12: the private bus is authenticated, and each user can do only its role.

A real private nats-server (``bus.private``) with its generated users: an anonymous client is
refused; an agent's user cannot forge another instrument's reports nor send run commands; the
read-only user reads the event stream but cannot publish into it nor delete it; the scheduler,
the embedded agent, `lablink agent`, `lablink events tail` and the example dashboard all work
with the users they find under the data directory. The cluster configuration in deploy/ is the
same template's output.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import stat
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nats
import nats.errors
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import StorageType, StreamConfig
from typer.testing import CliRunner

from lablink.bus.consume import read_stream
from lablink.bus.credentials import Credentials
from lablink.bus.options import NatsOptions
from lablink.bus.permissions import AGENTS, REPORTS, SCHEDULER, SUBSCRIBER, agent_user
from lablink.bus.private import URL_FILE, PrivateNats
from lablink.bus.relay import Relay
from lablink.bus.serverconf import AgentSpec, cluster_config
from lablink.bus.subjects import STREAM
from lablink.cli import app
from lablink.clock import SystemClock
from lablink.equipment_agent.config import load_config
from lablink.events import JobPaused, NewEvent
from lablink.eventstore.sqlite import SQLiteEventStore
from lablink.health import Health
from lablink.instruments import protocol
from lablink.instruments.simulated import SIMULATED_BENCH
from lablink.projections.reading import reading_views
from lablink.runtime import Runtime
from lablink.scheduler.agents import AgentExecutor
from lablink.settings import Settings
from tests.support.eventually import eventually

pytestmark = pytest.mark.nats

ROOT = Path(__file__).parents[2]
LABLINK = str(Path(sys.executable).parent / "lablink")
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
JOB: dict[str, Any] = {
    "name": "Voltage check",
    "schedule_type": "measurement",
    "equipment_id": "multimeter_1",
    "trigger_type": "interval",
    "interval_hours": 1,
    "parameters": {"command": "get_voltage"},
    "enabled": False,
}


@pytest.fixture
async def bus(tmp_path: Path) -> AsyncIterator[PrivateNats]:
    server = await PrivateNats(tmp_path / "data" / "nats", Health(SystemClock())).start()
    try:
        yield server
    finally:
        await server.stop()


class Client:
    """A nats-py connection as one user, keeping the errors the server sends it."""

    def __init__(self, nc: NATS, errors: list[Exception]) -> None:
        self.nc = nc
        self.errors = errors

    @classmethod
    async def connect(cls, options: NatsOptions) -> Client:
        errors: list[Exception] = []

        async def record(exc: Exception) -> None:
            errors.append(exc)

        nc = await nats.connect(
            **options.connect_kwargs(), allow_reconnect=False, error_cb=record, connect_timeout=3
        )
        return cls(nc, errors)

    async def violation(self, action: Callable[[], Awaitable[Any]], subject: str) -> None:
        """``action`` is refused by the server as a permissions violation on ``subject``."""
        before = len(self.errors)
        await action()

        async def reported() -> list[str]:
            await self.nc.flush()
            return [str(e).lower() for e in self.errors[before:]]

        found = await eventually(
            reported,
            until=lambda found: any(subject.lower() in e for e in found),
            what=f"an error about {subject}",
        )
        assert any("permissions violation" in e and subject.lower() in e for e in found), found


async def first_reply(nc: NATS, subject: str) -> Msg:
    """The first answer to a request on ``subject``, asking again while nobody answers."""
    return await eventually(
        lambda: nc.request(subject, b"{}", timeout=2),
        ignoring=(nats.errors.NoRespondersError, nats.errors.TimeoutError),
        what=f"an answer on {subject}",
    )


def append(store: SQLiteEventStore, count: int) -> None:
    for _ in range(count):
        version = store.stream_version("job_a")
        event = JobPaused(job_id="job_a", reason=f"n{version}")
        store.append("job_a", version, [NewEvent(event=event, actor="test", occurred_at=T0)])


async def test_an_anonymous_or_wrong_password_connection_is_refused(bus: PrivateNats) -> None:
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await nats.connect(bus.url, allow_reconnect=False, connect_timeout=3)
    wrong = NatsOptions(url=bus.url, user=SCHEDULER, password="guessed")
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await nats.connect(**wrong.connect_kwargs(), allow_reconnect=False, connect_timeout=3)
    good = await Client.connect(bus.options(SCHEDULER))
    assert good.nc.is_connected
    await good.nc.close()


async def test_credentials_are_private_and_kept_across_restarts(tmp_path: Path) -> None:
    folder = tmp_path / "data" / "nats"
    first = await PrivateNats(folder, Health(SystemClock())).start()
    before = Credentials(folder).users()
    await first.stop()
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for name in ("credentials.json", "auth.conf", "nats-server.conf", URL_FILE):
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o600, name
    assert set(before) == {SCHEDULER, SUBSCRIBER}
    assert all(len(u.password) >= 40 for u in before.values())
    again = await PrivateNats(folder, Health(SystemClock())).start()
    try:
        assert Credentials(folder).users() == before
        client = await Client.connect(again.options(SCHEDULER))  # the same password works
        await client.nc.close()
    finally:
        await again.stop()


async def test_an_agent_user_cannot_forge_reports_nor_send_run_commands(
    bus: PrivateNats,
) -> None:
    scheduler = await Client.connect(bus.options(SCHEDULER))
    js = scheduler.nc.jetstream()
    await js.add_stream(
        StreamConfig(
            name=protocol.REPORTS_STREAM,
            subjects=[protocol.REPORTS_FILTER],
            storage=StorageType.FILE,
        )
    )
    user, changed = bus.credentials.ensure_agent("bench-a", ["power_supply_1"])
    assert changed
    assert user.name == agent_user("bench-a")
    await bus.reload(check=bus.options(user.name))
    agent = await Client.connect(bus.options(user.name))

    # Its own instrument: it serves run requests and publishes presence and reports.
    async def serve(msg: Msg) -> None:
        await msg.respond(b'{"status": "accepted"}')

    await agent.nc.subscribe(protocol.run_subject("power_supply_1"), cb=serve)
    await agent.nc.flush()
    # Just after a reload nats-server 2.15 may, for a moment, not route to a subscription
    # made then (no responders); the scheduler asks again in production, so does the test.
    reply = await first_reply(scheduler.nc, protocol.run_subject("power_supply_1"))
    assert json.loads(reply.data) == {"status": "accepted"}

    # Everything an agent could reach from here on, as the scheduler sees it.
    seen: list[str] = []

    async def saw(msg: Msg) -> None:
        seen.append(msg.subject)

    await scheduler.nc.subscribe("lablink.>", cb=saw)
    await scheduler.nc.flush()
    presence = protocol.presence_subject("power_supply_1")

    async def routed() -> bool:
        await agent.nc.publish(presence, b"{}")
        await agent.nc.flush()
        return presence in seen

    # As above: a new subscription may take a moment to be routed.
    await eventually(routed, what=lambda: f"{presence} routed: {(scheduler.errors, seen)}")
    assert presence in seen, (scheduler.errors, seen)
    ack = await agent.nc.jetstream().publish(
        protocol.report_subject("power_supply_1", "exec_1", 1), b"{}", timeout=5
    )
    assert ack.seq == 1

    # Another instrument's reports and presence, and run commands: refused, never delivered.
    other_report = protocol.report_subject("multimeter_1", "exec_2", 1)
    await agent.violation(lambda: agent.nc.publish(other_report, b"{}"), other_report)
    offline = protocol.presence_subject("multimeter_1")
    await agent.violation(lambda: agent.nc.publish(offline, b'{"state": "offline"}'), offline)
    for target in ("power_supply_1", "multimeter_1"):
        run = protocol.run_subject(target)
        await agent.violation(lambda run=run: agent.nc.publish(run, b"{}"), run)  # type: ignore[misc]
    # Nor may it listen to another instrument's commands, or others' replies.
    listen = protocol.run_subject("multimeter_1")
    await agent.violation(lambda: agent.nc.subscribe(listen), listen)
    await agent.violation(lambda: agent.nc.subscribe("_INBOX.>"), "_INBOX.>")
    # Nor touch JetStream's API: the reports stream cannot be deleted.
    delete = f"$JS.API.STREAM.DELETE.{protocol.REPORTS_STREAM}"
    await agent.violation(lambda: agent.nc.publish(delete, b""), delete)

    await scheduler.nc.flush()
    await asyncio.sleep(0.2)
    forged = [s for s in seen if "multimeter_1" in s or s.endswith(".run")]
    assert forged == []
    info = await js.stream_info(protocol.REPORTS_STREAM)
    assert info.state.messages == 1
    await agent.nc.close()
    await scheduler.nc.close()


async def test_the_read_only_user_reads_but_cannot_publish_nor_delete_streams(
    bus: PrivateNats, store: SQLiteEventStore, tmp_path: Path
) -> None:
    relay = Relay(store.path, bus.options(SCHEDULER), batch_size=50)
    relay.attach(store)
    await relay.start()
    append(store, 20)
    reader = bus.options(SUBSCRIBER)
    events = await read_stream(reader, expected=20, wait=60)
    assert [e["position"] for e in events] == list(range(1, 21))

    subscriber = await Client.connect(reader)
    forged = "lablink.events.job.deleted.job_a._"
    await subscriber.violation(lambda: subscriber.nc.publish(forged, b"{}"), forged)
    run = protocol.run_subject("power_supply_1")
    await subscriber.violation(lambda: subscriber.nc.publish(run, b"{}"), run)
    js = subscriber.nc.jetstream(timeout=2)
    for api in (f"STREAM.DELETE.{STREAM}", f"STREAM.PURGE.{STREAM}", "STREAM.CREATE.MINE"):
        subject = f"$JS.API.{api}"
        await subscriber.violation(lambda s=subject: subscriber.nc.publish(s, b""), subject)  # type: ignore[misc]
    with pytest.raises(nats.errors.TimeoutError):
        await js.delete_stream(STREAM)  # the server drops the request: no answer comes
    await subscriber.nc.close()

    scheduler = await Client.connect(bus.options(SCHEDULER))
    info = await scheduler.nc.jetstream().stream_info(STREAM)
    assert info.state.messages == 20  # nothing forged got in, nothing was removed
    await scheduler.nc.close()
    await relay.aclose()


@pytest.mark.e2e
@pytest.mark.slow
async def test_the_embedded_runtime_works_end_to_end_with_its_users(
    tmp_path: Path, invariants: Any
) -> None:
    """The scheduler, the embedded agent (its own user), `lablink events tail` and the
    example dashboard (the read-only user), all found under the data directory."""
    data = tmp_path / "data"
    settings = Settings(data_dir=data, timezone="UTC")
    async with Runtime(settings) as runtime:
        assert runtime.nats_server is not None
        assert runtime.relay is not None
        users = Credentials(data / "nats").users()
        assert users[agent_user("embedded")].instruments == tuple(sorted(SIMULATED_BENCH))
        job = runtime.service.create_job(JOB, "alice")
        execution = await runtime.engine.run_now(job, "alice")
        assert await wait_for_status(runtime, execution) == "completed"

        env = {k: v for k, v in os.environ.items() if not k.startswith("LABLINK_")}
        tail = await asyncio.create_subprocess_exec(
            *(LABLINK, "events", "tail", "--from-start", "--type", "execution.completed"),
            *("--count", "1", "--data-dir", str(data)),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(tail.communicate(), 60)
        assert tail.returncode == 0, err.decode()
        assert execution in out.decode()

        dashboard = load_example("dashboard")
        counts = await asyncio.wait_for(dashboard.follow(updates=2, data_dir=data), 30)
        assert counts == {"running": 0, "completed": 1, "failed": 0}
        relay = runtime.relay
        await eventually(lambda: relay.checkpoint() == runtime.store.last_position())
    # The log and the stream, read back through the same server, users and store.
    again = await PrivateNats(data / "nats", Health(SystemClock())).start()
    try:
        options = again.options(SCHEDULER)
        await invariants(
            data / "scheduler.db",
            nats_url=again.url,
            nats_options={"user": options.user, "password": options.password},
            require_all_published=True,
        )
    finally:
        await again.stop()


async def wait_for_status(runtime: Runtime, execution: str) -> str:
    def status() -> str:
        with reading_views(runtime.store) as views:
            row = views.execute(
                "SELECT status FROM executions WHERE execution_id = ?", (execution,)
            ).fetchone()
        return str(row[0]) if row else ""

    return await eventually(
        status,
        until=lambda found: found in ("completed", "failed", "timed_out", "interrupted"),
        what=f"{execution} ended",
    )


def load_example(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_deploy_file_is_the_template_rendered() -> None:
    """deploy/nats-server.conf is `lablink nats config --agents deploy/lab.toml`."""
    lab = load_config(ROOT / "deploy" / "lab.toml")
    rendered = cluster_config(
        [AgentSpec(lab.agent_id, tuple(i.id for i in lab.instruments))], source="deploy/lab.toml"
    )
    committed = (ROOT / "deploy" / "nats-server.conf").read_text()
    assert committed == rendered, (
        "deploy/nats-server.conf differs from the template: run"
        " `lablink nats config --agents deploy/lab.toml > deploy/nats-server.conf`"
    )
    assert lab.nats.user == agent_user(lab.agent_id)


async def test_the_embedded_users_have_the_deploy_files_permissions(tmp_path: Path) -> None:
    """The same user blocks in both, but for the password line."""
    credentials = Credentials.open(tmp_path / "nats")
    credentials.ensure_agent("lab-pc-1", ["power_supply_1", "multimeter_1"])
    embedded = (tmp_path / "nats" / "auth.conf").read_text()
    deploy = (ROOT / "deploy" / "nats-server.conf").read_text()

    def blocks(text: str) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        current: list[str] | None = None
        for line in text.splitlines():
            stripped = line.strip()
            if stripped.startswith("user: "):
                current = found.setdefault(stripped, [])
            elif current is not None and stripped.startswith("password:"):
                continue
            elif current is not None:
                current.append(stripped)
                # The user's own "{" is on the line before "user:": its "}" closes one more
                # brace than the block opened (permissions, a publish allow/deny).
                text = "".join(current)
                if stripped == "}" and text.count("}") > text.count("{"):
                    current = None
        return found

    assert blocks(embedded) == {
        name: body for name, body in blocks(deploy).items() if "sys" not in name
    }


def test_the_permissions_name_the_protocols_subjects() -> None:
    assert protocol.AGENTS_PREFIX == AGENTS
    assert protocol.REPORTS_PREFIX == REPORTS
    assert protocol.run_subject("x").startswith(f"{AGENTS}.x.")
    assert protocol.report_subject("x", "e", 1).startswith(f"{REPORTS}.x.")
    assert protocol.presence_subject("x").startswith(f"{REPORTS}.x.")


@pytest.mark.e2e
@pytest.mark.slow
async def test_lablink_agent_on_this_machine_gets_its_own_user(tmp_path: Path) -> None:
    """`lablink agent` with no [nats] section finds the private server of --data-dir, adds
    its user (its instruments only) and has the running server reload; the scheduler then
    runs a job through it."""
    data = tmp_path / "data"
    lab = tmp_path / "lab.toml"
    kind, resource = SIMULATED_BENCH["multimeter_1"]
    lab.write_text(
        "[agent]\n"
        'id = "pc-2"\n'
        "heartbeat_seconds = 0.2\n"
        f'data_dir = "{tmp_path / "agent"}"\n'
        "\n[[instruments]]\n"
        'id = "multimeter_1"\n'
        f'kind = "{kind}"\n'
        f'resource = "{resource}"\n'
        'backend = "@sim"\n'
    )
    settings = Settings(data_dir=data, timezone="UTC", agents=False)
    async with Runtime(settings) as runtime:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LABLINK_")}
        agent = await asyncio.create_subprocess_exec(
            *(LABLINK, "agent", "--config", str(lab), "--data-dir", str(data)),
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            executor = runtime.executor
            assert isinstance(executor, AgentExecutor)
            await eventually(
                lambda: (s := executor.sightings.get("multimeter_1")) is not None and s.online,
                timeout=60,
            )
            user = Credentials(data / "nats").user(agent_user("pc-2"))
            assert user.instruments == ("multimeter_1",)
            job = runtime.service.create_job(JOB, "alice")
            execution = await runtime.engine.run_now(job, "alice")
            assert await wait_for_status(runtime, execution) == "completed"
        finally:
            agent.terminate()
            await asyncio.wait_for(agent.wait(), 30)


async def test_nats_users_and_rotate_commands(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = await PrivateNats(data / "nats", Health(SystemClock())).start()
    try:
        server.credentials.ensure_agent("pc-3", ["load_1"])
        listed = CliRunner().invoke(app, ["nats", "users", "--data-dir", str(data)])
        assert listed.exit_code == 0, listed.output
        assert "agent-pc-3" in listed.output
        assert "load_1" in listed.output
        before = Credentials(data / "nats").users()
        assert all(u.password not in listed.output for u in before.values())
        refused = CliRunner().invoke(app, ["nats", "rotate", "--data-dir", str(data)])
        assert refused.exit_code == 1
        assert "is running" in refused.output
    finally:
        await server.stop()
    rotated = CliRunner().invoke(app, ["nats", "rotate", "agent-pc-3", "--data-dir", str(data)])
    assert rotated.exit_code == 0, rotated.output
    after = Credentials(data / "nats").users()
    assert after["agent-pc-3"].password != before["agent-pc-3"].password
    assert after[SCHEDULER] == before[SCHEDULER]
    unknown = CliRunner().invoke(app, ["nats", "rotate", "nobody", "--data-dir", str(data)])
    assert unknown.exit_code == 2
    assert "no user 'nobody'" in unknown.output
    # The next start takes the new password, and only it.
    again = await PrivateNats(data / "nats", Health(SystemClock())).start()
    try:
        new = again.options("agent-pc-3")
        client = await Client.connect(new)
        await client.nc.close()
        old = new.as_user("agent-pc-3", before["agent-pc-3"].password)
        with pytest.raises(nats.errors.Error, match="Authorization Violation"):
            await nats.connect(**old.connect_kwargs(), allow_reconnect=False, connect_timeout=3)
    finally:
        await again.stop()
