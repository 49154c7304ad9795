"""NATS faults under a firing cluster (issue 18), as processes: a 3-node NATS cluster, two
`lablink serve` replicas in cluster mode (the simulated bench), interval jobs every second.

- **A NATS node SIGKILLed**, the record stream's leader: the stream elects another leader,
  firing resumes, and every write the API acknowledged, before and after the kill, is in
  the record; the node comes back from its store and rejoins.
- **A rolling restart** of each replica, then each NATS node, one at a time: firing goes on
  after every step.

After each, the checker (``cluster_check``) over the stream as the cluster holds it: no
scheduled time decided twice, every due fire accounted for, each copy equal to the record
and its views to a replay.

How many jobs: the CI runs the tests two at a time on two cores, and each fire is a few
events through an R3 stream that syncs every message to disk on all three nodes, the
leader's fenced appends one at a time. Measured alone on this machine (20 s of firing,
other work beside): 60 jobs at 1 s fired all 1,200 times, 16 ms late at the median; 100
fired 1,802 of 2,000, 0.47 s late, coalescing the rest. 50 leave room for a second test
running beside; more make the fires themselves late, which the checker records as coalesced
rather than a fault, but which blurs "firing resumes".
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import sqlite3
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
from nats.js.api import ClusterInfo

from lablink.bus.server import NatsServer
from lablink.datadir import DB_NAME
from lablink.eventstore.record_link import RECORD_STREAM
from tests.support.cluster_check import Acknowledged, check, due_margin, read_record
from tests.support.cluster_replicas import (
    base,
    create_interval_jobs,
    holder,
    lease_of,
    replica,
    requested,
)
from tests.support.eventually import eventually_sync
from tests.support.nats_cluster import SCHEDULER
from tests.support.nats_thread import ServerThread, nats_cluster
from tests.support.serve import Server, servers  # noqa: F401 (a fixture)

JOBS = 50


# -- the record's stream, as the NATS cluster says -------------------------------------------


@dataclass(frozen=True)
class StreamCluster:
    leader: str | None
    last: int  # the stream's last sequence
    peers: dict[str, tuple[bool, bool]]  # the other replicas: name -> (current, offline)

    def current(self, name: str) -> bool:
        """``name`` is the leader, or a replica that is current and online."""
        if self.leader is None:
            return False
        return name == self.leader or self.peers.get(name) == (True, False)


async def unheard(exc: Exception) -> None:
    return None


def stream_cluster(url: str) -> StreamCluster:
    async def read() -> StreamCluster:
        nc = await nats.connect(
            servers=url.split(","),
            user=SCHEDULER[0],
            password=SCHEDULER[1],
            connect_timeout=2,
            max_reconnect_attempts=1,
            allow_reconnect=False,
            error_cb=unheard,  # a node that is down is what the caller polls through
        )
        try:
            info = await nc.jetstream(timeout=5).stream_info(RECORD_STREAM)
            cluster = info.cluster or ClusterInfo()
            peers = {
                peer.name: (bool(peer.current), bool(peer.offline))
                for peer in cluster.replicas or []
                if peer.name is not None
            }
            return StreamCluster(cluster.leader, info.state.last_seq, peers)
        finally:
            await nc.close()

    return asyncio.run(read())


def settled_cluster(url: str, names: list[str], timeout: float = 90) -> StreamCluster:
    """The stream's cluster once it has a leader and every node in ``names`` is current."""
    return eventually_sync(
        lambda: stream_cluster(url),
        until=lambda c: all(c.current(name) for name in names),
        ignoring=(Exception,),
        timeout=timeout,
    )


def node_named(nodes: list[NatsServer], name: str) -> NatsServer:
    # tests/support/nats_cluster.py names node i "nats-<i + 1>".
    return nodes[int(name.rsplit("-", 1)[1]) - 1]


def node_names(nodes: list[NatsServer]) -> list[str]:
    return [f"nats-{i + 1}" for i in range(len(nodes))]


# -- firing, as the replicas' copies hold it -------------------------------------------------


def fired_after(data_dirs: list[Path], after: datetime) -> int:
    """The scheduled fires due after ``after`` that any of the copies holds (a replica's
    copy; the most of them). A fire's scheduled time is never before it was decided, so a
    fire due after a fault was decided after it."""
    counts = []
    for data_dir in data_dirs:
        fires = requested(data_dir)
        counts.append(sum(1 for _, at in fires if datetime.fromisoformat(at) > after))
    return max(counts)


def longest_pause(data_dirs: list[Path], since: datetime) -> float:
    """The longest time without a scheduled fire recorded since ``since`` (the record's
    times of recording, ``occurred_at``, as the fullest copy holds them), in seconds."""
    fullest: list[datetime] = []
    for data_dir in data_dirs:
        conn = sqlite3.connect(f"file:{data_dir / DB_NAME}?mode=ro", uri=True)
        try:
            rows = conn.execute(
                "SELECT occurred_at FROM events WHERE type = 'execution.pending'"
                " AND json_extract(payload, '$.trigger_info') != 'manual' AND occurred_at > ?"
                " ORDER BY position",
                (since.isoformat().replace("+00:00", "Z"),),
            ).fetchall()
        finally:
            conn.close()
        if len(rows) > len(fullest):
            fullest = [datetime.fromisoformat(at) for (at,) in rows]
    times = [since, *sorted(fullest)]
    return max((b - a).total_seconds() for a, b in itertools.pairwise(times))


