"""deploy/systemd: every unit passes `systemd-analyze verify` with no word of complaint, is
hardened as deploy/README.md promises, waits longer than LabLink's graceful stop before it
kills, runs as a user the sysusers file creates, and starts a real `lablink` command line."""

from __future__ import annotations

import inspect
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from lablink.bus.relay import SHUTDOWN_SECONDS, Relay
from lablink.bus.server import NatsServer, nats_server_binary
from lablink.notify.notifier import SHUTDOWN_SECONDS as NOTIFY_SHUTDOWN_SECONDS
from lablink.scheduler.engine import Engine
from lablink.supervision import Supervisor
from tests.deploy.commands import parse

ROOT = Path(__file__).parents[2]
UNITS = ROOT / "deploy" / "systemd"
SYSUSERS = UNITS / "lablink.sysusers"
INSTALLED_BIN = "/opt/lablink/venv/bin/"
SYSTEMD_ANALYZE = "/usr/bin/systemd-analyze"
SYSTEMD_SYSUSERS = "/usr/bin/systemd-sysusers"
DATA_DIRS = {
    "lablink.service": "/var/lib/lablink",
    "lablink-agent@.service": "/var/lib/lablink",
    "nats-server@.service": "/var/lib/nats/%i",
}

Directives = list[tuple[str, str, str]]  # section, key, value: keys may repeat


def directives(path: Path) -> Directives:
    found: Directives = []
    section = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        found.append((section, key.strip(), value.strip()))
    return found


def values(unit: Directives, key: str) -> list[str]:
    return [v for _, k, v in unit if k == key]


def one(unit: Directives, key: str) -> str:
    found = values(unit, key)
    assert len(found) == 1, f"{key}: {found}"
    return found[0]


def seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+)(s|min)?", value)
    assert match, value
    return int(match.group(1)) * (60 if match.group(2) == "min" else 1)


def installable_copy(unit: Path, folder: Path) -> Path:
    """The unit as it would be on a machine where LabLink is installed: its ExecStart binary
    is this venv's `lablink` or nats-server (verify refuses a command that does not exist).
    User= stays as it is: verify (systemd 252) does not look users up, they are resolved
    only when the service starts; the sysusers test below checks they will exist."""
    text = unit.read_text()
    text = text.replace(INSTALLED_BIN + "lablink", str(Path(sys.executable).parent / "lablink"))
    text = text.replace(INSTALLED_BIN + "nats-server", nats_server_binary())
    assert INSTALLED_BIN not in text, f"{unit.name}: another installed binary"
    copy = folder / unit.name
    copy.write_text(text)
    return copy


def tool(path: str) -> str:
    """A systemd tool the tests run: never skipped. README's test command installs Debian's
    `systemd` package where it is missing; without it the test fails, saying so."""
    found = path if Path(path).exists() else shutil.which(Path(path).name)
    assert found is not None, f"{path}: not found; install Debian's systemd package"
    return found


