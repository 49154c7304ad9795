"""lab.toml: a valid file becomes the AgentConfig it describes; each mistake is refused before
anything connects, naming the key, the value and the reason, also through `lablink agent`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from lablink.equipment_agent.config import (
    AgentConfig,
    ConfigError,
    InstrumentConfig,
    NatsConfig,
    load_config,
    parse_config,
)

AGENT = """\
[agent]
id = "lab-pc-1"
heartbeat_seconds = 0.5
data_dir = "data"
"""

PSU = """\
[[instruments]]
id = "psu_1"
kind = "power_supply"
resource = "TCPIP0::10.20.0.11::inst0::INSTR"
backend = "@sim"
"""

DMM = """\
[[instruments]]
id = "dmm-2"
kind = "multimeter"
driver = "multimeter"
resource = "TCPIP::192.0.2.7::5025::SOCKET"
backend = "@py"
timeout_ms = 5000
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "lab.toml"
    path.write_text(text)
    return path


def refused(tmp_path: Path, text: str) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text))
    return caught.value


def test_a_valid_file_describes_both_instruments(tmp_path: Path) -> None:
    nats = '[nats]\nurl = "nats://127.0.0.1:4222"\n'
    config = load_config(write(tmp_path, f"{AGENT}\n{nats}\n{PSU}\n{DMM}"))

    assert config == AgentConfig(
        agent_id="lab-pc-1",
        instruments=(
            InstrumentConfig(
                id="psu_1",
                kind="power_supply",
                resource="TCPIP0::10.20.0.11::inst0::INSTR",
                backend="@sim",
                driver="power_supply",  # the kind's own table when none is named
                timeout_ms=2000,
            ),
            InstrumentConfig(
                id="dmm-2",
                kind="multimeter",
                resource="TCPIP::192.0.2.7::5025::SOCKET",
                backend="@py",
                driver="multimeter",
                timeout_ms=5000,
            ),
        ),
        data_dir=tmp_path / "data",  # relative to the file, not to where the agent starts
        heartbeat_seconds=0.5,
        realtime=True,  # one real instrument: its time is not simulated
        nats=NatsConfig(url="nats://127.0.0.1:4222"),
        base=tmp_path,
    )
    assert [i.simulated for i in config.instruments] == [True, False]


# (the file, the key, the value, part of the reason)
MISTAKES: dict[str, tuple[str, str, Any, str]] = {
    "no instruments": (AGENT, "instruments", None, "list at least one [[instruments]] table"),
    "empty instruments": (
        f"instruments = []\n{AGENT}",
        "instruments",
        [],
        "list at least one [[instruments]] table",
    ),
    "unknown key": (f"{AGENT}\n{PSU}port = 5025\n", "instruments[0].port", 5025, "unknown key"),
    "unknown agent key": (
        f'{AGENT}name = "bench"\n\n{PSU}',
        "agent.name",
        "bench",
        "unknown key",
    ),
    # Ids become NATS subject tokens: a dot would split one.
    "id with a dot": (
        f"{AGENT}\n{PSU.replace('psu_1', 'psu.1')}",
        "instruments[0].id",
        "psu.1",
        "use 1-64 letters, digits, '_' or '-'",
    ),
    "id with a wildcard": (
        f"{AGENT}\n{PSU.replace('psu_1', 'psu*')}",
        "instruments[0].id",
        "psu*",
        "use 1-64 letters, digits, '_' or '-'",
    ),
    "agent id with a dot": (
        f"{AGENT.replace('lab-pc-1', 'lab.pc')}\n{PSU}",
        "agent.id",
        "lab.pc",
        "use 1-64 letters, digits, '_' or '-'",
    ),
    "duplicate id": (f"{AGENT}\n{PSU}\n{PSU}", "instruments[1].id", "psu_1", "is listed twice"),
    "unknown kind": (
        AGENT + PSU.replace('"power_supply"', '"voltmeter"'),
        "instruments[0].kind",
        "voltmeter",
        "unknown kind (known: power_supply, multimeter",
    ),
    "driver for another kind": (
        AGENT + DMM.replace('driver = "multimeter"', 'driver = "power_supply"'),
        "instruments[0].driver",
        "power_supply",
        "drives power_supply, not multimeter",
    ),
    "unknown driver": (
        AGENT + DMM.replace('driver = "multimeter"', 'driver = "keithley"'),
        "instruments[0].driver",
        "keithley",
        "no such driver",
    ),
    "bad backend": (
        f"{AGENT}\n{PSU.replace('@sim', '@ni')}",
        "instruments[0].backend",
        "@ni",
        "use '@py', '@sim' or a pyvisa-sim .yaml file",
    ),
    "timeout_ms too short": (
        f"{AGENT}\n{DMM.replace('5000', '9')}",
        "instruments[0].timeout_ms",
        9,
        "must be whole milliseconds from 10 to 600000",
    ),
    "timeout_ms too long": (
        f"{AGENT}\n{DMM.replace('5000', '600001')}",
        "instruments[0].timeout_ms",
        600001,
        "must be whole milliseconds from 10 to 600000",
    ),
    "timeout_ms not whole": (
        f"{AGENT}\n{DMM.replace('5000', '2.5')}",
        "instruments[0].timeout_ms",
        2.5,
        "must be whole milliseconds from 10 to 600000",
    ),
    "heartbeat too fast": (
        f"{AGENT.replace('0.5', '0.01')}\n{PSU}",
        "agent.heartbeat_seconds",
        0.01,
        "must be a number of seconds from 0.05 to 60",
    ),
    "heartbeat too slow": (
        f"{AGENT.replace('0.5', '61')}\n{PSU}",
        "agent.heartbeat_seconds",
        61,
        "must be a number of seconds from 0.05 to 60",
    ),
    # TOML's true is not 1 second.
    "heartbeat a boolean": (
        f"{AGENT.replace('0.5', 'true')}\n{PSU}",
        "agent.heartbeat_seconds",
        True,
        "must be a number of seconds from 0.05 to 60",
    ),
}


