"""The scheduler's lease: which replica fires (issue 18), held in the record's own stream.

The lease is the subject ``lablink.log.~lease.scheduler`` of ``LABLINK_LOG`` (a fence's
expectation must name a subject of the stream it publishes to). Its messages carry a JSON
body ``{"replica", "epoch", "ttl_seconds", "at"}`` and a per-message TTL (``Nats-TTL``), so
JetStream itself ends a lease nobody renews: once the last lease message has expired the
subject's last sequence is 0 again (the stream sets no ``subject_delete_marker_ttl``: a
marker would hold a sequence of its own, and taking over would need a read before the
compare-and-set). Hence:

- **Acquire** (and take over): publish with ``Nats-Expected-Last-Subject-Sequence: 0``. One
  compare-and-set; refused (10071) while a lease message lives.
- **Renew**: publish with the expectation of the holder's last lease message. Refused if
  anyone else wrote the subject since, or if it expired (the subject is at 0 again). In a
  cluster a claim meeting one of the holder's fenced appends in process is refused without
  being judged (``record_link.IN_PROCESS``): it is sent again, not taken for a refusal.
- **Take over a lease that outlived its TTL**: a follower that has seen the same lease
  message for 1.2 × its TTL (by its own monotonic clock, from when it first read it, which
  is after the message was stored) publishes expecting *that* message, with a new epoch.
  JetStream should have removed it before; where it did not (measured here: once in 20
  failovers with the stream leader's node killed, nats-server 2.15.1, the holder's last
  renewal outlived its TTL for good; nats-server #7256 reports per-message TTLs not
  respected), the cluster would otherwise stay without a leader. No holder can still be
  firing on it: a holder renews every TTL/3 (each renewal a new message) and stops 0.6 ×
  TTL after sending its last good one, and a holder paused outright is fenced (its fence
  expects the message taken over).
- **Epoch**: the stream sequence of the acquiring message, monotonic across takeovers. The
  acquiring message's body says ``epoch: 0`` (its own sequence is not known before it is
  stored); renewals name the epoch they continue.
- **Fence**: an append that expects the subject's last sequence to be the holder's last lease
  message is recorded only while the holder's lease is the live one.

Everything here is asyncio on the connection's own loop (the store's, ``loop_thread``).
"""

from __future__ import annotations

import asyncio
import base64
import json
from dataclasses import dataclass
from datetime import datetime

import nats.errors
from nats.aio.client import Client as NATS

from lablink.eventstore.record_format import LEASE_SUBJECT
from lablink.eventstore.record_link import (
    EXPECTED_SEQUENCE,
    EXPECTED_SUBJECT,
    IN_PROCESS_PAUSE,
    NO_MESSAGE,
    STALE_EXPECTATION,
    ApiError,
    ack_of,
    api,
    in_process,
)

TTL_HEADER = "Nats-TTL"
DEFAULT_TTL = 5.0
# JetStream's TTLs are whole seconds at least one long.
MIN_TTL = 1.0


@dataclass(frozen=True)
class LeaseRecord:
    """One lease message: who holds it, since which epoch, its TTL, when it was written (the
    holder's wall clock, for people), and its stream sequence (what a fence expects)."""

    replica: str
    epoch: int
    ttl_seconds: float
    at: str
    seq: int


@dataclass(frozen=True)
class Fence:
    """The expectation a fenced append carries: the lease's last message is ``seq``, written
    by ``replica`` for ``epoch``."""

    replica: str
    epoch: int
    seq: int

    def headers(self) -> dict[str, str]:
        return {EXPECTED_SEQUENCE: str(self.seq), EXPECTED_SUBJECT: LEASE_SUBJECT}


def ttl_header(ttl: float) -> str:
    if ttl < MIN_TTL:
        raise ValueError(f"a lease TTL of {ttl:g} s is under JetStream's {MIN_TTL:g} s")
    return f"{ttl:g}s"


def body_of(replica: str, epoch: int, ttl: float, at: datetime) -> bytes:
    return json.dumps(
        {"replica": replica, "epoch": epoch, "ttl_seconds": ttl, "at": at.isoformat()}
    ).encode()


def record_of(seq: int, body: bytes) -> LeaseRecord:
    data = json.loads(body)
    epoch = int(data.get("epoch") or 0)
    return LeaseRecord(
        replica=str(data["replica"]),
        epoch=epoch or seq,  # the acquiring message: its own sequence
        ttl_seconds=float(data["ttl_seconds"]),
        at=str(data.get("at", "")),
        seq=seq,
    )


async def read_lease(nc: NATS, stream: str, within: float) -> LeaseRecord | None:
    """The live lease (its last message), None when there is none."""
    try:
        answer = await api(
            nc, f"$JS.API.STREAM.MSG.GET.{stream}", {"last_by_subj": LEASE_SUBJECT}, within
        )
    except ApiError as exc:
        if exc.code == NO_MESSAGE:
            return None
        raise
    message = answer["message"]
    return record_of(int(message["seq"]), base64.b64decode(message.get("data") or b""))


async def claim(
    nc: NATS,
    *,
    replica: str,
    ttl: float,
    after: LeaseRecord | None,
    at: datetime,
    within: float,
    take_over: bool = False,
) -> LeaseRecord | None:
    """Acquire (``after`` None: expects no live lease), renew (``after``: the holder's last
    lease message) or, with ``take_over``, acquire over ``after`` (a lease message that
    outlived its TTL: a new epoch) by one compare-and-set; the new lease message, or None
    when refused. nats-py's errors (a timeout: the claim may have landed) are raised as they
    are."""
    epoch = after.epoch if after is not None and not take_over else 0
    headers = {
        EXPECTED_SEQUENCE: str(after.seq if after is not None else 0),
        TTL_HEADER: ttl_header(ttl),
    }
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    pause = IN_PROCESS_PAUSE[0]
    while True:
        reply = await nc.request(
            LEASE_SUBJECT, body_of(replica, epoch, ttl, at), timeout=within, headers=headers
        )
        ack = ack_of(reply.data)
        # A fenced append of the holder's in process on the lease subject: not a refusal of
        # the compare-and-set (which would demote a holder whose lease is live), nothing
        # written; sent again.
        if not in_process(ack, 1) or loop.time() >= deadline:
            break
        await asyncio.sleep(pause)
        pause = min(2 * pause, IN_PROCESS_PAUSE[1])
    if ack.error_code in STALE_EXPECTATION:
        return None
    if not ack.ok:
        raise nats.errors.Error(f"lease claim refused: {ack.description} ({ack.error_code})")
    return LeaseRecord(
        replica=replica, epoch=epoch or ack.seq, ttl_seconds=ttl, at=at.isoformat(), seq=ack.seq
    )
