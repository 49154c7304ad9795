"""The JetStream store's requests to NATS: connecting, making sure of the record's stream,
publishing one event or an atomic batch, and asking where the stream ends.

Raw requests to the JetStream API, not nats-py's helpers: nats-py (2.16) knows neither atomic
batches nor their acknowledgement, and an acknowledgement's error code is what the store
decides on (10071: a stale expectation; 10201: an event id already recorded). Everything here
runs on the store's own event loop (``loop_thread``). ``eventstore`` sits below ``bus`` in the
package map, so the connection settings are its own (``JetStreamOptions``), not the bus's.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import nats
import nats.errors
from nats.aio.client import Client as NATS
from nats.nuid import NUID

from lablink.eventstore.record_format import SUBJECTS

# The stream's own error codes that the store tells apart.
WRONG_LAST_SEQUENCE = 10071
# The same refusal as an atomic batch's commit answers it (2.15.1: "wrong last sequence",
# no number).
BATCH_WRONG_LAST_SEQUENCE = 10164
STALE_EXPECTATION = frozenset({WRONG_LAST_SEQUENCE, BATCH_WRONG_LAST_SEQUENCE})
# In a cluster the same code answers a publish whose expectation names a subject on which
# another publish carrying an expectation is proposed and not yet applied: refused outright,
# nothing written, whatever the expectation (measured on 2.15.1: of 50 fenced publishes sent
# at once, 49 came back so). For one message it means only that, and it is sent again
# (``in_process``); for a batch it may also be a stale expectation, told apart by reading
# the record (``expectations_hold``).
IN_PROCESS = BATCH_WRONG_LAST_SEQUENCE
# Pauses between sends of a publish refused as in process: from a few milliseconds (one
# Raft commit on loopback) up to 50 ms.
IN_PROCESS_PAUSE = (0.002, 0.05)
BATCH_DUPLICATE_ID = 10201
STREAM_NOT_FOUND = 10059
JETSTREAM_NOT_READY = 10008
NO_MESSAGE = 10037
# ADR-50: an atomic batch holds at most 1,000 messages.
MAX_BATCH = 1000
EXPECTED_SEQUENCE = "Nats-Expected-Last-Subject-Sequence"
EXPECTED_SUBJECT = "Nats-Expected-Last-Subject-Sequence-Subject"
# The record's stream, beside the relay's LABLINK_EVENTS (a copy of the SQLite log).
RECORD_STREAM = "LABLINK_LOG"


@dataclass(frozen=True)
class JetStreamOptions:
    """Where the record is and who the store is there. ``servers``: nats:// or tls:// URLs
    of the cluster's nodes (any of them will do; the client moves to another when one goes)."""

    servers: tuple[str, ...]
    user: str | None = None
    password: str | None = None
    credentials: str | None = None  # a .creds file
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    # The reply inbox; a user allowed only its own (``_INBOX.<user>``) must say so.
    inbox_prefix: str | None = None
    stream: str = RECORD_STREAM
    replicas: int = 1
    # How long JetStream remembers an event id to drop a repeated publish of it.
    duplicate_window: float = 600.0

    def connect_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"servers": list(self.servers)}
        if self.inbox_prefix:
            kwargs["inbox_prefix"] = self.inbox_prefix
        if self.user:
            kwargs.update(user=self.user, password=self.password)
        if self.credentials:
            kwargs["user_credentials"] = self.credentials
        if self.tls_ca or self.tls_cert:
            context = ssl.create_default_context(cafile=self.tls_ca)
            if self.tls_cert:
                context.load_cert_chain(self.tls_cert, self.tls_key)
            kwargs["tls"] = context
        return kwargs

    def shown(self) -> str:
        """For errors and logs: the servers and the stream, never a password."""
        return f"{self.stream} on {','.join(self.servers)}"


class Ack(msgspec.Struct, frozen=True, kw_only=True):
    """JetStream's answer to a publish or a batch commit."""

    stream: str = ""
    seq: int = 0
    duplicate: bool = False
    batch: str | None = None
    count: int | None = None
    error_code: int | None = None
    description: str = ""

    @property
    def ok(self) -> bool:
        return self.error_code is None


class ApiError(Exception):
    """The JetStream API refused a request (``code``: its err_code)."""

    def __init__(self, code: int, description: str) -> None:
        self.code = code
        self.description = description
        super().__init__(f"{description} (err_code {code})")


