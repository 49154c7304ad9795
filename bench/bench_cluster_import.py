"""How fast `lablink cluster import` moves a single-node log into the record (issue 18).

Run it from the repository root::

    .venv/bin/python -m bench.bench_cluster_import [--events 100000] [--batch 500]

A SQLite log of ``--events`` events (appends of 100 events over 50 streams, a 40-character
reason each), then imported into a fresh stream twice: on one node (R1) and on
deploy/nats-server.conf as three loopback nodes (R3, ``sync_interval: always``). The R3 time
includes making the stream (the cluster's first request after it formed). One run each,
printed with the rate.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from lablink.cluster.importer import BATCH, import_log
from lablink.events import JobPaused, NewEvent
from lablink.eventstore import SQLiteEventStore
from lablink.eventstore.record_link import JetStreamOptions
from tests.support.nats_cluster import SCHEDULER
from tests.support.nats_thread import nats_cluster, nats_server

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def build(path: Path, events: int) -> None:
    store = SQLiteEventStore(path)
    for n in range(events // 100):
        stream = f"job_{n % 50}"
        store.append(
            stream,
            store.stream_version(stream),
            [
                NewEvent(
                    event=JobPaused(job_id=stream, reason="x" * 40),
                    actor="bench",
                    occurred_at=T0 + timedelta(seconds=n),
                )
                for _ in range(100)
            ],
        )
    store.close()


def timed(source: Path, options: JetStreamOptions, batch: int) -> tuple[int, float]:
    started = time.monotonic()
    report = asyncio.run(import_log(source, options, batch=batch, within=30.0))
    return report.imported, time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=BATCH)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        source = root / "scheduler.db"
        build(source, args.events)
        results: list[tuple[str, int, float]] = []
        with nats_server(root / "one") as (_, server):
            results.append(("R1", *timed(source, JetStreamOptions((server.url,)), args.batch)))
        with nats_cluster(root / "three") as (_, nodes):
            options = JetStreamOptions(
                tuple(node.url for node in nodes),
                user=SCHEDULER[0],
                password=SCHEDULER[1],
                replicas=3,
            )
            results.append(("R3", *timed(source, options, args.batch)))
    print(f"{'record':<8}{'events':>10}{'seconds':>10}{'events/s':>12}")
    for name, events, seconds in results:
        print(f"{name:<8}{events:>10}{seconds:>10.2f}{events / seconds:>12.0f}")


if __name__ == "__main__":
    main()
