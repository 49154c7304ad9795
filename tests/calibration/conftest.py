"""The calibration tests' harness: a real engine on a real SQLite file, driven by a manual
clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from lablink.clock import ManualClock
from tests.support.calibration import T0
from tests.support.harness import Harness


@pytest.fixture
async def bench(tmp_path: Path) -> AsyncIterator[Harness]:
    """The harness at T0, the views folded right after each commit."""
    started = await Harness(tmp_path / "data" / "scheduler.db", ManualClock(T0)).start()
    yield started
    await started.close()