async def _quiet(exc: Exception) -> None:
    """nats-py's error callback: the store reports failures itself, with what it was doing."""
    return None


async def connect(options: JetStreamOptions, *, name: str, within: float) -> NATS:
    """A connection that reconnects for ever (a replica rides out a node's loss)."""
    return await nats.connect(
        **options.connect_kwargs(),
        name=name,
        connect_timeout=within,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        error_cb=_quiet,
    )


async def close(nc: NATS, within: float = 5.0) -> None:
    """Close ``nc``, making sure its reconnect loop ends (see ``lablink.bus.connection``'s
    ``close_nats`` for why nats-py's close alone may leave it running)."""
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


async def api(nc: NATS, subject: str, body: dict[str, Any] | None, within: float) -> Any:
    """One JetStream API request; its error raised as ``ApiError``."""
    payload = json.dumps(body).encode() if body is not None else b""
    reply = await nc.request(subject, payload, timeout=within)
    answer = json.loads(reply.data)
    error = answer.get("error")
    if error:
        raise ApiError(int(error.get("err_code", 0)), str(error.get("description", "")))
    return answer


def stream_config(options: JetStreamOptions) -> dict[str, Any]:
    return {
        "name": options.stream,
        "subjects": [SUBJECTS],
        "storage": "file",
        "retention": "limits",
        "num_replicas": options.replicas,
        "duplicate_window": int(options.duplicate_window * 1e9),
        "allow_atomic": True,
        # The lease's messages expire by their own TTL (``Nats-TTL``); events carry none.
        "allow_msg_ttl": True,
        # The record only grows, as the SQLite log does (its triggers).
        "deny_delete": True,
        "deny_purge": True,
    }


async def ensure_stream(nc: NATS, options: JetStreamOptions, *, deadline: float) -> dict[str, Any]:
    """The record's stream, made if missing (its info). A stream made before is kept as it
    is, but for atomic batches, which are switched on if they are off. While a cluster is
    forming (no meta leader yet, nodes still starting) the request is tried again until
    ``deadline`` (the loop's clock)."""
    loop = asyncio.get_running_loop()
    name = options.stream
    while True:
        remaining = max(0.5, min(5.0, deadline - loop.time()))
        try:
            try:
                info: dict[str, Any] = await api(nc, f"$JS.API.STREAM.INFO.{name}", None, remaining)
            except ApiError as exc:
                if exc.code != STREAM_NOT_FOUND:
                    raise
                created: dict[str, Any] = await api(
                    nc, f"$JS.API.STREAM.CREATE.{name}", stream_config(options), remaining
                )
                return created
            config = info["config"]
            if not config.get("allow_atomic") or not config.get("allow_msg_ttl"):
                info = await api(
                    nc,
                    f"$JS.API.STREAM.UPDATE.{name}",
                    {**config, "allow_atomic": True, "allow_msg_ttl": True},
                    remaining,
                )
            return info
        except (ApiError, nats.errors.TimeoutError, nats.errors.NoRespondersError) as exc:
            retryable = not isinstance(exc, ApiError) or exc.code == JETSTREAM_NOT_READY
            if not retryable or loop.time() >= deadline:
                raise
            await asyncio.sleep(0.25)


async def last_sequence(nc: NATS, stream: str, within: float) -> int:
    """Where the record ends now (its last stream sequence)."""
    info = await api(nc, f"$JS.API.STREAM.INFO.{stream}", None, within)
    return int(info["state"]["last_seq"])


async def message_id_at(nc: NATS, stream: str, seq: int, within: float) -> str | None:
    """The Nats-Msg-Id of the record's message at ``seq`` (None if it has none or there is no
    such message)."""
    try:
        answer = await api(nc, f"$JS.API.STREAM.MSG.GET.{stream}", {"seq": seq}, within)
    except ApiError as exc:
        if exc.code == NO_MESSAGE:
            return None
        raise
    raw = answer.get("message", {}).get("hdrs")
    if not raw:
        return None
    for line in base64.b64decode(raw).decode(errors="replace").split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "nats-msg-id":
            return value.strip()
    return None


