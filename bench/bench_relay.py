"""The NATS relay benchmark (issue 5): events/s and lag from the SQLite log to a consumer.

Run it from the repository root::

    .venv/bin/python -m bench.bench_relay            # the default run (5 to 8 minutes)
    .venv/bin/python -m bench.bench_relay --help     # rates, sizes, run counts, --profile

One real nats-server (``lablink.bus.server.NatsServer``: loopback, JetStream file storage,
``sync_interval: always``, as LabLink ships it) serves the whole run. Every run gets a fresh
copy of a prepared SQLite log and a fresh ``LABLINK_EVENTS`` stream with the relay's own
settings, and a consumer in its own process (a JetStream ordered push consumer, as another
service would be) that stamps each event on receipt.

- **Paced.** A producer thread in LabLink's process appends the due events every 10 ms as one
  ``append_batch`` (group commit, as ``GroupCommitter`` does from its worker thread) on a store
  from ``open_store`` (projections folded in the transaction) at 1,000 and 10,000 events/s,
  for a warm-up and then a measured window. The relay (``Relay`` with LabLink's defaults,
  attached to the store, on the process's event loop, caught up at the start) publishes them.
  Received events/s and the lag (receipt time minus commit time, both on CLOCK_MONOTONIC,
  which processes on one machine share) are measured; events still unpublished a few seconds
  after the window are counted with the lag they had by then (lower bounds, marked ≥).
- **Saturation.** The relay publishes a prepared backlog as fast as it can.
- **Ceiling.** In the same run, taking turns with the relay: nats-py's raw
  ``js.publish_async``, pipelined, of the very same messages (subjects, envelopes,
  ``Nats-Msg-Id`` headers) to a stream with the same settings, on the same server; and, as a
  diagnostic, the same while the 10,000 events/s producer appends in this process.
- **Own process.** Each paced run is repeated with the relay as ``lablink relay``, its own
  process (a legitimate deployment beside ``lablink serve``): it shares the disk and the two
  cores with the appends, but not the GIL, and sees their commits by PRAGMA data_version.

Every figure is the median of several runs. When a target is missed the relay's thread is
profiled (cProfile, on a backlog drain and on an extra paced run) and its steps are timed one
by one. Results go to rich tables on the terminal and to ``bench/results/relay.json``; no
nats-server or consumer outlives the benchmark.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import itertools
import json
import math
import os
import platform
import pstats
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

import msgspec
import nats
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError
from rich.console import Console
from rich.table import Table

from bench.workload import INTERVAL_SECONDS, Job, creations, make_jobs
from lablink.bus.relay import CHECKPOINTS, NatsOptions, Relay, envelope, row_envelope
from lablink.bus.server import NatsServer, nats_server_binary
from lablink.bus.subjects import EVENTS_ALL, STREAM, event_subject
from lablink.events import (
    AnyEvent,
    ExecutionError,
    ExecutionFailed,
    ExecutionRequested,
    ExecutionStarted,
    ExecutionSucceeded,
    NewEvent,
    RecordedEvent,
    decode_event,
)
from lablink.eventstore import AppendRequest, SQLiteEventStore
from lablink.eventstore.sqlite import LogReader, connect
from lablink.logconfig import configure_logging
from lablink.logstore import open_store

RESULTS_DIR = Path(__file__).resolve().parent / "results"
DEFAULT_OUTPUT = RESULTS_DIR / "relay.json"

# Targets from issue 5.
RATIO_TARGET = 0.5  # LabLink end-to-end events/s over the raw async-publish ceiling, at least
LAG_P99_TARGET_MS = 100.0  # at LAG_TARGET_RATE offered
LAG_TARGET_RATE = 1_000

FAIL_EVERY = 50  # one execution in 50 fails
BUILD_BATCH = 2_000  # appends per append_batch while preparing a log

# A wide table even when the output is a file or a pipe.
console = Console() if sys.stdout.isatty() else Console(width=140)


def say(message: str) -> None:
    console.log(message)


def now() -> float:
    """CLOCK_MONOTONIC in seconds: one clock for this process and the consumer's."""
    return time.monotonic()


# -- workload ---------------------------------------------------------------------------------


def lifecycle(jobs: Sequence[Job]) -> Iterator[AppendRequest]:
    """Requested, started, then succeeded (or, one in FAIL_EVERY, failed) for every job, fire
    after fire, in time order; one event per append, each with its stream's expected version
    (JobCreated is version 1)."""
    versions = {job.job_id: 1 for job in jobs}
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
            requested = ExecutionRequested(
                job_id=job.job_id,
                execution_id=execution_id,
                scheduled_time=scheduled,
                actual_time=actual,
                trigger_info="scheduled",
            )
            running = ExecutionStarted(
                job_id=job.job_id, execution_id=execution_id, started_at=started
            )
            final: AnyEvent
            if (fire * len(jobs) + index) % FAIL_EVERY == 0:
                final = ExecutionFailed(
                    job_id=job.job_id,
                    execution_id=execution_id,
                    completed_at=completed,
                    started_at=started,
                    error=ExecutionError(
                        type="InstrumentTimeout",
                        message=f"{job.equipment_id} did not answer *OPC? within 5 s",
                        code=-110,
                    ),
                )
            else:
                final = ExecutionSucceeded(
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
                )
            round_.append((actual, job.job_id, "scheduler", requested, execution_id))
            round_.append((started, job.job_id, agent, running, execution_id))
            round_.append((completed, job.job_id, agent, final, execution_id))
        round_.sort(key=lambda item: item[0])  # stable: a job's own events keep their order
        for occurred_at, stream_id, actor, event, execution_id in round_:
            version = versions[stream_id]
            versions[stream_id] = version + 1
            yield AppendRequest(
                stream_id=stream_id,
                expected_version=version,
                events=[
                    NewEvent(
                        event=event,
                        actor=actor,
                        occurred_at=occurred_at,
                        correlation_id=execution_id,
                    )
                ],
            )


def chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def build_log(path: Path, jobs: Sequence[Job], requests: Sequence[AppendRequest]) -> float:
    """A log with the jobs' creations and ``requests``, written through ``open_store`` (so
    with its projections); returns the seconds it took. Closed, so the file can be copied."""
    started = time.perf_counter()
    store = open_store(path)
    try:
        for batch in chunks(creations(jobs), BUILD_BATCH):
            store.append_batch(batch)
        for batch in chunks(requests, BUILD_BATCH):
            for outcome in store.append_batch(batch):
                if not isinstance(outcome, list):
                    raise RuntimeError(f"unexpected outcome while building: {outcome!r}")
    finally:
        store.close()
    return time.perf_counter() - started


