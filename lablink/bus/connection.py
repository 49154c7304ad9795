"""Opening a NATS connection and making sure of a JetStream stream, for every LabLink process
that holds one for long: the relay, the scheduler's agent executor and the agents.

A long-lived connection reconnects for ever by default, so a process rides out an outage of
NATS; the relay passes its own settings, because it must not (see ``bus.relay``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import nats
import nats.errors
import structlog
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import PersistMode, StorageType, StreamConfig
from nats.js.errors import NotFoundError, ServiceUnavailableError

from lablink.bus.options import NatsOptions

log = structlog.get_logger(tag="bus")

T = TypeVar("T")

# Reconnect for ever, soon after a loss.
RECONNECT_FOREVER: dict[str, Any] = {"max_reconnect_attempts": -1, "reconnect_time_wait": 0.5}


async def quiet(exc: Exception) -> None:
    """nats-py's error callback that logs nothing: the caller reports the failure itself
    (the default prints a traceback per attempt)."""
    return None


# One attempt, for a command that reads once and says so when the bus is away.
ONE_ATTEMPT: dict[str, Any] = {
    "connect_timeout": 3,
    "allow_reconnect": False,
    "max_reconnect_attempts": 1,
    "reconnect_time_wait": 0.2,
    "error_cb": quiet,
}
# How long JetStream remembers a Nats-Msg-Id to drop a duplicate publish (seconds).
DUPLICATE_WINDOW_SECONDS = 600.0


async def connect_nats(options: NatsOptions, *, name: str, **settings: Any) -> NATS:
    """A connection to ``options``' servers as its user, named ``name`` (nats-server shows
    it in its connection list); ``settings`` are nats-py's, over ``RECONNECT_FOREVER``."""
    return await nats.connect(
        **options.connect_kwargs(), name=name, **{**RECONNECT_FOREVER, **settings}
    )


async def close_nats(nc: NATS, *, within: float = 5.0) -> None:
    """Close ``nc`` and make sure its reconnect loop has ended, within about ``within`` s.

    nats-py's ``close()`` cancels the loop that reconnects a lost connection, once. On
    Python 3.11 that cancel is lost when it lands as a connect attempt fails
    (``asyncio.wait_for`` returns the failure instead), the loop retries for ever, and
    ``asyncio.run`` waits for it for ever at exit: a ``lablink agent`` told to stop while its
    server was away hung (about 6 closes in 10 with back-to-back attempts). A positive
    attempt limit lets the loop end by itself, and the cancel is repeated until it took."""
    # Read by the loop before each attempt; every server has failed at least once by now.
    nc.options["max_reconnect_attempts"] = 1
    with contextlib.suppress(Exception):
        async with asyncio.timeout(within):
            await nc.close()
    reconnecting: asyncio.Task[None] | None = getattr(nc, "_reconnection_task", None)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while reconnecting is not None and not reconnecting.done() and loop.time() < deadline:
        reconnecting.cancel()
        await asyncio.wait({reconnecting}, timeout=0.05)


# How long a stream's creation waits for a JetStream that does not answer (seconds).
STREAM_ANSWER_SECONDS = 60.0


async def ensure_stream(
    js: JetStreamContext,
    name: str,
    subjects: Sequence[str],
    *,
    replicas: int,
    max_age: float | None = None,
    copy: bool = False,
    within: float = STREAM_ANSWER_SECONDS,
) -> bool:
    """Create the file-backed stream ``name`` unless it exists; True when it was created
    (it was missing: whoever fills it may have to start again from the beginning).

    ``copy``: the stream only copies a record kept elsewhere, and whoever fills it repairs a
    lost tail from that record. nats-server then acknowledges before its disk has the message
    (``persist_mode: async``, nats-server 2.12+, R1 only) instead of one fsync per message;
    ``sync_interval: always`` still holds for every other stream. A stream made before keeps
    the mode it was made with (nats-server refuses to change it).

    A JetStream that does not answer yet, or says it is not available yet, is asked again
    until ``within`` has passed (``asked_again``)."""

    async def ensure() -> bool:
        try:
            await js.stream_info(name)
        except NotFoundError:
            await js.add_stream(
                StreamConfig(
                    name=name,
                    subjects=list(subjects),
                    storage=StorageType.FILE,
                    duplicate_window=DUPLICATE_WINDOW_SECONDS,
                    max_age=max_age,
                    num_replicas=replicas,
                    persist_mode=PersistMode.ASYNC if copy and replicas == 1 else None,
                )
            )
            return True
        return False

    return await asked_again(ensure, within=within, stream=name)


async def asked_again(
    ask: Callable[[], Awaitable[T]], *, within: float = STREAM_ANSWER_SECONDS, **named: str
) -> T:
    """``ask()``, asked again while JetStream does not answer (a server just started and
    still recovering its streams, or a cluster still electing its leaders, on a busy
    machine) or says it is not available yet (no responders for its API, or 503: a
    meta-leader being elected, a server whose JetStream is still starting) until ``within``
    has passed; ``named`` says what was asked in the warning."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        try:
            return await ask()
        except (nats.errors.TimeoutError, ServiceUnavailableError) as exc:
            if loop.time() >= deadline:
                raise
            log.warning("JetStream did not answer: asking again", error=type(exc).__name__, **named)
            if isinstance(exc, ServiceUnavailableError):
                # Answered at once (a timeout has waited already): not a tight loop meanwhile.
                await asyncio.sleep(min(0.25, max(0.0, deadline - loop.time())))
