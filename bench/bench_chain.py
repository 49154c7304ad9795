"""What the hash chain costs (issue 20): appends with the chain against the same appends with
the hashing taken out, and a replay read with and without recomputing every hash.

Run it from the repository root::

    .venv/bin/python -m bench.bench_chain            # the default run (about a minute)
    .venv/bin/python -m bench.bench_chain --help

The baseline is the same store with ``event_hash`` replaced by a constant (the head read per
transaction and the 32-byte column stay: what is taken out is the SHA-256 and the encoding of
the fields it covers). Runs alternate chain/baseline so that a busy moment hits both; every
figure is the median of ``--runs``. The log files live in a temporary directory on disk, with
LabLink's durability settings (WAL, synchronous=FULL). Results go to a rich table and to
``bench/results/chain.json``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.table import Table

from bench.bench_store import (
    Append,
    console,
    lifecycle,
    machine_info,
    remove_db,
    requests_of,
    say,
)
from bench.workload import creations, make_jobs
from lablink.eventstore import SQLiteEventStore
from lablink.eventstore import sqlite as sqlite_store
from lablink.eventstore.chain import GENESIS, ChainCheck
from lablink.eventstore.sqlite import LogReader

RESULTS = Path(__file__).resolve().parent / "results" / "chain.json"
TARGET_RATIO = 0.90  # appends with the chain within 10 % of without


@contextmanager
def chain_off() -> Iterator[None]:
    # The store's module global, swapped for the run (the store calls it by that name).
    real = getattr(sqlite_store, "event_hash")  # noqa: B009
    setattr(sqlite_store, "event_hash", lambda *_: GENESIS)  # noqa: B010
    try:
        yield
    finally:
        setattr(sqlite_store, "event_hash", real)  # noqa: B010


def timed_appends(path: Path, work: Sequence[Append], batch: int, streams: int) -> float:
    store = SQLiteEventStore(path)
    try:
        store.append_batch(creations(make_jobs(streams)))
        requests = requests_of(work)
        start = time.perf_counter()
        for offset in range(0, len(requests), batch):
            store.append_batch(requests[offset : offset + batch])
        return time.perf_counter() - start
    finally:
        store.close()
        remove_db(path)


def build_log(path: Path, events: int, streams: int) -> None:
    store = SQLiteEventStore(path)
    try:
        store.append_batch(creations(make_jobs(streams)))
        work = requests_of(list(itertools.islice(lifecycle(make_jobs(streams)), events)))
        for offset in range(0, len(work), 10_000):
            store.append_batch(work[offset : offset + 10_000])
    finally:
        store.close()


def timed_read(path: Path, verify: bool) -> tuple[float, int]:
    conn = sqlite_store.connect(path)
    reader = LogReader(conn)
    try:
        start = time.perf_counter()
        check, position, count = ChainCheck(), 0, 0
        while rows := reader.read_chain(position, 10_000):
            if verify:
                for row in rows:
                    if check.feed(row) is not None:
                        raise RuntimeError(f"the chain breaks at {row[0]}")
            position = rows[-1][0]
            count += len(rows)
        return time.perf_counter() - start, count
    finally:
        conn.close()


def alternate(
    runs: int, first: Callable[[], float], second: Callable[[], float]
) -> list[list[float]]:
    a: list[float] = []
    b: list[float] = []
    for _ in range(runs):
        a.append(first())
        b.append(second())
    return [a, b]


def figure(name: str, events: int, chain: list[float], base: list[float]) -> dict[str, Any]:
    rate = statistics.median(events / s for s in chain)
    base_rate = statistics.median(events / s for s in base)
    return {
        "name": name,
        "events": events,
        "chain_seconds": [round(s, 4) for s in chain],
        "baseline_seconds": [round(s, 4) for s in base],
        "chain_median_events_per_second": round(rate, 1),
        "baseline_median_events_per_second": round(base_rate, 1),
        "ratio": round(rate / base_rate, 4),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    started = datetime.now(UTC)
    load = os.getloadavg()
    figures: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="lablink-chain-") as name:
        tmp = Path(name)
        machine = machine_info(tmp)
        streams = 100
        work = list(itertools.islice(lifecycle(make_jobs(streams)), args.events))
        for batch in args.batches:
            events = len(work) if batch > 1 else min(len(work), args.single_events)
            part = work[:events]

            def with_chain(b: int = batch, w: Sequence[Append] = part) -> float:
                return timed_appends(tmp / "chain.db", w, b, streams)

            def without(b: int = batch, w: Sequence[Append] = part) -> float:
                with chain_off():
                    return timed_appends(tmp / "plain.db", w, b, streams)

            say(f"appends in commits of {batch}: {events} events x {args.runs} runs each")
            chain, base = alternate(args.runs, with_chain, without)
            figures.append(figure(f"append, {batch} per commit", events, chain, base))
        say(f"replay read of {args.replay_events} events, with and without the chain's check")
        log = tmp / "replay.db"
        build_log(log, args.replay_events, streams)
        total = timed_read(log, False)[1]
        verified, plain = alternate(
            args.runs, lambda: timed_read(log, True)[0], lambda: timed_read(log, False)[0]
        )
        figures.append(figure("replay read, verifying every hash", total, verified, plain))
    result = {
        "benchmark": "hash chain cost (issue 20)",
        "command": "python -m bench.bench_chain " + " ".join(sys.argv[1:]),
        "date": started.isoformat(timespec="seconds"),
        "machine": {**machine, "loadavg_1_5_15_before": [round(x, 2) for x in load]},
        "runs": args.runs,
        "target_append_ratio": TARGET_RATIO,
        "figures": figures,
    }
    table = Table(title="hash chain: with / without (median events/s)")
    for column in ("figure", "events", "with chain", "without", "ratio"):
        table.add_column(column, justify="left" if column == "figure" else "right")
    for f in figures:
        table.add_row(
            f["name"],
            str(f["events"]),
            f"{f['chain_median_events_per_second']:,.0f}",
            f"{f['baseline_median_events_per_second']:,.0f}",
            f"{f['ratio']:.3f}",
        )
    console.print(table)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    say(f"results written to {args.output}")
    return result


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--events", type=int, default=50_000, help="events per batched run")
    parser.add_argument("--single-events", type=int, default=1_000, help="events, 1 per commit")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 100, 1000])
    parser.add_argument("--replay-events", type=int, default=300_000)
    parser.add_argument("--output", type=Path, default=RESULTS)
    run(parser.parse_args(argv))


if __name__ == "__main__":
    main()
