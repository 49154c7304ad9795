"""The supervisor every background loop runs under: a body that raises or returns is logged,
counted, shown failing in health with the last error and since when, and started again after
a capped exponential backoff; ``ok()`` puts it back to ok and starts the backoff over."""

from __future__ import annotations

import asyncio

import pytest

from lablink.clock import ManualClock
from lablink.health import Health
from lablink.supervision import Backoff, Supervisor, Watch, describe
from tests.conftest import START
from tests.support.eventually import eventually


def test_backoff_doubles_up_to_its_cap_and_starts_over() -> None:
    backoff = Backoff(0.5, 4.0)
    delays = [backoff.next() for _ in range(6)]
    for delay, nominal in zip(delays, [0.5, 1.0, 2.0, 4.0, 4.0, 4.0], strict=True):
        assert nominal * 0.9 <= delay <= nominal * 1.1
    backoff.reset()
    assert backoff.next() <= 0.55
    with pytest.raises(ValueError, match="initial"):
        Backoff(2.0, 1.0)


def test_describe_names_the_cause_the_message_would_hide() -> None:
    try:
        try:
            raise OSError(28, "No space left on device")
        except OSError as exc:
            raise RuntimeError("append failed") from exc
    except RuntimeError as error:
        text = describe(error)
    assert (
        text
        == "RuntimeError: append failed (caused by OSError: [Errno 28] No space left on device)"
    )


async def test_a_failing_body_is_restarted_shown_failing_and_recovers() -> None:
    clock = ManualClock(START)
    health = Health(clock)
    supervisor = Supervisor(health, initial_backoff=0.01, max_backoff=0.05)
    runs: list[int] = []

    async def body(watch: Watch) -> None:
        runs.append(len(runs))
        if len(runs) <= 3:
            raise OSError(28, "No space left on device")
        watch.ok("working")
        await watch.sleep(3600)

    watch = supervisor.spawn("task.flaky", body)
    await eventually(lambda: len(runs) >= 2, interval=0.01, what="a restart")
    entry = health.get("task.flaky")
    assert entry is not None
    assert entry.state == "failing"
    assert entry.since == START
    assert "No space left on device" in entry.reason
    assert entry.details["last_error"] == entry.reason

    await eventually(lambda: len(runs) == 4, interval=0.01, what="the fourth run")
    await eventually(lambda: watch.failing_since is None, interval=0.01, what="recovery")
    entry = health.get("task.flaky")
    assert entry is not None
    assert (entry.state, entry.reason, entry.details["failures"]) == ("ok", "working", 3)
    await supervisor.aclose()
    assert health.get("task.flaky") is None


async def test_a_body_that_returns_by_itself_is_started_again() -> None:
    health = Health(ManualClock(START))
    supervisor = Supervisor(health, initial_backoff=0.01, max_backoff=0.02)
    runs = 0

    async def body(watch: Watch) -> None:
        nonlocal runs
        runs += 1

    watch = supervisor.spawn("task.quitter", body)
    await eventually(lambda: runs >= 3, interval=0.01, what="restarts")
    assert watch.last_error == "RuntimeError: task.quitter returned by itself"
    await supervisor.aclose()


async def test_close_stops_bodies_and_cancels_those_that_do_not_listen() -> None:
    health = Health(ManualClock(START))
    supervisor = Supervisor(health)
    stopped = asyncio.Event()
    cancelled = asyncio.Event()

    async def polite(watch: Watch) -> None:
        await watch.sleep(3600)
        stopped.set()

    async def deaf(watch: Watch) -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    supervisor.spawn("task.polite", polite)
    supervisor.spawn("task.deaf", deaf)
    with pytest.raises(ValueError, match="already supervised"):
        supervisor.spawn("task.polite", polite)
    await asyncio.sleep(0)
    await supervisor.aclose(grace_seconds=0.2)
    assert stopped.is_set()
    assert cancelled.is_set()
    assert "task.polite" not in supervisor
