from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from lablink.clock import ManualClock
from lablink.scheduler.testing import Harness


@pytest.fixture
async def harness(tmp_path: Path, clock: ManualClock) -> AsyncIterator[Harness]:
    started = await Harness(tmp_path / "data" / "scheduler.db", clock).start()
    yield started
    await started.close()
