"""Finding 1: on a fresh install the retention pass was never due and its loop spun.

``run_if_due`` read the clock, then ``next_run`` read it again (the log had no
``executions.pruned`` yet), so "now" was always a little earlier than "due" and the loop went
round through ``asyncio.to_thread`` for ever: a whole core, and no pass. The manual clock hid
it (it returns the same instant twice), so this test runs the real ``SystemClock`` on a real,
fresh SQLite file, and counts the statements the loop runs on the store's connection.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from lablink.clock import SystemClock
from lablink.health import Health
from lablink.logstore import open_store
from lablink.scheduler.retention import RetentionPass
from lablink.supervision import Supervisor

pytestmark = pytest.mark.slow

# Long enough for a spinning loop to go round thousands of times.
WATCH_SECONDS = 2.0


async def test_fresh_store_is_pruned_once_and_the_loop_then_sleeps(
    tmp_path: Path, invariants: Any
) -> None:
    db_path = tmp_path / "data" / "scheduler.db"
    store = open_store(db_path)
    clock = SystemClock()
    supervisor = Supervisor(Health(clock))
    retention = RetentionPass(store, clock, days=30)
    try:
        await retention.start(supervisor)
        assert "task.retention" in supervisor
        pruned = store.read_stream("retention")
        assert [r.event.__struct_config__.tag for r in pruned] == ["executions.pruned"]

        statements: list[str] = []
        # The log's connection and the views' reader (retention counts there).
        with store.views.reading() as reader:
            pass
        for conn in (store.conn, reader):
            conn.set_trace_callback(statements.append)
        try:
            await asyncio.sleep(WATCH_SECONDS)  # the real clock is the point of this test
        finally:
            for conn in (store.conn, reader):
                conn.set_trace_callback(None)
        # The next pass is a day away: the loop sleeps, it neither reads the store nor
        # prunes again.
        assert statements == []
        assert len(store.read_stream("retention")) == 1
        assert retention.iterations <= 2
    finally:
        await retention.aclose()
        await supervisor.aclose()
        store.close()
    await invariants(db_path)
