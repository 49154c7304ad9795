"""What `lablink cluster status` shows: the servers, the record's stream and its replicas, the
lease holder, and each LabLink replica's lag, read from NATS alone (no replica is asked, so
the command works while every replica is down).

Sources: the connection's server info (the node it reached, its version, the addresses the
cluster advertises), the stream's info (its cluster block: the stream leader, each replica's
``current``/``lag``/``offline``), the lease's last message in the record (subject
``lablink.log.~lease.scheduler``, JSON ``{replica, epoch, ttl_seconds, at}``; the acquiring
message says epoch 0, its own sequence being the epoch), and the replicas' presence
(``presence``). A replica's lag is counted from the record's last stored message, not the
stream's last sequence, which may be a lease message expired since. Requests are stream info
and message gets only, so the read-only ``subscriber`` user may run it.

The lease's age is the age of its last message by the server's timestamp, measured against
this machine's clock: a skewed clock here shifts it (the replicas themselves decide by their
monotonic clocks, never by this).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from nats.aio.client import Client as NATS

from lablink.cluster.presence import ReplicaPresence, read_presences
from lablink.eventstore.record_format import PREFIX, SUBJECTS
from lablink.eventstore.record_link import NO_MESSAGE, STREAM_NOT_FOUND, ApiError, api

LEASE_SUBJECT = f"{PREFIX}.~lease.scheduler"


@dataclass(frozen=True)
class ServerState:
    name: str
    role: str  # "stream leader" | "replica"
    current: bool
    lag: int
    active_seconds: float | None  # since the leader last heard from it
    offline: bool = False


@dataclass(frozen=True)
class StreamState:
    name: str
    replicas: int
    leader: str | None
    messages: int
    first_sequence: int
    last_sequence: int
    cluster: str | None


@dataclass(frozen=True)
class LeaseState:
    replica: str
    epoch: int
    ttl_seconds: float
    at: str
    sequence: int  # the lease message's (the last renewal's) stream sequence
    age_seconds: float  # since the server stored that message, by this machine's clock

    @property
    def expired(self) -> bool:
        return self.age_seconds > self.ttl_seconds


@dataclass(frozen=True)
class ReplicaLag:
    replica: str
    role: str
    url: str
    copied: int
    folded: int
    behind_record: int | None  # the record's last stored message's sequence − copied
    behind_copy: int  # copied − folded
    at: str


@dataclass
class ClusterStatus:
    connected_to: str  # the server's name
    version: str
    urls: list[str]  # the client addresses the cluster advertises
    stream: StreamState | None
    configured: list[str] = field(default_factory=list)  # the servers the command was given
    servers: list[ServerState] = field(default_factory=list)
    lease: LeaseState | None = None
    replicas: list[ReplicaLag] | None = None  # None: no presence bucket yet

    def problems(self) -> list[str]:
        """Why the command exits non-zero: no stream, or a stream replica not current."""
        if self.stream is None:
            return ["the record's stream does not exist"]
        found: list[str] = []
        if self.stream.leader is None:
            found.append(f"stream {self.stream.name} has no leader")
        found += [
            f"stream replica on {s.name} is {'offline' if s.offline else 'not current'}"
            f" (lag {s.lag})"
            for s in self.servers
            if s.offline or not s.current
        ]
        if self.stream.replicas > len(self.servers):
            found.append(
                f"stream {self.stream.name} has {len(self.servers)} of its"
                f" {self.stream.replicas} replicas"
            )
        return found

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        if self.lease is not None:
            out["lease"]["expired"] = self.lease.expired
        out["problems"] = self.problems()
        return out


def _seconds(nanos: Any) -> float | None:
    return None if nanos is None else int(nanos) / 1e9


def _instant(text: str) -> datetime:
    # The server's timestamps carry nanoseconds; Python's parser takes microseconds.
    head, dot, rest = text.partition(".")
    if dot:
        digits = "".join(c for c in rest if c.isdigit())
        zone = rest[len(digits) :]
        text = f"{head}.{digits[:6]}{zone}"
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def read_status(
    nc: NATS,
    stream: str,
    *,
    configured: Sequence[str] = (),
    within: float = 5.0,
    now: datetime | None = None,
) -> ClusterStatus:
    info: dict[str, Any] = nc._server_info
    status = ClusterStatus(
        connected_to=str(info.get("server_name", "")),
        version=str(info.get("version", "")),
        urls=[str(u) for u in info.get("connect_urls") or []],
        stream=None,
        configured=list(configured),
    )
    try:
        answer = await api(nc, f"$JS.API.STREAM.INFO.{stream}", None, within)
    except ApiError as exc:
        if exc.code != STREAM_NOT_FOUND:
            raise
        return status
    state, config, cluster = answer["state"], answer["config"], answer.get("cluster") or {}
    status.stream = StreamState(
        name=stream,
        replicas=int(config.get("num_replicas", 1)),
        leader=cluster.get("leader"),
        messages=int(state["messages"]),
        first_sequence=int(state["first_seq"]),
        last_sequence=int(state["last_seq"]),
        cluster=cluster.get("name"),
    )
    if cluster.get("leader"):
        status.servers.append(ServerState(cluster["leader"], "stream leader", True, 0, None))
    status.servers += [
        ServerState(
            name=str(peer["name"]),
            role="replica",
            current=bool(peer.get("current", False)),
            lag=int(peer.get("lag", 0)),
            active_seconds=_seconds(peer.get("active")),
            offline=bool(peer.get("offline", False)),
        )
        for peer in cluster.get("replicas") or []
    ]
    status.lease = await _lease(nc, stream, within, now or datetime.now(UTC))
    presences = await read_presences(nc, within)
    if presences is not None:
        end = await _last_present(nc, stream, within)
        status.replicas = [_lag(p, end) for p in presences]
    return status


async def _last_present(nc: NATS, stream: str, within: float) -> int:
    """The sequence of the record's last message still stored: what a replica's feed can
    reach. The stream's ``last_seq`` may be a lease message expired since (its TTL), which no
    consumer delivers, so a lag counted from it would never reach 0."""
    try:
        answer = await api(
            nc, f"$JS.API.STREAM.MSG.GET.{stream}", {"last_by_subj": SUBJECTS}, within
        )
    except ApiError as exc:
        if exc.code == NO_MESSAGE:
            return 0
        raise
    return int(answer["message"]["seq"])


def _lag(presence: ReplicaPresence, last: int) -> ReplicaLag:
    return ReplicaLag(
        replica=presence.replica,
        role=presence.role,
        url=presence.url,
        copied=presence.copied,
        folded=presence.folded,
        behind_record=max(0, last - presence.copied),
        behind_copy=max(0, presence.copied - presence.folded),
        at=presence.at,
    )


async def _lease(nc: NATS, stream: str, within: float, now: datetime) -> LeaseState | None:
    try:
        answer = await api(
            nc, f"$JS.API.STREAM.MSG.GET.{stream}", {"last_by_subj": LEASE_SUBJECT}, within
        )
    except ApiError as exc:
        if exc.code == NO_MESSAGE:
            return None
        raise
    message = answer["message"]
    body = json.loads(base64.b64decode(message.get("data") or b"") or b"null")
    if not isinstance(body, dict) or "replica" not in body:
        return None  # a release (an empty body): nobody holds it
    stored = _instant(str(message["time"]))
    sequence = int(message["seq"])
    return LeaseState(
        replica=str(body["replica"]),
        # The acquiring message cannot know its own sequence: it says 0, and is the epoch.
        epoch=int(body.get("epoch") or 0) or sequence,
        ttl_seconds=float(body["ttl_seconds"]),
        at=str(body.get("at", "")),
        sequence=sequence,
        age_seconds=max(0.0, (now - stored).total_seconds()),
    )
