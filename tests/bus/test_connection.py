"""The one place LabLink opens a long-lived NATS connection and makes sure of a stream
(``lablink.bus.connection``), used by the relay, the agent executor and the agents."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import nats.errors
import pytest
import structlog.testing
from nats.js import JetStreamContext
from nats.js.api import StorageType
from nats.js.errors import ServiceUnavailableError

from lablink.bus.connection import (
    DUPLICATE_WINDOW_SECONDS,
    close_nats,
    connect_nats,
    ensure_stream,
)
from lablink.bus.data_bucket import ensure_data_bucket
from lablink.bus.options import NatsOptions
from lablink.bus.server import NatsServer
from lablink.events import DATA_BUCKET
from tests.support.eventually import eventually

pytestmark = pytest.mark.nats


async def test_a_missing_stream_is_created_once_with_lablinks_settings(
    nats_server: NatsServer,
) -> None:
    nc = await connect_nats(NatsOptions(url=nats_server.url), name="lablink-test")
    try:
        js = nc.jetstream()
        created = await ensure_stream(
            js, "LABLINK_TEST", ["lablink.test.>"], replicas=1, max_age=3600.0
        )
        again = await ensure_stream(js, "LABLINK_TEST", ["lablink.other.>"], replicas=1)
        config = (await js.stream_info("LABLINK_TEST")).config
    finally:
        await nc.close()
    assert (created, again) == (True, False)
    # The second call found it and changed nothing.
    assert config.subjects == ["lablink.test.>"]
    assert config.storage == StorageType.FILE
    assert config.duplicate_window == DUPLICATE_WINDOW_SECONDS
    assert config.max_age == 3600.0
    assert config.num_replicas == 1


async def test_a_long_lived_connection_reconnects_for_ever_unless_told_otherwise(
    nats_server: NatsServer,
) -> None:
    options = NatsOptions(url=nats_server.url)
    forever = await connect_nats(options, name="lablink-forever")
    once = await connect_nats(
        options, name="lablink-once", allow_reconnect=False, max_reconnect_attempts=1
    )
    try:
        assert forever.options["max_reconnect_attempts"] == -1
        assert forever.options["reconnect_time_wait"] == 0.5
        assert forever.options["name"] == "lablink-forever"
        assert once.options["allow_reconnect"] is False
        assert once.options["max_reconnect_attempts"] == 1
    finally:
        await forever.close()
        await once.close()


async def test_closing_a_connection_that_is_reconnecting_ends_its_reconnect_loop(
    tmp_path: Path,
) -> None:
    # Back-to-back attempts against a stopped server: nats-py's own close() left the loop
    # running in about 6 tries of 10 here (its cancel lost as an attempt failed), and the
    # process that closed it never exited.
    async def quiet(exc: Exception) -> None:
        pass

    server = await NatsServer(tmp_path / "nats").start()
    url = server.url
    await server.stop()
    for _ in range(10):
        restarted = await NatsServer(tmp_path / "nats", port=int(url.rsplit(":", 1)[1])).start()
        nc = await connect_nats(
            NatsOptions(url=url), name="lablink-test", reconnect_time_wait=0.0, error_cb=quiet
        )
        await restarted.stop()
        await eventually(lambda nc=nc: nc.is_reconnecting, what="reconnecting")  # type: ignore[misc]
        await close_nats(nc)
        assert nc.is_closed
        reconnecting = nc._reconnection_task
        assert reconnecting is None or reconnecting.done()


async def test_a_stream_is_made_once_a_stopped_server_answers_again(
    nats_server: NatsServer,
) -> None:
    """A JetStream that does not answer (here its server stopped by pid, as a server still
    recovering on a busy machine would be silent) is asked again until it does: `lablink
    serve` failed to start once in CI when the first request timed out."""
    async with stopped(nats_server, resume_after=2.0, api_timeout=0.5) as js:
        with structlog.testing.capture_logs() as logs:
            created = await ensure_stream(js, "LABLINK_SLOW", ["lablink.slow.>"], replicas=1)
        assert created is True
        assert any(e["event"] == "JetStream did not answer: asking again" for e in logs)
        assert (await js.stream_info("LABLINK_SLOW")).config.subjects == ["lablink.slow.>"]


async def test_a_server_that_never_answers_fails_the_stream_after_its_deadline(
    nats_server: NatsServer,
) -> None:
    async with stopped(nats_server, resume_after=None, api_timeout=0.3) as js:
        with pytest.raises(nats.errors.TimeoutError):
            await ensure_stream(js, "LABLINK_NEVER", ["lablink.never.>"], replicas=1, within=1)


async def test_the_data_bucket_is_made_once_a_stopped_server_answers_again(
    nats_server: NatsServer,
) -> None:
    """As the streams: a cluster's `lablink serve` stopped at start in CI when its first
    request for the captures' bucket timed out while the cluster was forming."""
    async with stopped(nats_server, resume_after=2.0, api_timeout=0.5) as js:
        with structlog.testing.capture_logs() as logs:
            await ensure_data_bucket(js)
        assert [e["bucket"] for e in logs if e["event"] == "JetStream did not answer: asking again"]
        assert any(e["event"] == "object store bucket created" for e in logs)
        assert (await js.object_store(DATA_BUCKET)) is not None
        # Made once: asked again, it is found.
        with structlog.testing.capture_logs() as again:
            await ensure_data_bucket(js)
        assert not any(e["event"] == "object store bucket created" for e in again)


