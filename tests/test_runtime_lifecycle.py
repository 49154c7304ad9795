"""The runtime opens its parts one by one; a start that fails part-way closes what it opened.

Real parts throughout: the private nats-server (a child process), the SQLite store and the
data-directory lock. The failure is a real one: the agent `lablink serve` runs itself names a
simulated bench definition that does not exist, so the agent cannot open its instruments
after the bus, the relay and the agents executor are already up.
"""

from __future__ import annotations

import os
import signal
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from lablink.runtime import Runtime
from lablink.settings import Settings

pytestmark = [pytest.mark.nats, pytest.mark.slow]

LAB_TOML = """\
[agent]
id = "lab_a"

[[instruments]]
id = "psu_1"
kind = "power_supply"
resource = "TCPIP0::10.20.0.11::inst0::INSTR"
backend = "no-such-bench.yaml"
"""


def nats_children() -> list[int]:
    """Pids of this process's live nats-server children (read from /proc, not trusted to
    any pid file the runtime might have removed)."""
    found = []
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces, so split after its ')'.
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        state, ppid = fields[0], int(fields[1])
        if ppid == me and comm.startswith("nats-server") and state != "Z":
            found.append(int(entry.name))
    return found


@pytest.fixture
def no_leftover_servers() -> Iterator[None]:
    before = set(nats_children())
    yield
    # Whatever the outcome, leave no server behind for the next test.
    for pid in set(nats_children()) - before:
        os.kill(pid, signal.SIGKILL)


async def test_an_agent_that_cannot_start_closes_the_bus_the_store_and_the_lock(
    tmp_path: Path, no_leftover_servers: None
) -> None:
    config = tmp_path / "lab.toml"
    config.write_text(LAB_TOML)
    data = tmp_path / "data"
    # In process: the bench opens (and fails) inside serve's start. The agent process that
    # cannot start is tests/agents/test_agent_process.py's.
    settings = Settings(
        data_dir=data, timezone="UTC", agent_config=config, embedded_agent="inprocess"
    )
    assert settings.nats
    assert settings.executor_kind == "agents"
    before = set(nats_children())

    runtime = Runtime(settings)
    with pytest.raises(FileNotFoundError, match=r"no-such-bench\.yaml"):
        await runtime.__aenter__()

    # The private nats-server had started (its folder is there) and is gone again.
    assert (data / "nats").is_dir()
    assert set(nats_children()) - before == set()
    # The store is closed: its connection refuses work.
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        runtime.store.conn.execute("SELECT 1")
    # The data-directory lock is free: a second runtime on the same directory starts.
    working = Settings(data_dir=data, timezone="UTC", nats=False, executor="noop")
    async with Runtime(working) as second:
        assert second.store.last_position() >= 0


async def test_a_graceful_stop_closes_the_same_parts(
    tmp_path: Path, no_leftover_servers: None
) -> None:
    data = tmp_path / "data"
    settings = Settings(data_dir=data, timezone="UTC", agents=False)
    before = set(nats_children())
    async with Runtime(settings) as runtime:
        assert runtime.nats_server is not None
        assert runtime.nats_server.pid in set(nats_children()) - before
    assert set(nats_children()) - before == set()
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        runtime.store.conn.execute("SELECT 1")
    async with Runtime(Settings(data_dir=data, timezone="UTC", nats=False, executor="noop")):
        pass