def verify_complaints(units: list[Path]) -> list[str]:
    """What `systemd-analyze verify` says about ``units`` (it exits 0 on a mere warning, such
    as an unknown key, so its words are what count). --man=no: no man pages to look up in a
    container. Lines about the system's own units (targets it loads) are not ours; a template
    is checked as an instance (`lablink-agent@i.service`)."""
    run = subprocess.run(
        [tool(SYSTEMD_ANALYZE), "verify", "--man=no", *map(str, units)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    ours = [u.name.replace("@.service", "@") for u in units] + [str(units[0].parent)]
    lines = (run.stdout + run.stderr).splitlines()
    complaints = [line for line in lines if any(name in line for name in ours)]
    if run.returncode != 0:
        complaints.append(f"exit {run.returncode}: {lines}")
    return complaints


def unit_paths() -> list[Path]:
    return sorted(UNITS.glob("*.service"))


def test_the_three_units_are_there() -> None:
    assert [p.name for p in unit_paths()] == sorted(DATA_DIRS)


def test_systemd_analyze_verify_has_nothing_to_say(tmp_path: Path) -> None:
    copies = [installable_copy(unit, tmp_path) for unit in unit_paths()]
    assert verify_complaints(copies) == []


@pytest.mark.parametrize("name", sorted(DATA_DIRS))
def test_verify_complaints_catch_a_misspelt_key(name: str, tmp_path: Path) -> None:
    # The check above must be able to fail, for a template too: a typo in a directive is
    # only a warning.
    copy = installable_copy(UNITS / name, tmp_path)
    copy.write_text(copy.read_text().replace("PrivateTmp=yes", "PrivateTemp=yes"))
    complaints = verify_complaints([copy])
    assert any("PrivateTemp" in line for line in complaints), complaints


def test_verify_complaints_catch_a_missing_binary(tmp_path: Path) -> None:
    copy = installable_copy(UNITS / "nats-server@.service", tmp_path)
    copy.write_text(copy.read_text().replace(nats_server_binary(), "/nonexistent/nats-server"))
    complaints = verify_complaints([copy])
    assert any("/nonexistent/nats-server is not executable" in line for line in complaints)


@pytest.mark.parametrize("name", sorted(DATA_DIRS))
def test_hardened_and_writing_only_the_data_dir(name: str) -> None:
    unit = directives(UNITS / name)
    assert one(unit, "User") in {"lablink", "nats"}
    assert one(unit, "Group") == one(unit, "User")
    assert one(unit, "NoNewPrivileges") == "yes"
    assert one(unit, "PrivateTmp") == "yes"
    assert one(unit, "ProtectSystem") == "strict"
    assert one(unit, "ProtectHome") == "yes"
    assert one(unit, "ReadWritePaths") == DATA_DIRS[name]
    # systemd makes that directory at start, owned by the unit's user.
    assert "/var/lib/" + one(unit, "StateDirectory") == DATA_DIRS[name]
    assert one(unit, "Restart") == "on-failure"
    assert one(unit, "KillSignal") == "SIGTERM"
    if name.startswith("lablink"):
        assert values(unit, "EnvironmentFile")[0] == "/etc/lablink/lablink.env"
        # The data directory it writes is the one it is told to use.
        assert one(unit, "WorkingDirectory") == DATA_DIRS[name]
    if name == "lablink.service":
        argv = shlex.split(one(unit, "ExecStart"))
        assert argv[argv.index("--data-dir") + 1] == DATA_DIRS[name]


def default(function: object, parameter: str) -> float:
    value = inspect.signature(function).parameters[parameter].default  # type: ignore[arg-type]
    assert isinstance(value, int | float)
    return float(value)


def test_lablink_is_given_longer_than_its_graceful_stop() -> None:
    """Summed from the code, in the order `lablink serve` stops (lablink/runtime.py), so that
    a longer grace there fails here until the unit follows."""
    runtime = (ROOT / "lablink" / "runtime.py").read_text()
    uvicorn = re.search(r"timeout_graceful_shutdown=(\d+)", runtime)
    assert uvicorn is not None
    agent = (ROOT / "lablink" / "equipment_agent" / "agent.py").read_text()
    goodbye = re.search(r"self\._nc\.flush\(timeout=(\d+)\)", agent)
    assert goodbye is not None
    graceful = (
        float(uvicorn.group(1))  # open HTTP responses
        + NOTIFY_SHUTDOWN_SECONDS  # a notification under way
        + default(Engine.aclose, "grace_seconds")  # running executions
        + default(Supervisor.aclose, "grace_seconds")  # the runtime's other tasks
        + float(goodbye.group(1))  # the embedded agent's goodbye
        + default(Relay.aclose, "drain_seconds")
        + 3 * SHUTDOWN_SECONDS  # the relay's session stop, bounded at 2 + 1 times it
        + default(Supervisor.aclose, "grace_seconds")  # the private nats-server's watcher
        + default(NatsServer.stop, "wait_seconds")  # and the server itself
    )
    assert graceful == 68  # the figure the unit's comment states
    unit = (UNITS / "lablink.service").read_text()
    assert f"= {graceful:g} s, plus the instruments' safe-state commands" in unit
    stop = seconds(one(directives(UNITS / "lablink.service"), "TimeoutStopSec"))
    # Beyond the sum: the instruments' safe-state commands, a VISA timeout each (two busy
    # instruments at 3 commands x 5 s, as in deploy/lab.toml).
    assert stop >= graceful + 2 * 3 * 5
    readme = " ".join((ROOT / "deploy" / "README.md").read_text().split())
    assert f"the stop takes at most {graceful:g} s" in readme
    assert f"`TimeoutStopSec={stop:g}`" in readme
    agent_stop = seconds(one(directives(UNITS / "lablink-agent@.service"), "TimeoutStopSec"))
    assert agent_stop >= float(goodbye.group(1)) + 2 * 3 * 5
    assert seconds(one(directives(UNITS / "nats-server@.service"), "TimeoutStopSec")) >= 10


def test_the_units_users_are_made_by_the_sysusers_file(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    subprocess.run(
        [tool(SYSTEMD_SYSUSERS), f"--root={root}", str(SYSUSERS)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    made = {line.split(":")[0] for line in (root / "etc" / "passwd").read_text().splitlines()}
    groups = {line.split(":")[0] for line in (root / "etc" / "group").read_text().splitlines()}
    for unit in unit_paths():
        found = directives(unit)
        assert one(found, "User") in made, unit.name
        assert one(found, "Group") in groups, unit.name


@pytest.mark.parametrize("name", ["lablink.service", "lablink-agent@.service"])
def test_exec_start_is_a_real_lablink_command_line(name: str) -> None:
    argv = shlex.split(one(directives(UNITS / name), "ExecStart").replace("%i", "pc1"))
    assert argv[0] == INSTALLED_BIN + "lablink"
    context = parse(argv[1:])
    assert context.command.name == {"lablink.service": "serve"}.get(name, "agent")
    if name == "lablink-agent@.service":
        # `agent` needs --config or --simulated; which one is checked when it runs, not
        # by the parse: a lab PC's unit names its lab.toml.
        assert str(context.params["config"]).endswith(".toml")
        assert not context.params["simulated"]


def test_a_misspelt_option_fails_the_parse() -> None:
    with pytest.raises(typer.TyperException, match="--data-directory"):
        parse(["serve", "--data-directory", "/var/lib/lablink"])
    with pytest.raises(typer.TyperException, match="requires an argument"):
        parse(["agent", "--config"])
    with pytest.raises(typer.TyperException, match="servee"):
        parse(["servee"])
    with pytest.raises(typer.TyperException, match="extra argument"):
        parse(["serve", "now"])


def test_nats_server_exec_start_runs_the_node_config() -> None:
    argv = shlex.split(one(directives(UNITS / "nats-server@.service"), "ExecStart"))
    assert argv == [INSTALLED_BIN + "nats-server", "-c", "/etc/nats/node.conf"]
    environment = values(directives(UNITS / "nats-server@.service"), "EnvironmentFile")
    assert environment == ["/etc/nats/passwords.env", "/etc/nats/%i.env"]