def make_dir(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)


def write_text(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


def mark_published(db: Path, name: str = "relay") -> int:
    """Set the relay's checkpoint to the end of the log, as a relay that has kept up would
    have left it; returns that position."""
    conn = connect(db)
    try:
        conn.execute(CHECKPOINTS)
        (position,) = conn.execute("SELECT COALESCE(MAX(position), 0) FROM events").fetchone()
        conn.execute(
            "INSERT INTO relay_checkpoints (name, position) VALUES (?, ?)"
            " ON CONFLICT(name) DO UPDATE SET position = excluded.position",
            (name, position),
        )
        return int(position)
    finally:
        conn.close()


def copy_log(template: Path, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / "scheduler.db"
    shutil.copyfile(template, target)
    return target


# -- the stream -------------------------------------------------------------------------------


def stream_config() -> StreamConfig:
    """The stream exactly as ``Relay._ensure_stream`` creates it (one replica)."""
    return StreamConfig(
        name=STREAM,
        subjects=[EVENTS_ALL],
        storage=StorageType.FILE,
        duplicate_window=600.0,
        num_replicas=1,
    )


async def fresh_stream(js: JetStreamContext) -> None:
    with contextlib.suppress(NotFoundError):
        await js.delete_stream(STREAM)
    await js.add_stream(stream_config())


@dataclass(frozen=True, slots=True)
class Message:
    subject: str
    payload: bytes
    msg_id: str


def relay_messages(db: Path, jobs: Sequence[Job]) -> list[Message]:
    """What the relay publishes for the log at ``db``: same subjects, envelopes and ids."""
    equipment = {job.job_id: job.equipment_id for job in jobs}
    conn = connect(db)
    try:
        messages: list[Message] = []
        position = 0
        while batch := LogReader(conn).read_events(position, 5_000):
            for recorded in batch:
                messages.append(
                    Message(
                        event_subject(
                            recorded.type, recorded.stream_id, equipment.get(recorded.stream_id)
                        ),
                        envelope(recorded),
                        recorded.event_id,
                    )
                )
            position = batch[-1].position
        return messages
    finally:
        conn.close()


# -- the consumer (a child process) -----------------------------------------------------------


class _Position(msgspec.Struct):
    position: int


async def consume(url: str, output: Path) -> None:
    """Receive every event of the stream (ordered push consumer, from the start) and stamp
    its receipt; stop on ``until <position>`` (once it arrived) or ``stop`` on stdin."""
    decoder = msgspec.json.Decoder(_Position)
    received: dict[int, float] = {}
    highest = 0
    until: list[int] = []
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    nc = await nats.connect(servers=[url])
    js = nc.jetstream()

    async def on_message(message: Any) -> None:
        nonlocal highest
        stamp = now()
        position = decoder.decode(message.data).position
        received.setdefault(position, stamp)
        highest = max(highest, position)
        if until and highest >= until[0]:
            done.set()

    def command(line: str) -> None:
        words = line.split()
        if words[:1] == ["until"]:
            until.append(int(words[1]))
            if highest >= until[0]:
                done.set()
        else:  # "stop", or stdin closed
            done.set()

    def read_stdin() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(command, line)
        loop.call_soon_threadsafe(command, "stop")

    sub = await js.subscribe(
        EVENTS_ALL,
        stream=STREAM,
        cb=on_message,
        ordered_consumer=True,
        deliver_policy=DeliverPolicy.ALL,
    )
    threading.Thread(target=read_stdin, daemon=True).start()
    print("ready", flush=True)
    await done.wait()
    stopped_at = now()
    with contextlib.suppress(Exception):
        await sub.unsubscribe()
    await nc.close()
    positions = sorted(received)
    write_json(
        output,
        {
            "positions": positions,
            "times": [received[p] for p in positions],
            "stopped_at": stopped_at,
        },
    )
    print("done", flush=True)


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data), encoding="utf-8")


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class Receipts:
    times: dict[int, float]
    stopped_at: float

    @property
    def highest(self) -> int:
        return max(self.times, default=0)


class Consumer:
    """The consumer process, from the benchmark's side."""

    def __init__(self, url: str, output: Path) -> None:
        self.url = url
        self.output = output
        self.process: asyncio.subprocess.Process | None = None

    async def start(self, wait: float = 30.0) -> Consumer:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.bench_relay",
            "consumer",
            self.url,
            str(self.output),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            preexec_fn=_die_with_parent,
        )
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), wait)
        if line.strip() != b"ready":
            raise RuntimeError(f"the consumer did not start: {line!r}")
        return self

    async def finish(self, until: int | None, wait: float) -> Receipts:
        """Stop once position ``until`` arrived (at once with None; after ``wait`` s at most)."""
        process = self.process
        assert process is not None
        assert process.stdin is not None
        process.stdin.write(f"until {until}\n".encode() if until else b"stop\n")
        await process.stdin.drain()
        try:
            await asyncio.wait_for(process.wait(), wait)
        except TimeoutError:
            process.stdin.write(b"stop\n")
            await process.stdin.drain()
            await asyncio.wait_for(process.wait(), 30)
        if process.returncode != 0:
            raise RuntimeError(f"the consumer exited with {process.returncode}")
        data = json.loads(self.output.read_text())
        return Receipts(
            dict(zip(data["positions"], data["times"], strict=True)), data["stopped_at"]
        )

    async def kill(self) -> None:
        process = self.process
        if process is not None and process.returncode is None:
            process.kill()
            await process.wait()


# -- the relay, timed -------------------------------------------------------------------------


