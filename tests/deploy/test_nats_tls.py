"""NATS over TLS as deploy/README.md sets it up: three real nodes started from
deploy/nats-node.conf, which includes the cluster configuration the README's own
`lablink nats config --agents pc1.toml --agents pc2.toml` line generates from its lab PCs'
lab.toml, with each node's environment as the README's nats-1.env has it and certificates
made by the test. Through them: LabLink configured the way /etc/lablink/lablink.env configures
it (LABLINK_NATS_URL=tls://..., LABLINK_NATS_TLS_CA) publishes its log, and the agents of the
README's two lab PCs, started as lablink-agent@.service starts them, come online. A client
that does not speak TLS, or trusts another CA, is refused."""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import socket
import ssl
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import nats
import pytest
from nats.aio.msg import Msg
from nats.errors import NoServersError
from typer.testing import CliRunner

from lablink.bus.consume import read_stream
from lablink.bus.relay import NatsOptions, Relay
from lablink.bus.server import NatsServer
from lablink.cli import app
from lablink.events import JobPaused, NewEvent
from lablink.instruments.protocol import Presence, presence_subject
from lablink.instruments.simulated import SIMULATED_BENCH
from lablink.logstore import open_store
from lablink.runtime import nats_options
from lablink.settings import Settings
from tests.deploy.certs import Certs, make_certs
from tests.deploy.commands import lablink_argv

pytestmark = pytest.mark.nats

DEPLOY = Path(__file__).parents[2] / "deploy"
README = (DEPLOY / "README.md").read_text()
AGENT_UNIT = DEPLOY / "systemd" / "lablink-agent@.service"
LABLINK = str(Path(sys.executable).parent / "lablink")
# The variables the generated configuration's header lists for the README's two agents.
PASSWORDS = {
    "NATS_SCHEDULER_PASSWORD": "scheduler-secret",
    "NATS_SUBSCRIBER_PASSWORD": "subscriber-secret",
    "NATS_AGENT_PC1_PASSWORD": "pc1-secret",
    "NATS_AGENT_PC2_PASSWORD": "pc2-secret",
    "NATS_SYS_PASSWORD": "sys-secret",
}
# Each lab PC's instrument: the README's power supply on pc1, a multimeter on pc2, both from
# the simulated bench (the README's TCPIP addresses answer nowhere here).
INSTRUMENTS = {"pc1": "power_supply_1", "pc2": "multimeter_1"}
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def free_ports(count: int) -> list[int]:
    """Distinct free ports: all held at once while they are picked."""
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [int(s.getsockname()[1]) for s in sockets]
    for s in sockets:
        s.close()
    return ports


def cluster_block(text: str) -> list[str]:
    """The settings lines of a config's last ``cluster { ... }`` block, its tls block left
    out (nats-server takes the last definition)."""
    block = text[text.rindex("\ncluster {") + 1 :]
    lines, depth = [], 0
    for raw in block.splitlines()[1:]:
        line = raw.split("#", 1)[0].strip()
        if line.endswith("{"):
            depth += 1
        elif line == "}":
            if depth == 0:
                break
            depth -= 1
        elif line and depth == 0:
            lines.append(line)
    return lines


def test_the_node_config_repeats_the_generated_cluster_block() -> None:
    # Its cluster block replaces the generated one: the same settings, plus no_advertise
    # (and tls).
    generated = (DEPLOY / "nats-server.conf").read_text()
    node = (DEPLOY / "nats-node.conf").read_text()
    assert cluster_block(node) == [*cluster_block(generated), "no_advertise: true"]
    assert re.search(r"^include lablink\.conf$", node, re.MULTILINE)


