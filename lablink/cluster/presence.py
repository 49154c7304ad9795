"""Each replica's presence in cluster mode: every few seconds it puts what it is and how far it
has come into the KV bucket ``LABLINK_REPLICAS`` (key: its replica id), and `lablink cluster
status` reads them all.

The value (JSON): ``replica``, ``url`` (its API), ``copied`` (how far the local copy has seen
the record: the last stream sequence it took, an event copied or a lease message passed over,
so that it equals the record's end when caught up), ``folded`` (the views' position), ``role``
(``leader`` or ``follower``) and ``at`` (the replica's wall clock, ISO 8601). The bucket's TTL
is a few intervals, so a replica that stopped putting (killed, cut off) drops out by itself,
whatever the clocks say; ``at`` is only shown. ``stop`` deletes the key: a replica shut down on
purpose leaves at once.

Presence is information, never a decision: leadership is the lease's (in the record), so a
put that fails is logged and tried again at the next interval, never raised.

Usage (the runtime owns the connection and the task's lifetime)::

    presence = Presence(nc, "replica-1", "https://lablink-1:8443",
                        copied=lambda: store.seen_position, folded=views_position,
                        role=lambda: "leader" if lease.held else "follower")
    await presence.start()
    ...
    await presence.stop()

``seen_position`` is the JetStream store's "how far the feed has seen" (the lease work's:
``copied_position`` stops at the last event, short of the lease messages after it). The
callables run on the event loop at every put: they must be cheap and must not block
(numbers the process holds in memory).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import nats.errors
import structlog
from nats.aio.client import Client as NATS
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BucketNotFoundError
from nats.js.kv import KeyValue

from lablink.bus.subjects import REPLICAS_BUCKET
from lablink.eventstore.record_link import ApiError, api

log = structlog.get_logger(tag="cluster")

Role = Literal["leader", "follower"]
INTERVAL = 2.0  # seconds between puts
TTLS = 3  # the bucket keeps a value this many intervals: two lost puts are not an absence
KV_STREAM = f"KV_{REPLICAS_BUCKET}"
_KEY = re.compile(r"[-_=A-Za-z0-9]+")
_NO_MESSAGE = 10037


@dataclass(frozen=True)
class ReplicaPresence:
    replica: str
    url: str
    copied: int
    folded: int
    role: str
    at: str

    def encode(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes) -> ReplicaPresence:
        value = json.loads(data)
        return cls(
            replica=str(value["replica"]),
            url=str(value.get("url", "")),
            copied=int(value["copied"]),
            folded=int(value["folded"]),
            role=str(value["role"]),
            at=str(value["at"]),
        )


def replica_key(replica: str) -> str:
    """The replica's key in the bucket: its id, which must be a plain token (letters, digits,
    ``-``, ``_``, ``=``) so that it reads the same in the bucket and in status."""
    if not _KEY.fullmatch(replica):
        raise ValueError(
            f"replica id {replica!r} must be letters, digits, '-', '_' or '=' (a KV key)"
        )
    return replica


def _now() -> datetime:
    return datetime.now(UTC)


class Presence:
    def __init__(
        self,
        nc: NATS,
        replica: str,
        url: str,
        *,
        copied: Callable[[], int],
        folded: Callable[[], int],
        role: Callable[[], Role],
        interval: float = INTERVAL,
        replicas: int = 1,
        now: Callable[[], datetime] = _now,
    ) -> None:
        self.nc = nc
        self.replica = replica
        self.key = replica_key(replica)
        self.url = url
        self.interval = interval
        self.replicas = replicas
        self._copied, self._folded, self._role, self._now = copied, folded, role, now
        self._kv: KeyValue | None = None
        self._task: asyncio.Task[None] | None = None
        self.puts = 0  # values put, for tests and /health
        self.error: str | None = None  # the last put's failure; None once one succeeds

    def value(self) -> ReplicaPresence:
        return ReplicaPresence(
            replica=self.replica,
            url=self.url,
            copied=self._copied(),
            folded=self._folded(),
            role=self._role(),
            at=self._now().isoformat(),
        )

    async def start(self) -> None:
        """Make the bucket if missing, put once (so the replica shows up at once), then put
        every ``interval`` until ``stop``. A bucket or first put that fails is retried by the
        task, not raised: a replica starts during a cluster's election too."""
        if self._task is not None:
            return
        await self.put_once()
        self._task = asyncio.create_task(self._run(), name=f"presence-{self.replica}")

    async def stop(self) -> None:
        """Stop putting and delete the key (best effort: its TTL removes it anyway)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task}, timeout=5.0)
        if self._kv is not None and self.nc.is_connected:
            with contextlib.suppress(Exception):
                await self._kv.delete(self.key)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.put_once()

    async def put_once(self) -> bool:
        """One put; False (and ``error``) when it failed."""
        try:
            kv = self._kv or await self._bucket()
            self._kv = kv
            await kv.put(self.key, self.value().encode())
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if self.error != str(exc):
                log.warning("presence not put", replica=self.replica, error=repr(exc))
            self.error = repr(exc)
            return False
        self.error = None
        self.puts += 1
        return True

    async def _bucket(self) -> KeyValue:
        js = self.nc.jetstream()
        try:
            return await js.key_value(REPLICAS_BUCKET)
        except BucketNotFoundError:
            pass
        with contextlib.suppress(nats.js.errors.BadRequestError):
            # Two replicas making it at once: the second's create fails, the bucket is there.
            return await js.create_key_value(
                KeyValueConfig(
                    bucket=REPLICAS_BUCKET,
                    history=1,
                    ttl=TTLS * self.interval,
                    storage=StorageType.MEMORY,
                    replicas=self.replicas,
                    description="LabLink replicas: who is alive and how far (cluster status)",
                )
            )
        return await js.key_value(REPLICAS_BUCKET)


async def read_presences(nc: NATS, within: float = 5.0) -> list[ReplicaPresence] | None:
    """Every replica's last value (None: no bucket yet). Read with two kinds of requests only
    (the stream's info listing its subjects, then each subject's last message), so a
    read-only user needs no consumer."""
    try:
        info = await api(
            nc,
            f"$JS.API.STREAM.INFO.{KV_STREAM}",
            {"subjects_filter": f"$KV.{REPLICAS_BUCKET}.>"},
            within,
        )
    except ApiError as exc:
        if exc.code == 10059:  # no such stream
            return None
        raise
    subjects: dict[str, Any] = info.get("state", {}).get("subjects") or {}
    found: list[ReplicaPresence] = []
    for subject in sorted(subjects):
        try:
            answer = await api(
                nc, f"$JS.API.STREAM.MSG.GET.{KV_STREAM}", {"last_by_subj": subject}, within
            )
        except ApiError as exc:
            if exc.code == _NO_MESSAGE:  # expired between the two requests
                continue
            raise
        message = answer.get("message", {})
        headers = base64.b64decode(message.get("hdrs") or b"").decode(errors="replace")
        if "KV-Operation" in headers:  # a delete or purge marker: the replica left
            continue
        try:
            found.append(ReplicaPresence.decode(base64.b64decode(message.get("data") or b"")))
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("presence value unreadable", subject=subject, error=str(exc))
    return found