async def next_sequence_on(nc: NATS, stream: str, subjects: str, start: int, within: float) -> int:
    """The sequence of the record's first message at or after ``start`` on ``subjects`` (a
    wildcard allowed); 0 when there is none."""
    try:
        answer = await api(
            nc,
            f"$JS.API.STREAM.MSG.GET.{stream}",
            {"seq": start, "next_by_subj": subjects},
            within,
        )
    except ApiError as exc:
        if exc.code == NO_MESSAGE:
            return 0
        raise
    return int(answer.get("message", {}).get("seq", 0))


async def last_message_sequence(nc: NATS, stream: str, within: float) -> int:
    """The sequence of the record's last message still there (0 for none). Not the stream's
    ``last_seq``: that may be a lease message expired since, which no consumer delivers."""
    try:
        answer = await api(
            nc, f"$JS.API.STREAM.MSG.GET.{stream}", {"last_by_subj": SUBJECTS}, within
        )
    except ApiError as exc:
        if exc.code == NO_MESSAGE:
            return 0
        raise
    return int(answer["message"]["seq"])


async def last_subject_sequence(nc: NATS, stream: str, subject: str, within: float) -> int:
    """The sequence of the last message on ``subject`` (wildcards allowed), 0 for none."""
    try:
        answer = await api(
            nc, f"$JS.API.STREAM.MSG.GET.{stream}", {"last_by_subj": subject}, within
        )
    except ApiError as exc:
        if exc.code == NO_MESSAGE:
            return 0
        raise
    return int(answer["message"]["seq"])


async def expectations_hold(
    nc: NATS, stream: str, expectations: Sequence[dict[str, str]], within: float
) -> bool:
    """Whether the record meets each expectation now (each names its subject): a batch
    refused with ``IN_PROCESS`` while they do was refused for a publish in process."""
    for headers in expectations:
        if not headers:
            continue
        subject = headers[EXPECTED_SUBJECT]
        last = await last_subject_sequence(nc, stream, subject, within)
        if last != int(headers[EXPECTED_SEQUENCE]):
            return False
    return True


def in_process(ack: Ack, messages: int) -> bool:
    """One message refused only because another publish expecting on the same subject is in
    process (a cluster): nothing was written, and it may be sent again."""
    return messages == 1 and ack.error_code == IN_PROCESS


def ack_of(data: bytes) -> Ack:
    answer = json.loads(data) if data else {}
    error = answer.get("error")
    return Ack(
        stream=str(answer.get("stream", "")),
        seq=int(answer.get("seq", 0)),
        duplicate=bool(answer.get("duplicate", False)),
        batch=answer.get("batch"),
        count=answer.get("count"),
        error_code=int(error.get("err_code", 0)) if error else None,
        description=str(error.get("description", "")) if error else "",
    )


Message = tuple[str, dict[str, str], bytes]  # subject, headers, body


async def publish(
    nc: NATS,
    messages: Sequence[Message],
    expectation: dict[str, str],
    within: float,
    *,
    later: dict[str, str] | None = None,
) -> Ack:
    """Record ``messages``: one as a plain publish, several as one atomic batch (all or
    nothing), ``expectation`` (the optimistic check's headers) on the first only, as ADR-50
    requires. The batch's messages but the last go without a reply: the commit's ack says
    whether all of them were recorded. ``later``: expectations for the second message (the
    lease's fence beside the aggregate's; 2.15.1 enforces it there too, judged against the
    stream before the batch). nats-py's errors (a timeout, no responders, a closed
    connection) are raised as they are."""
    if len(messages) == 1:
        subject, headers, body = messages[0]
        reply = await nc.request(subject, body, timeout=within, headers={**headers, **expectation})
        return ack_of(reply.data)
    if len(messages) > MAX_BATCH:
        raise ValueError(f"{len(messages)} messages are over the {MAX_BATCH} of an atomic batch")
    batch_id = NUID().next().decode()
    last = len(messages)
    for index, (subject, headers, body) in enumerate(messages, start=1):
        batch = {**headers, "Nats-Batch-Id": batch_id, "Nats-Batch-Sequence": str(index)}
        if index == 1:
            batch.update(expectation)
        elif index == 2 and later:
            batch.update(later)
        if index < last:
            await nc.publish(subject, body, headers=batch)
            continue
        batch["Nats-Batch-Commit"] = "1"
        reply = await nc.request(subject, body, timeout=within, headers=batch)
        return ack_of(reply.data)
    raise AssertionError("unreachable: a batch has a last message")