def readme_lab_toml(host: str, url: str, certs: Certs, data_dir: Path) -> str:
    """The README's lab.toml for ``host`` (step 5 shows pc1's; pc2's is the same with its
    name), pointed at the test's nodes, CA and folder, its instrument a simulated one."""
    (block,) = re.findall(r"```toml\n(.*?)```", README, re.DOTALL)
    eid = INSTRUMENTS[host]
    kind, resource = SIMULATED_BENCH[eid]
    replacements = {
        'id = "pc1"': f'id = "{host}"',
        'user = "agent-pc1"': f'user = "agent-{host}"',
        'data_dir = "/var/lib/lablink"': f'data_dir = "{data_dir}"',
        'tls_ca = "/etc/lablink/tls/nats-ca.crt"': f'tls_ca = "{certs.ca}"',
        'id = "power_supply_1"': f'id = "{eid}"',
        'kind = "power_supply"': f'kind = "{kind}"',
        'resource = "TCPIP::10.20.0.11::5025::SOCKET"': f'resource = "{resource}"',
        'backend = "@py"': 'backend = "@sim"',
    }
    for old, new in replacements.items():
        assert old in block, f"the README's lab.toml no longer has {old!r}"
        block = block.replace(old, new)
    block, found = re.subn(r'^url = "tls://[^"]+"$', f'url = "{url}"', block, flags=re.MULTILINE)
    assert found == 1, "the README's lab.toml names no tls:// url"
    return block


def readme_node_env() -> dict[str, str]:
    """The README's /etc/nats/nats-1.env."""
    (body,) = re.findall(r"cat > /etc/nats/nats-1\.env <<'EOF'\n(.*?)\nEOF\n", README, re.DOTALL)
    return dict(line.split("=", 1) for line in body.splitlines())


def generate_cluster_config(folder: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The README's `lablink nats config ... > lablink.conf` line, run in ``folder``."""
    (line,) = [line for line in README.splitlines() if "/bin/lablink nats config " in line]
    argv = lablink_argv(line)
    assert argv is not None
    monkeypatch.chdir(folder)
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 0, result.output
    return result.stdout


@dataclass
class Cluster:
    nodes: list[NatsServer]
    certs: Certs
    tomls: dict[str, Path]  # lab PC -> its lab.toml

    @property
    def urls(self) -> str:
        return tls_urls(self.nodes)


def tls_urls(nodes: list[NatsServer]) -> str:
    return ",".join(f"tls://127.0.0.1:{node.port}" for node in nodes)


@pytest.fixture
async def tls_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Cluster]:
    certs = make_certs(tmp_path / "tls")
    ports = free_ports(6)
    client_ports, route_ports = ports[:3], ports[3:]
    urls = ",".join(f"tls://127.0.0.1:{p}" for p in client_ports)
    # README step 3: the lab PCs' lab.toml first, then the configuration generated from them.
    admin = tmp_path / "admin"
    admin.mkdir()
    tomls = {}
    for host in INSTRUMENTS:
        tomls[host] = admin / f"{host}.toml"
        tomls[host].write_text(readme_lab_toml(host, urls, certs, tmp_path / f"{host}-data"))
    generated = generate_cluster_config(admin, monkeypatch)
    header = generated[: generated.index("\nserver_name:")]
    assert set(re.findall(r"NATS_\w+_PASSWORD", header)) == set(PASSWORDS)
    # The README's passwords.env has each of them.
    made = re.search(r"for name in ([A-Z0-9_ ]+); do echo \"NATS_\$\{name\}_PASSWORD=", README)
    assert made is not None
    assert {f"NATS_{name}_PASSWORD" for name in made.group(1).split()} == set(PASSWORDS)
    readme_env = readme_node_env()
    nodes = []
    for i in range(3):
        folder = tmp_path / f"nats-{i + 1}"
        folder.mkdir()
        # As on a node: /etc/nats/lablink.conf beside node.conf (deploy/nats-node.conf).
        (folder / "lablink.conf").write_text(generated)
        # The README's nats-<n>.env, on loopback and in the test's folders.
        env = {
            "NATS_SERVER_NAME": f"nats-{i + 1}",
            "NATS_LISTEN": f"127.0.0.1:{client_ports[i]}",
            "NATS_CLUSTER_LISTEN": f"127.0.0.1:{route_ports[i]}",
            **{
                f"NATS_ROUTE_{n + 1}": f"nats-route://127.0.0.1:{p}"
                for n, p in enumerate(route_ports)
            },
            "NATS_STORE_DIR": str(folder / "jetstream"),
            "NATS_TLS_CERT": str(certs.cert),
            "NATS_TLS_KEY": str(certs.key),
            "NATS_TLS_CA": str(certs.ca),
        }
        assert set(env) == set(readme_env)
        config = (DEPLOY / "nats-node.conf").read_text()
        nodes.append(NatsServer(folder, port=client_ports[i], config=config, env=PASSWORDS | env))
    await asyncio.gather(*(node.start() for node in nodes))
    try:
        yield Cluster(nodes, certs, tomls)
    finally:
        await asyncio.gather(*(node.stop() for node in nodes))


