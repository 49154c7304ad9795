"""Captures and retention (issue 15 point 6): the daily pass removes the objects of the
executions it prunes and records each removal with the pruning; a NATS outage makes it try
again later with nothing recorded; the byte bound removes the oldest captures first, each
recorded, and raises a data_bound alarm when they had more than a day of retention left.
Real nats-server, real SQLite, the manual clock; a rebuild from the log gives the same rows."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import pytest
import sqlite_utils

from lablink.bus.data_bucket import DataBucket
from lablink.bus.options import NatsOptions
from lablink.bus.server import NatsServer
from lablink.clock import ManualClock
from lablink.errors import CapturesNeedBucket
from lablink.events import RecordedEvent
from lablink.eventstore.sqlite import connect
from lablink.projections.base import Projection
from lablink.projections.follower import ViewsBehind
from lablink.projections.reading import reading_views
from lablink.projections.runner import Projector, default_projections
from lablink.scheduler import storage as storage_module
from lablink.scheduler.retention import RetentionPass
from lablink.scheduler.storage import SchedulerStorage
from tests.support.captures import (
    ACQUISITION,
    Lab,
    bucket,
    capture,
    csv_bytes,
    data_rows,
    events,
    in_bucket,
    lab,
    settle,
)
from tests.support.harness import Harness, api_client

pytestmark = pytest.mark.nats
__all__ = ["lab"]  # the fixture (tests/support/captures.py)


async def test_retention_removes_rows_and_objects_together(lab: Lab) -> None:
    harness = lab.harness
    old = [await capture(harness, lab.job_id, csv_bytes(100, i), store=lab.store) for i in (1, 2)]
    harness.clock.advance(timedelta(days=40))
    new = await capture(harness, lab.job_id, csv_bytes(100, 3), store=lab.store)
    retention = RetentionPass(harness.store, harness.clock, days=30, data=lab.data)

    removed = await retention.run_pass(harness.clock.now())

    assert removed == 2
    for execution_id, data in old:
        assert not await in_bucket(lab.store, data["object"])
        assert execution_id not in data_rows(harness)
    assert await in_bucket(lab.store, new[1]["object"])
    assert data_rows(harness)[new[0]][0] == "stored"
    removals = events(harness.path, "execution.data_removed")
    assert [(r["execution_id"], r["reason"], r["stream_id"]) for r in removals] == [
        (execution_id, "retention", lab.job_id) for execution_id, _ in old
    ]
    assert [r["size"] for r in removals] == [data["size"] for _, data in old]
    # Recorded together with the pruning, in one transaction: consecutive positions.
    conn = sqlite3.connect(harness.path)
    positions = [
        p
        for (p,) in conn.execute(
            "SELECT position FROM events WHERE type IN"
            " ('execution.data_removed', 'executions.pruned') ORDER BY position"
        )
    ]
    conn.close()
    assert positions == list(range(positions[0], positions[0] + 3))

    # A download of a pruned capture says when and why it went (not just "not found").
    async with api_client(harness, auth=False, data=lab.data) as client:
        response = await client.get(f"/api/scheduler/executions/{old[0][0]}/data")
    assert response.status_code == 410
    assert response.json()["removal_reason"] == "retention"
    assert "retention pass" in response.json()["detail"]

    # The views rebuilt from the log are the ones folded live.
    assert_rebuild_matches(harness)


def assert_rebuild_matches(harness: Harness) -> None:
    tables = ("executions", "execution_data_removals")
    settle(harness)
    with reading_views(harness.store) as conn:
        live = {t: sorted(conn.execute(f"SELECT * FROM {t}").fetchall(), key=repr) for t in tables}
    scratch = connect(harness.path.parent / "rebuilt.db")
    try:
        Projector().rebuild(harness.store, scratch)
        rebuilt = {
            t: sorted(scratch.execute(f"SELECT * FROM {t}").fetchall(), key=repr) for t in tables
        }
    finally:
        scratch.close()
    assert rebuilt == live


async def test_objects_deleted_before_a_crash_are_still_recorded(lab: Lab) -> None:
    """The pass deletes, then records: a crash in between leaves objects gone and unrecorded;
    the next pass finds them gone (no error) and records them."""
    harness = lab.harness
    execution_id, data = await capture(harness, lab.job_id, csv_bytes(50), store=lab.store)
    harness.clock.advance(timedelta(days=31))
    await lab.store.delete(data["object"])  # the first pass's delete, before its crash
    retention = RetentionPass(harness.store, harness.clock, days=30, data=lab.data)
    assert await retention.run_pass(harness.clock.now()) == 1
    assert [r["execution_id"] for r in events(harness.path, "execution.data_removed")] == [
        execution_id
    ]


async def test_the_bound_removes_the_oldest_first_and_records_each(lab: Lab) -> None:
    harness = lab.harness
    made = []
    for i in range(5):
        made.append(await capture(harness, lab.job_id, csv_bytes(200, i), store=lab.store))
        harness.clock.advance(timedelta(days=3))
    sizes = [data["size"] for _, data in made]
    # Room for the newest two only.
    bound = sizes[-1] + sizes[-2] + 10
    retention = RetentionPass(harness.store, harness.clock, days=0, data=lab.data, max_bytes=bound)

    gone = await retention.enforce_bound(harness.clock.now())

    assert [c.execution_id for c in gone] == [e for e, _ in made[:3]]
    for execution_id, data in made[:3]:
        assert not await in_bucket(lab.store, data["object"])
        assert data_rows(harness)[execution_id][0] == "removed"
    for execution_id, data in made[3:]:
        assert await in_bucket(lab.store, data["object"])
        assert data_rows(harness)[execution_id][0] == "stored"
    removals = events(harness.path, "execution.data_removed")
    assert [(r["execution_id"], r["reason"]) for r in removals] == [
        (e, "bound") for e, _ in made[:3]
    ]
    # Under the bound now: a second check removes nothing; retention off: no alarm.
    assert await retention.enforce_bound(harness.clock.now()) == []
    assert events(harness.path, "alarm.raised") == []
    assert_rebuild_matches(harness)


async def test_the_bound_alarms_when_captures_go_more_than_a_day_early(lab: Lab) -> None:
    harness = lab.harness
    start = harness.clock.now()
    # One capture 29.5 days old (half a day of retention left), two recent ones.
    ripe = await capture(harness, lab.job_id, csv_bytes(300, 1), store=lab.store)
    harness.clock.set(start + timedelta(days=29, hours=12))
    young = await capture(harness, lab.job_id, csv_bytes(300, 2), store=lab.store)
    newest = await capture(harness, lab.job_id, csv_bytes(300, 3), store=lab.store)
    harness.clock.advance(timedelta(hours=2))
    size = ripe[1]["size"]
    retention = RetentionPass(harness.store, harness.clock, days=30, data=lab.data)

    # Only the ripe one must go: it would have gone within the day anyway, no alarm.
    retention.max_bytes = young[1]["size"] + newest[1]["size"]
    assert [c.execution_id for c in await retention.enforce_bound(harness.clock.now())] == [ripe[0]]
    assert events(harness.path, "alarm.raised") == []

    # Now a capture two hours old must go: 30 days of retention left, alarm.
    retention.max_bytes = newest[1]["size"]
    assert [c.execution_id for c in await retention.enforce_bound(harness.clock.now())] == [
        young[0]
    ]
    (alarm,) = events(harness.path, "alarm.raised")
    assert alarm["kind"] == "data_bound"
    assert alarm["severity"] == "warning"
    assert alarm["execution_id"] == young[0]
    assert alarm["error"]["removed_early"] == 1
    assert alarm["error"]["bytes_removed_early"] == young[1]["size"]
    assert "LABLINK_DATA_MAX_BYTES" in alarm["message"]
    assert size > 0
    # The alarm is an alarm like the others: listed by the API.
    async with api_client(harness, auth=False) as client:
        listed = (await client.get("/api/alarms")).json()
    assert [a["kind"] for a in listed["alarms"]] == ["data_bound"]


async def test_the_loop_turn_prunes_and_bounds(lab: Lab) -> None:
    """What the supervised loop runs each turn: the daily pass when due, then the bound."""
    harness = lab.harness
    first = await capture(harness, lab.job_id, csv_bytes(100, 1), store=lab.store)
    harness.clock.advance(timedelta(days=40))
    second = await capture(harness, lab.job_id, csv_bytes(100, 2), store=lab.store)
    third = await capture(harness, lab.job_id, csv_bytes(100, 3), store=lab.store)
    retention = RetentionPass(
        harness.store, harness.clock, days=30, data=lab.data, max_bytes=third[1]["size"]
    )
    assert await retention.turn(harness.clock.now()) == 1
    assert first[0] not in data_rows(harness)
    assert data_rows(harness)[second[0]][0] == "removed"
    assert data_rows(harness)[third[0]][0] == "stored"
    # Not due again for a day; the bound holds: nothing more.
    assert await retention.turn(harness.clock.now()) is None
    assert len(events(harness.path, "execution.data_removed")) == 2


async def test_the_guides_cleanup_deletes_and_records_captures(
    lab: Lab, nats_server: NatsServer
) -> None:
    """``SchedulerStorage.cleanup_old_executions`` removes captures as the daily pass does;
    without NATS it refuses while captures fall before the cut-off (no orphaned objects)."""
    harness = lab.harness
    old = [await capture(harness, lab.job_id, csv_bytes(100, i), store=lab.store) for i in (1, 2)]
    harness.clock.advance(timedelta(days=40))
    new = await capture(harness, lab.job_id, csv_bytes(100, 3), store=lab.store)

    no_bus = SchedulerStorage(store=harness.store, clock=harness.clock)
    with pytest.raises(CapturesNeedBucket) as refused:
        await asyncio.to_thread(no_bus.cleanup_old_executions, 30)
    assert (refused.value.execution_id, refused.value.count) == (old[0][0], 2)
    assert "no NATS was given" in str(refused.value)
    assert events(harness.path, "executions.pruned") == []
    for execution_id, data in old:
        assert await in_bucket(lab.store, data["object"])
        assert data_rows(harness)[execution_id][0] == "stored"

    storage = SchedulerStorage(
        store=harness.store, clock=harness.clock, nats=NatsOptions(url=nats_server.url)
    )
    assert await asyncio.to_thread(storage.cleanup_old_executions, 30) == 2
    for execution_id, data in old:
        assert not await in_bucket(lab.store, data["object"])
        assert execution_id not in data_rows(harness)
    assert await in_bucket(lab.store, new[1]["object"])
    removals = events(harness.path, "execution.data_removed")
    assert [(r["execution_id"], r["reason"]) for r in removals] == [
        (execution_id, "retention") for execution_id, _ in old
    ]
    async with api_client(harness, auth=False, data=lab.data) as client:
        response = await client.get(f"/api/scheduler/executions/{old[0][0]}/data")
    assert response.status_code == 410
    # Nothing left before the cut-off: no bus needed.
    assert await asyncio.to_thread(no_bus.cleanup_old_executions, 30) == 0
    assert_rebuild_matches(harness)


class Gated:
    """A real projection whose folds wait while ``gate`` is shut: a fold that lags."""

    def __init__(self, inner: Projection, gate: threading.Event) -> None:
        self.inner = inner
        self.gate = gate
        self.name = inner.name
        self.tables = inner.tables

    def create(self, db: sqlite_utils.Database) -> None:
        self.inner.create(db)

    def forget(self) -> None:
        self.inner.forget()

    def apply(self, conn: sqlite3.Connection, events: Sequence[RecordedEvent]) -> None:
        self.gate.wait(30)
        self.inner.apply(conn, events)


async def test_the_bound_does_not_remove_twice_behind_a_lagging_fold(
    tmp_path: Path,
    clock: ManualClock,
    nats_server: NatsServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The bound reads the stored captures from the views: while they have not folded its
    last removal, it raises ViewsBehind (the supervisor retries) instead of removing, and
    recording, the same capture again."""
    monkeypatch.setattr(storage_module, "SETTLE_SECONDS", 0.3)
    gate = threading.Event()
    gate.set()
    projector = Projector([Gated(p, gate) for p in default_projections()])
    harness = await Harness(
        tmp_path / "data" / "scheduler.db", clock, background=True, projector=projector
    ).start()
    data = DataBucket(NatsOptions(url=nats_server.url))
    try:
        async with bucket(nats_server.url) as store:
            job_id = harness.service.create_job(ACQUISITION, actor="alice")
            made = [await capture(harness, job_id, csv_bytes(100, i), store=store) for i in (1, 2)]
            retention = RetentionPass(
                harness.store, clock, days=0, data=data, max_bytes=made[1][1]["size"]
            )
            gate.clear()
            removed = await retention.enforce_bound(clock.now())
            assert [c.execution_id for c in removed] == [made[0][0]]
            with pytest.raises(ViewsBehind):
                await retention.enforce_bound(clock.now())
            gate.set()
            settle(harness)
            assert await retention.enforce_bound(clock.now()) == []
        assert [r["execution_id"] for r in events(harness.path, "execution.data_removed")] == [
            made[0][0]
        ]
    finally:
        gate.set()
        await data.aclose()
        await harness.close()
