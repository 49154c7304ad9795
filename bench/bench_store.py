"""The event-store benchmark (issue 2): commit rate, group commit rate and replay rate.

Run it from the repository root::

    .venv/bin/python -m bench.bench_store            # the default run (a few minutes)
    .venv/bin/python -m bench.bench_store --help     # sizes, run counts, --profile

Every figure is the median of several runs on files in a temporary directory on disk, with
LabLink's durability settings (WAL, synchronous=FULL). Next to each figure stands a ceiling
measured in the same run: plain ``sqlite3`` doing the same I/O (the same rows in the same
table, the same pragmas, the same transactions) with none of LabLink's Python around it.

Results go to a rich table on the terminal and to ``bench/results/store.json``.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import itertools
import json
import os
import platform
import pstats
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
from rich.console import Console
from rich.table import Table

from bench.workload import INTERVAL_SECONDS, Job, creations, make_jobs
from lablink.events import (
    AnyEvent,
    ExecutionRequested,
    ExecutionStarted,
    ExecutionSucceeded,
    NewEvent,
    decode_event,
    encode_event,
    event_type,
)
from lablink.eventstore import AppendRequest, SQLiteEventStore
from lablink.eventstore.base import format_instant, new_event_id
from lablink.eventstore.sqlite import SCHEMA
from lablink.logstore import open_store
from lablink.projections.runner import Projector, default_projections

RESULTS_DIR = Path(__file__).resolve().parent / "results"
DEFAULT_OUTPUT = RESULTS_DIR / "store.json"

# The same pragmas as lablink.eventstore.sqlite.connect, and the same statements as the store.
PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=FULL",
    "PRAGMA busy_timeout=10000",
    "PRAGMA foreign_keys=ON",
)
INSERT = (
    "INSERT INTO events (event_id, stream_id, version, type, occurred_at, actor,"
    " correlation_id, payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
SELECT_ALL = (
    "SELECT position, event_id, stream_id, version, occurred_at, actor, correlation_id, payload"
    " FROM events ORDER BY position"
)

# The 1-minute load average as each replay run began: the machine may be shared.
REPLAY_LOADS: list[float] = []

# Targets from issue 2.
GROUP_COMMIT_TARGET = 30_000.0
REPLAY_TARGET = 200_000.0

# Events per append_batch call while building the replay log.
BUILD_BATCH = 10_000

Row = tuple[str, str, int, str, str, str, str | None, str]

# A wide table even when the output is a file or a pipe.
console = Console() if sys.stdout.isatty() else Console(width=132)


# -- workload ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Append:
    """One event for one stream, with the version the stream is at before it."""

    stream_id: str
    expected_version: int
    event: NewEvent


def lifecycle(jobs: Sequence[Job]) -> Iterator[Append]:
    """Requested, started, succeeded for every job, fire after fire, in time order.

    Every job fires every INTERVAL_SECONDS, staggered over 80 % of the interval; a run lasts
    1 to 2 s, so one round of fires ends before the next begins and occurred_at never goes
    back in position order.
    """
    versions = {job.job_id: 1 for job in jobs}  # JobCreated is version 1
    interval = timedelta(seconds=INTERVAL_SECONDS)
    for fire in itertools.count(1):
        round_: list[tuple[datetime, str, str, AnyEvent, str]] = []
        for index, job in enumerate(jobs):
            execution_id = f"exec_{fire:08x}{index:08x}"
            scheduled = job.anchor + fire * interval
            actual = scheduled + timedelta(milliseconds=3)
            started = actual + timedelta(milliseconds=40)
            completed = started + timedelta(seconds=1.0 + (index % 5) * 0.25)
            agent = f"agent:{job.equipment_id}"
            round_.append(
                (
                    actual,
                    job.job_id,
                    "scheduler",
                    ExecutionRequested(
                        job_id=job.job_id,
                        execution_id=execution_id,
                        scheduled_time=scheduled,
                        actual_time=actual,
                        trigger_info="scheduled",
                    ),
                    execution_id,
                )
            )
            round_.append(
                (
                    started,
                    job.job_id,
                    agent,
                    ExecutionStarted(
                        job_id=job.job_id, execution_id=execution_id, started_at=started
                    ),
                    execution_id,
                )
            )
            round_.append(
                (
                    completed,
                    job.job_id,
                    agent,
                    ExecutionSucceeded(
                        job_id=job.job_id,
                        execution_id=execution_id,
                        completed_at=completed,
                        started_at=started,
                        result={
                            "samples": 15_000,
                            "file": f"/data/{job.equipment_id}/{execution_id}.h5",
                            "mean_absorbance": 0.4213,
                            "saturated": False,
                        },
                    ),
                    execution_id,
                )
            )
        round_.sort(key=lambda item: item[0])  # stable: a job's own events keep their order
        for occurred_at, stream_id, actor, event, execution_id in round_:
            version = versions[stream_id]
            versions[stream_id] = version + 1
            yield Append(
                stream_id=stream_id,
                expected_version=version,
                event=NewEvent(
                    event=event,
                    actor=actor,
                    occurred_at=occurred_at,
                    correlation_id=execution_id,
                ),
            )


def raw_row(stream_id: str, version: int, new: NewEvent) -> Row:
    """The row the store writes for ``new``: same columns, same text, an id made the same way."""
    return (
        new.event_id or new_event_id(),
        stream_id,
        version,
        event_type(new.event),
        format_instant(new.occurred_at),
        new.actor,
        new.correlation_id,
        encode_event(new.event).decode(),
    )


def append_rows(appends: Sequence[Append]) -> list[Row]:
    return [raw_row(a.stream_id, a.expected_version + 1, a.event) for a in appends]


def creation_rows(jobs: Sequence[Job]) -> list[Row]:
    return [raw_row(job.job_id, 1, job.created) for job in jobs]


def chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[start : start + size] for start in range(0, len(items), size)]


# -- measurement plumbing ---------------------------------------------------------------------


@dataclass
class Series:
    """Timings of one measurement, one per run, each over the same number of events."""

    label: str  # short, for the terminal table
    name: str
    events: int
    seconds: list[float] = field(default_factory=list)

    @property
    def rates(self) -> list[float]:
        return [self.events / s for s in self.seconds]

    @property
    def median(self) -> float:
        return statistics.median(self.rates)

    def as_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "name": self.name,
            "events": self.events,
            "runs": len(self.seconds),
            "seconds": [round(s, 6) for s in self.seconds],
            "events_per_second": [round(r, 1) for r in self.rates],
            "median_events_per_second": round(self.median, 1),
        }


@dataclass
class Figure:
    key: str
    label: str  # short, for the terminal table
    title: str
    measured: Series
    ceilings: list[Series]  # the first one is the ceiling the ratio is taken against
    target: float | None = None
    note: str = ""

    @property
    def ratio(self) -> float:
        return self.measured.median / self.ceilings[0].median

    @property
    def met(self) -> bool | None:
        return None if self.target is None else self.measured.median >= self.target

    def as_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "label": self.label,
            "title": self.title,
            "median_events_per_second": round(self.measured.median, 1),
            "ceiling": self.ceilings[0].name,
            "ceiling_median_events_per_second": round(self.ceilings[0].median, 1),
            "ratio_to_ceiling": round(self.ratio, 4),
            "target_events_per_second": self.target,
            "target_met": self.met,
            "note": self.note,
            "measured": self.measured.as_json(),
            "ceilings": [c.as_json() for c in self.ceilings],
        }


def remove_db(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def raw_connect(path: Path) -> sqlite3.Connection:
    """Plain sqlite3 with the store's pragmas and table: the ceiling's connection."""
    conn = sqlite3.connect(str(path), isolation_level=None)
    for pragma in PRAGMAS:
        conn.execute(pragma)
    conn.executescript(SCHEMA)
    return conn


def check_durability(conn: sqlite3.Connection) -> None:
    (mode,) = conn.execute("PRAGMA journal_mode").fetchone()
    (sync,) = conn.execute("PRAGMA synchronous").fetchone()
    if mode != "wal" or sync != 2:
        raise RuntimeError(f"expected WAL and synchronous=FULL, got {mode!r} and {sync!r}")


def open_plain_or_projected(path: Path, projections: bool) -> SQLiteEventStore:
    store = open_store(path) if projections else SQLiteEventStore(path)
    check_durability(store.conn)
    return store


def expect_position(store: SQLiteEventStore, expected: int) -> None:
    position = store.last_position()
    if position != expected:
        raise RuntimeError(f"the log holds {position} events, expected {expected}")


# -- 1. single-event commits ------------------------------------------------------------------


def single_store(
    path: Path, jobs: Sequence[Job], work: Sequence[Append], projections: bool
) -> float:
    store = open_plain_or_projected(path, projections)
    try:
        store.append_batch(creations(jobs))
        append = store.append
        start = time.perf_counter()
        for item in work:
            append(item.stream_id, item.expected_version, [item.event])
        elapsed = time.perf_counter() - start
        expect_position(store, len(jobs) + len(work))
    finally:
        store.close()
        remove_db(path)
    return elapsed


def single_raw(path: Path, setup: Sequence[Row], rows: Sequence[Row]) -> float:
    conn = raw_connect(path)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(INSERT, setup)
        conn.execute("COMMIT")
        execute = conn.execute
        start = time.perf_counter()
        for row in rows:
            execute("BEGIN IMMEDIATE")
            execute(INSERT, row)
            execute("COMMIT")
        elapsed = time.perf_counter() - start
    finally:
        conn.close()
        remove_db(path)
    return elapsed


# -- 2. group commits -------------------------------------------------------------------------


def batch_store(
    path: Path,
    jobs: Sequence[Job],
    batches: Sequence[Sequence[AppendRequest]],
    events: int,
    projections: bool,
) -> float:
    store = open_plain_or_projected(path, projections)
    try:
        store.append_batch(creations(jobs))
        append_batch = store.append_batch
        start = time.perf_counter()
        for batch in batches:
            append_batch(batch)
        elapsed = time.perf_counter() - start
        expect_position(store, len(jobs) + events)  # a conflict would have written nothing
    finally:
        store.close()
        remove_db(path)
    return elapsed


def batch_raw(path: Path, setup: Sequence[Row], row_batches: Sequence[Sequence[Row]]) -> float:
    conn = raw_connect(path)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(INSERT, setup)
        conn.execute("COMMIT")
        execute, executemany = conn.execute, conn.executemany
        start = time.perf_counter()
        for rows in row_batches:
            execute("BEGIN IMMEDIATE")
            executemany(INSERT, rows)
            execute("COMMIT")
        elapsed = time.perf_counter() - start
    finally:
        conn.close()
        remove_db(path)
    return elapsed


# -- 3. replay --------------------------------------------------------------------------------


@dataclass
class ReplayLog:
    path: Path
    events: int
    executions: int
    jobs: int
    build_seconds: float
    size_bytes: int
    # As built; ``events`` and ``executions`` grow if group commits go into the log later.
    built_events: int = 0
    built_executions: int = 0

    def __post_init__(self) -> None:
        self.built_events = self.built_events or self.events
        self.built_executions = self.built_executions or self.executions


def requests_of(appends: Sequence[Append]) -> list[AppendRequest]:
    return [
        AppendRequest(stream_id=a.stream_id, expected_version=a.expected_version, events=[a.event])
        for a in appends
    ]


def executions_in(appends: Sequence[Append]) -> int:
    return sum(isinstance(a.event.event, ExecutionRequested) for a in appends)


def build_log(
    path: Path, jobs: Sequence[Job], work: Iterator[Append], events: int, batch: int
) -> ReplayLog:
    """The replay log, written through append_batch with no projections attached.

    Takes ``events - len(jobs)`` appends from ``work``, which goes on where the log ends.
    """
    store = SQLiteEventStore(path)
    executions = 0
    try:
        start = time.perf_counter()
        store.append_batch(creations(jobs))
        left = events - len(jobs)
        while left > 0 and (chunk := list(itertools.islice(work, min(batch, left)))):
            left -= len(chunk)
            executions += executions_in(chunk)
            store.append_batch(requests_of(chunk))
        elapsed = time.perf_counter() - start
        expect_position(store, events)
        store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        store.close()
    return ReplayLog(
        path=path,
        events=events,
        executions=executions,
        jobs=len(jobs),
        build_seconds=elapsed,
        size_bytes=path.stat().st_size,
    )


# CPU seconds of each timed rebuild (this process, and the second one's): on a shared machine
# they say what the code costs when wall-clock rates say mostly how busy the machine was.
REBUILD_CPU: dict[str, list[dict[str, float]]] = {}


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def replay_rebuild(store: SQLiteEventStore, log: ReplayLog, processes: int | None = None) -> float:
    """What ``lablink replay`` times: drop every projection and fold the whole log again
    (``processes=None``: as ``lablink replay`` chooses, two from 200,000 events on)."""
    with store.lock:
        cpu, children = time.process_time(), _children_cpu()
        start = time.perf_counter()
        folded = Projector().rebuild(store, store.conn, processes=processes)
        elapsed = time.perf_counter() - start
        REBUILD_CPU.setdefault(str(processes or "default"), []).append(
            {
                "wall_seconds": round(elapsed, 3),
                "cpu_seconds": round(time.process_time() - cpu, 3),
                "second_process_cpu_seconds": round(_children_cpu() - children, 3),
            }
        )
    if folded != log.events:
        raise RuntimeError(f"rebuild folded {folded} events, expected {log.events}")
    (rows,) = store.conn.execute("SELECT COUNT(*) FROM executions").fetchone()
    (jobs,) = store.conn.execute("SELECT COUNT(*) FROM jobs").fetchone()
    if rows != log.executions or jobs != log.jobs:
        raise RuntimeError(f"rebuild left {rows} executions and {jobs} jobs")
    store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return elapsed


def replay_breakdown(store: SQLiteEventStore, log: ReplayLog) -> list[dict[str, Any]]:
    """One rebuild per projection alone, and one with none: where the rebuild time goes.

    A single run each (informative), in one process. Leaves the other projections' tables
    stale, so it runs after the timed rebuilds.
    """
    parts: list[dict[str, Any]] = []
    for name, projections in [
        ("none (read, decode, batch loop)", []),
        *((p.name, [p]) for p in default_projections()),
        ("all default projections, one process", default_projections()),
    ]:
        with store.lock:
            cpu = time.process_time()
            start = time.perf_counter()
            Projector(projections).rebuild(store, store.conn, processes=1)
            elapsed = time.perf_counter() - start
            cpu = time.process_time() - cpu
        store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        parts.append(
            {
                "projections": name,
                "seconds": round(elapsed, 3),
                "cpu_seconds": round(cpu, 3),
                "events_per_second": round(log.events / elapsed, 1),
                "microseconds_per_event": round(elapsed / log.events * 1e6, 2),
                "cpu_microseconds_per_event": round(cpu / log.events * 1e6, 2),
            }
        )
        say(
            f"breakdown: {name}: {log.events / elapsed:,.0f}/s,"
            f" {cpu / log.events * 1e6:.2f} CPU µs/event"
        )
    return parts


def replay_decode(store: SQLiteEventStore, log: ReplayLog) -> float:
    """Reading alone: every RecordedEvent out of read_all, kept nowhere."""
    count = 0
    start = time.perf_counter()
    for _ in store.read_all():
        count += 1
    elapsed = time.perf_counter() - start
    if count != log.events:
        raise RuntimeError(f"read_all gave {count} events, expected {log.events}")
    return elapsed


def replay_raw(log: ReplayLog, decode: Callable[[str], object] | None) -> float:
    """Ceiling: one SELECT over the whole table, optionally decoding each payload."""
    conn = raw_connect(log.path)
    count = 0
    try:
        start = time.perf_counter()
        if decode is None:
            for _ in conn.execute(SELECT_ALL):
                count += 1
        else:
            for row in conn.execute(SELECT_ALL):
                decode(row[7])
                count += 1
        elapsed = time.perf_counter() - start
    finally:
        conn.close()
    if count != log.events:
        raise RuntimeError(f"SELECT gave {count} rows, expected {log.events}")
    return elapsed


# -- machine ----------------------------------------------------------------------------------


def fsync_latency_ms(directory: Path, count: int = 200) -> float:
    """Median time to write 4 KiB and fsync it: what one durable commit waits for at least."""
    path = directory / "fsync-probe"
    samples: list[float] = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        block = b"\0" * 4096
        for _ in range(count):
            start = time.perf_counter()
            os.write(fd, block)
            os.fsync(fd)
            samples.append(time.perf_counter() - start)
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    return statistics.median(samples) * 1000.0


def _proc_field(path: str, name: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() == name:
                    return value.strip()
    except OSError:
        pass
    return "unknown"


def machine_info(directory: Path) -> dict[str, Any]:
    mem = _proc_field("/proc/meminfo", "MemTotal").split()
    ram_gib = round(int(mem[0]) / 1024 / 1024, 1) if mem and mem[0].isdigit() else None
    df = subprocess.run(
        ["df", "-hT", str(directory)], capture_output=True, text=True, check=False
    ).stdout.splitlines()
    return {
        "cpu_model": _proc_field("/proc/cpuinfo", "model name"),
        "logical_cores": os.cpu_count(),
        "ram_gib": ram_gib,
        "os": platform.platform(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "sqlite": sqlite3.sqlite_version,
        "msgspec": msgspec.__version__,
        "disk": " ".join(df[-1].split()) if len(df) > 1 else "unknown",
        "disk_columns": " ".join(df[0].split()) if df else "",
        "temp_dir": str(directory),
        "fsync_4k_median_ms": round(fsync_latency_ms(directory), 3),
    }


# -- the run ----------------------------------------------------------------------------------


@dataclass
class Settings:
    runs: int
    replay_runs: int
    commit_events: int
    commit_streams: int
    batch_events: int
    batch_streams: int
    batch_sizes: list[int]
    replay_events: int
    replay_jobs: int
    replay: bool
    breakdown: bool
    grown_events: int
    projections_batches: bool
    tmpdir: Path | None
    output: Path
    profile: bool
    only_replay: bool = False


def say(message: str) -> None:
    console.log(message)


def measure_commits(settings: Settings, tmp: Path) -> list[Figure]:
    jobs = make_jobs(settings.commit_streams)
    work = list(itertools.islice(lifecycle(jobs), settings.commit_events))
    setup_rows = creation_rows(jobs)
    rows = append_rows(work)
    n = len(work)
    plain = Series("append, no projections", "SQLiteEventStore.append, 1 event per call", n)
    projected = Series(
        "append, projections",
        "open_store(...).append, 1 event per call, 4 projections folded in its transaction",
        n,
    )
    raw = Series("raw INSERT, 1 row/tx", "raw sqlite3: BEGIN IMMEDIATE; INSERT; COMMIT per row", n)
    for run in range(settings.runs):
        plain.seconds.append(single_store(tmp / "commit.db", jobs, work, projections=False))
        projected.seconds.append(single_store(tmp / "commit.db", jobs, work, projections=True))
        raw.seconds.append(single_raw(tmp / "commit.db", setup_rows, rows))
        say(
            f"single commit run {run + 1}/{settings.runs}: plain {plain.rates[-1]:,.0f}/s,"
            f" projections {projected.rates[-1]:,.0f}/s, raw {raw.rates[-1]:,.0f}/s"
        )
    about = f"{n:,} events over {len(jobs)} job streams (execution lifecycle events)"
    return [
        Figure(
            "single_commit",
            "single commit, no projections",
            f"Single-event commit, no projections ({about})",
            plain,
            [raw],
        ),
        Figure(
            "single_commit_projections",
            "single commit, projections",
            f"Single-event commit, with projections ({about})",
            projected,
            [raw],
        ),
    ]


def measure_batches(settings: Settings, tmp: Path) -> list[Figure]:
    jobs = make_jobs(settings.batch_streams)
    work = list(itertools.islice(lifecycle(jobs), settings.batch_events))
    setup_rows = creation_rows(jobs)
    rows = append_rows(work)
    requests = requests_of(work)
    n = len(work)
    figures: list[Figure] = []
    for size in settings.batch_sizes:
        batches = chunks(requests, size)
        row_batches = chunks(rows, size)
        plain = Series(
            f"append_batch x{size}", f"SQLiteEventStore.append_batch, {size:,} appends per call", n
        )
        projected = Series(
            f"append_batch x{size}, projections",
            f"open_store(...).append_batch, {size:,} appends per call",
            n,
        )
        raw = Series(
            f"raw executemany x{size}",
            f"raw sqlite3: BEGIN IMMEDIATE; executemany of {size:,} rows; COMMIT",
            n,
        )
        for run in range(settings.runs):
            plain.seconds.append(batch_store(tmp / "batch.db", jobs, batches, n, False))
            if settings.projections_batches:
                projected.seconds.append(batch_store(tmp / "batch.db", jobs, batches, n, True))
            raw.seconds.append(batch_raw(tmp / "batch.db", setup_rows, row_batches))
            extra = (
                f" projections {projected.rates[-1]:,.0f}/s,"
                if settings.projections_batches
                else ""
            )
            say(
                f"group commit {size} run {run + 1}/{settings.runs}: plain"
                f" {plain.rates[-1]:,.0f}/s,{extra} raw {raw.rates[-1]:,.0f}/s"
            )
        about = f"{n:,} events, one per append, over {len(jobs):,} job streams"
        figures.append(
            Figure(
                f"group_commit_{size}",
                f"group commit x{size}, no projections",
                f"Group commit, batches of {size:,} ({about})",
                plain,
                [raw],
                target=GROUP_COMMIT_TARGET,
            )
        )
        if settings.projections_batches:
            figures.append(
                Figure(
                    f"group_commit_{size}_projections",
                    f"group commit x{size}, projections",
                    f"Group commit with projections, batches of {size:,} ({about})",
                    projected,
                    [raw],
                    note="informative: no target was set for group commit with projections",
                )
            )
    return figures


def measure_replay(
    settings: Settings, tmp: Path
) -> tuple[list[Figure], ReplayLog, list[dict[str, Any]]]:
    jobs = make_jobs(settings.replay_jobs)
    say(f"building a {settings.replay_events:,}-event log ({len(jobs):,} interval jobs)...")
    work = lifecycle(jobs)
    replay_log = build_log(tmp / "replay.db", jobs, work, settings.replay_events, BUILD_BATCH)
    say(
        f"built in {replay_log.build_seconds:.1f} s"
        f" ({replay_log.events / replay_log.build_seconds:,.0f} events/s through append_batch),"
        f" {replay_log.size_bytes / 2**20:,.0f} MiB, {replay_log.executions:,} executions"
    )
    n = replay_log.events
    rebuild = Series(
        "rebuild", "Projector().rebuild(store, store.conn): two processes from 200,000 events", n
    )
    rebuild_one = Series(
        "rebuild, one process", "Projector().rebuild(store, store.conn, processes=1)", n
    )
    decode = Series("read_all", "iteration over store.read_all() (RecordedEvent, nothing kept)", n)
    raw = Series("raw SELECT", "raw sqlite3: SELECT ... ORDER BY position, iterate rows", n)
    raw_json = Series("raw SELECT + json.loads", "raw sqlite3 SELECT + json.loads(payload)", n)
    raw_msgspec = Series(
        "raw SELECT + msgspec",
        "raw sqlite3 SELECT + msgspec.json.decode(payload) (untyped)",
        n,
    )
    raw_typed = Series(
        "raw SELECT + decode_event",
        "raw sqlite3 SELECT + decode_event(payload) (typed, tagged union)",
        n,
    )
    store = SQLiteEventStore(replay_log.path)
    check_durability(store.conn)
    try:
        for run in range(settings.replay_runs):
            REPLAY_LOADS.append(round(os.getloadavg()[0], 2))
            rebuild.seconds.append(replay_rebuild(store, replay_log))
            rebuild_one.seconds.append(replay_rebuild(store, replay_log, processes=1))
            decode.seconds.append(replay_decode(store, replay_log))
            raw.seconds.append(replay_raw(replay_log, None))
            raw_json.seconds.append(replay_raw(replay_log, json.loads))
            raw_msgspec.seconds.append(replay_raw(replay_log, msgspec.json.decode))
            raw_typed.seconds.append(replay_raw(replay_log, decode_event))
            say(
                f"replay run {run + 1}/{settings.replay_runs}: rebuild {rebuild.rates[-1]:,.0f}/s,"
                f" one process {rebuild_one.rates[-1]:,.0f}/s,"
                f" read_all {decode.rates[-1]:,.0f}/s, raw {raw.rates[-1]:,.0f}/s,"
                f" raw+json {raw_json.rates[-1]:,.0f}/s,"
                f" raw+msgspec {raw_msgspec.rates[-1]:,.0f}/s,"
                f" raw+decode_event {raw_typed.rates[-1]:,.0f}/s"
            )
        breakdown = replay_breakdown(store, replay_log) if settings.breakdown else []
        grown = measure_grown(settings, store, replay_log, work) if settings.grown_events else []
    finally:
        store.close()
    about = f"{n:,} events, {replay_log.jobs:,} jobs, {replay_log.built_executions:,} executions"
    figures = [
        Figure(
            "replay_rebuild",
            "replay: rebuild all projections",
            f"Replay: drop and refold all projections ({about})",
            rebuild,
            [raw, raw_json, raw_msgspec, raw_typed],
            target=REPLAY_TARGET,
        ),
        Figure(
            "replay_rebuild_one_process",
            "replay: rebuild, one process",
            f"Replay: drop and refold all projections in one process ({about})",
            rebuild_one,
            [raw, raw_json, raw_msgspec, raw_typed],
            note="informative: the same folds without the second process",
        ),
        Figure(
            "replay_decode",
            "replay: decoding alone (read_all)",
            f"Replay: decoding alone, read_all ({about})",
            decode,
            [raw, raw_json, raw_msgspec, raw_typed],
            note="informative: the part of the rebuild spent reading and decoding the log",
        ),
    ]
    return figures + grown, replay_log, breakdown


def grown_store(store: SQLiteEventStore, batches: Sequence[Sequence[AppendRequest]]) -> float:
    append_batch = store.append_batch
    start = time.perf_counter()
    for batch in batches:
        append_batch(batch)
    return time.perf_counter() - start


def grown_raw(path: Path, row_batches: Sequence[Sequence[Row]]) -> float:
    conn = raw_connect(path)
    try:
        execute, executemany = conn.execute, conn.executemany
        start = time.perf_counter()
        for rows in row_batches:
            execute("BEGIN IMMEDIATE")
            executemany(INSERT, rows)
            execute("COMMIT")
        return time.perf_counter() - start
    finally:
        conn.close()


def measure_grown(
    settings: Settings, store: SQLiteEventStore, replay_log: ReplayLog, work: Iterator[Append]
) -> list[Figure]:
    """Group commit again, now into the big log: the job streams go on firing.

    Each pass takes the next events of the same lifecycle (so versions follow on) and appends
    them to the replay log; the log grows by a few percent over the runs.
    """
    n = settings.grown_events
    figures: list[Figure] = []
    for size in settings.batch_sizes:
        plain = Series(
            f"append_batch x{size}, big log",
            f"SQLiteEventStore.append_batch, {size:,} appends per call, on the replay log",
            n,
        )
        raw = Series(
            f"raw executemany x{size}, big log",
            f"raw sqlite3: BEGIN IMMEDIATE; executemany of {size:,} rows; COMMIT, on the"
            " replay log",
            n,
        )
        first = replay_log.events
        for run in range(settings.runs):
            chunk = list(itertools.islice(work, n))
            plain.seconds.append(grown_store(store, chunks(requests_of(chunk), size)))
            expect_position(store, replay_log.events + n)
            replay_log.events += n
            replay_log.executions += executions_in(chunk)
            chunk = list(itertools.islice(work, n))
            raw.seconds.append(grown_raw(replay_log.path, chunks(append_rows(chunk), size)))
            expect_position(store, replay_log.events + n)
            replay_log.events += n
            replay_log.executions += executions_in(chunk)
            say(
                f"group commit {size} on the big log run {run + 1}/{settings.runs}: plain"
                f" {plain.rates[-1]:,.0f}/s, raw {raw.rates[-1]:,.0f}/s"
                f" (log now {replay_log.events:,} events)"
            )
        figures.append(
            Figure(
                f"group_commit_{size}_big_log",
                f"group commit x{size}, big log",
                f"Group commit, batches of {size:,}, appended to the replay log"
                f" ({n:,} events per run continuing the job streams)",
                plain,
                [raw],
                target=GROUP_COMMIT_TARGET,
                note=f"the log grows from {first:,} to {replay_log.events:,} events over these"
                " runs (store and ceilings take turns appending to it)",
            )
        )
    return figures


def profile_run(settings: Settings, tmp: Path, replay_log: ReplayLog | None) -> Path:
    """cProfile of one rebuild, one read_all pass and one single-commit pass (projections)."""
    report = io.StringIO()

    def record(title: str, action: Callable[[], object]) -> None:
        profiler = cProfile.Profile()
        profiler.enable()
        action()
        profiler.disable()
        report.write(f"\n==== {title} ====\n")
        stats = pstats.Stats(profiler, stream=report)
        stats.sort_stats("tottime").print_stats(30)
        stats.sort_stats("cumulative").print_stats(30)

    jobs = make_jobs(settings.commit_streams)
    work = list(itertools.islice(lifecycle(jobs), settings.commit_events))
    record(
        "single-event commits with projections",
        lambda: single_store(tmp / "profile.db", jobs, work, projections=True),
    )
    record(
        "single-event commits without projections",
        lambda: single_store(tmp / "profile.db", jobs, work, projections=False),
    )
    if replay_log is not None:
        store = SQLiteEventStore(replay_log.path)
        try:
            record("replay: Projector().rebuild", lambda: replay_rebuild(store, replay_log))
            record("replay: read_all", lambda: replay_decode(store, replay_log))
        finally:
            store.close()
    path = settings.output.with_name(settings.output.stem + "-profile.txt")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(report.getvalue(), encoding="utf-8")
    return path


def fmt_rate(value: float) -> str:
    return f"{value:,.0f}"


def print_table(figures: Sequence[Figure], breakdown: Sequence[dict[str, Any]]) -> None:
    table = Table(title="LabLink event store (events/s, median of runs)", show_lines=True)
    table.add_column("Figure")
    table.add_column("Median", justify="right")
    table.add_column("Runs", justify="right")
    table.add_column("Ceiling (same run)")
    table.add_column("Ceiling median", justify="right")
    table.add_column("Ratio", justify="right")
    table.add_column("Target", justify="right")
    table.add_column("Met", justify="center")
    for figure in figures:
        ceiling = figure.ceilings[0]
        met = figure.met
        table.add_row(
            figure.label,
            fmt_rate(figure.measured.median),
            str(len(figure.measured.seconds)),
            ceiling.label,
            fmt_rate(ceiling.median),
            f"{figure.ratio:.0%}",
            fmt_rate(figure.target) if figure.target is not None else "-",
            "-" if met is None else ("[green]yes[/]" if met else "[red]no[/]"),
        )
        for other in figure.ceilings[1:]:
            table.add_row(
                "",
                "",
                "",
                other.label,
                fmt_rate(other.median),
                f"{figure.measured.median / other.median:.0%}",
                "",
                "",
            )
    console.print(table)
    if breakdown:
        parts = Table(title="Where the rebuild goes: one projection at a time (one run each)")
        parts.add_column("Projections folded")
        parts.add_column("events/s", justify="right")
        parts.add_column("µs/event", justify="right")
        parts.add_column("CPU µs/event", justify="right")
        for part in breakdown:
            parts.add_row(
                part["projections"],
                fmt_rate(part["events_per_second"]),
                f"{part['microseconds_per_event']:.1f}",
                f"{part['cpu_microseconds_per_event']:.1f}",
            )
        console.print(parts)


def run(settings: Settings) -> dict[str, Any]:
    started = datetime.now(UTC)
    load_before = os.getloadavg()
    if load_before[0] > 0.5:
        say(
            f"[yellow]warning: the machine is busy (1-minute load average {load_before[0]:.2f});"
            " other processes will make these figures low and noisy[/]"
        )
    with tempfile.TemporaryDirectory(prefix="lablink-bench-", dir=settings.tmpdir) as name:
        tmp = Path(name)
        machine = machine_info(tmp)
        say(
            f"{machine['cpu_model']}, {machine['logical_cores']} cores, {machine['ram_gib']} GiB,"
            f" SQLite {machine['sqlite']}, fsync {machine['fsync_4k_median_ms']} ms; in {tmp}"
        )
        figures = [] if settings.only_replay else measure_commits(settings, tmp)
        figures += [] if settings.only_replay else measure_batches(settings, tmp)
        replay_log: ReplayLog | None = None
        breakdown: list[dict[str, Any]] = []
        if settings.replay:
            replay_figures, replay_log, breakdown = measure_replay(settings, tmp)
            figures += replay_figures
        profile_path = profile_run(settings, tmp, replay_log) if settings.profile else None
    finished = datetime.now(UTC)
    machine["loadavg_1_5_15_before"] = [round(x, 2) for x in load_before]
    machine["loadavg_1_5_15_after"] = [round(x, 2) for x in os.getloadavg()]
    machine["loadavg_1_at_each_replay_run"] = REPLAY_LOADS
    print_table(figures, breakdown)
    result: dict[str, Any] = {
        "benchmark": "event store (issue 2)",
        "command": "python -m bench.bench_store " + " ".join(sys.argv[1:]),
        "date": started.isoformat(timespec="seconds"),
        "duration_seconds": round((finished - started).total_seconds(), 1),
        "machine": machine,
        "settings": {
            "runs": settings.runs,
            "replay_runs": settings.replay_runs,
            "commit_events": settings.commit_events,
            "commit_streams": settings.commit_streams,
            "batch_events": settings.batch_events,
            "batch_streams": settings.batch_streams,
            "batch_sizes": settings.batch_sizes,
            "replay_events": settings.replay_events if settings.replay else None,
            "replay_jobs": settings.replay_jobs if settings.replay else None,
            "big_log_events": settings.grown_events if settings.replay else None,
            "breakdown": settings.breakdown and settings.replay,
            "only_replay": settings.only_replay,
            "pragmas": list(PRAGMAS),
        },
        "replay_log": (
            {
                "events": replay_log.built_events,
                "jobs": replay_log.jobs,
                "executions": replay_log.built_executions,
                "size_bytes": replay_log.size_bytes,
                "build_seconds": round(replay_log.build_seconds, 3),
                "build_events_per_second": round(
                    replay_log.built_events / replay_log.build_seconds, 1
                ),
                "events_after_big_log_commits": replay_log.events,
                "executions_after_big_log_commits": replay_log.executions,
                "build_batch": BUILD_BATCH,
            }
            if replay_log is not None
            else None
        ),
        "figures": [figure.as_json() for figure in figures],
        "replay_breakdown": breakdown,
        "replay_rebuild_cpu": REBUILD_CPU,
        "profile": str(profile_path) if profile_path is not None else None,
    }
    settings.output.parent.mkdir(parents=True, exist_ok=True)
    settings.output.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    say(f"results written to {settings.output} in {result['duration_seconds']} s")
    if profile_path is not None:
        say(f"profile written to {profile_path}")
    return result


def positive(text: str) -> int:
    value = int(text.replace("_", "").replace(",", ""))
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def parse_args(argv: Sequence[str] | None = None) -> Settings:
    parser = argparse.ArgumentParser(
        prog="python -m bench.bench_store",
        description="Benchmark LabLink's SQLite event store: commits, group commits, replay.",
    )
    parser.add_argument("--runs", type=positive, default=5, help="runs per commit figure")
    parser.add_argument(
        "--replay-runs", type=positive, default=5, help="runs of the replay figures"
    )
    parser.add_argument(
        "--commit-events", type=positive, default=2_000, help="events per single-commit run"
    )
    parser.add_argument(
        "--commit-streams", type=positive, default=100, help="job streams they go to"
    )
    parser.add_argument(
        "--batch-events", type=positive, default=20_000, help="events per group-commit run"
    )
    parser.add_argument(
        "--batch-streams", type=positive, default=1_000, help="job streams they go to"
    )
    parser.add_argument(
        "--batch-sizes",
        type=positive,
        nargs="+",
        default=[100, 1_000],
        help="appends per append_batch call",
    )
    parser.add_argument(
        "--replay-events", type=positive, default=1_000_000, help="size of the replay log"
    )
    parser.add_argument(
        "--replay-jobs", type=positive, default=1_000, help="interval jobs in the replay log"
    )
    parser.add_argument("--no-replay", action="store_true", help="skip the replay figures")
    parser.add_argument(
        "--only-replay",
        action="store_true",
        help="only the replay figures (skip the commit and group-commit figures); combine with"
        " --no-big-log-commits for the replay alone",
    )
    parser.add_argument(
        "--big-log-events",
        type=positive,
        default=10_000,
        help="events per run of the group commits into the replay log",
    )
    parser.add_argument(
        "--no-big-log-commits",
        action="store_true",
        help="skip the group commits into the replay log that follow the replay runs",
    )
    parser.add_argument(
        "--no-breakdown",
        action="store_true",
        help="skip the per-projection rebuilds (one run each) that follow the replay runs",
    )
    parser.add_argument(
        "--no-projection-batches",
        action="store_true",
        help="skip the (informative) group-commit runs with projections attached",
    )
    parser.add_argument(
        "--tmpdir", type=Path, default=None, help="where the databases go (default: $TMPDIR)"
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument(
        "--profile",
        action="store_true",
        help="afterwards, cProfile one rebuild, one read_all and one commit pass",
    )
    args = parser.parse_args(argv)
    if args.only_replay and args.no_replay:
        parser.error("--only-replay and --no-replay exclude each other")
    if args.replay_events <= args.replay_jobs:
        parser.error("--replay-events must exceed --replay-jobs")
    return Settings(
        runs=args.runs,
        replay_runs=args.replay_runs,
        commit_events=args.commit_events,
        commit_streams=args.commit_streams,
        batch_events=args.batch_events,
        batch_streams=args.batch_streams,
        batch_sizes=list(args.batch_sizes),
        replay_events=args.replay_events,
        replay_jobs=args.replay_jobs,
        replay=not args.no_replay,
        breakdown=not args.no_breakdown,
        grown_events=0 if args.no_big_log_commits else args.big_log_events,
        projections_batches=not args.no_projection_batches,
        tmpdir=args.tmpdir,
        output=args.output,
        profile=args.profile,
        only_replay=args.only_replay,
    )


def main(argv: Sequence[str] | None = None) -> None:
    run(parse_args(argv))


if __name__ == "__main__":
    main()