@pytest.mark.slow
async def test_lablink_publishes_through_a_tls_cluster(
    tls_cluster: Cluster,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    nodes, certs = tls_cluster.nodes, tls_cluster.certs
    for name in [n for n in os.environ if n.startswith("LABLINK_")]:
        monkeypatch.delenv(name)
    # What /etc/lablink/lablink.env sets (deploy/lablink.env), read as `lablink serve` reads it.
    monkeypatch.setenv("LABLINK_NATS_URL", tls_cluster.urls)
    monkeypatch.setenv("LABLINK_NATS_USER", "scheduler")
    monkeypatch.setenv("LABLINK_NATS_PASSWORD", PASSWORDS["NATS_SCHEDULER_PASSWORD"])
    monkeypatch.setenv("LABLINK_NATS_REPLICAS", "3")
    monkeypatch.setenv("LABLINK_NATS_TLS_CA", str(certs.ca))
    settings = Settings.from_env(data_dir=tmp_path / "data")
    assert settings.nats_url is not None
    options = nats_options(settings, settings.nats_url)

    store = open_store(tmp_path / "scheduler.db")
    relay = Relay(store.path, options, batch_size=100, ack_timeout=5)
    relay.attach(store)
    await relay.start()
    subscriber = NatsOptions(
        url=tls_cluster.urls,
        user="subscriber",
        password=PASSWORDS["NATS_SUBSCRIBER_PASSWORD"],
        tls_ca=str(certs.ca),
    )
    try:
        for n in range(20):
            store.append(
                "job_a",
                store.stream_version("job_a"),
                [
                    NewEvent(
                        event=JobPaused(job_id="job_a", reason=f"n{n}"),
                        actor="test",
                        occurred_at=T0 + timedelta(seconds=n),
                    )
                ],
            )
        try:
            seen = await read_stream(subscriber, expected=20, wait=60)
        except TimeoutError as exc:
            # Why the relay did not get there is in its status, not in the reader's timeout.
            raise AssertionError(f"relay: {relay.status.last_error}") from exc
        assert [e["position"] for e in seen] == list(range(1, 21))
        nc = await nats.connect(**subscriber.connect_kwargs())
        try:
            assert nc.connected_url is not None
            assert nc.connected_url.scheme == "tls"
            # no_advertise: the client knows the servers it was given, no address it cannot
            # verify.
            assert nc.discovered_servers == []
            info = await nc.jetstream().stream_info("LABLINK_EVENTS")
            assert info.config.num_replicas == 3
        finally:
            await nc.close()
    finally:
        await relay.aclose()
        store.close()

    # Without TLS, or trusting another CA, no node lets a client in.
    plain = NatsOptions(
        url=f"nats://127.0.0.1:{nodes[0].port}",
        user="subscriber",
        password=PASSWORDS["NATS_SUBSCRIBER_PASSWORD"],
    )
    with pytest.raises((NoServersError, OSError, ssl.SSLError)):
        await nats.connect(
            **plain.connect_kwargs(),
            allow_reconnect=False,
            connect_timeout=5,
            max_reconnect_attempts=0,
        )
    stranger = make_certs(tmp_path / "other")
    distrusting = NatsOptions(
        url=tls_urls(nodes[:1]),
        user="subscriber",
        password=PASSWORDS["NATS_SUBSCRIBER_PASSWORD"],
        tls_ca=str(stranger.ca),
    )
    with pytest.raises((NoServersError, OSError, ssl.SSLError)):
        await nats.connect(
            **distrusting.connect_kwargs(),
            allow_reconnect=False,
            connect_timeout=5,
            max_reconnect_attempts=0,
        )


def agent_argv(host: str, toml: Path) -> list[str]:
    """lablink-agent@<host>.service's ExecStart, its installed paths the test's."""
    (line,) = [
        line.split("=", 1)[1]
        for line in AGENT_UNIT.read_text().splitlines()
        if line.startswith("ExecStart=")
    ]
    argv = shlex.split(line.replace("%i", host))
    assert argv[0] == "/opt/lablink/venv/bin/lablink"
    assert argv[argv.index("--config") + 1] == f"/etc/lablink/agents/{host}.toml"
    argv[0], argv[argv.index("--config") + 1] = LABLINK, str(toml)
    return argv


@pytest.mark.e2e
async def test_the_lab_pcs_agents_come_online_through_the_tls_cluster(
    tls_cluster: Cluster, tmp_path: Path
) -> None:
    certs = tls_cluster.certs
    # The scheduler's user sees each instrument's heartbeat, over TLS.
    scheduler = NatsOptions(
        url=tls_cluster.urls,
        user="scheduler",
        password=PASSWORDS["NATS_SCHEDULER_PASSWORD"],
        tls_ca=str(certs.ca),
    )
    nc = await nats.connect(**scheduler.connect_kwargs())
    presences: asyncio.Queue[Presence] = asyncio.Queue()

    async def heard(msg: Msg) -> None:
        await presences.put(msgspec.json.decode(msg.data, type=Presence))

    for eid in INSTRUMENTS.values():
        await nc.subscribe(presence_subject(eid), cb=heard)
    await nc.flush()
    agents: dict[str, asyncio.subprocess.Process] = {}
    logs = {host: tmp_path / f"{host}.log" for host in INSTRUMENTS}

    async def until(state: str) -> None:
        """Each lab PC's instrument heard in ``state`` from its own agent."""
        waiting = {eid: host for host, eid in INSTRUMENTS.items()}
        try:
            async with asyncio.timeout(60):
                while waiting:
                    presence = await presences.get()
                    if presence.state == state and waiting.get(presence.equipment_id) == (
                        presence.agent_id
                    ):
                        del waiting[presence.equipment_id]
        except TimeoutError:
            said = {host: logs[host].read_text()[-2000:] for host in waiting.values()}
            codes = {host: process.returncode for host, process in agents.items()}
            raise AssertionError(f"not {state}: {waiting}; exit codes {codes}; {said}") from None

    try:
        for host, toml in tls_cluster.tomls.items():
            # The unit's environment: /etc/lablink/lablink.env and agents/<host>.env (step 5).
            env = {k: v for k, v in os.environ.items() if not k.startswith("LABLINK_")}
            env["LABLINK_TIMEZONE"] = "Europe/Berlin"
            env["LABLINK_NATS_PASSWORD"] = PASSWORDS[f"NATS_AGENT_{host.upper()}_PASSWORD"]
            with logs[host].open("wb") as log:
                agents[host] = await asyncio.create_subprocess_exec(
                    *agent_argv(host, toml), env=env, stdout=log, stderr=log
                )
        await until("online")
        # The unit's KillSignal: the graceful stop, a goodbye, exit 0.
        for process in agents.values():
            process.terminate()
        await until("offline")
        async with asyncio.timeout(60):
            codes = [await process.wait() for process in agents.values()]
        assert codes == [0, 0]
    finally:
        for process in agents.values():
            if process.returncode is None:
                process.kill()
                await process.wait()
        await nc.close()
