"""The scheduling-engine benchmark (issues 3 and 14): fire lateness, recorded fires, CPU, start-up.

Run it from the repository root::

    .venv/bin/python -m bench.bench_engine            # the default run (about 30 minutes)
    .venv/bin/python -m bench.bench_engine --help     # sizes, runs, window, --profile

Steady state: N interval jobs fire every second (interval_seconds=1), either aligned (one
start_date for all) or spread evenly over the second (start_date offset by i/N s). LabLink runs
its real engine (``Engine.start`` with ``SystemClock``) on a real SQLite file opened as
``lablink serve`` opens it (``open_store(db, background=True)``: WAL, synchronous=FULL, only the
events in each append's transaction; the projector folds the views behind the log in a thread of
its own), the ``NoOpExecutor``, and production logging (``configure_logging``, level info).
Every fire is recorded as events (requested + started, then succeeded). The views are in a file
of their own (``views.db`` beside the log, the log attached read-only), the default since
2026-12-03; ``lablink-logdb`` is the same with the views in the log's own file
(``views_in_log=True``), the layout before, kept for the side-by-side. In the same run the
same job mix goes through APScheduler 3.11's ``AsyncIOScheduler`` with its memory job store
(the baseline) and with its ``SQLAlchemyJobStore`` on a SQLite file (the second baseline).
Each measurement runs in a fresh subprocess, one at a time, the systems taking turns.

Measured over a window that starts after a warm-up (default 3 s + 10 s):

- fire lateness = actual start - scheduled time. LabLink: the instant the executor was handed
  the execution (``dispatch``: after the fire was committed), the figure the issue compares;
  also ``started_at - scheduled_time`` of each execution in the executions view (read once the
  views have folded everything). APScheduler: the instant the job function ran minus
  ``scheduled_run_time`` of its ``EVENT_JOB_EXECUTED`` event;
- recorded / due: runs recorded for fires scheduled inside the window, over jobs x seconds;
- process CPU (user + system, all threads) as % of one core, and per recorded fire (µs);
- LabLink: the projector's lag, commit by commit (fold committed - append committed, from
  ``store.views.lag_samples``) over the window.

Start-up: a database holding 100,000 interval jobs (JobCreated events written with
``append_batch``, projections folded by ``open_store``) is handed to a fresh ``lablink
scheduler`` process (``--executor noop``, ``LABLINK_NATS=off``: the engine without the NATS
bus; ``--startup-bus`` adds a run with it) launched one second before the first job is due; the
time from process start (the kernel's start time of the process, /proc/<pid>/stat) to the first
``execution.pending`` event in the log is the figure.

Results go to a rich table on the terminal and to ``bench/results/engine.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import io
import json
import logging
import math
import os
import pstats
import resource
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, Literal, TypeVar

from msgspec.structs import replace
from rich.console import Console
from rich.table import Table

from bench.bench_store import check_durability, machine_info, remove_db
from lablink.clock import SystemClock
from lablink.domain.requests import parse_job_request
from lablink.domain.validation import normalise
from lablink.errors import StreamVersionConflict
from lablink.events import (
    ExecutionRequested,
    ExecutionStarted,
    ExecutionSucceeded,
    JobCreated,
    JobSpec,
    NewEvent,
)
from lablink.eventstore import AppendRequest, SQLiteEventStore
from lablink.eventstore.base import AppendOutcome, format_instant
from lablink.instruments.execution import (
    ExecutionRequest,
    InstrumentTimes,
    Outcome,
    ProgressReport,
)
from lablink.logconfig import configure_logging
from lablink.logstore import open_store
from lablink.projections.follower import LAG_SAMPLES, Follower
from lablink.projections.jobs import read_snapshot
from lablink.projections.reading import reading_views
from lablink.projections.runner import Projector, default_projections
from lablink.repository import JobRepository
from lablink.runtime import freeze_startup
from lablink.scheduler.engine import Engine, recovery_lists
from lablink.scheduler.executor import NoOpExecutor
from lablink.settings import Settings as LablinkSettings

T = TypeVar("T")
RESULTS_DIR = Path(__file__).resolve().parent / "results"
DEFAULT_OUTPUT = RESULTS_DIR / "engine.json"
REPO_ROOT = Path(__file__).resolve().parent.parent

System = Literal["lablink", "lablink-thread", "lablink-logdb", "aps-memory", "aps-sqlalchemy"]
Alignment = Literal["aligned", "spread"]
SYSTEMS: tuple[System, ...] = (
    "lablink",
    "lablink-thread",
    "lablink-logdb",
    "aps-memory",
    "aps-sqlalchemy",
)
LABLINK_SYSTEMS: tuple[System, ...] = ("lablink", "lablink-thread", "lablink-logdb")
BASELINES: tuple[System, ...] = ("aps-memory", "aps-sqlalchemy")
ALIGNMENTS: tuple[Alignment, ...] = ("aligned", "spread")
SYSTEM_LABELS = {
    "lablink": (
        "LabLink (engine, SQLite WAL FULL; views in views.db, folded behind the log by a child"
        " process)"
    ),
    "lablink-thread": "LabLink, views in views.db folded by a thread of the same process",
    "lablink-logdb": "LabLink, views in the log's file (the layout before views.db)",
    "aps-memory": "APScheduler 3.11 AsyncIOScheduler, MemoryJobStore",
    "aps-sqlalchemy": "APScheduler 3.11 AsyncIOScheduler, SQLAlchemyJobStore (SQLite file)",
}

# Targets from issues 3 and 14.
SPREAD_TARGET_JOBS = 10_000
SPREAD_P99_TARGET_MS = 10.0
ALIGNED_TARGET_JOBS = 1_000
ALIGNED_P99_TARGET_MS = 50.0
STARTUP_TARGET_SECONDS = 2.0
CPU_PER_FIRE_TARGET_RATIO = 3.0  # LabLink's CPU per fire within 3x of the memory store's
PROJECTOR_LAG_P99_TARGET_MS = 100.0  # at 1,000 fires/s sustained for 60 s
# How long the views may take to fold what the engine committed before the figures are read.
SETTLE_SECONDS = 120.0

CREATE_BATCH = 2_000  # JobCreated appends per append_batch call while setting up
STARTUP_BUILD_BATCH = 10_000
STARTUP_INTERVAL_SECONDS = 3_600.0  # the stored jobs fire hourly ...
STARTUP_SPREAD_SECONDS = 3_600.0  # ... their first fires spread over the hour after "due"

# A wide table even when the output is a file or a pipe.
console = Console() if sys.stdout.isatty() else Console(width=160)


def say(message: str) -> None:
    console.log(message)


# -- the job mix ------------------------------------------------------------------------------


def job_spec(now: datetime, interval_seconds: float = 1.0) -> JobSpec:
    """One interval job as the API would store it (validated and normalised by the domain)."""
    request = parse_job_request(
        {
            "name": "Voltage reading",
            "description": "Periodic DMM reading (engine benchmark job).",
            "schedule_type": "measurement",
            "equipment_id": "dmm-01",
            "trigger_type": "interval",
            "interval_seconds": interval_seconds,
            "parameters": {"command": "MEAS:VOLT:DC?"},
            "tags": ["bench"],
            "timezone": "UTC",
            "start_date": (now + timedelta(days=1)).isoformat(),
        }
    )
    spec, _ = normalise(request, now=now, default_timezone="UTC")
    return spec


def anchors(count: int, first: float, spread_seconds: float) -> list[float]:
    """Start instants (epoch seconds): all ``first``, or spread evenly over ``spread_seconds``."""
    return [first + index * spread_seconds / count for index in range(count)]


def creation_requests(
    spec: JobSpec, starts: Sequence[float], now: datetime, prefix: str = "job"
) -> list[AppendRequest]:
    """A JobCreated event per job (start_date = its anchor), ready for append_batch."""
    requests: list[AppendRequest] = []
    for index, start in enumerate(starts):
        anchor = datetime.fromtimestamp(start, UTC)
        job_id = f"{prefix}_{index:06d}"
        created = JobCreated(
            job_id=job_id,
            spec=replace(spec, name=f"Voltage reading {index:06d}", start_date=anchor),
            enabled=True,
            created_by="user:bench",
            created_at=now,
            anchor=anchor,
        )
        requests.append(
            AppendRequest(
                stream_id=job_id,
                expected_version=0,
                events=[NewEvent(event=created, actor="user:bench", occurred_at=now)],
            )
        )
    return requests


# -- statistics -------------------------------------------------------------------------------


def percentile(ordered: Sequence[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default) of sorted values."""
    if not ordered:
        return None
    position = (len(ordered) - 1) * q / 100.0
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summary_ms(lateness_seconds: list[float]) -> dict[str, float | int | None]:
    ordered = sorted(lateness_seconds)

    def ms(value: float | None) -> float | None:
        return None if value is None else round(value * 1000.0, 3)

    return {
        "count": len(ordered),
        "p50_ms": ms(percentile(ordered, 50)),
        "p99_ms": ms(percentile(ordered, 99)),
        "max_ms": ms(ordered[-1] if ordered else None),
        "min_ms": ms(ordered[0] if ordered else None),
    }


