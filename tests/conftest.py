"""Shared fixtures: real SQLite files in a temporary folder, an injected clock, a real
nats-server on a free loopback port."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from lablink.application import JobService
from lablink.bus.server import NatsServer
from lablink.clock import ManualClock
from lablink.eventstore.sqlite import SQLiteEventStore
from lablink.ids import SequentialIds
from lablink.logstore import open_store
from lablink.scheduler.testing import Harness, api_client

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # a Monday


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "scheduler.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[SQLiteEventStore]:
    opened = open_store(db_path)
    yield opened
    opened.close()


@pytest.fixture
def service(store: SQLiteEventStore, clock: ManualClock) -> JobService:
    return JobService(store, clock, default_timezone="Europe/Berlin", ids=SequentialIds())


@pytest.fixture
async def harness(tmp_path: Path, clock: ManualClock) -> AsyncIterator[Harness]:
    """A real engine on a real SQLite file, driven by the manual clock."""
    started = await Harness(tmp_path / "data" / "scheduler.db", clock).start()
    yield started
    await started.close()


@pytest.fixture
async def client(harness: Harness) -> AsyncIterator[httpx.AsyncClient]:
    """The real Litestar app over the harness's engine and store, auth off."""
    async with api_client(harness, auth=False) as test_client:
        yield test_client


@pytest.fixture
async def nats_server(tmp_path: Path) -> AsyncIterator[NatsServer]:
    """A private nats-server (JetStream under tmp_path, sync_interval always), stopped after."""
    server = await NatsServer(tmp_path / "nats").start()
    try:
        yield server
    finally:
        await server.stop()
