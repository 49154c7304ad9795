"""Captured data under faults (issue 15 point 6): NATS stops before the retention pass that
must delete a capture. The pass records nothing until it can delete; then the removal and the
pruning are recorded once, and the log's invariants hold."""

from __future__ import annotations

from datetime import timedelta

import pytest

from lablink.bus.server import NatsServer
from lablink.errors import DataBusUnavailable
from lablink.scheduler.retention import RetentionPass
from tests.faults.conftest import Invariants
from tests.support.captures import (
    Lab,
    bucket,
    capture,
    csv_bytes,
    data_rows,
    events,
    in_bucket,
    lab,
)

pytestmark = pytest.mark.nats

__all__ = ["lab"]  # the fixture (tests/support/captures.py)


@pytest.mark.slow
async def test_nats_outage_retries_later_and_loses_no_record(
    lab: Lab, nats_server: NatsServer, invariants: Invariants
) -> None:
    """NATS stops before a retention pass: the pass fails with nothing recorded and nothing
    pruned; once NATS is back the next pass removes the object and records it, once."""
    harness = lab.harness
    execution_id, data = await capture(harness, lab.job_id, csv_bytes(50), store=lab.store)
    harness.clock.advance(timedelta(days=31))
    retention = RetentionPass(harness.store, harness.clock, days=30, data=lab.data)
    before = events(harness.path, "executions.pruned")
    await nats_server.stop()

    with pytest.raises(DataBusUnavailable):
        await retention.run_pass(harness.clock.now())

    # Nothing recorded, nothing pruned: the row and its capture are as they were.
    assert events(harness.path, "executions.pruned") == before
    assert events(harness.path, "execution.data_removed") == []
    assert data_rows(harness)[execution_id][0] == "stored"

    await nats_server.start()
    assert await retention.run_pass(harness.clock.now()) == 1
    async with bucket(nats_server.url) as store:
        assert not await in_bucket(store, data["object"])
    assert [r["execution_id"] for r in events(harness.path, "execution.data_removed")] == [
        execution_id
    ]
    await invariants(harness.path)