class TimedRelay(Relay):
    """LabLink's relay, unchanged, recording when its checkpoint moved (after a batch's acks)
    and how long each checkpoint write took (in its worker thread, off the event loop)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.saves: list[tuple[float, int]] = []
        self.write_seconds: list[float] = []
        super().__init__(*args, **kwargs)
        self._first = self.checkpoint()

    def _set_checkpoint(self, position: int) -> None:
        super()._set_checkpoint(position)
        self.saves.append((now(), position))

    def _write_checkpoint(self, position: int) -> None:
        started = time.monotonic()
        super()._write_checkpoint(position)
        self.write_seconds.append(time.monotonic() - started)  # list.append: thread-safe

    def timings(self) -> dict[str, Any]:
        """Acked batches and checkpoint writes, in milliseconds."""
        writes = sorted(self.write_seconds)
        positions = [self._first] + [position for _, position in self.saves]
        sizes = sorted(b - a for a, b in itertools.pairwise(positions))
        times = [t for t, _ in self.saves]
        gaps = sorted(b - a for a, b in itertools.pairwise(times))
        return {
            "batches_acked": len(self.saves),
            "batch_events_p50": percentile(sizes, 0.5) if sizes else 0,
            "batch_events_max": sizes[-1] if sizes else 0,
            "ms_between_acked_batches_p50": round(percentile(gaps, 0.5) * 1000, 2),
            "ms_between_acked_batches_p99": round(percentile(gaps, 0.99) * 1000, 2),
            "checkpoint_writes": len(writes),
            "checkpoint_write_ms_p50": round(percentile(writes, 0.5) * 1000, 2),
            "checkpoint_write_ms_p99": round(percentile(writes, 0.99) * 1000, 2),
            "checkpoint_write_ms_max": round(writes[-1] * 1000, 2) if writes else 0.0,
            "checkpoint_write_seconds_total": round(sum(writes), 3),
        }


class RelayProcess:
    """``lablink relay`` in its own process, as it is deployed beside ``lablink serve``: it
    shares the disk with the appends, not the GIL. It sees commits by PRAGMA data_version."""

    def __init__(self, db: Path, url: str) -> None:
        self.db = db
        self.url = url
        self.log = db.parent / "relay.log"
        self.process: asyncio.subprocess.Process | None = None

    async def start(self, wait: float = 30.0) -> RelayProcess:
        env = {**os.environ, "LABLINK_DATA_DIR": str(self.db.parent), "LABLINK_NATS_URL": self.url}
        with self.log.open("wb") as output:
            self.process = await asyncio.create_subprocess_exec(
                str(Path(sys.executable).parent / "lablink"),
                "relay",
                env=env,
                stdout=output,
                stderr=asyncio.subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )
        if not await wait_until(lambda: b"relay started" in self.log.read_bytes(), wait):
            raise RuntimeError(f"lablink relay did not start: {self.log.read_text()[-2000:]}")
        await asyncio.sleep(0.5)  # it connects right after that line
        return self

    def published(self) -> int:
        """Its checkpoint, as it writes it (coalesced, a few ms after the acks)."""
        conn = sqlite3.connect(self.db)
        try:
            row = conn.execute(
                "SELECT position FROM relay_checkpoints WHERE name = 'relay'"
            ).fetchone()
            return int(row[0]) if row else 0
        finally:
            conn.close()

    async def stop(self) -> None:
        process = self.process
        if process is None or process.returncode is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), 15)
        except TimeoutError:
            process.kill()
            await process.wait()


async def wait_until(condition: Callable[[], bool], seconds: float, step: float = 0.02) -> bool:
    deadline = now() + seconds
    while not condition():
        if now() > deadline:
            return False
        await asyncio.sleep(step)
    return True


# -- statistics -------------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest rank."""
    if not sorted_values:
        return float("nan")
    rank = max(0, min(len(sorted_values) - 1, math.ceil(fraction * len(sorted_values)) - 1))
    return sorted_values[rank]


def lag_summary(lags_ms: Sequence[float]) -> dict[str, float]:
    ordered = sorted(lags_ms)
    return {
        "p50_ms": round(percentile(ordered, 0.50), 2),
        "p99_ms": round(percentile(ordered, 0.99), 2),
        "max_ms": round(ordered[-1], 2) if ordered else float("nan"),
        "mean_ms": round(statistics.fmean(ordered), 2) if ordered else float("nan"),
    }


def median_of(runs: Sequence[dict[str, Any]], *keys: str) -> float:
    values: list[float] = []
    for run in runs:
        value: Any = run
        for key in keys:
            value = value[key]
        values.append(float(value))
    return statistics.median(values)


# -- paced runs -------------------------------------------------------------------------------


@dataclass
class Producer:
    """Appends the due events every ``tick`` seconds as one group commit, open loop: a late
    tick appends more, so the offered rate holds as long as the store can take it."""

    store: SQLiteEventStore
    requests: Sequence[AppendRequest]
    rate: float
    warmup: float
    duration: float
    tick: float
    window: tuple[float, float] = (0.0, 0.0)
    appended: int = 0
    batches: int = 0
    late_ticks: int = 0
    append_seconds: list[float] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        started = now()
        self.window = (started + self.warmup, started + self.warmup + self.duration)
        end = self.window[1]
        for beat in itertools.count(1):
            current = now()
            if current >= end or self.stop.is_set():
                return
            due = min(int(self.rate * (current - started)), len(self.requests))
            if due > self.appended:
                batch = self.requests[self.appended : due]
                before = now()
                self.store.append_batch(batch)
                self.append_seconds.append(now() - before)
                self.appended = due
                self.batches += 1
            wake = started + beat * self.tick
            pause = wake - now()
            if pause > 0:
                time.sleep(pause)
            else:
                self.late_ticks += 1


