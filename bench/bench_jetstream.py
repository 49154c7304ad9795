"""Append latency of the JetStream event store (issue 18), beside the SQLite store.

Run it from the repository root::

    .venv/bin/python -m bench.bench_jetstream [--appends 500] [--batch 100]

Real nats-servers in a temporary folder (``sync_interval: always``): one node (R1), and
deploy/nats-server.conf as three loopback nodes (R3). For each store: single-event appends
one after another (each returns once the event is in the local copy: read-your-writes), an
atomic 10-event append, and ``append_batch`` of ``--batch`` one-event requests on as many
streams (the group committer's shape). Medians and p99 in milliseconds; each figure is one
run, printed as a table. ``--failover N``: N times, a fresh R3 cluster, appends one after
another, the stream leader SIGKILLed; the time from the kill to the next append that returns
(an append in flight during the election waits out its ack timeout, 5 s by default).
``--catch-up N``: N events recorded on one node (atomic appends of 1,000), then the time a new
replica takes to open (its copy made from nothing) and the copying rate.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import nats

from lablink.errors import StorageError, StreamVersionConflict
from lablink.events import JobPaused, NewEvent
from lablink.eventstore import AppendRequest, EventStore, SQLiteEventStore
from lablink.eventstore.jetstream import JetStreamEventStore
from lablink.eventstore.record_link import JetStreamOptions
from tests.support.nats_cluster import SCHEDULER
from tests.support.nats_thread import nats_cluster, nats_server

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def new(job_id: str, n: int) -> NewEvent:
    return NewEvent(event=JobPaused(job_id=job_id, reason=f"r{n}"), actor="bench", occurred_at=T0)


def timed(step: Callable[[], object], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        step()
        times.append((time.perf_counter() - start) * 1000)
    return times


def p99(times: list[float]) -> float:
    return sorted(times)[min(len(times) - 1, int(len(times) * 0.99))]


def measure(name: str, store: EventStore, appends: int, batch: int) -> list[str]:
    counter = iter(range(10**9))

    def single() -> None:
        version = store.stream_version("job_single")
        store.append("job_single", version, [new("job_single", next(counter))])

    def atomic() -> None:
        version = store.stream_version("job_atomic")
        store.append("job_atomic", version, [new("job_atomic", next(counter)) for _ in range(10)])

    rounds = iter(range(10**9))

    def grouped() -> None:
        n = next(rounds)
        store.append_batch(
            [
                AppendRequest(stream_id=f"job_{n}_{i}", expected_version=0, events=[new("j", i)])
                for i in range(batch)
            ]
        )

    one = timed(single, appends)
    ten = timed(atomic, max(10, appends // 10))
    many = timed(grouped, 10)
    return [
        f"{name:<22} single {statistics.median(one):6.2f} / p99 {p99(one):6.2f} ms"
        f" | 10 atomic {statistics.median(ten):6.2f} ms"
        f" | batch of {batch} {statistics.median(many):7.2f} ms"
        f" ({batch / statistics.median(many) * 1000:,.0f} appends/s)"
    ]


def failover(root: Path, ack_timeout: float) -> float:
    """Seconds from SIGKILL of the stream leader to the next append that returns."""
    with nats_cluster(root) as (thread, nodes):
        options = JetStreamOptions(
            servers=tuple(node.url for node in nodes),
            user=SCHEDULER[0],
            password=SCHEDULER[1],
            replicas=3,
        )
        store = JetStreamEventStore(
            root / "copy.db", options, open_timeout=60.0, ack_timeout=ack_timeout
        )
        try:
            for n in range(10):
                store.append("job_f", n, [new("job_f", n)])
            leader = thread.call(stream_leader(store))
            thread.kill(nodes[int(leader.removeprefix("nats-")) - 1])
            killed = time.perf_counter()
            while True:
                version = store.stream_version("job_f")
                try:
                    store.append("job_f", version, [new("job_f", version)])
                    return time.perf_counter() - killed
                except (StorageError, StreamVersionConflict):
                    continue
        finally:
            store.close()


def catch_up(root: Path, events: int) -> str:
    with nats_server(root / "nats") as (_, server):
        options = JetStreamOptions(servers=(server.url,))
        writer = JetStreamEventStore(root / "writer.db", options)
        for start in range(0, events, 1000):
            count = min(1000, events - start)
            writer.append("job_c", start, [new("job_c", start + i) for i in range(count)])
        writer.close()
        began = time.perf_counter()
        joined = JetStreamEventStore(root / "joined.db", options, catch_up_timeout=600.0)
        took = time.perf_counter() - began
        assert joined.last_position() == events
        joined.close()
    return f"a new replica copied {events:,} events in {took:.2f} s ({events / took:,.0f}/s)"


async def stream_leader(store: JetStreamEventStore) -> str:
    nc = await nats.connect(
        servers=list(store.options.servers), user=SCHEDULER[0], password=SCHEDULER[1]
    )
    try:
        info = await nc.jetstream().stream_info(store.options.stream)
        assert info.cluster is not None
        assert info.cluster.leader is not None
        return info.cluster.leader
    finally:
        await nc.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--appends", type=int, default=500)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--failover", type=int, default=0, metavar="RUNS")
    parser.add_argument("--ack-timeout", type=float, default=5.0)
    parser.add_argument("--catch-up", type=int, default=0, metavar="EVENTS")
    args = parser.parse_args()
    lines: list[str] = []
    if args.catch_up:
        with tempfile.TemporaryDirectory() as folder:
            print(catch_up(Path(folder), args.catch_up))
        return
    if args.failover:
        times = []
        for run in range(args.failover):
            with tempfile.TemporaryDirectory() as folder:
                times.append(failover(Path(folder), args.ack_timeout))
            print(f"run {run + 1}: {times[-1]:.2f} s", flush=True)
        print(
            f"failover (leader SIGKILL, ack timeout {args.ack_timeout:g} s):"
            f" median {statistics.median(times):.2f} s, min {min(times):.2f}, max {max(times):.2f}"
        )
        return
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        sqlite_store = SQLiteEventStore(root / "events.db")
        lines += measure("sqlite (FULL)", sqlite_store, args.appends, args.batch)
        sqlite_store.close()
        with nats_server(root / "nats") as (_, server):
            store = JetStreamEventStore(root / "r1.db", JetStreamOptions(servers=(server.url,)))
            lines += measure("jetstream R1", store, args.appends, args.batch)
            store.close()
        with nats_cluster(root / "cluster") as (_, nodes):
            options = JetStreamOptions(
                servers=tuple(node.url for node in nodes),
                user=SCHEDULER[0],
                password=SCHEDULER[1],
                replicas=3,
            )
            store = JetStreamEventStore(root / "r3.db", options, open_timeout=60.0)
            lines += measure("jetstream R3 (3 nodes)", store, args.appends, args.batch)
            store.close()
    print("\n".join(lines))


if __name__ == "__main__":
    main()