def median_of(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


# -- measurement plumbing inside a worker -----------------------------------------------------


def _pid_cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (0 once it has gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _system_busy_seconds() -> float:
    """Busy CPU time of the whole machine (all cores) from /proc/stat, in seconds."""
    try:
        with open("/proc/stat", encoding="ascii") as handle:
            fields = [int(x) for x in handle.readline().split()[1:]]
    except OSError:
        return 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class GcWatch:
    """Collections and time spent in the collector while armed (gc.callbacks)."""

    def __init__(self) -> None:
        self.armed = False
        self.collections = 0
        self.pause_seconds = 0.0
        self.longest_seconds = 0.0
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        elif self.armed:
            took = time.perf_counter() - self._started
            self.collections += 1
            self.pause_seconds += took
            self.longest_seconds = max(self.longest_seconds, took)


@dataclass
class Window:
    """Wall-clock window of the measurement and what the process spent in it."""

    start: float
    end: float
    cpu_seconds: float = 0.0
    wall_seconds: float = 0.0
    other_cpu_seconds: float = 0.0
    late_start_ms: float = 0.0
    helper_cpu_seconds: float = 0.0  # of cpu_seconds: the projector's child process


class LagWatch:
    """The projector's lag over the window: every commit's (fold committed - append committed)
    the follower notes in ``lag_samples``, and how many fold transactions it wrote."""

    def __init__(self, views: Follower) -> None:
        self.views = views
        self.samples: deque[float] = deque()
        self.folds = 0
        self.folded_events = 0
        self.lag_events_at_end = 0

    def arm(self) -> None:
        # The follower appends to whatever deque the attribute holds: an unbounded one of our
        # own keeps every sample of the window and none from before it.
        self.views.lag_samples = self.samples
        self._folds, self._position = self.views.folds, self.views.position

    def disarm(self) -> None:
        self.views.lag_samples = deque(maxlen=LAG_SAMPLES)
        self.folds = self.views.folds - self._folds
        self.folded_events = self.views.position - self._position
        self.lag_events_at_end = self.views.lag_events()

    def figures(self) -> dict[str, Any]:
        return {
            "lag": summary_ms(list(self.samples)),
            "folds": self.folds,
            "folded_events": self.folded_events,
            "events_per_fold": round(self.folded_events / self.folds, 1) if self.folds else None,
            "lag_events_at_window_end": self.lag_events_at_end,
        }


async def measure_window(
    start: float,
    end: float,
    gc_watch: GcWatch,
    profiler: cProfile.Profile | None = None,
    lag: LagWatch | None = None,
    helpers: Callable[[], list[int | None]] = list,
) -> Window:
    """Sleep until ``start``, note CPU; sleep until ``end``, note CPU again. ``helpers``: the
    processes working for this one (the projector's child), whose CPU is counted with it."""
    window = Window(start, end)
    await asyncio.sleep(max(0.0, start - time.time()))
    window.late_start_ms = (time.time() - start) * 1000.0
    pids = [pid for pid in helpers() if pid is not None]
    helped0 = sum(_pid_cpu_seconds(pid) for pid in pids)
    cpu0, wall0, busy0 = time.process_time(), time.perf_counter(), _system_busy_seconds()
    gc_watch.armed = True
    if lag is not None:
        lag.arm()
    if profiler is not None:
        profiler.enable()
    await asyncio.sleep(max(0.0, end - time.time()))
    if profiler is not None:
        profiler.disable()
    if lag is not None:
        lag.disarm()
    gc_watch.armed = False
    cpu1, wall1, busy1 = time.process_time(), time.perf_counter(), _system_busy_seconds()
    helped = sum(_pid_cpu_seconds(pid) for pid in pids) - helped0
    window.helper_cpu_seconds = helped
    window.cpu_seconds = cpu1 - cpu0 + helped
    window.wall_seconds = wall1 - wall0
    window.other_cpu_seconds = max(0.0, (busy1 - busy0) - window.cpu_seconds)
    return window


def window_figures(window: Window, gc_watch: GcWatch, recorded: int) -> dict[str, Any]:
    return {
        "cpu_seconds": round(window.cpu_seconds, 3),
        "wall_seconds": round(window.wall_seconds, 3),
        "cpu_percent": round(100.0 * window.cpu_seconds / window.wall_seconds, 1),
        "projector_process_cpu_percent": round(
            100.0 * window.helper_cpu_seconds / window.wall_seconds, 1
        ),
        # Process CPU over the window per fire recorded for it (the fires of the window are
        # the ones its CPU went to, give or take the fires straddling its edges).
        "cpu_us_per_fire": round(window.cpu_seconds * 1e6 / recorded, 1) if recorded else None,
        "other_processes_cpu_percent": round(
            100.0 * window.other_cpu_seconds / window.wall_seconds, 1
        ),
        "window_late_start_ms": round(window.late_start_ms, 3),
        "gc_collections": gc_watch.collections,
        "gc_pause_ms": round(gc_watch.pause_seconds * 1000.0, 3),
        "gc_longest_ms": round(gc_watch.longest_seconds * 1000.0, 3),
        "max_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1),
    }


# -- worker: LabLink --------------------------------------------------------------------------


@dataclass
class WorkerSpec:
    system: System
    jobs: int
    alignment: Alignment
    warmup: float
    window: float
    tail: float
    directory: str
    result: str
    profile: str | None = None
    # Seconds before its time a fire of an idle job is decided (LABLINK_FIRE_LEAD); the
    # no-op executor gets it at its time, so the dispatch instant stays the one measured.
    fire_lead: float = 0.0


class DispatchTimes:
    """The NoOpExecutor, noting when each execution reached it (its dispatch instant)."""

    holds_until_due = False  # the engine hands it a fire decided ahead at the fire's time

    def __init__(self) -> None:
        self.inner = NoOpExecutor()
        self.seen: list[tuple[float, float]] = []  # (scheduled, dispatched), epoch seconds

    async def execute(self, request: ExecutionRequest, progress: ProgressReport) -> Outcome:
        self.seen.append((request.scheduled_time.timestamp(), time.time()))
        return await self.inner.execute(request, progress)

    async def recover(
        self, request: ExecutionRequest, progress: ProgressReport
    ) -> Awaitable[Outcome] | None:
        return None

    async def stop(self, execution_id: str) -> None:
        await self.inner.stop(execution_id)

    async def recorded(self, execution_id: str) -> None:
        await self.inner.recorded(execution_id)

    def describe_equipment(self, equipment_id: str) -> dict[str, Any]:
        return self.inner.describe_equipment(equipment_id)

    def instrument_times(self, execution_id: str) -> InstrumentTimes:
        return self.inner.instrument_times(execution_id)

    async def aclose(self) -> None:
        await self.inner.aclose()


class BatchLog:
    """Wraps the store's append_batch to note each group-commit transaction (size, time)."""

    def __init__(self, store: SQLiteEventStore) -> None:
        self.store = store
        self.inner = store.append_batch
        self.batches: list[tuple[float, float, int, int]] = []  # (end, seconds, appends, events)
        self.conflicts: list[float] = []  # when an append came back with a version conflict

    def __call__(self, requests: Sequence[AppendRequest]) -> list[AppendOutcome]:
        started = time.perf_counter()
        outcomes = self.inner(requests)
        now = time.time()
        self.conflicts.extend(now for o in outcomes if isinstance(o, StreamVersionConflict))
        self.batches.append(
            (
                now,
                time.perf_counter() - started,
                len(requests),
                sum(len(r.events) for r in requests),
            )
        )
        return outcomes

    def figures(self, start: float, end: float) -> dict[str, Any]:
        inside = [b for b in self.batches if start <= b[0] < end]
        if not inside:
            return {"batches": 0}
        seconds = sorted(b[1] for b in inside)
        appends = sorted(b[2] for b in inside)
        events = sum(b[3] for b in inside)
        return {
            "batches": len(inside),
            "batches_per_second": round(len(inside) / (end - start), 1),
            "events": events,
            "events_per_second": round(events / (end - start), 1),
            "appends_per_batch_median": statistics.median(appends),
            "appends_per_batch_max": appends[-1],
            "batch_ms_median": round(statistics.median(seconds) * 1000.0, 3),
            "batch_ms_p99": round((percentile(seconds, 99) or 0.0) * 1000.0, 3),
            "batch_ms_max": round(seconds[-1] * 1000.0, 3),
            "writer_busy_percent": round(100.0 * sum(seconds) / (end - start), 1),
            "version_conflicts": sum(1 for c in self.conflicts if start <= c < end),
        }


LAYOUT_NAMES = {
    "lablink": "views.db, folded by a child process",
    "lablink-thread": "views.db, folded by a thread",
    "lablink-logdb": "the log's file, folded by a thread",
}


def lead_seconds(system: System, jobs: int) -> float:
    """How long before the first fire the worker starts setting up (setup must fit)."""
    per_job = {
        "lablink": 0.0004,
        "lablink-thread": 0.0004,
        "lablink-logdb": 0.0004,
        "aps-memory": 0.0002,
        "aps-sqlalchemy": 0.003,
    }[system]
    return 1.5 + jobs * per_job


def first_fire(spec: WorkerSpec) -> float:
    return float(math.ceil(time.time() + lead_seconds(spec.system, spec.jobs)))


def job_starts(spec: WorkerSpec, first: float) -> list[float]:
    return anchors(spec.jobs, first, 1.0 if spec.alignment == "spread" else 0.0)


async def lablink_worker(spec: WorkerSpec) -> dict[str, Any]:
    directory = Path(spec.directory)
    path = directory / "scheduler.db"
    in_log = spec.system == "lablink-logdb"
    views_path = path if in_log else directory / "views.db"
    remove_db(path)
    remove_db(directory / "views.db")
    setup_started = time.perf_counter()
    # As lablink/runtime.py opens it: the views follow the log in a process of their own
    # (``lablink-thread``: a thread; ``lablink-logdb``: a thread, in the log's file).
    store = open_store(
        path, background=True, fold_process=spec.system == "lablink", views_in_log=in_log
    )
    check_durability(store.conn)
    views = store.views
    now = datetime.now(UTC)
    first = first_fire(spec)
    starts = job_starts(spec, first)
    requests = creation_requests(job_spec(now), starts, now)
    for begin in range(0, len(requests), CREATE_BATCH):
        store.append_batch(requests[begin : begin + CREATE_BATCH])
    # The runtime starts the engine on views caught up with the log (open_store folds first).
    if not await asyncio.to_thread(views.settled, SETTLE_SECONDS):
        raise RuntimeError("the views did not fold the created jobs in time")

    snapshot_loads: list[float] = []  # (when) each cache miss of the repository read the view

    def snapshot(job_id: str) -> Any:
        snapshot_loads.append(time.time())
        # As runtime.py reads the views: the follower's reader connection.
        with reading_views(store) as reader:
            return read_snapshot(reader, job_id)

    batch_log = BatchLog(store)
    store.append_batch = batch_log  # type: ignore[method-assign]
    executor = DispatchTimes()
    jobs = JobRepository(store, snapshots=snapshot)
    engine = Engine(store, SystemClock(), executor, jobs=jobs, fire_lead=spec.fire_lead)
    with reading_views(store) as reader:
        active, unfinished = recovery_lists(reader)
    await engine.start(active, unfinished)
    freeze_startup()  # as lablink serve does once started
    setup_seconds = time.perf_counter() - setup_started
    overrun = time.time() - first

    gc_watch = GcWatch()
    gc.callbacks.append(gc_watch)
    start, end = first + spec.warmup, first + spec.warmup + spec.window
    profiler = cProfile.Profile() if spec.profile else None
    lag = LagWatch(views)
    window = await measure_window(start, end, gc_watch, profiler, lag, lambda: [views.pid])
    heap, planned = len(getattr(engine.timers, "_heap", ())), len(engine.timers)
    await asyncio.sleep(spec.tail)
    closing = time.perf_counter()
    await engine.aclose(grace_seconds=5.0)
    close_seconds = time.perf_counter() - closing
    settling = time.perf_counter()
    settled = await asyncio.to_thread(views.settled, SETTLE_SECONDS)
    settle_seconds = time.perf_counter() - settling
    store.close()
    gc.callbacks.remove(gc_watch)
    if not settled:
        raise RuntimeError(f"the views were still {views.lag_events()} events behind the log")

    figures = executions_in_window(path, views_path, start, end, spec.jobs)
    dispatch = [d - s for s, d in executor.seen if start <= s < end]
    return {
        **figures,
        "dispatch_lateness": summary_ms(dispatch),
        **window_figures(window, gc_watch, figures["recorded"]),
        "group_commit": batch_log.figures(start, end),
        "projector": lag.figures(),
        "views_settle_seconds_after_close": round(settle_seconds, 3),
        "repository_snapshot_loads": sum(1 for t in snapshot_loads if start <= t < end),
        "timer_heap_entries_at_window_end": heap,
        "timers_planned_at_window_end": planned,
        "setup_seconds": round(setup_seconds, 3),
        "setup_overrun_seconds": round(max(0.0, overrun), 3),
        "close_seconds": round(close_seconds, 3),
        "profile": write_profile(profiler, spec),
    }


def executions_in_window(
    log_path: Path, views_path: Path, start: float, end: float, jobs: int
) -> dict[str, Any]:
    """Runs, misses and lateness of the fires scheduled in [start, end), from the views."""
    low = format_instant(datetime.fromtimestamp(start, UTC))
    high = format_instant(datetime.fromtimestamp(end, UTC))
    conn = sqlite3.connect(str(views_path))
    try:
        rows = conn.execute(
            "SELECT scheduled_time, started_at, status, trigger_info, missed_count"
            " FROM executions WHERE scheduled_time >= ? AND scheduled_time < ?",
            (low, high),
        ).fetchall()
    finally:
        conn.close()
    conn = sqlite3.connect(str(log_path))
    try:
        (events,) = conn.execute(
            "SELECT COUNT(*) FROM events WHERE occurred_at >= ? AND occurred_at < ?", (low, high)
        ).fetchone()
    finally:
        conn.close()
    lateness: list[float] = []
    runs = catch_up = missed = skipped = unfinished = 0
    for scheduled, started, status, trigger, missed_count in rows:
        if status == "missed":
            missed += int(missed_count or 0)
            continue
        if status == "skipped":
            skipped += 1
            continue
        runs += 1
        catch_up += trigger == "catch_up"
        unfinished += status not in ("completed", "failed")
        if started is not None:
            lateness.append(
                (
                    datetime.fromisoformat(started) - datetime.fromisoformat(scheduled)
                ).total_seconds()
            )
    due = round(jobs * (end - start))
    return {
        "due": due,
        "recorded": runs,
        "recorded_percent": round(100.0 * runs / due, 3),
        "catch_up_runs": catch_up,
        "missed_fires": missed,
        "skipped_fires": skipped,
        "runs_not_completed": unfinished,
        "events_in_window": events,
        "lateness": summary_ms(lateness),
    }


def write_profile(profiler: cProfile.Profile | None, spec: WorkerSpec) -> str | None:
    if profiler is None or spec.profile is None:
        return None
    report = io.StringIO()
    report.write(
        f"==== {spec.system}, {spec.jobs:,} jobs {spec.alignment}, {spec.window:g} s window"
        " (cProfile of the event-loop thread; the group-commit writer and projector threads are"
        " not profiled)"
        " ====\n"
    )
    stats = pstats.Stats(profiler, stream=report)
    stats.sort_stats("tottime").print_stats(40)
    stats.sort_stats("cumulative").print_stats(40)
    Path(spec.profile).write_text(report.getvalue(), encoding="utf-8")
    return spec.profile


# -- worker: APScheduler ----------------------------------------------------------------------


async def aps_noop() -> float:
    """The APScheduler job: does nothing, returns the instant it ran."""
    return time.time()


async def aps_worker(spec: WorkerSpec) -> dict[str, Any]:
    from apscheduler.events import (
        EVENT_JOB_ERROR,
        EVENT_JOB_EXECUTED,
        EVENT_JOB_MAX_INSTANCES,
        EVENT_JOB_MISSED,
    )
    from apscheduler.jobstores.memory import MemoryJobStore
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
    from apscheduler.schedulers.asyncio import AsyncIOScheduler
    from apscheduler.triggers.interval import IntervalTrigger

    logging.getLogger("apscheduler").setLevel(logging.ERROR)
    directory = Path(spec.directory)
    path = directory / "apscheduler.db"
    remove_db(path)
    setup_started = time.perf_counter()
    store: Any = (
        MemoryJobStore()
        if spec.system == "aps-memory"
        else SQLAlchemyJobStore(url=f"sqlite:///{path}")
    )
    # LabLink's defaults: coalesce, one instance, 300 s misfire grace time.
    scheduler = AsyncIOScheduler(
        timezone=UTC,
        jobstores={"default": store},
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 300},
    )
    ran: list[tuple[float, float]] = []  # (scheduled, ran), epoch seconds
    counts = {"missed": 0, "max_instances": 0, "error": 0}

    def listener(event: Any) -> None:
        if event.code == EVENT_JOB_EXECUTED:
            ran.append((event.scheduled_run_time.timestamp(), event.retval))
        elif event.code == EVENT_JOB_MISSED:
            counts["missed"] += 1
        elif event.code == EVENT_JOB_MAX_INSTANCES:
            counts["max_instances"] += 1
        else:
            counts["error"] += 1

    scheduler.add_listener(
        listener, EVENT_JOB_EXECUTED | EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES | EVENT_JOB_ERROR
    )
    first = first_fire(spec)
    for index, start_at in enumerate(job_starts(spec, first)):
        scheduler.add_job(
            aps_noop,
            IntervalTrigger(
                seconds=1, start_date=datetime.fromtimestamp(start_at, UTC), timezone=UTC
            ),
            id=f"job_{index:06d}",
        )
    scheduler.start()  # adds the jobs to the store (SQLAlchemy: one INSERT + commit each)
    setup_seconds = time.perf_counter() - setup_started
    overrun = time.time() - first

    gc_watch = GcWatch()
    gc.callbacks.append(gc_watch)
    start, end = first + spec.warmup, first + spec.warmup + spec.window
    profiler = cProfile.Profile() if spec.profile else None
    window = await measure_window(start, end, gc_watch, profiler)
    await asyncio.sleep(spec.tail)
    scheduler.shutdown(wait=False)
    await asyncio.sleep(0.2)
    gc.callbacks.remove(gc_watch)

    inside = [(s, r) for s, r in ran if start <= s < end]
    due = round(spec.jobs * (end - start))
    return {
        "due": due,
        "recorded": len(inside),
        "recorded_percent": round(100.0 * len(inside) / due, 3),
        "missed_events": counts["missed"],
        "max_instances_events": counts["max_instances"],
        "error_events": counts["error"],
        "lateness": summary_ms([r - s for s, r in inside]),
        **window_figures(window, gc_watch, len(inside)),
        "setup_seconds": round(setup_seconds, 3),
        "setup_overrun_seconds": round(max(0.0, overrun), 3),
        "profile": write_profile(profiler, spec),
    }


def worker_main(spec_path: str) -> None:
    """Entry point of a measurement subprocess: run one spec, write its result as JSON."""
    spec = WorkerSpec(**json.loads(Path(spec_path).read_text(encoding="utf-8")))
    # Production logging: JSON lines at level info (the engine's per-event debug lines are
    # filtered out), to stdout, which the parent sends to a file.
    configure_logging("info", json=True)
    body = lablink_worker(spec) if spec.system in LABLINK_SYSTEMS else aps_worker(spec)
    result = asyncio.run(body)
    Path(spec.result).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


# -- the parent: steady-state matrix ----------------------------------------------------------


@dataclass
class Settings:
    sizes: list[int]
    runs: int
    heavy_runs: int
    heavy_from: int
    sqlalchemy_runs: int
    sqlalchemy_max_jobs: int
    systems: list[System]
    alignments: list[Alignment]
    layout_sizes: list[int]
    warmup: float
    window: float
    tail: float
    startup_jobs: int
    startup_runs: int
    startup_aligned: bool
    startup_wait_all: bool
    startup_bus: bool
    startup: bool
    steady: bool
    writer: bool
    profile: bool
    quiet_wait: float
    tmpdir: Path | None
    output: Path
    fire_lead: float = LablinkSettings().fire_lead


@dataclass
class Config:
    jobs: int
    alignment: Alignment
    runs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    failed: dict[str, list[str]] = field(default_factory=dict)  # system -> what went wrong

    @property
    def key(self) -> str:
        return f"{self.jobs}_{self.alignment}"

    @property
    def label(self) -> str:
        return f"{self.jobs:,} {self.alignment}"


def runs_for(settings: Settings, system: System, jobs: int) -> int:
    runs = settings.heavy_runs if jobs >= settings.heavy_from else settings.runs
    if system == "aps-sqlalchemy":
        runs = min(runs, settings.sqlalchemy_runs) if jobs <= settings.sqlalchemy_max_jobs else 0
    if system == "lablink-logdb" and jobs not in settings.layout_sizes:
        runs = 0  # the layout comparison runs at --layout-sizes only
    return runs


def worker_command(spec_path: Path) -> list[str]:
    return [
        sys.executable,
        "-c",
        "import sys; from bench.bench_engine import worker_main; worker_main(sys.argv[1])",
        str(spec_path),
    ]


QUIET_PERCENT = 50.0  # of one core: what other processes may use for the machine to be "quiet"


def machine_busy_percent(sample: float = 1.0) -> float:
    """CPU the whole machine used over ``sample`` seconds, in % of one core."""
    before, started = _system_busy_seconds(), time.perf_counter()
    time.sleep(sample)
    return 100.0 * (_system_busy_seconds() - before) / (time.perf_counter() - started)


def wait_for_quiet(limit: float) -> dict[str, float]:
    """Wait up to ``limit`` s until other processes use < QUIET_PERCENT % of a core."""
    started = time.perf_counter()
    busy = machine_busy_percent() if limit > 0 else -1.0
    while busy >= QUIET_PERCENT and time.perf_counter() - started < limit:
        busy = machine_busy_percent()
    return {
        "waited_seconds": round(time.perf_counter() - started, 1),
        "busy_percent_before": round(busy, 1),
    }


def run_worker(spec: WorkerSpec, tmp: Path, name: str) -> dict[str, Any]:
    spec_path = tmp / f"{name}.spec.json"
    spec_path.write_text(json.dumps(asdict(spec)), encoding="utf-8")
    log_path = tmp / f"{name}.log"
    budget = lead_seconds(spec.system, spec.jobs) * 3 + spec.warmup + spec.window + spec.tail + 120
    with open(log_path, "wb") as log_file:
        try:
            subprocess.run(
                worker_command(spec_path),
                cwd=REPO_ROOT,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                timeout=budget,
                check=True,
            )
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            tail = log_path.read_text(encoding="utf-8", errors="replace")[-3000:]
            raise RuntimeError(f"worker {name} failed ({exc}); its output ends:\n{tail}") from exc
    result: dict[str, Any] = json.loads(Path(spec.result).read_text(encoding="utf-8"))
    return result


def measure_steady(settings: Settings, tmp: Path) -> list[Config]:
    configs = [
        Config(jobs, alignment) for jobs in settings.sizes for alignment in settings.alignments
    ]
    for config in configs:
        most = max(runs_for(settings, system, config.jobs) for system in settings.systems)
        for run in range(most):
            for system in settings.systems:
                if run >= runs_for(settings, system, config.jobs):
                    continue
                name = f"{system}-{config.key}-{run + 1}"
                directory = tmp / name
                directory.mkdir()
                spec = WorkerSpec(
                    system=system,
                    jobs=config.jobs,
                    alignment=config.alignment,
                    warmup=settings.warmup,
                    window=settings.window,
                    tail=settings.tail,
                    directory=str(directory),
                    result=str(tmp / f"{name}.result.json"),
                    fire_lead=settings.fire_lead,
                )
                quiet = wait_for_quiet(settings.quiet_wait)
                try:
                    result = run_worker(spec, tmp, name)
                except RuntimeError as exc:
                    # One worker that overran its budget must not cost the whole matrix.
                    config.failed.setdefault(system, []).append(str(exc)[:2000])
                    say(f"{config.label}, {system}, run {run + 1}: FAILED ({str(exc)[:200]})")
                    continue
                result["quiet_wait"] = quiet
                config.runs.setdefault(system, []).append(result)
                for db in ("scheduler.db", "views.db", "apscheduler.db"):
                    remove_db(directory / db)
                lat = result["lateness"]
                extra = ""
                if system in LABLINK_SYSTEMS:
                    extra = (
                        f", dispatch p99 {fmt_ms(result['dispatch_lateness']['p99_ms'])} ms,"
                        f" projector lag p99 {fmt_ms(result['projector']['lag']['p99_ms'])} ms"
                    )
                say(
                    f"{config.label}, {system}, run {run + 1}: lateness p50/p99/max"
                    f" {fmt_ms(lat['p50_ms'])}/{fmt_ms(lat['p99_ms'])}/{fmt_ms(lat['max_ms'])} ms"
                    f"{extra}, recorded {result['recorded_percent']:.2f} %,"
                    f" CPU {result['cpu_percent']:.0f} %"
                    f" ({result['cpu_us_per_fire'] or 0:,.0f} µs per fire)"
                    f" (other processes {result['other_processes_cpu_percent']:.0f} %)"
                )
        # What is measured so far survives a later failure (the matrix takes half an hour).
        partial = settings.output.with_suffix(".partial.json")
        partial.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text(json.dumps([asdict(c) for c in configs], indent=1), encoding="utf-8")
    return configs


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over runs of each per-run figure."""

    def med(*path: str) -> float | None:
        values: list[float | None] = []
        for run in runs:
            value: Any = run
            for key in path:
                value = value.get(key) if isinstance(value, dict) else None
            values.append(value)
        return median_of(values)

    summary: dict[str, Any] = {
        "runs": len(runs),
        "lateness_p50_ms": med("lateness", "p50_ms"),
        "lateness_p99_ms": med("lateness", "p99_ms"),
        "lateness_max_ms": med("lateness", "max_ms"),
        "recorded_percent": med("recorded_percent"),
        "recorded_percent_lowest": min((r["recorded_percent"] for r in runs), default=None),
        "cpu_percent": med("cpu_percent"),
        "projector_process_cpu_percent": med("projector_process_cpu_percent"),
        "cpu_us_per_fire": med("cpu_us_per_fire"),
        "other_processes_cpu_percent": med("other_processes_cpu_percent"),
    }
    if runs and "dispatch_lateness" in runs[0]:
        summary.update(
            dispatch_p50_ms=med("dispatch_lateness", "p50_ms"),
            dispatch_p99_ms=med("dispatch_lateness", "p99_ms"),
            dispatch_max_ms=med("dispatch_lateness", "max_ms"),
            # Every due fire recorded: no run a coalesced catch-up, none missed, in any run.
            catch_up_runs=sum(r["catch_up_runs"] for r in runs),
            missed_fires=sum(r["missed_fires"] for r in runs),
            skipped_fires=sum(r["skipped_fires"] for r in runs),
            version_conflicts=sum(r["group_commit"].get("version_conflicts", 0) for r in runs),
            appends_per_batch_median=med("group_commit", "appends_per_batch_median"),
            batch_ms_median=med("group_commit", "batch_ms_median"),
            writer_busy_percent=med("group_commit", "writer_busy_percent"),
            projector_lag_p50_ms=med("projector", "lag", "p50_ms"),
            projector_lag_p99_ms=med("projector", "lag", "p99_ms"),
            projector_lag_max_ms=med("projector", "lag", "max_ms"),
            projector_lag_samples=med("projector", "lag", "count"),
            projector_events_per_fold=med("projector", "events_per_fold"),
        )
    return summary


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return round(a / b, 3)


def all_recorded(summary: dict[str, Any]) -> bool:
    """Every due fire of every run recorded as a run of its own (issue 14, target 1)."""
    return (
        (summary.get("recorded_percent_lowest") or 0.0) >= 100.0
        and summary.get("catch_up_runs", 0) == 0
        and summary.get("missed_fires", 0) == 0
    )


def targets_met(
    config: Config, mine: dict[str, Any], memory: dict[str, Any], window: float
) -> dict[str, dict[str, Any]]:
    """Issue 14's targets that this config judges, each with its figures and whether met."""
    out: dict[str, dict[str, Any]] = {}
    if not mine:
        return out
    if memory:
        out["1 dispatch p99 <= APScheduler memory p99, 100 % recorded"] = {
            "lablink_ms": mine.get("dispatch_p99_ms"),
            "memory_ms": memory.get("lateness_p99_ms"),
            "all_recorded": all_recorded(mine),
            "met": all_recorded(mine)
            and (mine.get("dispatch_p99_ms") or math.inf) <= (memory.get("lateness_p99_ms") or 0),
        }
        cpu = ratio(mine.get("cpu_us_per_fire"), memory.get("cpu_us_per_fire"))
        out[f"2 CPU per fire <= {CPU_PER_FIRE_TARGET_RATIO:g}x the memory store's"] = {
            "ratio": cpu,
            "met": cpu is not None and cpu <= CPU_PER_FIRE_TARGET_RATIO,
        }
    p99 = mine.get("dispatch_p99_ms")
    if config.jobs == SPREAD_TARGET_JOBS and config.alignment == "spread":
        out[f"3 10,000 spread: 100 % recorded, p99 <= {SPREAD_P99_TARGET_MS:g} ms"] = {
            "dispatch_p99_ms": p99,
            "all_recorded": all_recorded(mine),
            "met": all_recorded(mine) and p99 is not None and p99 <= SPREAD_P99_TARGET_MS,
        }
    if config.jobs == ALIGNED_TARGET_JOBS and config.alignment == "aligned":
        out[f"3 1,000 aligned: dispatch p99 <= {ALIGNED_P99_TARGET_MS:g} ms"] = {
            "dispatch_p99_ms": p99,
            "met": p99 is not None and p99 <= ALIGNED_P99_TARGET_MS,
        }
    if config.jobs == 1_000 and config.alignment == "spread" and window >= 60.0:
        lag = mine.get("projector_lag_p99_ms")
        out[f"4 projector lag p99 <= {PROJECTOR_LAG_P99_TARGET_MS:g} ms, 1,000 fires/s, 60 s"] = {
            "lag_p99_ms": lag,
            "met": lag is not None and lag <= PROJECTOR_LAG_P99_TARGET_MS,
        }
    return out


RATIO_FIGURES = (
    ("lateness_p50", "lateness_p50_ms", "lateness_p50_ms"),
    ("lateness_p99", "lateness_p99_ms", "lateness_p99_ms"),
    ("lateness_max", "lateness_max_ms", "lateness_max_ms"),
    ("dispatch_p50", "dispatch_p50_ms", "lateness_p50_ms"),
    ("dispatch_p99", "dispatch_p99_ms", "lateness_p99_ms"),
    ("dispatch_max", "dispatch_max_ms", "lateness_max_ms"),
    ("recorded", "recorded_percent", "recorded_percent"),
    ("cpu", "cpu_percent", "cpu_percent"),
    ("cpu_per_fire", "cpu_us_per_fire", "cpu_us_per_fire"),
)


def config_json(config: Config, window: float) -> dict[str, Any]:
    summaries = {system: aggregate(runs) for system, runs in config.runs.items()}
    ratios: dict[str, dict[str, Any]] = {}
    targets: dict[str, Any] = {}
    for mine_name in LABLINK_SYSTEMS:
        mine = summaries.get(mine_name)
        if mine is None:
            continue
        ratios[mine_name] = {
            other_name: {name: ratio(mine.get(a), other.get(b)) for name, a, b in RATIO_FIGURES}
            for other_name in BASELINES
            if (other := summaries.get(other_name)) is not None
        }
        targets[mine_name] = targets_met(config, mine, summaries.get("aps-memory", {}), window)
    return {
        "key": config.key,
        "jobs": config.jobs,
        "alignment": config.alignment,
        "fires_due_per_second": config.jobs,
        "summary": summaries,
        "ratios": ratios,
        "targets": targets,
        "runs": config.runs,
        "failed_runs": config.failed,
    }


# -- the parent: the group-commit writer, projection by projection ----------------------------


def fire_batches(
    job_ids: Sequence[str], rounds: int, first: datetime
) -> list[tuple[list[AppendRequest], list[AppendRequest]]]:
    """Per round, what the engine appends for one aligned fire of every job: one append of
    (requested, started) per job, then one append of (succeeded) per job."""
    versions = dict.fromkeys(job_ids, 1)  # JobCreated is version 1
    out: list[tuple[list[AppendRequest], list[AppendRequest]]] = []
    for round_ in range(rounds):
        scheduled = first + timedelta(seconds=round_)
        actual = scheduled + timedelta(milliseconds=2)
        done = actual + timedelta(milliseconds=300)
        fires: list[AppendRequest] = []
        finishes: list[AppendRequest] = []
        for index, job_id in enumerate(job_ids):
            execution_id = f"exec_{round_:06d}{index:010d}"

            def new(event: Any, at: datetime, execution_id: str = execution_id) -> NewEvent:
                return NewEvent(
                    event=event, actor="scheduler", occurred_at=at, correlation_id=execution_id
                )

            fires.append(
                AppendRequest(
                    stream_id=job_id,
                    expected_version=versions[job_id],
                    events=[
                        new(
                            ExecutionRequested(
                                job_id=job_id,
                                execution_id=execution_id,
                                scheduled_time=scheduled,
                                actual_time=actual,
                                trigger_info="scheduled",
                            ),
                            actual,
                        ),
                        new(
                            ExecutionStarted(
                                job_id=job_id, execution_id=execution_id, started_at=actual
                            ),
                            actual,
                        ),
                    ],
                )
            )
            finishes.append(
                AppendRequest(
                    stream_id=job_id,
                    expected_version=versions[job_id] + 2,
                    events=[
                        new(
                            ExecutionSucceeded(
                                job_id=job_id,
                                execution_id=execution_id,
                                completed_at=done,
                                started_at=actual,
                                result={},
                            ),
                            done,
                        )
                    ],
                )
            )
            versions[job_id] += 3
        out.append((fires, finishes))
    return out


def writer_cost(path: Path, projector: Projector | None, jobs: int, rounds: int) -> list[float]:
    """Seconds per fire (its two appends) through append_batch, one value per round."""
    remove_db(path)
    store = SQLiteEventStore(path) if projector is None else open_store(path, projector)
    check_durability(store.conn)
    try:
        now = datetime.now(UTC)
        first = now + timedelta(seconds=10)
        setup = creation_requests(job_spec(now), anchors(jobs, first.timestamp(), 0.0), now)
        store.append_batch(setup)
        batches = fire_batches([r.stream_id for r in setup], rounds, first)
        per_fire: list[float] = []
        for fires, finishes in batches:
            started = time.perf_counter()
            for batch in (fires, finishes):
                outcomes = store.append_batch(batch)
                if any(isinstance(o, StreamVersionConflict) for o in outcomes):
                    raise RuntimeError("unexpected version conflict in the writer breakdown")
            per_fire.append((time.perf_counter() - started) / jobs)
    finally:
        store.close()
        remove_db(path)
    return per_fire


def measure_writer(
    tmp: Path, quiet_wait: float, jobs: int = 1_000, rounds: int = 3, passes: int = 3
) -> list[dict[str, Any]]:
    """Cost per fire of the group-commit writer (append_batch in the worker thread) -- the
    events alone, which is all the fire path writes -- and of the folds behind it: each
    projection alone, all of them, folded right after each commit in the same thread
    (``open_store`` in its foreground mode) so that the difference is the fold's cost. Batches
    as an aligned tick makes them; the variants take turns over ``passes`` passes of
    ``rounds`` rounds each."""
    variants: list[tuple[str, Callable[[], Projector | None]]] = [
        ("none: the events alone (the fire path)", lambda: None)
    ]

    def one(index: int) -> Projector:
        # A fresh projection per store: they keep rows in memory between batches.
        return Projector([default_projections()[index]])

    variants += [
        (f"+ fold of {p.name}", partial(one, i)) for i, p in enumerate(default_projections())
    ]
    variants.append(("+ fold of all (the projector behind the log)", Projector))
    timings: dict[str, list[float]] = {name: [] for name, _ in variants}
    for _ in range(passes):
        wait_for_quiet(quiet_wait)
        for name, make in variants:
            timings[name] += writer_cost(tmp / "writer.db", make(), jobs, rounds)
    out: list[dict[str, Any]] = []
    for name, seconds in timings.items():
        median = statistics.median(seconds)
        out.append(
            {
                "projections": name,
                "rounds": len(seconds),
                "jobs": jobs,
                "microseconds_per_fire": [round(x * 1e6, 1) for x in seconds],
                "median_microseconds_per_fire": round(median * 1e6, 1),
                "max_fires_per_second_one_writer": round(1.0 / median),
            }
        )
        say(f"writer: {name}: {median * 1e6:,.0f} µs per fire (3 events, 2 appends)")
    return out


# -- the parent: start-up with 100,000 stored jobs --------------------------------------------


def build_startup_db(path: Path, jobs: int, due: float, aligned: bool) -> float:
    """100,000 hourly interval jobs, the first due at ``due``; projections folded by open_store.

    Returns the seconds the build took. JobCreated events go in through append_batch with no
    projection attached (fast), then ``open_store`` catches every projection up.
    """
    remove_db(path)
    remove_db(path.with_name("views.db"))
    started = time.perf_counter()
    now = datetime.now(UTC)
    spec = job_spec(now, STARTUP_INTERVAL_SECONDS)
    starts = anchors(jobs, due, 0.0 if aligned else STARTUP_SPREAD_SECONDS)
    plain = SQLiteEventStore(path)
    try:
        requests = creation_requests(spec, starts, now)
        for begin in range(0, len(requests), STARTUP_BUILD_BATCH):
            plain.append_batch(requests[begin : begin + STARTUP_BUILD_BATCH])
    finally:
        plain.close()
    store = open_store(path)  # folds the JobCreated events into the views
    try:
        with reading_views(store) as views:
            (count,) = views.execute("SELECT COUNT(*) FROM jobs").fetchone()
        if count != jobs:
            raise RuntimeError(f"the jobs view holds {count} jobs, expected {jobs}")
        store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        with store.views.write_lock:
            store.views.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        store.close()
    return time.perf_counter() - started


def process_age_seconds(pid: int) -> float:
    """Seconds since the kernel started process ``pid`` (10 ms resolution)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
        text = handle.read()
    fields = text[text.rindex(")") + 2 :].split()
    started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: starttime
    return time.clock_gettime(time.CLOCK_BOOTTIME) - started


def scheduler_command() -> list[str]:
    script = Path(sys.executable).parent / "lablink"
    if script.exists():
        return [str(script), "scheduler"]
    return [sys.executable, "-c", "from lablink.cli import main; main()", "scheduler"]


def log_lines(path: Path) -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            value = json.loads(line)
            if isinstance(value, dict):
                lines.append(value)
    return lines


def run_startup(
    path: Path,
    due: float,
    jobs: int,
    wait_all: bool,
    kill: bool,
    bus: bool = False,
    timeout: float = 120.0,
) -> dict[str, Any]:
    """Launch ``lablink scheduler`` one second before ``due``; time its first recorded fire.

    ``kill``: stop it with SIGKILL once measured (a graceful stop would first decide and
    commit every fire already due); else SIGTERM, as an operator would. ``bus``: leave the
    NATS bus on (a private nats-server and the relay, the product default); else
    LABLINK_NATS=off, the engine alone."""
    probe = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    (last,) = probe.execute("SELECT COALESCE(MAX(position), 0) FROM events").fetchone()
    query = (
        "SELECT position, occurred_at FROM events WHERE position > ?"
        " AND type = 'execution.pending' ORDER BY position LIMIT 1"
    )
    time.sleep(max(0.0, due - 1.0 - time.time()))
    log_path = path.with_suffix(".log")
    env = {**os.environ, "LABLINK_TIMEZONE": "UTC", "LABLINK_LOG_LEVEL": "info"}
    env.pop("LABLINK_NATS_URL", None)
    if not bus:
        env["LABLINK_NATS"] = "off"
    launched_wall, launched = time.time(), time.perf_counter()
    with open(log_path, "wb") as log_file:
        child = subprocess.Popen(
            [*scheduler_command(), "--data-dir", str(path.parent), "--executor", "noop"],
            cwd=REPO_ROOT,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
        )
        try:
            # The kernel's start time of the process, as a wall-clock instant.
            started_wall = time.time() - process_age_seconds(child.pid)
            found = None
            while found is None and time.perf_counter() - launched < timeout:
                found = probe.execute(query, (last,)).fetchone()
                if found is None:
                    if child.poll() is not None:
                        break
                    time.sleep(0.002)
            detected, detected_wall = time.perf_counter(), time.time()
            all_fired_after = None
            if found is not None and wait_all:
                while time.perf_counter() - launched < timeout:
                    (fired,) = probe.execute(
                        "SELECT COUNT(*) FROM events WHERE position > ?"
                        " AND type = 'execution.pending'",
                        (last,),
                    ).fetchone()
                    if fired >= jobs:
                        all_fired_after = time.perf_counter() - launched
                        break
                    time.sleep(0.05)
        finally:
            if child.poll() is None:
                child.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                child.wait(timeout=120)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
            probe.close()
    if found is None:
        tail = log_path.read_text(encoding="utf-8", errors="replace")[-2000:]
        raise RuntimeError(f"no fire within {timeout:g} s; the scheduler's output ends:\n{tail}")
    start_to_fire = detected_wall - started_wall
    first_fired_at = datetime.fromisoformat(found[1]).timestamp()
    ready = None
    for line in log_lines(log_path):
        if line.get("event") == "scheduler started" and "timestamp" in line:
            ready = datetime.fromisoformat(line["timestamp"]).timestamp() - started_wall
    return {
        "start_to_first_fire_seconds": round(start_to_fire, 3),
        "launch_to_first_fire_seconds": round(detected - launched, 3),
        "launched_after_process_start_seconds": round(launched_wall - started_wall, 3),
        "start_to_ready_seconds": round(ready, 3) if ready is not None else None,
        "due_after_start_seconds": round(due - started_wall, 3),
        "first_fire_lateness_ms": round((first_fired_at - due) * 1000.0, 3),
        "all_fired_after_launch_seconds": (
            round(all_fired_after, 3) if all_fired_after is not None else None
        ),
        "exit_code": child.returncode,
    }


def run_startup_probe(path: Path, tmp: Path, profile: bool) -> dict[str, Any]:
    """Where start-up time goes, phase by phase, in a separate process on the same database."""
    result_path = tmp / "startup-probe.json"
    command = [sys.executable, "-m", "bench.engine_startup_probe", str(path), str(result_path)]
    if profile:
        command.append(str(tmp / "startup-probe.prof.txt"))
    subprocess.run(command, cwd=REPO_ROOT, check=True, timeout=300, capture_output=True)
    result: dict[str, Any] = json.loads(result_path.read_text(encoding="utf-8"))
    return result


def measure_startup(settings: Settings, tmp: Path) -> dict[str, Any]:
    directory = tmp / "startup"
    directory.mkdir()
    path = directory / "scheduler.db"
    jobs = settings.startup_jobs
    # (name, all due at once, runs, NATS bus on)
    variants: list[tuple[str, bool, int, bool]] = [("spread", False, settings.startup_runs, False)]
    if settings.startup_aligned:
        variants.append(("aligned", True, 1, False))
    if settings.startup_bus:
        variants.append(("spread, NATS bus on", False, 1, True))
    estimate = 5.0 + jobs / 8_000  # seconds to build; corrected after the first build
    out: dict[str, Any] = {"jobs": jobs, "variants": {}}
    probe: dict[str, Any] | None = None
    for name, aligned, runs, bus in variants:
        results: list[dict[str, Any]] = []
        builds: list[float] = []
        for run in range(runs):
            for _attempt in range(3):
                wait_for_quiet(settings.quiet_wait)
                due = float(math.ceil(time.time() + estimate * 1.3 + 3.0))
                built = build_startup_db(path, jobs, due, aligned)
                builds.append(built)
                estimate = built
                if time.time() < due - 1.5:
                    break
                say(f"start-up: the build took {built:.1f} s, past the planned launch; again")
            else:
                raise RuntimeError("could not build the start-up database in time")
            say(
                f"start-up ({name}): built {jobs:,} jobs in {built:.1f} s,"
                f" {path.stat().st_size / 2**20:,.0f} MiB; launching 1 s before the first is due"
            )
            result = run_startup(
                path,
                due,
                jobs,
                wait_all=aligned and settings.startup_wait_all,
                kill=aligned,
                bus=bus,
            )
            result["build_seconds"] = round(built, 3)
            results.append(result)
            say(
                f"start-up ({name}) run {run + 1}: process start -> first fire"
                f" {result['start_to_first_fire_seconds']:.3f} s (ready after"
                f" {result['start_to_ready_seconds']} s; first fire"
                f" {result['first_fire_lateness_ms']:.0f} ms late)"
                + (
                    f"; all {jobs:,} fired {result['all_fired_after_launch_seconds']} s"
                    " after launch"
                    if aligned and settings.startup_wait_all
                    else ""
                )
            )
            if probe is None and not aligned and not bus:
                probe = run_startup_probe(path, tmp, settings.profile)
        first = median_of([r["start_to_first_fire_seconds"] for r in results])
        out["variants"][name] = {
            "description": (
                f"{jobs:,} hourly jobs all due at the same instant, 1 s after process start"
                if aligned
                else f"{jobs:,} hourly jobs, first fires spread over the hour, the first due"
                " 1 s after process start"
            )
            + (
                " (NATS bus on: private nats-server + relay)"
                if bus
                else " (LABLINK_NATS=off: the engine alone)"
            ),
            "nats_bus": bus,
            "runs": results,
            "build_seconds": [round(b, 3) for b in builds],
            "median_start_to_first_fire_seconds": first,
            "target_seconds": STARTUP_TARGET_SECONDS,
            "target_met": None if first is None else first <= STARTUP_TARGET_SECONDS,
        }
    out["phases"] = probe
    remove_db(path)
    return out


# -- output -----------------------------------------------------------------------------------


def fmt_ms(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def fmt_triple(summary: dict[str, Any], prefix: str = "lateness") -> str:
    return "/".join(fmt_ms(summary.get(f"{prefix}_{p}_ms")) for p in ("p50", "p99", "max"))


def fmt_pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2g}x" if value < 10 else f"{value:,.0f}x"


def met_text(value: bool | None) -> str:
    return "-" if value is None else ("yes" if value else "no")


def fmt_us(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def pair(left: str, right: str) -> str:
    return f"{left} / {right}"


Rows = tuple[str, list[str], list[list[str]]]  # title, header, rows


def steady_tables(configs: list[dict[str, Any]]) -> list[Rows]:
    """The issue's table, LabLink's details, the layouts and the targets, as rows."""
    issue: list[list[str]] = []
    details: list[list[str]] = []
    layouts: list[list[str]] = []
    targets: list[list[str]] = []
    for config in configs:
        summary = config["summary"]
        label = f"{config['jobs']:,} {config['alignment']}"
        mine = summary.get("lablink", {})
        memory = summary.get("aps-memory", {})
        sqla = summary.get("aps-sqlalchemy", {})
        to_memory = config["ratios"].get("lablink", {}).get("aps-memory", {})
        to_sqla = config["ratios"].get("lablink", {}).get("aps-sqlalchemy", {})
        runs = "/".join(
            str(summary.get(system, {}).get("runs", 0))
            for system in ("lablink", "aps-memory", "aps-sqlalchemy")
        )
        if mine:
            issue.append(
                [
                    f"{label} (runs {runs})",
                    fmt_triple(mine, "dispatch"),
                    fmt_triple(memory),
                    fmt_ratio(to_memory.get("dispatch_p99")),
                    pair(
                        fmt_pct(mine.get("recorded_percent")),
                        fmt_pct(memory.get("recorded_percent")),
                    ),
                    pair(fmt_pct(mine.get("cpu_percent")), fmt_pct(memory.get("cpu_percent"))),
                    pair(
                        fmt_us(mine.get("cpu_us_per_fire")), fmt_us(memory.get("cpu_us_per_fire"))
                    ),
                    fmt_ratio(to_memory.get("cpu_per_fire")),
                    pair(
                        fmt_ms(sqla.get("lateness_p99_ms")), fmt_pct(sqla.get("recorded_percent"))
                    ),
                    fmt_ratio(to_sqla.get("dispatch_p99")),
                ]
            )
            details.append(
                [
                    label,
                    fmt_triple(mine),
                    f"{mine.get('catch_up_runs', 0)} / {mine.get('missed_fires', 0)}"
                    f" / {mine.get('version_conflicts', 0)}",
                    fmt_triple(mine, "projector_lag"),
                    fmt_pct(mine.get("projector_events_per_fold")),
                    pair(
                        fmt_ms(mine.get("batch_ms_median")),
                        fmt_pct(mine.get("writer_busy_percent")),
                    ),
                    fmt_pct(mine.get("other_processes_cpu_percent")),
                ]
            )
        for system in LABLINK_SYSTEMS:
            figures = summary.get(system)
            others = set(LABLINK_SYSTEMS) - {system}
            if figures is None or not others & set(summary):
                continue
            layouts.append(
                [
                    f"{label} (runs {figures['runs']})",
                    LAYOUT_NAMES[system],
                    fmt_triple(figures, "dispatch"),
                    fmt_pct(figures.get("recorded_percent")),
                    fmt_pct(figures.get("cpu_percent")),
                    fmt_us(figures.get("cpu_us_per_fire")),
                    fmt_triple(figures, "projector_lag"),
                    fmt_pct(figures.get("other_processes_cpu_percent")),
                ]
            )
        for system, judged in config["targets"].items():
            for name, verdict in judged.items():
                shown = ", ".join(
                    f"{k} {v if not isinstance(v, float) else round(v, 3)}"
                    for k, v in verdict.items()
                    if k != "met"
                )
                targets.append([name, f"{label}, {system}", shown, met_text(verdict["met"])])
    return [
        (
            "LabLink (views behind the log) vs APScheduler 3.11, 1 s interval jobs: dispatch"
            " lateness p50/p99/max (ms), medians of runs",
            [
                "jobs, interval 1 s (runs L/M/S)",
                "LabLink dispatch",
                "APS memory",
                "ratio p99",
                "recorded % L / M",
                "CPU % L / M",
                "CPU µs per fire L / M",
                "ratio CPU per fire",
                "APS SQLAlchemy p99, rec. %",
                "ratio p99 to SQLAlchemy",
            ],
            issue,
        ),
        (
            "LabLink details: recorded lateness, catch-up/missed/conflicts (all runs),"
            " projector lag p50/p99/max (ms), group commit",
            [
                "config",
                "recorded lateness",
                "catch-up / missed / conflicts",
                "projector lag",
                "events per fold",
                "commit ms median / writer busy %",
                "other processes CPU %",
            ],
            details,
        ),
        (
            "Layouts: the views in the log's file vs in a file of their own (same run)",
            [
                "config",
                "views",
                "dispatch p50/p99/max",
                "recorded %",
                "CPU %",
                "CPU µs per fire",
                "projector lag p50/p99/max",
                "other processes CPU %",
            ],
            layouts,
        ),
        ("Issue 14's targets", ["target", "config", "figures", "met?"], targets),
    ]


def other_tables(startup: dict[str, Any] | None, writer: list[dict[str, Any]]) -> list[Rows]:
    out: list[Rows] = []
    if startup:
        out.append(
            (
                f"Start-up with {startup['jobs']:,} stored jobs (lablink scheduler)",
                [
                    f"Start-up, {startup['jobs']:,} stored jobs",
                    "runs",
                    "process start -> first fire (s)",
                    "process start -> engine ready (s)",
                    "target",
                    "met?",
                ],
                [
                    [
                        variant["description"],
                        str(len(variant["runs"])),
                        ", ".join(
                            f"{r['start_to_first_fire_seconds']:.3f}" for r in variant["runs"]
                        )
                        + f" (median {variant['median_start_to_first_fire_seconds']:.3f})",
                        ", ".join(str(r["start_to_ready_seconds"]) for r in variant["runs"]),
                        f"<= {variant['target_seconds']:g} s",
                        met_text(variant["target_met"]),
                    ]
                    for variant in startup["variants"].values()
                ],
            )
        )
    if writer:
        out.append(
            (
                "Group-commit writer: cost per fire (requested+started, succeeded), and the folds",
                ["appended, then folded", "µs per fire (median)", "fires/s, one thread alone"],
                [
                    [
                        part["projections"],
                        f"{part['median_microseconds_per_fire']:,.0f}",
                        f"{part['max_fires_per_second_one_writer']:,}",
                    ]
                    for part in writer
                ],
            )
        )
    return out


def all_tables(result: dict[str, Any]) -> list[Rows]:
    return [
        table
        for table in steady_tables(result["steady_state"])
        + other_tables(result.get("startup"), result.get("writer_breakdown") or [])
        if table[2]
    ]


def print_tables(result: dict[str, Any]) -> None:
    for title, header, rows in all_tables(result):
        table = Table(title=title, show_lines=True)
        for index, column in enumerate(header):
            table.add_column(column, justify="left" if index == 0 else "right")
        for row in rows:
            table.add_row(*row)
        console.print(table)


def markdown(result: dict[str, Any]) -> str:
    """The tables of BENCHMARKS.md's engine section, from a result."""
    lines: list[str] = []
    for title, header, rows in all_tables(result):
        lines += [f"**{title}**", "", "| " + " | ".join(header) + " |"]
        lines.append("|" + "---|" * len(header))
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        lines.append("")
    return "\n".join(lines)


def git_state() -> dict[str, Any]:
    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=False
        )
        return done.stdout.strip()

    return {
        "commit": git("rev-parse", "HEAD"),
        "dirty_files": [line for line in git("status", "--porcelain").splitlines() if line],
    }


