"""deploy/README.md's commands and examples are real: every `lablink ...` line of its shell
blocks parses as the `lablink` command would parse it, deploy/lablink.env is settings
`lablink serve` accepts, and its lab.toml for a lab PC loads as an agent's configuration."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from lablink.equipment_agent.config import load_config
from lablink.settings import Settings
from tests.deploy.certs import make_certs
from tests.deploy.commands import lablink_argv, parse

DEPLOY = Path(__file__).parents[2] / "deploy"
README = DEPLOY / "README.md"


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), re.DOTALL)


def lablink_lines() -> list[str]:
    lines = []
    for block in blocks("bash"):
        # A here-document's body is data, not commands.
        block = re.sub(r"<<'EOF'\n.*?\nEOF\n", "\n", block, flags=re.DOTALL)
        lines += [line for line in block.splitlines() if lablink_argv(line) is not None]
    return lines


def test_the_readme_runs_lablink_commands() -> None:
    # What the parse below must cover: the set-up's own commands.
    commands = {
        " ".join(parse(lablink_argv(line) or []).command_path.split()[1:])
        for line in lablink_lines()
    }
    assert {"version", "nats config", "keys create", "agent", "events tail"} <= commands


@pytest.mark.parametrize("line", lablink_lines())
def test_each_lablink_command_line_parses(line: str) -> None:
    argv = lablink_argv(line)
    assert argv is not None
    parse(argv)


def test_lablink_argv_stops_at_a_redirection() -> None:
    line = "/opt/lablink/venv/bin/lablink nats config --agents a.toml > lablink.conf"
    assert lablink_argv(line) == ["nats", "config", "--agents", "a.toml"]
    assert lablink_argv("lablink keys list  # all keys") == ["keys", "list"]
    sudo = "sudo -u lablink /opt/lablink/venv/bin/lablink keys list 2>&1 | less"
    assert lablink_argv(sudo) == ["keys", "list"]
    assert lablink_argv("A=1 B=2 lablink serve --port 1") == ["serve", "--port", "1"]
    assert lablink_argv("systemctl enable --now lablink") is None
    assert lablink_argv("journalctl -u lablink-agent@pc1") is None


def env_file(path: Path) -> dict[str, str]:
    pairs = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, value = line.partition("=")
            pairs[name] = value
    return pairs


def test_the_example_env_file_is_accepted_by_serve(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    certs = make_certs(tmp_path / "tls")
    example = env_file(DEPLOY / "lablink.env")
    assert all(name.startswith("LABLINK_") for name in example)
    # Its certificate paths are those the README installs; here the test's own.
    assert example["LABLINK_TLS_CERT"] == "/etc/lablink/tls/lablink.crt"
    assert example["LABLINK_TLS_KEY"] == "/etc/lablink/tls/lablink.key"
    example.update(LABLINK_TLS_CERT=str(certs.cert), LABLINK_TLS_KEY=str(certs.key))
    for name in [n for n in os.environ if n.startswith("LABLINK_")]:
        monkeypatch.delenv(name)
    for name, value in example.items():
        monkeypatch.setenv(name, value)
    settings = Settings.from_env()
    assert settings.tls_cert == str(certs.cert)
    assert (settings.host, settings.port, settings.auth) == ("0.0.0.0", 8443, True)
    assert settings.nats_url is not None
    assert settings.nats_url.startswith("tls://")
    assert (settings.nats_replicas, settings.agents) == (3, False)
    assert settings.nats_tls_ca == "/etc/lablink/tls/nats-ca.crt"
    # lablink.service may write its data directory only (ReadWritePaths=): the backups too.
    assert settings.data_dir == Path("/var/lib/lablink")
    assert settings.backup_dir is not None
    assert settings.backup_dir.is_relative_to(settings.data_dir)


def test_the_lab_pc_toml_loads(tmp_path: Path) -> None:
    (toml,) = [b for b in blocks("toml") if 'id = "pc1"' in b]
    path = tmp_path / "pc1.toml"
    path.write_text(toml)
    config = load_config(path)
    assert config.agent_id == "pc1"
    assert config.nats.user == "agent-pc1"
    assert config.nats.tls_ca == "/etc/lablink/tls/nats-ca.crt"
    assert config.nats.url is not None
    assert config.nats.url.startswith("tls://")


def test_the_cluster_env_file_is_lablink_env_with_the_replica_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """deploy/lablink-cluster.env: the single-node example's settings (the same NATS cluster
    and credentials) plus cluster mode's, which `lablink serve` accepts."""
    single = env_file(DEPLOY / "lablink.env")
    cluster = env_file(DEPLOY / "lablink-cluster.env")
    assert all(name.startswith("LABLINK_") for name in cluster)
    assert cluster["LABLINK_CLUSTER"] == "1"
    assert cluster["LABLINK_REPLICA_ID"]
    for name in ("LABLINK_NATS_URL", "LABLINK_NATS_USER", "LABLINK_NATS_REPLICAS"):
        assert cluster[name] == single[name], name
    assert len(cluster["LABLINK_NATS_URL"].split(",")) == 3
    assert set(single) - {"LABLINK_BACKUP_DIR"} <= set(cluster)
    certs = make_certs(tmp_path / "tls")
    cluster.update(LABLINK_TLS_CERT=str(certs.cert), LABLINK_TLS_KEY=str(certs.key))
    for name in [n for n in os.environ if n.startswith("LABLINK_")]:
        monkeypatch.delenv(name)
    for name, value in cluster.items():
        monkeypatch.setenv(name, value)
    settings = Settings.from_env()
    assert (settings.nats_replicas, settings.nats_user) == (3, "scheduler")
    assert settings.nats_url == cluster["LABLINK_NATS_URL"]