def firing_resumes(
    data_dirs: list[Path], since: datetime, at_least: int, timeout: float = 90
) -> float:
    """Wait until the copies hold ``at_least`` fires due after ``since``; the monotonic
    time then."""
    eventually_sync(
        lambda: fired_after(data_dirs, since),
        until=lambda n: n >= at_least,
        timeout=timeout,
    )
    return time.monotonic()


def create_job_through(server: Server, name: str, acknowledged: Acknowledged) -> float:
    """Create one interval job on ``server``, retrying while the API answers 503 (the record
    has no leader) or does not answer in time; the monotonic time once one was accepted. Only the
    200 is noted as acknowledged: a refused or unanswered try may or may not be recorded,
    and the checker only asks that what was acknowledged is there."""
    tries: list[str] = []

    def attempt() -> bool:
        try:
            response = httpx.post(
                f"{base(server)}/api/scheduler/jobs/create",
                json={
                    "name": name,
                    "schedule_type": "measurement",
                    "equipment_id": "power_supply_1",
                    "trigger_type": "interval",
                    "interval_seconds": 1,
                    "parameters": {"command": "get_voltage"},
                    "coalesce": True,
                    "misfire_grace_time": 300,
                },
                timeout=30,
            )
        except httpx.TimeoutException as exc:
            tries.append(repr(exc))
            return False
        if response.status_code == 503:
            tries.append(response.text[:200])
            return False
        assert response.status_code == 200, response.text
        acknowledged.jobs.add(response.json()["job_id"])
        return True

    eventually_sync(attempt, interval=0.5, timeout=120, what=lambda: f"a job created: {tries[-3:]}")
    print(f"job {name!r} accepted after {len(tries)} refused tries: {tries[-2:]}")
    return time.monotonic()


def health_record(server: Server) -> dict[str, Any]:
    response = httpx.get(f"{base(server)}/health", timeout=10)
    details: dict[str, Any] = response.json()["components"]["record"]["details"]
    return details


def caught_up(server: Server, url: str) -> None:
    """The replica's copy has seen the record as far as it went once the replica answered."""
    end = eventually_sync(lambda: stream_cluster(url).last, ignoring=(Exception,), timeout=60)

    def seen() -> int:
        details = health_record(server)
        return int(details["recorded"]) - int(details["lag"])

    eventually_sync(seen, until=lambda n: n >= end, ignoring=(Exception,), timeout=90)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[ServerThread, list[NatsServer], str]]:
    with nats_cluster(tmp_path / "nats") as (thread, nodes):
        yield thread, nodes, ",".join(node.url for node in nodes)


def start_replicas(
    tmp_path: Path,
    url: str,
    servers: list[Server],  # noqa: F811
) -> dict[str, Server]:
    replicas: dict[str, Server] = {}
    for name in ("a", "b"):
        replicas[name] = replica(tmp_path / name, name, url)
        servers.append(replicas[name])
    for server in replicas.values():
        server.listening()
    return replicas


def problems(server: Server) -> list[object]:
    """What a replica logged as warnings and errors, and its last lines (for a failure)."""
    while not server.lines.empty():
        server.seen.append(server.lines.get_nowait())
    said = [
        (line.get("event"), line.get("error") or line.get("why"))
        for line in server.seen
        if line.get("level") in ("warning", "error")
    ]
    return [*said[-10:], *server.printed()[-20:]]


def stop_and_check(
    tmp_path: Path, url: str, replicas: dict[str, Server], acknowledged: Acknowledged
) -> None:
    ended = due_margin(datetime.now(UTC))
    for server in replicas.values():
        server.terminate()
    for name, server in replicas.items():
        code = server.proc.wait(timeout=60)
        assert code == 0, f"replica {name} stopped with {code}: {problems(server)}"
    record = read_record(url, *SCHEDULER)
    checked = check(record, {n: tmp_path / n for n in replicas}, acknowledged, ended)
    print(checked)
    assert checked.fires > 0


# -- the tests -------------------------------------------------------------------------------