def run(settings: Settings) -> dict[str, Any]:
    started = datetime.now(UTC)
    load_before = os.getloadavg()
    code = git_state()  # at the start: others may commit while this runs
    with tempfile.TemporaryDirectory(prefix="lablink-engine-bench-", dir=settings.tmpdir) as name:
        tmp = Path(name)
        machine = machine_info(tmp)
        say(
            f"{machine['cpu_model']}, {machine['logical_cores']} cores, {machine['ram_gib']} GiB,"
            f" SQLite {machine['sqlite']}, fsync {machine['fsync_4k_median_ms']} ms; in {tmp}"
        )
        writer = measure_writer(tmp, settings.quiet_wait) if settings.writer else []
        configs = measure_steady(settings, tmp) if settings.steady else []
        startup = guarded("start-up", measure_startup, settings, tmp) if settings.startup else None
        profiles = (
            (guarded("profile", profile_run, settings, tmp) or []) if settings.profile else []
        )
    finished = datetime.now(UTC)
    machine["loadavg_1_5_15_before"] = [round(x, 2) for x in load_before]
    machine["loadavg_1_5_15_after"] = [round(x, 2) for x in os.getloadavg()]
    figures = [config_json(config, settings.window) for config in configs]
    import apscheduler
    import sqlalchemy

    result: dict[str, Any] = {
        "benchmark": "scheduling engine (issues 3 and 14)",
        "command": "python -m bench.bench_engine " + " ".join(sys.argv[1:]),
        "date": started.isoformat(timespec="seconds"),
        "duration_seconds": round((finished - started).total_seconds(), 1),
        "machine": machine,
        "code": code,
        "versions": {"apscheduler": apscheduler.__version__, "sqlalchemy": sqlalchemy.__version__},
        "settings": {
            "sizes": settings.sizes,
            "alignments": settings.alignments,
            "layout_sizes": settings.layout_sizes,
            "systems": {s: SYSTEM_LABELS[s] for s in settings.systems},
            "runs": settings.runs,
            "heavy_runs": settings.heavy_runs,
            "heavy_from_jobs": settings.heavy_from,
            "sqlalchemy_runs": settings.sqlalchemy_runs,
            "sqlalchemy_max_jobs": settings.sqlalchemy_max_jobs,
            "quiet_wait_seconds": settings.quiet_wait,
            "warmup_seconds": settings.warmup,
            "window_seconds": settings.window,
            "tail_seconds": settings.tail,
            "fire_lead_seconds": settings.fire_lead,
            "interval_seconds": 1,
            "job_defaults": "coalesce, max_instances 1 (skip), misfire grace 300 s",
            "logging": "lablink.logconfig.configure_logging('info', json=True) to a file",
        },
        "steady_state": figures,
        "startup": startup,
        "writer_breakdown": writer,
        "profiles": profiles,
    }
    print_tables(result)
    settings.output.parent.mkdir(parents=True, exist_ok=True)
    settings.output.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    settings.output.with_suffix(".md").write_text(markdown(result), encoding="utf-8")
    say(f"results written to {settings.output} (tables: .md) in {result['duration_seconds']} s")
    return result