@pytest.mark.parametrize(("text", "key", "value", "reason"), MISTAKES.values(), ids=MISTAKES)
def test_a_mistake_names_the_key_the_value_and_the_reason(
    tmp_path: Path, text: str, key: str, value: Any, reason: str
) -> None:
    error = refused(tmp_path, text)

    assert (error.key, error.value) == (key, value)
    assert reason in error.reason
    assert str(error) == f"{tmp_path / 'lab.toml'}: {key} = {value!r}: {error.reason}"


def test_a_missing_resource_is_required(tmp_path: Path) -> None:
    error = refused(tmp_path, f"{AGENT}\n{PSU.replace('resource = ', '# resource = ')}")

    assert (error.key, error.value, error.reason) == (
        "instruments[0].resource",
        None,
        "is required",
    )


def test_invalid_toml_is_refused_with_where_it_breaks(tmp_path: Path) -> None:
    path = write(tmp_path, f"{AGENT}\n[[instruments]\nid = 'psu_1'\n")

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    assert (caught.value.key, caught.value.value) == ("file", str(path))
    assert caught.value.reason.startswith("is not valid TOML: ")
    assert "line 6" in caught.value.reason


@pytest.mark.e2e
def test_lablink_agent_refuses_a_bad_file_with_usage_error(tmp_path: Path) -> None:
    bad = write(tmp_path, f"{AGENT}\n{PSU.replace('psu_1', 'psu.1')}")
    lablink = Path(sys.executable).parent / "lablink"
    # Wide enough that the error box does not wrap the message.
    env = {**os.environ, "TERMINAL_WIDTH": "1000", "COLUMNS": "1000"}

    done = subprocess.run(
        [str(lablink), "agent", "--config", str(bad)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )

    assert done.returncode == 2, done.stderr
    assert "Invalid value for --config" in done.stderr
    assert "instruments[0].id = 'psu.1'" in done.stderr
    assert "use 1-64 letters, digits, '_' or '-'" in done.stderr


def test_two_instruments_on_one_resource_are_refused() -> None:
    raw = {
        "instruments": [
            {"id": "psu_a", "kind": "power_supply", "resource": "TCPIP::10.0.0.1::5025::SOCKET"},
            {"id": "psu_b", "kind": "power_supply", "resource": "TCPIP::10.0.0.1::5025::SOCKET"},
        ]
    }
    with pytest.raises(ConfigError) as caught:
        parse_config(raw)
    assert caught.value.key == "instruments[1].resource"
    assert caught.value.reason == "is already psu_a's"