async def paced_run(
    settings: Settings,
    server: NatsServer,
    admin: JetStreamContext,
    template: Path,
    requests: Sequence[AppendRequest],
    rate: int,
    directory: Path,
    profiler: cProfile.Profile | None = None,
    own_process: bool = False,
) -> dict[str, Any]:
    """One paced run, the relay on this process's event loop or (``own_process``) as
    ``lablink relay``; with ``profiler``, the event loop's thread (the in-process relay's) is
    profiled from the relay's start to the end of the producer."""
    db = copy_log(template, directory)
    await fresh_stream(admin)
    consumer = await Consumer(server.url, directory / "receipts.json").start()
    commits: dict[int, float] = {}

    def committed(events: list[RecordedEvent]) -> None:  # in the committing thread
        stamp = now()
        for recorded in events:
            commits[recorded.position] = stamp

    store = open_store(db)
    relay: TimedRelay | None = None
    process: RelayProcess | None = None
    try:
        store.subscribe(committed)  # before the relay's listener: the commit time comes first
        first_position = store.last_position() + 1
        if own_process:
            process = await RelayProcess(db, server.url).start()
            published: Callable[[], int] = process.published
        else:
            relay = TimedRelay(db, NatsOptions(url=server.url))
            relay.attach(store)
            if profiler is not None:
                profiler.enable()
            await relay.start()
            published = relay.checkpoint
        producer = Producer(
            store, requests, rate, settings.warmup, settings.duration, settings.tick
        )
        await asyncio.to_thread(producer.run)
        if profiler is not None:
            profiler.disable()
        produced_at = now()
        last = store.last_position()
        published_then = published()
        caught_up = await wait_until(lambda: published() >= last, settings.grace)
        receipts = await consumer.finish(published(), wait=30)
    finally:
        if profiler is not None:
            profiler.disable()
        await consumer.kill()
        if relay is not None:
            await relay.aclose(drain_seconds=0)
        if process is not None:
            await process.stop()
        store.close()
    start, end = producer.window
    in_window = [p for p, t in commits.items() if start <= t < end and p >= first_position]
    lags_ms: list[float] = []
    unreceived = 0
    for position in in_window:
        receipt = receipts.times.get(position)
        if receipt is None:  # censored: it had not arrived when the consumer stopped
            unreceived += 1
            receipt = receipts.stopped_at
        lags_ms.append((receipt - commits[position]) * 1000)
    received = sum(1 for t in receipts.times.values() if start <= t < end)
    by_second: dict[int, float] = {}
    for position, lag in zip(in_window, lags_ms, strict=True):
        second = int(commits[position] - start)
        by_second[second] = max(by_second.get(second, 0.0), lag)
    appends = sorted(producer.append_seconds)
    return {
        "offered_events_per_second": rate,
        "appended_events_per_second": round(len(in_window) / settings.duration, 1),
        "received_events_per_second": round(received / settings.duration, 1),
        "events_committed_in_window": len(in_window),
        "events_received_in_window": received,
        "lag": lag_summary(lags_ms),
        "lag_is_lower_bound": unreceived > 0,
        "max_lag_ms_by_second_of_window": [round(by_second[k], 1) for k in sorted(by_second)],
        "unreceived_when_stopped": unreceived,
        "relay_caught_up_within_grace": caught_up,
        "unpublished_when_producer_stopped": last - published_then,
        "seconds_to_stop_after_window": round(receipts.stopped_at - produced_at, 2),
        "producer": {
            "batches": producer.batches,
            "late_ticks": producer.late_ticks,
            "append_batch_ms_p50": round(percentile(appends, 0.5) * 1000, 2),
            "append_batch_ms_p99": round(percentile(appends, 0.99) * 1000, 2),
        },
        "relay": relay.timings() if relay is not None else {"process": "lablink relay"},
    }


# -- saturation and the raw ceiling -----------------------------------------------------------


async def saturation_run(
    server: NatsServer, admin: JetStreamContext, template: Path, total: int, directory: Path
) -> dict[str, Any]:
    """The relay drains a backlog of ``total`` events; no producer."""
    db = copy_log(template, directory)
    await fresh_stream(admin)
    consumer = await Consumer(server.url, directory / "receipts.json").start()
    relay = TimedRelay(db, NatsOptions(url=server.url))
    try:
        started = now()
        await relay.start()
        if not await wait_until(lambda: relay.status.published_position >= total, 600):
            raise RuntimeError("the relay did not publish the backlog within 600 s")
        receipts = await consumer.finish(total, wait=120)
    finally:
        await consumer.kill()
        await relay.aclose(drain_seconds=0)
    first_ack, last_ack = relay.saves[0][0], relay.saves[-1][0]
    first_batch = relay.saves[0][1]
    last_receipt = max(receipts.times.values())
    return {
        "events": total,
        "published_events_per_second": round(total / (last_ack - started), 1),
        "first_to_last_ack_events_per_second": round(
            (total - first_batch) / (last_ack - first_ack), 1
        ),
        "end_to_end_events_per_second": round(total / (last_receipt - started), 1),
        "received": len(receipts.times),
        "seconds": round(last_ack - started, 3),
        "relay": relay.timings(),
    }


async def raw_run(
    server: NatsServer, admin: JetStreamContext, messages: Sequence[Message], directory: Path
) -> dict[str, Any]:
    """nats-py's js.publish_async of the relay's messages, pipelined (nats-py's default of
    4,000 in flight), then every ack awaited."""
    make_dir(directory)
    await fresh_stream(admin)
    consumer = await Consumer(server.url, directory / "receipts.json").start()
    nc = await nats.connect(servers=[server.url])
    try:
        js = nc.jetstream(timeout=30)
        started = now()
        acks = [
            await js.publish_async(m.subject, m.payload, headers={"Nats-Msg-Id": m.msg_id})
            for m in messages
        ]
        sent = now()
        await asyncio.gather(*acks)
        acked = now()
        receipts = await consumer.finish(len(messages), wait=120)
    finally:
        await consumer.kill()
        await nc.close()
    last_receipt = max(receipts.times.values())
    return {
        "events": len(messages),
        "published_events_per_second": round(len(messages) / (acked - started), 1),
        "publish_calls_events_per_second": round(len(messages) / (sent - started), 1),
        "end_to_end_events_per_second": round(len(messages) / (last_receipt - started), 1),
        "received": len(receipts.times),
        "seconds": round(acked - started, 3),
    }


async def raw_under_load(
    settings: Settings,
    server: NatsServer,
    admin: JetStreamContext,
    template: Path,
    requests: Sequence[AppendRequest],
    messages: Sequence[Message],
    rate: int,
    directory: Path,
) -> dict[str, Any]:
    """The raw ceiling again, while the paced producer appends at ``rate`` in this process
    (a thread, as in the paced runs): what nats-py alone gets from the same process, CPU and
    disk the relay shares with the appends. A diagnostic, not a target."""
    db = copy_log(template, directory)
    await fresh_stream(admin)
    consumer = await Consumer(server.url, directory / "receipts.json").start()
    store = open_store(db)
    producer = Producer(store, requests, rate, 0.0, 600.0, settings.tick)
    producing = asyncio.ensure_future(asyncio.to_thread(producer.run))
    nc: NATS | None = None
    try:
        await asyncio.sleep(settings.warmup)
        nc = await nats.connect(servers=[server.url])
        js = nc.jetstream(timeout=30)
        appended_before = producer.appended
        started = now()
        acks = [
            await js.publish_async(m.subject, m.payload, headers={"Nats-Msg-Id": m.msg_id})
            for m in messages
        ]
        await asyncio.gather(*acks)
        acked = now()
        appended = producer.appended - appended_before
        producer.stop.set()
        await producing
        receipts = await consumer.finish(len(messages), wait=120)
    finally:
        producer.stop.set()
        with contextlib.suppress(Exception):
            await producing
        await consumer.kill()
        if nc is not None:
            await nc.close()
        store.close()
    return {
        "events": len(messages),
        "offered_append_rate": rate,
        "appended_events_per_second_meanwhile": round(appended / (acked - started), 1),
        "published_events_per_second": round(len(messages) / (acked - started), 1),
        "received": len(receipts.times),
    }


# -- where the time goes ----------------------------------------------------------------------