def guarded(
    what: str, measure: Callable[[Settings, Path], T], settings: Settings, tmp: Path
) -> T | None:
    """``measure``, or None if it failed: the figures already taken are still written."""
    try:
        return measure(settings, tmp)
    except (RuntimeError, subprocess.SubprocessError) as exc:
        say(f"{what} FAILED: {str(exc)[:500]}")
        return None


def profile_run(settings: Settings, tmp: Path) -> list[str]:
    """cProfile of the event-loop thread over the window, LabLink 10,000 spread and 1,000
    aligned, one run each; reports next to the JSON
    (``<output stem>-profile-<jobs>-<alignment>.txt``)."""
    paths: list[str] = []
    for jobs, alignment in ((SPREAD_TARGET_JOBS, "spread"), (ALIGNED_TARGET_JOBS, "aligned")):
        name = f"profile-{jobs}-{alignment}"
        directory = tmp / name
        directory.mkdir()
        target = settings.output.parent / f"{settings.output.stem}-profile-{jobs}-{alignment}.txt"
        target.parent.mkdir(parents=True, exist_ok=True)
        spec = WorkerSpec(
            system="lablink",
            jobs=jobs,
            alignment=alignment,  # type: ignore[arg-type]
            warmup=settings.warmup,
            window=settings.window,
            tail=settings.tail,
            directory=str(directory),
            result=str(tmp / f"{name}.result.json"),
            profile=str(target),
            fire_lead=settings.fire_lead,
        )
        run_worker(spec, tmp, name)
        say(f"profile written to {target}")
        paths.append(str(target))
    return paths


