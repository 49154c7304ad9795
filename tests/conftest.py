"""Shared fixtures: real SQLite files in a temporary folder, an injected clock, a real
nats-server on a free loopback port. And the suite's markers (``tests/support/marks.py``):
applied by fixture, and checked against the child processes each test starts."""

from __future__ import annotations

import subprocess
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
from tests.support.harness import Harness, api_client
from tests.support.marks import ChildWatch

# `servers`: every `lablink serve` a test starts is stopped afterwards, pass or fail.
from tests.support.serve import servers  # noqa: F401

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # a Monday

# Fixtures that start a nats-server: a test using one, even through another fixture, is `nats`.
# A test that starts one any other way carries the mark itself (the child watch below says so).
NATS_FIXTURES = {"nats_server"}
# A test over this long without the `slow` mark is listed at the end of the run (a hint only:
# on a loaded machine any test can take longer, and that must not fail it).
SLOW_SECONDS = 5.0


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if NATS_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.nats)


@pytest.fixture(autouse=True)
def children_match_marks(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ChildWatch]:
    """Fails a test that starts a nats-server or a `lablink` process without its mark."""
    watch = ChildWatch(request.node.nodeid, {mark.name for mark in request.node.iter_markers()})
    monkeypatch.setattr(subprocess, "Popen", watch.popen())
    yield watch
    watch.finish()


_unmarked_slow: list[tuple[str, float]] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" and report.duration > SLOW_SECONDS and "slow" not in report.keywords:
        _unmarked_slow.append((report.nodeid, report.duration))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _unmarked_slow:
        terminalreporter.section(f"over {SLOW_SECONDS:g} s without the slow mark")
        for nodeid, duration in sorted(_unmarked_slow, key=lambda found: -found[1]):
            terminalreporter.write_line(f"{duration:7.1f} s  {nodeid}")


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