PROFILE_KEYS = (
    "_publish_batch",
    "read_events",
    "event_of",
    "decode_event",
    "envelope",
    "event_subject",
    "_equipment_of",
    "publish_async",
    "publish ",
    "_save",
    "_refresh_lag",
    "checkpoint",
    "_log_position",
    "execute",
    "gather",
    "select",
    "_process_msg",
    "parse",
)


def summarise_profile(profiler: cProfile.Profile, output: Path, seconds: float) -> dict[str, Any]:
    """Write pstats' report to ``output``; return the relay's and nats-py's main functions."""
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text)
    stats.sort_stats("tottime").print_stats(30)
    stats.sort_stats("cumulative").print_stats(45)
    write_text(output, text.getvalue())
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    functions: dict[str, dict[str, float]] = {}
    for (filename, line, name), (_, calls, own, cumulative, _callers) in raw.items():
        where = filename.split("/site-packages/")[-1].split("/work/main/")[-1]
        where = where.split("/lib/python3.11/")[-1]
        functions[f"{name} {where}:{line}"] = {
            "calls": calls,
            "own_s": round(own, 4),
            "cumulative_s": round(cumulative, 4),
            "cumulative_percent": round(100 * cumulative / seconds, 1),
        }
    picked = {
        name: figures
        for name, figures in functions.items()
        if any(key in name for key in PROFILE_KEYS) and figures["cumulative_s"] > 0.005
    }
    return {
        "seconds_profiled": round(seconds, 3),
        "raw_profile": str(output),
        "functions": dict(
            sorted(picked.items(), key=lambda item: item[1]["cumulative_s"], reverse=True)
        ),
    }


async def profile_drain(
    server: NatsServer, admin: JetStreamContext, template: Path, total: int, output: Path
) -> dict[str, Any]:
    """cProfile of the event loop's thread while the relay drains the backlog (no consumer)."""
    db = copy_log(template, Path(tempfile.mkdtemp(prefix="lablink-bench-relay-profile-")))
    await fresh_stream(admin)
    relay = TimedRelay(db, NatsOptions(url=server.url))
    profiler = cProfile.Profile()
    try:
        started = now()
        profiler.enable()
        await relay.start()
        await wait_until(lambda: relay.status.published_position >= total, 600)
        profiler.disable()
        seconds = now() - started
    finally:
        profiler.disable()
        await relay.aclose(drain_seconds=0)
        shutil.rmtree(db.parent, ignore_errors=True)
    return {
        "events": total,
        "events_per_second_under_profiler": round(total / seconds, 1),
        "relay": relay.timings(),
        **summarise_profile(profiler, output, seconds),
    }


def timed_ms(action: Callable[[], object], repeat: int) -> float:
    """Median milliseconds of ``action`` over ``repeat`` calls."""
    samples: list[float] = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        samples.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(samples), 3)


def relay_steps(template: Path, batch: int = 1000) -> dict[str, Any]:
    """The relay's per-batch steps outside NATS, timed one by one on a copy of the backlog,
    and what the same work costs done differently (``what_if_ms``)."""
    directory = Path(tempfile.mkdtemp(prefix="lablink-bench-relay-steps-"))
    try:
        db = copy_log(template, directory)
        relay = Relay(db, NatsOptions(url="nats://127.0.0.1:1"), batch_size=batch)
        conn = relay._conn
        rows = LogReader(conn).read_rows(0, batch)
        events = [decode_event(row[8]) for row in rows]
        positions = itertools.count(1)  # a new value each time, so every write writes
        raw_encoder = msgspec.json.Encoder()

        def spliced() -> list[bytes]:
            # The stored payload spliced in as msgspec.Raw: no decode at all. Not what the
            # relay does: not byte-for-byte today's envelope for rows of an older schema or a
            # float field stored as an int.
            return [
                raw_encoder.encode(
                    {
                        "position": r[0],
                        "event_id": r[1],
                        "stream_id": r[2],
                        "version": r[3],
                        "type": r[4],
                        "occurred_at": r[5],
                        "actor": r[6],
                        "correlation_id": r[7],
                        "data": msgspec.Raw(r[8].encode()),
                    }
                )
                for r in LogReader(conn).read_rows(0, batch)
            ]

        def relay_today() -> list[bytes]:
            return [
                row_envelope(r, decode_event(r[8])) for r in LogReader(conn).read_rows(0, batch)
            ]

        steps = {
            f"SELECT {batch} rows": timed_ms(lambda: LogReader(conn).read_rows(0, batch), 20),
            f"decode_event() x {batch}": timed_ms(
                lambda: [decode_event(row[8]) for row in rows], 20
            ),
            f"row_envelope() x {batch}": timed_ms(
                lambda: [row_envelope(r, e) for r, e in zip(rows, events, strict=True)], 20
            ),
            f"_subject() x {batch} (cached event_subject + _equipment_of)": timed_ms(
                lambda: [relay._subject(r, e) for r, e in zip(rows, events, strict=True)], 20
            ),
            "_refresh_lag() (MAX(position) + oldest unpublished)": timed_ms(
                relay._refresh_lag, 200
            ),
            "_write_checkpoint() (UPSERT, synchronous=FULL, worker thread)": timed_ms(
                lambda: relay._write_checkpoint(next(positions)), 50
            ),
        }
        what_if = {
            f"relay now: SELECT + decode + row_envelope x {batch}": timed_ms(relay_today, 20),
            f"before: read_events({batch}) + envelope() x {batch}": timed_ms(
                lambda: [envelope(e) for e in LogReader(conn).read_events(0, batch)], 20
            ),
            f"payload spliced as msgspec.Raw x {batch} (not used)": timed_ms(spliced, 20),
        }
        conn.close()
        relay._writer.close()
        return {"batch": batch, "steps_ms": steps, "what_if_ms": what_if}
    finally:
        shutil.rmtree(directory, ignore_errors=True)


# -- machine ----------------------------------------------------------------------------------


def fsync_samples(directory: Path, count: int) -> list[float]:
    """Seconds to write 4 KiB and fsync it, ``count`` times: what one durable write (a SQLite
    commit, a JetStream message with sync_interval: always) waits for at least."""
    path = directory / "fsync-probe"
    samples: list[float] = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        block = b"\0" * 4096
        for _ in range(count):
            started = time.perf_counter()
            os.write(fd, block)
            os.fsync(fd)
            samples.append(time.perf_counter() - started)
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    return samples


def fsync_latency_ms(directory: Path, count: int = 200) -> float:
    return statistics.median(fsync_samples(directory, count)) * 1000.0


