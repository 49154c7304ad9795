"""Captured data for the server side's tests, made the way an agent makes it: the object put
into the real ``LABLINK_DATA`` bucket of a real nats-server with nats-py, and the execution's
result (``result["data"]``, events/data.py) recorded through the engine's write path."""

from __future__ import annotations

import hashlib
import io
import json
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.js.errors import ObjectNotFoundError
from nats.js.object_store import ObjectStore

from lablink.bus.data_bucket import DataBucket
from lablink.bus.options import NatsOptions
from lablink.bus.server import NatsServer
from lablink.events import DATA_BUCKET
from lablink.instruments.execution import Outcome
from lablink.projections.reading import reading_views
from tests.support.harness import Harness

ACQUISITION: dict[str, Any] = {
    "name": "Line check",
    "schedule_type": "acquisition",
    "equipment_id": "oscilloscope_1",
    "trigger_type": "interval",
    "interval_hours": 1,
    "parameters": {"duration": 2, "sample_rate": 1000, "channels": [1, 2]},
}


def csv_bytes(rows: int, seed: int = 0) -> bytes:
    """A capture's file: a provenance header and ``rows`` rows of two channels."""
    lines = [f"# execution: {seed}", "time_s,ch1_V,ch2_V"]
    lines += [f"{i / 1000:.3f},{(i * 7 + seed) % 1000 / 100:.2f},{-i % 97}" for i in range(rows)]
    return ("\n".join(lines) + "\n").encode()


def descriptor(
    object_name: str, payload: bytes, *, status: str = "stored", file_name: str | None = None
) -> dict[str, Any]:
    return {
        "bucket": DATA_BUCKET,
        "object": object_name,
        "file_name": file_name or f"{object_name}.csv",
        "size": len(payload),
        "sha256": hashlib.sha256(payload).hexdigest(),
        "rows": payload.count(b"\n") - 2,
        "columns": [{"name": "time_s", "unit": "s"}, {"name": "ch1_V", "unit": "V"}],
        "sample_rate": 1000.0,
        "provenance": {"lablink_version": "test"},
        "status": status,
    }


def settle(harness: Harness) -> None:
    """Wait until the views show every event committed so far."""
    views = getattr(harness.store, "views", None)
    if views is not None:
        assert views.settled(30), "the views did not catch up"


@dataclass
class Lab:
    """A harness with an acquisition job, the bucket of a real nats-server (as a test puts
    objects into it) and the scheduler's DataBucket on the same server."""

    harness: Harness
    store: ObjectStore
    data: DataBucket
    job_id: str


@pytest.fixture
async def lab(harness: Harness, nats_server: NatsServer) -> AsyncIterator[Lab]:
    data = DataBucket(NatsOptions(url=nats_server.url))
    job_id = harness.service.create_job(ACQUISITION, actor="alice")
    try:
        async with bucket(nats_server.url) as store:
            yield Lab(harness, store, data, job_id)
    finally:
        await data.aclose()


async def in_bucket(store: ObjectStore, name: str) -> bool:
    try:
        await store.get_info(name)
    except ObjectNotFoundError:
        return False
    return True


def events(path: Path, kind: str) -> list[dict[str, Any]]:
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute(
            "SELECT stream_id, payload FROM events WHERE type = ? ORDER BY position", (kind,)
        ).fetchall()
    finally:
        conn.close()
    return [{"stream_id": s, **json.loads(p)} for s, p in rows]


def data_rows(harness: Harness) -> dict[str, tuple[str, str | None]]:
    """Each execution's (data_status, data) as the executions view holds them."""
    settle(harness)
    with reading_views(harness.store) as conn:
        return {
            e: (s, d)
            for e, s, d in conn.execute("SELECT execution_id, data_status, data FROM executions")
        }


@asynccontextmanager
async def bucket(url: str) -> AsyncIterator[ObjectStore]:
    """The LABLINK_DATA object store of the server at ``url`` (made if missing)."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        try:
            store = await js.object_store(DATA_BUCKET)
        except Exception:
            store = await js.create_object_store(DATA_BUCKET)
        yield store
    finally:
        await nc.close()


async def put(store: ObjectStore, name: str, payload: bytes) -> None:
    await store.put(name, io.BytesIO(payload))


async def capture(
    harness: Harness,
    job_id: str,
    payload: bytes,
    *,
    store: ObjectStore | None,
    status: str = "stored",
    when: datetime | None = None,
) -> tuple[str, dict[str, Any]]:
    """Run the job once (now, or fired at ``when``) and finish it with a capture of
    ``payload``: put into ``store`` first when ``status`` is stored. (execution id, data)."""
    harness.executor.hold = True
    if when is None:
        execution_id = await harness.engine.run_now(job_id)
        await harness.settle()
    else:
        await harness.at(when)
        execution_id = harness.executor.held()[-1]
    object_name = f"{job_id}/{execution_id}.csv"
    data = descriptor(object_name, payload, status=status)
    if status == "stored" and store is not None:
        await put(store, object_name, payload)
    harness.executor.release(execution_id, Outcome.ok(sample_count=data["rows"], data=data))
    harness.executor.hold = False
    await harness.settle()
    settle(harness)
    return execution_id, data