async def test_a_server_that_never_answers_fails_the_bucket_after_its_deadline(
    nats_server: NatsServer,
) -> None:
    async with stopped(nats_server, resume_after=None, api_timeout=0.3) as js:
        with pytest.raises(nats.errors.TimeoutError):
            await ensure_data_bucket(js, within=1)


@contextlib.asynccontextmanager
async def stopped(
    server: NatsServer, *, resume_after: float | None, api_timeout: float
) -> AsyncIterator[JetStreamContext]:
    """A JetStream context on ``server``, the server stopped by pid (SIGSTOP) meanwhile and
    continued after ``resume_after`` seconds (None: only at the end)."""
    pid = server.pid
    assert pid is not None
    nc = await connect_nats(NatsOptions(url=server.url), name="lablink-test")
    os.kill(pid, signal.SIGSTOP)
    resumed = (
        None
        if resume_after is None
        else asyncio.get_running_loop().call_later(resume_after, os.kill, pid, signal.SIGCONT)
    )
    try:
        yield nc.jetstream(timeout=api_timeout)
    finally:
        if resumed is not None:
            resumed.cancel()
        os.kill(pid, signal.SIGCONT)
        await nc.close()


async def test_a_jetstream_not_available_yet_is_asked_again_until_it_is(tmp_path: Path) -> None:
    """A server whose JetStream is not up (here: a plain nats-server, whose $JS API has no
    responders; a cluster electing its meta-leader answers 503 the same way) is asked again,
    not given up on at the first answer; JetStream comes up on the same port, and the stream
    is made."""
    plain = await NatsServer(
        tmp_path / "plain", config="listen: 127.0.0.1:-1\nserver_name: plain\n"
    ).start()
    port = plain.port
    nc = await connect_nats(NatsOptions(url=plain.url), name="lablink-test")
    js = nc.jetstream(timeout=2.0)
    later: NatsServer | None = None

    async def jetstream_comes_up() -> None:
        nonlocal later
        await asyncio.sleep(1.0)
        await plain.stop()
        later = await NatsServer(tmp_path / "js", port=port).start()

    try:
        with structlog.testing.capture_logs() as logs:
            coming = asyncio.create_task(jetstream_comes_up())
            created = await ensure_stream(
                js, "LABLINK_LATE", ["lablink.late.>"], replicas=1, within=60
            )
            await coming
        assert created is True
        asked = [e for e in logs if e["event"] == "JetStream did not answer: asking again"]
        assert any(e["error"] == "ServiceUnavailableError" for e in asked)
        assert (await js.stream_info("LABLINK_LATE")).config.subjects == ["lablink.late.>"]
    finally:
        await nc.close()
        if later is not None:
            await later.stop()
        await plain.stop()


async def test_a_jetstream_that_never_comes_up_fails_after_the_deadline(tmp_path: Path) -> None:
    plain = await NatsServer(
        tmp_path / "plain", config="listen: 127.0.0.1:-1\nserver_name: plain\n"
    ).start()
    nc = await connect_nats(NatsOptions(url=plain.url), name="lablink-test")
    try:
        js = nc.jetstream(timeout=2.0)
        with structlog.testing.capture_logs() as logs, pytest.raises(ServiceUnavailableError):
            await ensure_stream(js, "LABLINK_NEVER", ["lablink.x.>"], replicas=1, within=1)
        # Asked again meanwhile, not in a tight loop (a pause between the answers).
        asked = [e for e in logs if e["event"] == "JetStream did not answer: asking again"]
        assert 1 <= len(asked) <= 10
    finally:
        await nc.close()
        await plain.stop()