def disk_probe(directory: Path) -> dict[str, float]:
    """fsync latency right before a run: other work on the machine shows up here."""
    samples = sorted(fsync_samples(directory, 50))
    return {
        "fsync_p50_ms": round(percentile(samples, 0.5) * 1000, 3),
        "fsync_max_ms": round(samples[-1] * 1000, 3),
        "loadavg_1": round(os.getloadavg()[0], 2),
    }


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
    from importlib.metadata import version

    mem = _proc_field("/proc/meminfo", "MemTotal").split()
    ram_gib = round(int(mem[0]) / 1024 / 1024, 1) if mem and mem[0].isdigit() else None
    df = subprocess.run(
        ["df", "-hT", str(directory)], capture_output=True, text=True, check=False
    ).stdout.splitlines()
    server = subprocess.run(
        [nats_server_binary(), "--version"], capture_output=True, text=True, check=False
    )
    return {
        "cpu_model": _proc_field("/proc/cpuinfo", "model name"),
        "logical_cores": os.cpu_count(),
        "ram_gib": ram_gib,
        "os": platform.platform(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "sqlite": sqlite3.sqlite_version,
        "nats_server": server.stdout.strip() or server.stderr.strip(),
        "nats_py": version("nats-py"),
        "msgspec": msgspec.__version__,
        "disk": " ".join(df[-1].split()) if len(df) > 1 else "unknown",
        "temp_dir": str(directory),
        "fsync_4k_median_ms": round(fsync_latency_ms(directory), 3),
    }


# -- the run ----------------------------------------------------------------------------------


@dataclass
class Settings:
    runs: int
    rates: list[int]
    warmup: float
    duration: float
    tick: float
    grace: float
    backlog: int
    jobs: int
    tmpdir: Path | None
    output: Path
    profile: str  # "auto" (when a target is missed), "always" or "never"
    profile_events: int
    under_load_events: int
    own_process: bool


@dataclass
class Row:
    config: str
    lablink: float
    lag: dict[str, float] | None
    lag_lower_bound: bool
    ceiling: float
    ratio: float
    target: str
    met: bool | None  # None: a diagnostic, no target
    why: str = ""


def fmt_lag(lag: dict[str, float] | None, lower_bound: bool) -> str:
    if lag is None:
        return "n/a"
    sign = "≥ " if lower_bound else ""

    def ms(value: float) -> str:
        return f"{value / 1000:.1f} s" if value >= 1000 else f"{value:.1f} ms"

    return f"{sign}{ms(lag['p50_ms'])} / {ms(lag['p99_ms'])} / {ms(lag['max_ms'])}"


def print_table(rows: Sequence[Row]) -> None:
    table = Table(title="LabLink NATS relay (median of runs)", show_lines=True)
    for column in ("Config", "LabLink events/s", "Lag p50 / p99 / max", "Raw ceiling"):
        table.add_column(column, justify="left" if column == "Config" else "right")
    for column in ("Ratio", "Target", "Met?"):
        table.add_column(column, justify="right" if column == "Ratio" else "left")
    for row in rows:
        table.add_row(
            row.config,
            f"{row.lablink:,.0f}",
            fmt_lag(row.lag, row.lag_lower_bound),
            f"{row.ceiling:,.0f}",
            f"{row.ratio:.2f}",
            row.target,
            "n/a" if row.met is None else "[green]yes[/]" if row.met else f"[red]no[/] {row.why}",
        )
    console.print(table)


def summarise(
    paced: dict[int, list[dict[str, Any]]],
    own_process: dict[int, list[dict[str, Any]]],
    saturation: list[dict[str, Any]],
    raw: list[dict[str, Any]],
    under_load: list[dict[str, Any]],
) -> list[Row]:
    ceiling = median_of(raw, "published_events_per_second")
    raw_e2e = median_of(raw, "end_to_end_events_per_second")
    rows: list[Row] = []
    configs = [(rate, runs, "relay in-process") for rate, runs in paced.items()]
    configs += [
        (rate, runs, "relay as `lablink relay`") for rate, runs in own_process.items() if runs
    ]
    for rate, runs, placement in configs:
        received = median_of(runs, "received_events_per_second")
        lag = {key: median_of(runs, "lag", key) for key in ("p50_ms", "p99_ms", "max_ms")}
        # A censored run (events still unpublished when it stopped) only gives lower bounds:
        # the median is one too if such a run's figure could be at or below it.
        lower = any(
            run["lag_is_lower_bound"] and run["lag"][key] <= lag[key] for run in runs for key in lag
        )
        best = min(float(rate), ceiling)  # nobody can deliver more than is offered
        ratio_met = received >= RATIO_TARGET * best
        targets = [f"≥ {RATIO_TARGET:.0%} of min(offered, ceiling) = {RATIO_TARGET * best:,.0f}/s"]
        met, why = ratio_met, [] if ratio_met else ["throughput"]
        if rate == LAG_TARGET_RATE:
            lag_met = lag["p99_ms"] <= LAG_P99_TARGET_MS and not lower
            targets.append(f"lag p99 ≤ {LAG_P99_TARGET_MS:.0f} ms")
            met = met and lag_met
            if not lag_met:
                why.append(f"p99 {lag['p99_ms']:.0f} ms")
        rows.append(
            Row(
                f"paced {rate:,} events/s, {placement}, end to end",
                received,
                lag,
                lower,
                ceiling,
                received / ceiling,
                "; ".join(targets),
                met,
                ", ".join(why),
            )
        )
    published = median_of(saturation, "published_events_per_second")
    rows.append(
        Row(
            "backlog, relay publish (start to last ack)",
            published,
            None,
            False,
            ceiling,
            published / ceiling,
            f"≥ {RATIO_TARGET:.0%} of ceiling",
            published >= RATIO_TARGET * ceiling,
        )
    )
    end_to_end = median_of(saturation, "end_to_end_events_per_second")
    rows.append(
        Row(
            "backlog, end to end (to last receipt)",
            end_to_end,
            None,
            False,
            raw_e2e,
            end_to_end / raw_e2e,
            f"≥ {RATIO_TARGET:.0%} of raw end to end",
            end_to_end >= RATIO_TARGET * raw_e2e,
        )
    )
    if under_load:
        heaviest = max(paced)
        loaded = median_of(under_load, "published_events_per_second")
        received = median_of(paced[heaviest], "received_events_per_second")
        rows.append(
            Row(
                f"paced {heaviest:,}/s vs raw publish under the same appends (diagnostic)",
                received,
                None,
                False,
                loaded,
                received / loaded,
                "none: shows what the machine leaves while appending",
                None,
            )
        )
    return rows


async def measure(settings: Settings, tmp: Path) -> dict[str, Any]:
    say(f"preparing logs: {settings.jobs:,} jobs; backlog of {settings.backlog:,} events")
    jobs = make_jobs(settings.jobs)
    # Every paced run needs at most rate × (warm-up + duration) events, plus headroom.
    longest = int(max(settings.rates) * (settings.warmup + settings.duration) * 1.1) + 1
    lifecycle_requests = list(itertools.islice(lifecycle(jobs), max(longest, settings.backlog)))
    base = tmp / "templates" / "base.db"
    backlog_db = tmp / "templates" / "backlog.db"
    backlog_requests = lifecycle_requests[: settings.backlog - len(jobs)]
    build_seconds = {
        "base": round(build_log(base, jobs, []), 2),  # the jobs, already published
        "backlog": round(build_log(backlog_db, jobs, backlog_requests), 2),
    }
    mark_published(base)
    messages = relay_messages(backlog_db, jobs)
    if len(messages) != settings.backlog:
        raise RuntimeError(f"backlog has {len(messages)} events, not {settings.backlog}")
    sizes = sorted(len(m.payload) for m in messages)
    say(
        f"logs built in {build_seconds} s; envelopes {sizes[0]}..{sizes[-1]} bytes"
        f" (median {statistics.median(sizes):.0f})"
    )
    server = NatsServer(tmp / "nats")
    admin_nc: NATS | None = None
    paced: dict[int, list[dict[str, Any]]] = {rate: [] for rate in settings.rates}
    saturation: list[dict[str, Any]] = []
    raw: list[dict[str, Any]] = []
    under_load: list[dict[str, Any]] = []
    heaviest = max(settings.rates)
    profile: dict[str, Any] = {}
    own: dict[int, list[dict[str, Any]]] = {rate: [] for rate in settings.rates}
    steps: dict[str, Any] | None = None
    try:
        await server.start()
        say(f"nats-server on {server.url} (pid {server.pid}), store {tmp / 'nats'}")
        admin_nc = await nats.connect(servers=[server.url])
        admin = admin_nc.jetstream(timeout=30)
        for run in range(1, settings.runs + 1):
            for rate in settings.rates:
                probe = disk_probe(tmp)
                result = await paced_run(
                    settings,
                    server,
                    admin,
                    base,
                    lifecycle_requests,
                    rate,
                    tmp / f"paced-{rate}-{run}",
                )
                result["before"] = probe
                paced[rate].append(result)
                say(
                    f"run {run} paced {rate:,}/s: appended"
                    f" {result['appended_events_per_second']:,.0f}/s, received"
                    f" {result['received_events_per_second']:,.0f}/s, lag"
                    f" {fmt_lag(result['lag'], result['lag_is_lower_bound'])}"
                )
                if settings.own_process:  # right after, so drift touches both alike
                    probe = disk_probe(tmp)
                    result = await paced_run(
                        settings,
                        server,
                        admin,
                        base,
                        lifecycle_requests,
                        rate,
                        tmp / f"own-process-{rate}-{run}",
                        own_process=True,
                    )
                    result["before"] = probe
                    own[rate].append(result)
                    say(
                        f"run {run} paced {rate:,}/s, relay as its own process: received"
                        f" {result['received_events_per_second']:,.0f}/s, lag"
                        f" {fmt_lag(result['lag'], result['lag_is_lower_bound'])}"
                    )
            if settings.under_load_events:
                probe = disk_probe(tmp)
                result = await raw_under_load(
                    settings,
                    server,
                    admin,
                    base,
                    lifecycle_requests,
                    messages[: settings.under_load_events],
                    heaviest,
                    tmp / f"raw-under-load-{run}",
                )
                result["before"] = probe
                under_load.append(result)
                say(
                    f"run {run} raw publish_async while appending {heaviest:,}/s in-process:"
                    f" {result['published_events_per_second']:,.0f}/s acked"
                )
            # The relay and the raw publisher take turns, so drift touches both alike.
            probe = disk_probe(tmp)
            result = await raw_run(server, admin, messages, tmp / f"raw-{run}")
            result["before"] = probe
            raw.append(result)
            say(
                f"run {run} raw publish_async: {result['published_events_per_second']:,.0f}/s"
                f" acked, {result['end_to_end_events_per_second']:,.0f}/s received"
            )
            probe = disk_probe(tmp)
            result = await saturation_run(
                server, admin, backlog_db, settings.backlog, tmp / f"backlog-{run}"
            )
            result["before"] = probe
            saturation.append(result)
            say(
                f"run {run} relay backlog: {result['published_events_per_second']:,.0f}/s"
                f" acked, {result['end_to_end_events_per_second']:,.0f}/s received"
            )
        rows = summarise(paced, own, saturation, raw, under_load)
        missed = not all(row.met for row in rows if row.met is not None)
        if settings.profile == "always" or (settings.profile == "auto" and missed):
            out = settings.output.with_name(f"{settings.output.stem}-profile-drain.txt")
            events = min(settings.profile_events, settings.backlog)
            say(f"profiling the relay draining {events:,} events -> {out}")
            profile["drain"] = await profile_drain(server, admin, backlog_db, events, out)
            out = settings.output.with_name(f"{settings.output.stem}-profile-paced.txt")
            say(f"profiling the relay's thread at {heaviest:,}/s offered (extra run) -> {out}")
            profiler = cProfile.Profile()
            result = await paced_run(
                settings,
                server,
                admin,
                base,
                lifecycle_requests,
                heaviest,
                tmp / "paced-profiled",
                profiler,
            )
            profile["paced"] = {
                "rate": heaviest,
                "received_events_per_second_under_profiler": result["received_events_per_second"],
                "relay": result["relay"],
                **summarise_profile(profiler, out, settings.warmup + settings.duration),
            }
            steps = relay_steps(backlog_db)
    finally:
        if admin_nc is not None and not admin_nc.is_closed:
            with contextlib.suppress(Exception):
                await admin_nc.close()
        await server.stop()
    return {
        "build_seconds": build_seconds,
        "envelope_bytes": {
            "min": sizes[0],
            "median": statistics.median(sizes),
            "max": sizes[-1],
        },
        "rows": rows,
        "paced": {str(rate): runs for rate, runs in paced.items()},
        "saturation": saturation,
        "raw_ceiling": raw,
        "raw_under_load": under_load,
        "profile": profile or None,
        "paced_own_process": {str(rate): runs for rate, runs in own.items()}
        if settings.own_process
        else None,
        "relay_steps": steps,
    }


def run(settings: Settings) -> dict[str, Any]:
    started = datetime.now(UTC)
    load_before = os.getloadavg()
    settings.output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="lablink-bench-relay-", dir=settings.tmpdir) as name:
        tmp = Path(name)
        machine = machine_info(tmp)
        say(
            f"{machine['cpu_model']}, {machine['logical_cores']} cores, {machine['ram_gib']} GiB,"
            f" Python {machine['python']}, {machine['nats_server']}, nats-py"
            f" {machine['nats_py']}, fsync {machine['fsync_4k_median_ms']} ms"
        )
        measured = asyncio.run(measure(settings, tmp))
    finished = datetime.now(UTC)
    machine["loadavg_1_5_15_before"] = [round(x, 2) for x in load_before]
    machine["loadavg_1_5_15_after"] = [round(x, 2) for x in os.getloadavg()]
    rows: list[Row] = measured.pop("rows")
    print_table(rows)
    if measured["raw_under_load"]:
        loaded = median_of(measured["raw_under_load"], "published_events_per_second")
        heaviest = str(max(settings.rates))
        relay = median_of(measured["paced"][heaviest], "received_events_per_second")
        measured["raw_under_load_median_events_per_second"] = loaded
        measured["relay_at_heaviest_rate_over_raw_under_load"] = round(relay / loaded, 3)
        say(
            f"raw publish_async while the {int(heaviest):,}/s producer runs in-process:"
            f" {loaded:,.0f}/s (median); the relay at that rate: {relay:,.0f}/s"
            f" ({relay / loaded:.2f} of it)"
        )
    result: dict[str, Any] = {
        "benchmark": "NATS relay (issue 5)",
        "command": "python -m bench.bench_relay " + " ".join(sys.argv[1:]),
        "date": started.isoformat(timespec="seconds"),
        "duration_seconds": round((finished - started).total_seconds(), 1),
        "machine": machine,
        "settings": {
            "runs": settings.runs,
            "rates": settings.rates,
            "warmup_seconds": settings.warmup,
            "duration_seconds": settings.duration,
            "tick_seconds": settings.tick,
            "grace_seconds": settings.grace,
            "backlog_events": settings.backlog,
            "under_load_events": settings.under_load_events,
            "own_process": settings.own_process,
            "profile": settings.profile,
            "profile_events": settings.profile_events,
            "jobs": settings.jobs,
            "relay": "Relay(db, NatsOptions(url)) with LabLink's defaults: batch_size=1000,"
            " window=4 batches in flight, ack_timeout=5, poll_seconds=1, watch_seconds=0.01;"
            " attached to the store in in-process paced runs; `lablink relay` (same defaults)"
            " in own-process paced runs",
            "stream": "LABLINK_EVENTS, file storage, duplicate_window=600 s, 1 replica;"
            " nats-server sync_interval: always",
            "consumer": "separate process; nats-py ordered push consumer, deliver all",
            "raw_ceiling": "nats-py js.publish_async of the same messages (subject, envelope,"
            " Nats-Msg-Id), pipelined (4,000 in flight), then all acks awaited",
        },
        "targets": {
            "ratio_to_raw_ceiling_at_least": RATIO_TARGET,
            "lag_p99_ms_at_most": LAG_P99_TARGET_MS,
            "lag_target_rate": LAG_TARGET_RATE,
        },
        "table": [
            {
                "config": row.config,
                "lablink_events_per_second": round(row.lablink, 1),
                "lag_ms_p50_p99_max": row.lag,
                "lag_is_lower_bound": row.lag_lower_bound,
                "ceiling_events_per_second": round(row.ceiling, 1),
                "ratio": round(row.ratio, 3),
                "target": row.target,
                "met": row.met,
            }
            for row in rows
        ],
        "targets_met": all(row.met for row in rows if row.met is not None),
        **measured,
    }
    settings.output.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    say(f"results written to {settings.output} in {result['duration_seconds']} s")
    return result


