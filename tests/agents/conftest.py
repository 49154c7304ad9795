"""The agent tests' shared lab: a scheduler (engine, views, agents' executor) on a real
nats-server and the manual clock; a test module may define its own ``lab`` instead."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from lablink.bus.server import NatsServer
from lablink.clock import ManualClock
from tests.support.agent_lab import AgentLab


@pytest.fixture
async def lab(
    tmp_path: Path, nats_server: NatsServer, clock: ManualClock
) -> AsyncIterator[AgentLab]:
    lab = await AgentLab(tmp_path / "scheduler.db", nats_server.url, clock).start()
    try:
        yield lab
    finally:
        await lab.close()