@pytest.mark.nats
@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.cluster
@pytest.mark.timeout(360)
def test_a_killed_stream_leader_node_loses_no_acknowledged_write_and_firing_resumes(
    tmp_path: Path,
    cluster: tuple[ServerThread, list[NatsServer], str],
    servers: list[Server],  # noqa: F811
) -> None:
    thread, nodes, url = cluster
    acknowledged = Acknowledged()
    replicas = start_replicas(tmp_path, url, servers)
    leader = replicas[holder(replicas)]
    copies = [tmp_path / name for name in replicas]
    create_interval_jobs(leader, JOBS, acknowledged)
    started = datetime.now(UTC)
    firing_resumes(copies, started, 2 * JOBS)

    # The record stream's leader, killed outright: no shutdown, no leadership handed over.
    stream = settled_cluster(url, node_names(nodes))
    assert stream.leader is not None
    victim = node_named(nodes, stream.leader)
    killed_at = datetime.now(UTC)
    killed = time.monotonic()
    assert victim.pid is not None
    os.kill(victim.pid, signal.SIGKILL)
    thread.kill(victim)  # reaps it (asyncio says 255, not -9, when it lost the race to reap)
    assert victim.returncode is not None

    # A write during the election, beside: retried until acknowledged, then recorded.
    follower = next(s for s in replicas.values() if s is not leader)
    with ThreadPoolExecutor(1) as pool:
        creating = pool.submit(create_job_through, follower, "during the election", acknowledged)
        first_fire = firing_resumes(copies, killed_at, 1, timeout=120) - killed
        resumed = firing_resumes(copies, killed_at, 2 * JOBS, timeout=120) - killed
        accepted = creating.result(timeout=150) - killed
    after = eventually_sync(
        lambda: stream_cluster(url), until=lambda c: c.leader is not None, ignoring=(Exception,)
    )
    assert after.leader != stream.leader
    print(
        f"{JOBS} jobs; stream leader {stream.leader} SIGKILLed, new leader {after.leader}:"
        f" first new fire {first_fire:.2f} s after the kill, {2 * JOBS} new fires by"
        f" {resumed:.2f} s, a job written during the election accepted at {accepted:.2f} s;"
        f" longest pause in recorded fires {longest_pause(copies, killed_at):.2f} s"
    )
    # Issue 18's bound for a NATS node lost, as a generous limit: 15 s, doubled for a loaded
    # machine.
    assert first_fire < 30

    # Written after the election, on both replicas.
    create_interval_jobs(leader, 1, acknowledged, prefix="after")
    create_interval_jobs(follower, 1, acknowledged, prefix="after, on the follower")

    # The node comes back from its store and catches up with the stream.
    thread.call(victim.start())
    rejoined = time.monotonic()
    settled_cluster(url, node_names(nodes))
    print(f"{stream.leader} current again {time.monotonic() - rejoined:.2f} s after its restart")
    firing_resumes(copies, datetime.now(UTC), JOBS)

    stop_and_check(tmp_path, url, replicas, acknowledged)


@pytest.mark.nats
@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.cluster
@pytest.mark.timeout(420)
def test_a_rolling_restart_of_every_replica_and_node_keeps_firing_once(
    tmp_path: Path,
    cluster: tuple[ServerThread, list[NatsServer], str],
    servers: list[Server],  # noqa: F811
) -> None:
    thread, nodes, url = cluster
    acknowledged = Acknowledged()
    replicas = start_replicas(tmp_path, url, servers)
    leader = replicas[holder(replicas)]
    copies = [tmp_path / name for name in replicas]
    create_interval_jobs(leader, JOBS, acknowledged)
    firing_resumes(copies, datetime.now(UTC), 2 * JOBS)
    steps: list[str] = []

    def firing_goes_on(step: str, since: datetime, began: float) -> None:
        took = firing_resumes(copies, since, 2 * JOBS, timeout=120) - began
        pause = longest_pause(copies, since)
        steps.append(f"{step}: {2 * JOBS} fires by {took:.1f} s, longest pause {pause:.1f} s")

    # Each replica in turn: stopped (SIGTERM: it steps down and hands over), started again
    # on its own data directory, back and caught up with the record before the next.
    for name in ("a", "b"):
        began, since = time.monotonic(), datetime.now(UTC)
        old = replicas[name]
        was = "holder" if old is leader else "follower"
        old.terminate()
        assert old.proc.wait(timeout=60) == 0
        replicas[name] = replica(tmp_path / name, name, url)
        servers.append(replicas[name])
        replicas[name].listening()
        caught_up(replicas[name], url)
        leader = replicas[holder(replicas)]
        firing_goes_on(f"replica {name} ({was}) restarted", since, began)

    # Each NATS node in turn: SIGTERM, started again on its store, current in the record
    # stream's cluster before the next.
    names = node_names(nodes)
    for name in names:
        stream = settled_cluster(url, names)
        epoch = lease_of(replicas[holder(replicas)])["epoch"]
        began, since = time.monotonic(), datetime.now(UTC)
        node = node_named(nodes, name)
        thread.call(node.stop(signal.SIGTERM), timeout=60)
        thread.call(node.start())
        settled_cluster(url, names)
        role = "stream leader" if name == stream.leader else "replica"
        firing_goes_on(f"node {name} ({role}) restarted", since, began)
        now_holder = holder(replicas)
        if lease_of(replicas[now_holder])["epoch"] != epoch:
            steps[-1] += f" (the lease changed hands: now {now_holder}'s)"

    # Written after the last step, on each replica.
    for server in replicas.values():
        create_interval_jobs(server, 1, acknowledged, prefix="after the restarts")
    print(f"{JOBS} jobs; " + "; ".join(steps))
    stop_and_check(tmp_path, url, replicas, acknowledged)