def positive(text: str) -> int:
    value = int(text.replace("_", "").replace(",", ""))
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def rates(text: str) -> list[int]:
    return [positive(part) for part in text.split(",") if part.strip()]


def parse_args(argv: Sequence[str] | None = None) -> Settings:
    parser = argparse.ArgumentParser(
        prog="python -m bench.bench_relay",
        description="Benchmark LabLink's NATS relay against nats-py's raw publish_async.",
    )
    parser.add_argument("--runs", type=positive, default=3, help="runs per figure (median)")
    parser.add_argument(
        "--rates", type=rates, default=[1_000, 10_000], help="offered events/s, comma-separated"
    )
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before the window")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured")
    parser.add_argument("--tick", type=float, default=0.01, help="producer period, seconds")
    parser.add_argument(
        "--grace",
        type=float,
        default=3.0,
        help="seconds the relay gets to catch up after the window (lags of events still"
        " unpublished then are counted up to that moment, as lower bounds)",
    )
    parser.add_argument(
        "--backlog", type=positive, default=60_000, help="events drained in saturation runs"
    )
    parser.add_argument("--jobs", type=positive, default=1_000)
    parser.add_argument("--tmpdir", type=Path, default=None, help="where temporary files go")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument(
        "--profile",
        choices=("auto", "always", "never"),
        default="auto",
        help="cProfile a backlog drain (auto: when a target is missed)",
    )
    parser.add_argument("--profile-events", type=positive, default=20_000)
    parser.add_argument(
        "--under-load-events",
        type=int,
        default=10_000,
        help="messages of the raw ceiling re-measured while the fastest producer runs"
        " in-process (0: skip this diagnostic)",
    )
    parser.add_argument(
        "--own-process",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run every paced run with the relay as `lablink relay`, its own process",
    )
    args = parser.parse_args(argv)
    if args.backlog <= args.jobs:
        parser.error("--backlog must be larger than --jobs")
    return Settings(
        runs=args.runs,
        rates=args.rates,
        warmup=args.warmup,
        duration=args.duration,
        tick=args.tick,
        grace=args.grace,
        backlog=args.backlog,
        jobs=args.jobs,
        tmpdir=args.tmpdir,
        output=args.output,
        profile=args.profile,
        profile_events=args.profile_events,
        under_load_events=min(args.under_load_events, args.backlog),
        own_process=args.own_process,
    )


def _terminate(signum: int, frame: FrameType | None) -> None:
    # Unwind through every finally (the nats-server and consumers are stopped there).
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["consumer"]:
        asyncio.run(consume(args[1], Path(args[2])))
        return
    # SIGINT too: unwinding by SystemExit stops the servers and consumers the same way on
    # both signals.
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, _terminate)
    configure_logging("warning")  # LabLink's logs, as `lablink serve` has them, minus info
    run(parse_args(args))


if __name__ == "__main__":
    main()