def positive(text: str) -> int:
    value = int(text.replace("_", "").replace(",", ""))
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def seconds(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def parse_args(argv: Sequence[str] | None = None) -> Settings:
    parser = argparse.ArgumentParser(
        prog="python -m bench.bench_engine",
        description="Benchmark LabLink's scheduling engine against APScheduler 3.11.",
    )
    parser.add_argument(
        "--sizes", type=positive, nargs="+", default=[100, 1_000, 10_000], help="jobs per config"
    )
    parser.add_argument("--runs", type=positive, default=3, help="runs per config and system")
    parser.add_argument(
        "--heavy-runs", type=positive, default=1, help="runs for configs of --heavy-from jobs"
    )
    parser.add_argument(
        "--heavy-from", type=positive, default=10_000, help="job count from which --heavy-runs"
    )
    parser.add_argument(
        "--sqlalchemy-runs",
        type=positive,
        default=1,
        help="cap on the runs of the APScheduler SQLAlchemy store (the second baseline)",
    )
    parser.add_argument(
        "--sqlalchemy-max-jobs",
        type=positive,
        default=10_000,
        help="largest job count the APScheduler SQLAlchemy store runs at (inserting 10,000"
        " jobs takes it a minute and more when the disk is slow)",
    )
    parser.add_argument(
        "--systems", nargs="+", choices=SYSTEMS, default=list(SYSTEMS), help="what to measure"
    )
    parser.add_argument(
        "--alignments", nargs="+", choices=ALIGNMENTS, default=list(ALIGNMENTS), help="job mixes"
    )
    parser.add_argument(
        "--layout-sizes",
        type=positive,
        nargs="+",
        default=[1_000],
        help="job counts at which lablink-logdb (the views in the log's file) runs too",
    )
    parser.add_argument("--warmup", type=seconds, default=3.0, help="seconds before the window")
    parser.add_argument("--window", type=seconds, default=10.0, help="measured seconds")
    parser.add_argument(
        "--tail", type=seconds, default=1.0, help="seconds of firing after the window"
    )
    parser.add_argument(
        "--startup-jobs", type=positive, default=100_000, help="stored jobs for the start-up"
    )
    parser.add_argument("--startup-runs", type=positive, default=3, help="start-up runs")
    parser.add_argument(
        "--no-startup-aligned",
        action="store_true",
        help="skip the start-up variant with every stored job due at once (one run)",
    )
    parser.add_argument(
        "--startup-wait-all",
        action="store_true",
        help="in that variant, also time until every stored job has fired (slow: minutes)",
    )
    parser.add_argument(
        "--startup-bus",
        action="store_true",
        help="also one start-up run with the NATS bus on (private nats-server + relay, the"
        " product default); the figures otherwise run LABLINK_NATS=off",
    )
    parser.add_argument("--no-startup", action="store_true", help="skip the start-up figures")
    parser.add_argument(
        "--no-steady", action="store_true", help="skip the steady-state firing figures"
    )
    parser.add_argument(
        "--no-writer",
        action="store_true",
        help="skip the group-commit writer breakdown (cost per fire, projection by projection)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="afterwards, cProfile LabLink 10,000 spread and 1,000 aligned (one run each)"
        " and the start-up phases",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=0.0,
        help="before each steady-state run, wait up to this many seconds for other processes"
        f" to use < {QUIET_PERCENT:g} %% of a core (a shared machine); default: no wait",
    )
    parser.add_argument(
        "--fire-lead",
        type=float,
        default=LablinkSettings().fire_lead,
        help="seconds before its time a fire of an idle job is decided (LABLINK_FIRE_LEAD;"
        " default: lablink serve's)",
    )
    parser.add_argument(
        "--tmpdir", type=Path, default=None, help="where the databases go (default: $TMPDIR)"
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    return Settings(
        sizes=list(args.sizes),
        runs=args.runs,
        heavy_runs=args.heavy_runs,
        heavy_from=args.heavy_from,
        sqlalchemy_runs=args.sqlalchemy_runs,
        sqlalchemy_max_jobs=args.sqlalchemy_max_jobs,
        systems=list(args.systems),
        alignments=list(args.alignments),
        layout_sizes=list(args.layout_sizes),
        warmup=args.warmup,
        window=args.window,
        tail=args.tail,
        startup_jobs=args.startup_jobs,
        startup_runs=args.startup_runs,
        startup_aligned=not args.no_startup_aligned,
        startup_wait_all=args.startup_wait_all,
        startup_bus=args.startup_bus,
        startup=not args.no_startup,
        steady=not args.no_steady,
        writer=not args.no_writer,
        profile=args.profile,
        quiet_wait=args.quiet_wait,
        tmpdir=args.tmpdir,
        output=args.output,
        fire_lead=args.fire_lead,
    )


def main(argv: Sequence[str] | None = None) -> None:
    run(parse_args(argv))


if __name__ == "__main__":
    main()
