"""The HTTP API benchmark (issue 4): requests/s and latency of a real `lablink serve`.

Run it from the repository root::

    .venv/bin/python -m bench.bench_api              # the default run (about 10 minutes)
    .venv/bin/python -m bench.bench_api --help       # sizes, durations, --keep-db, --profile

A database with 10,000 jobs and 1,000,000 executions (3,010,000 events) is built through
``append_batch`` and its projections folded with ``Projector().rebuild`` (the rows live
appends would have left; 4 to 7 minutes; ``--keep-db`` reuses it for two hours).
`lablink serve` (LABLINK_AUTH=off, LABLINK_EXECUTOR=noop, LABLINK_NATS=off: no relay
draining the backlog) serves it on 127.0.0.1. Beside it, in the same run, a Litestar
hello-world app returns the very same bodies (fetched from LabLink once, then returned as
constants) under the same uvicorn settings: the floor that Litestar, uvicorn and the JSON
encoding put under any handler on this machine.

Load comes from ``wrk`` (a separate process, closed loop, 100 connections on loopback) after a
warm-up; each figure is the median of several runs, the two servers taking turns. When a
target is missed, the server is profiled with py-spy under the same load, and the reads
behind each endpoint are timed in-process, piece by piece.

Results go to a rich table on the terminal and to ``bench/results/api.json``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import queue
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
from rich.console import Console
from rich.table import Table

from lablink.api.queries import list_job_views as list_jobs
from lablink.api.queries import statistics as statistics_query
from lablink.domain.requests import parse_job_request
from lablink.domain.validation import normalise
from lablink.events import (
    AnyEvent,
    ExecutionError,
    ExecutionFailed,
    ExecutionRequested,
    ExecutionStarted,
    ExecutionSucceeded,
    JobCreated,
    NewEvent,
)
from lablink.eventstore import AppendRequest, SQLiteEventStore
from lablink.eventstore.sqlite import connect
from lablink.projections.runner import Projector
from lablink.projections.views import job_view

RESULTS_DIR = Path(__file__).resolve().parent / "results"
DEFAULT_OUTPUT = RESULTS_DIR / "api.json"
LABLINK = str(Path(sys.executable).parent / "lablink")
PY_SPY = str(Path(sys.executable).parent / "py-spy")
HOST = "127.0.0.1"

# Targets from issue 4.
RATIO_TARGET = 2.0  # hello-world req/s divided by LabLink req/s, at most
P99_TARGET_MS = 20.0

ENDPOINTS: tuple[tuple[str, str], ...] = (
    ("jobs", "/api/scheduler/jobs?limit=100"),
    ("statistics", "/api/scheduler/statistics"),
)

# The schedule: daily interval jobs, fires staggered over 20 hours starting 3 hours after the
# build, so no fire comes due while the benchmark runs (a reused database is at most
# MAX_REUSE_AGE old) and the last day of history lands partly in "today".
FIRST_NEXT_FIRE = timedelta(hours=3)
STAGGER = timedelta(hours=20)
MAX_REUSE_AGE = timedelta(hours=2)
# Executions per append_batch call while building (3 events each).
BUILD_BATCH = 5_000
FAIL_EVERY = 50  # one execution in 50 fails, for realistic statistics

# A wide table even when the output is a file or a pipe.
console = Console() if sys.stdout.isatty() else Console(width=132)


def say(message: str) -> None:
    console.log(message)


# -- the database -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Kind:
    schedule_type: str
    equipment: tuple[str, ...]
    description: str
    parameters: dict[str, Any]
    result: dict[str, Any]


KINDS = (
    Kind(
        "measurement",
        ("power_supply_1", "multimeter_1", "sensor_1"),
        "Measure output voltage once a day",
        {"command": "get_voltage"},
        {"command": "get_voltage", "measurement": "voltage", "value": 5.0007, "unit": "V"},
    ),
    Kind(
        "acquisition",
        ("oscilloscope_1", "scope_1"),
        "Capture both channels for the nightly drift report",
        {"duration": 60, "sample_rate": 1000, "channels": [1, 2]},
        {"samples": 60_000, "channels": [1, 2], "file": "acq.h5", "mean": 0.4213},
    ),
    Kind(
        "state_capture",
        ("power_supply_1", "load_1"),
        "Record the instrument state for the audit trail",
        {},
        {"state": {"output": True, "voltage": 5.0, "current_limit": 1.0}},
    ),
    Kind(
        "command",
        ("load_1",),
        "Set the load current before the morning run",
        {"command": "set_current", "parameters": {"value": 2.5}},
        {"command": "set_current", "acknowledged": True},
    ),
    Kind(
        "equipment_test",
        ("oscilloscope_1", "power_supply_1", "multimeter_1"),
        "Daily self test",
        {"test_name": "self_test"},
        {"test_name": "self_test", "passed": True, "duration_ms": 840},
    ),
)
ZONES = ("UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo")


@dataclass(frozen=True, slots=True)
class Job:
    job_id: str
    kind: Kind
    equipment_id: str
    created: NewEvent
    # Fire n (1-based) is at anchor + n days; fires 1..fires ran before the build.
    anchor: datetime
    fires: int


def make_jobs(count: int, executions: int, now: datetime) -> list[Job]:
    """Daily interval jobs validated by the domain exactly as the API would validate them."""
    per_job, extra = divmod(executions, count)
    jobs: list[Job] = []
    for index in range(count):
        kind = KINDS[index % len(KINDS)]
        equipment_id = kind.equipment[index // len(KINDS) % len(kind.equipment)]
        fires = per_job + (1 if index < extra else 0)
        next_fire = now + FIRST_NEXT_FIRE + STAGGER * index / count
        created_at = next_fire - timedelta(days=fires + 1)
        request = parse_job_request(
            {
                "name": f"{kind.description} #{index:05d}",
                "description": kind.description,
                "schedule_type": kind.schedule_type,
                "equipment_id": equipment_id,
                "trigger_type": "interval",
                "interval_days": 1,
                "parameters": kind.parameters,
                "tags": ["bench", kind.schedule_type, f"bench-{index % 7}"],
                "timezone": ZONES[index % len(ZONES)],
                "on_failure_alarm": index % 3 == 0,
            }
        )
        spec, anchor = normalise(request, now=created_at, default_timezone="UTC")
        job_id = f"job_{index:016x}"
        event = JobCreated(
            job_id=job_id,
            spec=spec,
            enabled=True,
            created_by="admin",
            created_at=created_at,
            anchor=anchor,
        )
        jobs.append(
            Job(
                job_id=job_id,
                kind=kind,
                equipment_id=equipment_id,
                created=NewEvent(event=event, actor="admin", occurred_at=created_at),
                anchor=anchor,
                fires=fires,
            )
        )
    return jobs


def execution_requests(jobs: Sequence[Job]) -> Iterator[AppendRequest]:
    """Every past fire of every job, in time order: requested, started, then succeeded (or,
    one in FAIL_EVERY, failed), as one append per execution (the three are consecutive in
    time: a run lasts at most 2 s and jobs fire seconds apart)."""
    most = max(job.fires for job in jobs)
    versions = dict.fromkeys((job.job_id for job in jobs), 1)  # JobCreated is version 1
    serial = itertools.count()
    for days_before_build in range(most, 0, -1):
        for job in jobs:
            if job.fires < days_before_build:
                continue
            n = job.fires + 1 - days_before_build
            number = next(serial)
            execution_id = f"exec_{number:016x}"
            scheduled = job.anchor + timedelta(days=n)
            actual = scheduled + timedelta(milliseconds=2 + number % 7)
            started = actual + timedelta(milliseconds=4)
            completed = started + timedelta(milliseconds=200 + 37 * (number % 50))
            final: AnyEvent
            if number % FAIL_EVERY == FAIL_EVERY - 1:
                final = ExecutionFailed(
                    job_id=job.job_id,
                    execution_id=execution_id,
                    completed_at=completed,
                    started_at=started,
                    error=ExecutionError(
                        type="instrument_error",
                        message=f"{job.equipment_id} answered -113 Undefined header",
                        code=-113,
                    ),
                )
            else:
                final = ExecutionSucceeded(
                    job_id=job.job_id,
                    execution_id=execution_id,
                    completed_at=completed,
                    started_at=started,
                    result={"equipment_id": job.equipment_id, **job.kind.result},
                )
            events = [
                NewEvent(
                    event=ExecutionRequested(
                        job_id=job.job_id,
                        execution_id=execution_id,
                        scheduled_time=scheduled,
                        actual_time=actual,
                        trigger_info="scheduled",
                    ),
                    actor="scheduler",
                    occurred_at=actual,
                    correlation_id=execution_id,
                ),
                NewEvent(
                    event=ExecutionStarted(
                        job_id=job.job_id, execution_id=execution_id, started_at=started
                    ),
                    actor="scheduler",
                    occurred_at=started,
                    correlation_id=execution_id,
                ),
                NewEvent(
                    event=final,
                    actor="scheduler",
                    occurred_at=completed,
                    correlation_id=execution_id,
                ),
            ]
            version = versions[job.job_id]
            versions[job.job_id] = version + len(events)
            yield AppendRequest(stream_id=job.job_id, expected_version=version, events=events)


def chunks(items: Iterator[Any] | Sequence[Any], size: int) -> Iterator[list[Any]]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def build_database(path: Path, job_count: int, execution_count: int) -> dict[str, Any]:
    """The log through append_batch with no projections attached, then every projection
    folded by Projector().rebuild, as `lablink replay` does (faster than folding them in
    each append's transaction, with the same rows)."""
    now = datetime.now(UTC).replace(microsecond=0)
    started = time.perf_counter()
    jobs = make_jobs(job_count, execution_count, now)
    store = SQLiteEventStore(path)
    try:
        for chunk in chunks(jobs, BUILD_BATCH):
            store.append_batch(
                [
                    AppendRequest(stream_id=j.job_id, expected_version=0, events=[j.created])
                    for j in chunk
                ]
            )
        done = 0
        for batch in chunks(execution_requests(jobs), BUILD_BATCH):
            store.append_batch(batch)
            done += len(batch)
            if done % 200_000 < BUILD_BATCH:
                say(f"  appended {done:,} / {execution_count:,} executions")
        appended = time.perf_counter()
        say("  folding the projections (Projector().rebuild)")
        with store.lock:
            Projector().rebuild(store, store.conn)
            store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            counts = {
                table: store.conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
                for table in ("events", "jobs", "executions", "job_history")
            }
    finally:
        store.close()
    finished = time.perf_counter()
    if (counts["jobs"], counts["executions"]) != (job_count, execution_count):
        raise RuntimeError(f"the build left {counts}")
    return {
        "built_at": now.isoformat(),
        "jobs": job_count,
        "executions": execution_count,
        "events": counts["events"],
        "append_seconds": round(appended - started, 1),
        "rebuild_seconds": round(finished - appended, 1),
        "build_seconds": round(finished - started, 1),
        "size_bytes": path.stat().st_size,
        "method": (
            f"SQLiteEventStore.append_batch ({BUILD_BATCH:,} executions of 3 events per call),"
            " then Projector().rebuild"
        ),
    }


def database(directory: Path, job_count: int, execution_count: int) -> dict[str, Any]:
    """Build the database in ``directory``, or reuse the one a recent run left there."""
    path = directory / "scheduler.db"
    meta_path = directory / "bench-api.json"
    if path.exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        age = datetime.now(UTC) - datetime.fromisoformat(meta["built_at"])
        if (meta["jobs"], meta["executions"]) == (job_count, execution_count) and (
            age < MAX_REUSE_AGE
        ):
            say(f"reusing {path} (built {age.total_seconds() / 60:.0f} min ago)")
            return {**meta, "reused": True}
        say(f"not reusing {path}: other sizes or built {age} ago (fires would come due)")
    for stale in directory.glob("scheduler.db*"):
        stale.unlink()
    directory.mkdir(parents=True, exist_ok=True)
    say(f"building {job_count:,} jobs and {execution_count:,} executions in {path}")
    meta = build_database(path, job_count, execution_count)
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    return {**meta, "reused": False}


# -- the servers ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def accepts(port: int) -> bool:
    try:
        socket.create_connection((HOST, port), timeout=1).close()
    except ConnectionRefusedError:
        return False
    return True


class Child:
    """A server subprocess whose JSON log lines can be waited for."""

    def __init__(self, name: str, args: Sequence[str], env: dict[str, str], port: int) -> None:
        self.name = name
        self.port = port
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            list(args), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                record = None
            self.lines.put(record if isinstance(record, dict) else {"event": "raw", "line": line})
        self.lines.put({"event": "eof"})

    def wait_for(self, event: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                record = self.lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                raise RuntimeError(
                    f"{self.name}: no {event!r} in {timeout} s: {self.seen}"
                ) from None
            self.seen.append(record)
            if record.get("event") == event:
                return record
            if record.get("event") == "eof":
                raise RuntimeError(f"{self.name} exited before {event!r}: {self.seen}")

    def ready(self, timeout: float) -> float:
        """Wait for "api listening" (logged once the socket accepts); returns the seconds
        since the start."""
        self.wait_for("api listening", timeout)
        if not accepts(self.port):
            raise RuntimeError(f"{self.name} logged 'api listening' but refused a connection")
        return time.perf_counter() - self.started

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process so far."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def url(self, path: str) -> str:
        return f"http://{HOST}:{self.port}{path}"

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def start_lablink(data_dir: Path) -> Child:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABLINK_")}
    env.update(
        LABLINK_DATA_DIR=str(data_dir),
        LABLINK_HOST=HOST,
        LABLINK_AUTH="off",
        LABLINK_EXECUTOR="noop",
        LABLINK_TIMEZONE="UTC",
        # No bus: on a fresh database the NATS relay would spend the whole run publishing
        # the 3,010,000-event backlog to JetStream (it did, 181 MB in 3 minutes, in the
        # server's process and a nats-server on the other core) instead of idling.
        LABLINK_NATS="off",
    )
    return Child("lablink serve", [LABLINK, "serve", "--port", str(port)], env, port)


def start_hello(bodies: Path) -> Child:
    port = free_port()
    args = [sys.executable, "-m", "bench.bench_api", "hello-server", str(port), str(bodies)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    return Child("hello-world", args, env, port)


def uvicorn_config(app: Any, port: int) -> Any:
    """The uvicorn settings of lablink.runtime.serve, for the hello-world app."""
    import uvicorn

    return uvicorn.Config(
        app, host=HOST, port=port, log_level="warning", access_log=False, lifespan="on"
    )


def serve_hello(port: int, bodies_path: Path) -> None:
    """The hello-world server: Litestar handlers that return LabLink's bodies as constants."""
    import asyncio

    import uvicorn
    from litestar import Litestar, get

    bodies: dict[str, dict[str, Any]] = json.loads(bodies_path.read_text())

    @get("/api/scheduler/jobs")
    async def jobs() -> dict[str, Any]:
        return bodies["jobs"]

    @get("/api/scheduler/statistics")
    async def stats() -> dict[str, Any]:
        return bodies["statistics"]

    class Server(uvicorn.Server):
        """Binds as LabLink's server does (uvicorn's own create_server: TCP_NODELAY and all)
        and says so once the socket accepts."""

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if self.started:
                line = {"event": "api listening", "url": f"http://{HOST}:{port}"}
                print(json.dumps(line), flush=True)

    app = Litestar(route_handlers=[jobs, stats], debug=False)
    # uvicorn re-raises SIGTERM after its graceful shutdown; a handler that does nothing lets
    # the process end with code 0 (lablink.runtime.serve's server does not re-raise it).
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    asyncio.run(Server(uvicorn_config(app, port)).serve())


def fetch(url: str) -> bytes:
    """One GET with the standard library (no keep-alive), for checking bodies."""
    import urllib.request

    with urllib.request.urlopen(url, timeout=30) as response:
        if response.status != 200:
            raise RuntimeError(f"GET {url}: {response.status}")
        body: bytes = response.read()
    return body


# -- the load ---------------------------------------------------------------------------------


@dataclass
class Run:
    requests_per_second: float
    p50_ms: float
    p75_ms: float
    p90_ms: float
    p99_ms: float
    requests: int
    seconds: float
    errors: dict[str, int]
    server_cpu_ms_per_request: float
    connections: int
    loadavg_1min_after: float

    def as_json(self) -> dict[str, Any]:
        return {
            "requests_per_second": round(self.requests_per_second, 1),
            "p50_ms": self.p50_ms,
            "p75_ms": self.p75_ms,
            "p90_ms": self.p90_ms,
            "p99_ms": self.p99_ms,
            "requests": self.requests,
            "seconds": self.seconds,
            "errors": self.errors,
            "server_cpu_ms_per_request": round(self.server_cpu_ms_per_request, 3),
            "connections": self.connections,
            "loadavg_1min_after": round(self.loadavg_1min_after, 2),
        }


_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}
_PERCENTILE = re.compile(r"^\s*(50|75|90|99)%\s+([\d.]+)(us|ms|s|m)\s*$", re.MULTILINE)
_TOTAL = re.compile(r"(\d+) requests in ([\d.]+)(us|ms|s|m),")
_RATE = re.compile(r"Requests/sec:\s+([\d.]+)")
_SOCKET = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_NON_2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")


def parse_wrk(output: str) -> tuple[float, dict[str, float], int, float, dict[str, int]]:
    """(req/s, {percentile: ms}, requests, seconds, errors) from `wrk --latency` output."""
    percentiles = {f"p{p}": float(v) * _UNIT_MS[u] for p, v, u in _PERCENTILE.findall(output)}
    total = _TOTAL.search(output)
    rate = _RATE.search(output)
    if total is None or rate is None or len(percentiles) != 4:
        raise RuntimeError(f"cannot read wrk's output:\n{output}")
    errors: dict[str, int] = {}
    if match := _SOCKET.search(output):
        names = ("connect", "read", "write", "timeout")
        errors.update(zip(names, map(int, match.groups()), strict=True))
    if match := _NON_2XX.search(output):
        errors["non_2xx"] = int(match.group(1))
    seconds = float(total.group(2)) * _UNIT_MS[total.group(3)] / 1000
    return float(rate.group(1)), percentiles, int(total.group(1)), seconds, errors


def wrk_command(
    settings: Settings, url: str, seconds: float, connections: int | None = None
) -> list[str]:
    connections = connections or settings.connections
    return [
        "wrk",
        f"-t{min(settings.threads, connections)}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",  # whole seconds only
        "--latency",
        # Requests slower than wrk's default 2 s timeout would drop out of the latencies.
        "--timeout",
        "60s",
        url,
    ]


def load(
    settings: Settings, server: Child, path: str, seconds: float, connections: int | None = None
) -> Run:
    connections = connections or settings.connections
    cpu_before = server.cpu_seconds()
    done = subprocess.run(
        wrk_command(settings, server.url(path), seconds, connections),
        capture_output=True,
        text=True,
        check=True,
    )
    cpu = server.cpu_seconds() - cpu_before
    rate, percentiles, requests, elapsed, errors = parse_wrk(done.stdout)
    if any(errors.values()):
        raise RuntimeError(f"{server.name} {path}: errors {errors}:\n{done.stdout}")
    return Run(
        requests_per_second=rate,
        p50_ms=percentiles["p50"],
        p75_ms=percentiles["p75"],
        p90_ms=percentiles["p90"],
        p99_ms=percentiles["p99"],
        requests=requests,
        seconds=elapsed,
        errors=errors,
        server_cpu_ms_per_request=cpu / requests * 1000 if requests else float("nan"),
        connections=connections,
        loadavg_1min_after=os.getloadavg()[0],
    )


@dataclass
class Series:
    server: str
    runs: list[Run] = field(default_factory=list)

    def median(self, name: str) -> float:
        return float(statistics.median(getattr(r, name) for r in self.runs))

    def as_json(self) -> dict[str, Any]:
        return {
            "server": self.server,
            "median_requests_per_second": round(self.median("requests_per_second"), 1),
            "median_p50_ms": round(self.median("p50_ms"), 3),
            "median_p99_ms": round(self.median("p99_ms"), 3),
            "median_server_cpu_ms_per_request": round(self.median("server_cpu_ms_per_request"), 3),
            "runs": [r.as_json() for r in self.runs],
        }


@dataclass
class Figure:
    endpoint: str
    path: str
    response_bytes: int
    lablink: Series
    hello: Series

    @property
    def ratio(self) -> float:
        """How many times more requests/s the hello-world serves (target: at most 2)."""
        return self.hello.median("requests_per_second") / self.lablink.median("requests_per_second")

    @property
    def ratio_met(self) -> bool:
        return self.ratio <= RATIO_TARGET

    @property
    def p99_met(self) -> bool:
        return self.lablink.median("p99_ms") <= P99_TARGET_MS

    def as_json(self) -> dict[str, Any]:
        return {
            "endpoint": self.endpoint,
            "path": self.path,
            "response_bytes": self.response_bytes,
            "lablink": self.lablink.as_json(),
            "hello_world": self.hello.as_json(),
            "ratio_hello_over_lablink": round(self.ratio, 2),
            "targets": {
                "ratio_at_most": RATIO_TARGET,
                "ratio_met": self.ratio_met,
                "p99_ms_at_most": P99_TARGET_MS,
                "p99_met": self.p99_met,
                "hello_world_p99_met": self.hello.median("p99_ms") <= P99_TARGET_MS,
            },
        }


# -- where the time goes ----------------------------------------------------------------------


def py_spy_profile(
    settings: Settings, server: Child, path: str, output: Path, seconds: float
) -> dict[str, Any]:
    """py-spy samples the server while wrk loads it; returns the hottest frames.

    Percentages are of the samples in which the server's threads were not idle.
    """
    if not Path(PY_SPY).exists() and shutil.which("py-spy") is None:
        return {"error": "py-spy is not installed (.venv/bin/pip install py-spy)"}
    spy = PY_SPY if Path(PY_SPY).exists() else "py-spy"
    loader = subprocess.Popen(
        wrk_command(settings, server.url(path), seconds + 2),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(1)  # let wrk open its connections: the profile is of the loaded server
        done = subprocess.run(
            [
                spy,
                "record",
                "--pid",
                str(server.proc.pid),
                "--duration",
                f"{seconds:g}",
                "--rate",
                "200",
                "--format",
                "raw",
                "--output",
                str(output),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
    finally:
        loader.wait()
    if done.returncode != 0 or not output.exists():
        return {"error": f"py-spy failed: {done.stderr.strip()[-500:]}"}
    return summarise_stacks(output.read_text())


_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def _short(frame: str) -> str:
    """'f (/work/main/lablink/api/queries.py:64)' -> 'f lablink/api/queries.py:64'."""
    match = _FRAME.match(frame)
    if match is None:
        return frame
    where = match["file"]
    for marker in ("/site-packages/", "/work/main/", "/lib/python3.11/"):
        if marker in where:
            where = where.split(marker, 1)[1]
    return f"{match['function']} {where}" + (f":{match['line']}" if match["line"] else "")


def _function(frame: str) -> str:
    return re.sub(r":\d+$", "", _short(frame))


def _package(frame: str) -> str:
    """Where a frame's code lives: lablink, a third-party package or a stdlib module."""
    where = _short(frame).split(" ", 1)[-1]
    head = where.split("/", 1)[0].split(":", 1)[0]
    return head.removesuffix(".py") or "?"


def summarise_stacks(raw: str, top: int = 25) -> dict[str, Any]:
    """Self and inclusive time per function from py-spy's raw (collapsed) stacks.

    Only the event loop's thread counts (stacks through BaseEventLoop._run_once: it serves
    every request); samples of other threads (thread-pool workers waiting for work, which
    py-spy does not always see as idle) are only counted. Percentages are of the loop's
    samples; idle samples (the loop waiting in select) are not recorded by py-spy.
    """
    own: Counter[str] = Counter()
    own_lines: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    total = other = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if "(" in f]
        if not any(f.startswith("BaseEventLoop._run_once ") for f in frames):
            other += count
            continue
        total += count
        own[_function(frames[-1])] += count
        own_lines[_short(frames[-1])] += count
        packages[_package(frames[-1])] += count
        for name in {_function(f) for f in frames}:
            inclusive[name] += count
    # Frames under (nearly) every sample are the process's scaffolding: main, asyncio.run...
    scaffolding = {name for name, n in inclusive.items() if n >= 0.95 * total}

    def share(counter: Counter[str], only: Callable[[str], bool]) -> list[dict[str, Any]]:
        return [
            {"frame": name, "percent": round(100 * n / total, 1)}
            for name, n in counter.most_common()
            if only(name)
        ][:top]

    return {
        "loop_samples": total,
        "other_thread_samples": other,
        "self_by_package": share(packages, lambda _: True),
        "self": share(own, lambda _: True),
        "self_lines": share(own_lines, lambda _: True),
        "inclusive_lablink": share(inclusive, lambda name: " lablink/" in name),
        "inclusive": share(inclusive, lambda name: name not in scaffolding),
    }


def timed(action: Callable[[], object], repeat: int) -> float:
    """Median milliseconds of ``action`` over ``repeat`` calls."""
    samples: list[float] = []
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        samples.append((time.perf_counter() - start) * 1000)
    return round(statistics.median(samples), 3)


def in_process(db: Path, bodies: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The reads behind each endpoint, timed piece by piece on a reader like the API's."""
    conn = connect(db)
    conn.execute("PRAGMA query_only = ON")
    zone = ZoneInfo("UTC")
    select_page = "SELECT * FROM jobs ORDER BY created_at, job_id LIMIT 100 OFFSET 0"
    try:
        cursor = conn.execute(select_page)
        names = [d[0] for d in cursor.description]
        rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        (state_bytes,) = conn.execute("SELECT AVG(LENGTH(state)) FROM jobs").fetchone()
        plan = [r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + select_page)]
        upcoming = (
            "SELECT job_id, name, next_run_time, timezone FROM jobs"
            " WHERE status = 'active' AND next_run_time IS NOT NULL"
            " ORDER BY next_run_time LIMIT 10"
        )
        now = datetime.now(UTC)
        jobs = {
            "whole: lablink.api.queries.list_job_views(limit=100)": timed(
                lambda: list_jobs(conn, limit=100), 30
            ),
            "SELECT COUNT(*) FROM jobs": timed(
                lambda: conn.execute("SELECT COUNT(*) FROM jobs").fetchone(), 30
            ),
            "SELECT * ... ORDER BY created_at, job_id LIMIT 100 (+ fetchall)": timed(
                lambda: conn.execute(select_page).fetchall(), 30
            ),
            "job_view x 100 (json.loads, ZoneInfo, ISO parse/format)": timed(
                lambda: [job_view(r) for r in rows], 30
            ),
            "msgspec.json.encode(body)": timed(lambda: msgspec.json.encode(bodies["jobs"]), 30),
        }
        stats = {
            "whole: lablink.api.queries.statistics": timed(
                lambda: statistics_query(conn, now=now, zone=zone), 30
            ),
            "stats_jobs GROUP BY status": timed(
                lambda: conn.execute(
                    "SELECT status, COUNT(*) FROM stats_jobs GROUP BY status"
                ).fetchall(),
                30,
            ),
            "stats_jobs GROUP BY schedule_type": timed(
                lambda: conn.execute(
                    "SELECT schedule_type, COUNT(*) FROM stats_jobs GROUP BY schedule_type"
                ).fetchall(),
                30,
            ),
            "upcoming: jobs WHERE status = 'active' ORDER BY next_run_time LIMIT 10": timed(
                lambda: conn.execute(upcoming).fetchall(), 30
            ),
            "msgspec.json.encode(body)": timed(
                lambda: msgspec.json.encode(bodies["statistics"]), 30
            ),
        }
        upcoming_plan = [r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + upcoming)]
    finally:
        conn.close()
    return {
        "jobs_ms": jobs,
        "jobs_query_plan": plan,
        "jobs_state_column_avg_bytes": round(state_bytes or 0),
        "statistics_ms": stats,
        "statistics_upcoming_plan": upcoming_plan,
        "what_if_ms": what_if(db),
    }


def what_if(db: Path) -> dict[str, float]:
    """The fixes suggested for the hot spots, tried on in-memory copies of the tables (the
    file is opened read-only and left as it is): the same reads with an index, without the
    hidden ``state`` column, from a pre-rendered view, from a counters table."""
    mem = sqlite3.connect(":memory:", uri=True)
    try:
        mem.execute("ATTACH DATABASE ? AS disk", (f"file:{db}?mode=ro",))
        for table in ("jobs", "stats_jobs"):
            mem.execute(f"CREATE TABLE {table} AS SELECT * FROM disk.{table}")
        mem.execute("DETACH DATABASE disk")
        page = "SELECT * FROM jobs ORDER BY created_at, job_id LIMIT 100"
        visible = ", ".join(
            name
            for (name,) in mem.execute("SELECT name FROM pragma_table_info('jobs')")
            if name not in ("state", "queued_count", "last_fire_time")
        )
        slim = f"SELECT {visible} FROM jobs ORDER BY created_at, job_id LIMIT 100"
        results = {
            "jobs page, in memory, no index (as today)": timed(
                lambda: mem.execute(page).fetchall(), 30
            )
        }
        mem.execute("CREATE INDEX jobs_created ON jobs (created_at, job_id)")
        results["jobs page + index (created_at, job_id)"] = timed(
            lambda: mem.execute(page).fetchall(), 30
        )
        results["jobs page + index, visible columns only"] = timed(
            lambda: mem.execute(slim).fetchall(), 30
        )
        # A projection column holding each job's API JSON, rendered when the row changes.
        cursor = mem.execute("SELECT * FROM jobs")
        names = [d[0] for d in cursor.description]
        rendered = [
            (
                row[0],
                row[names.index("created_at")],
                msgspec.json.encode(job_view(dict(zip(names, row, strict=True)))),
            )
            for row in cursor.fetchall()
        ]
        mem.execute("CREATE TABLE job_views (job_id TEXT PRIMARY KEY, created_at TEXT, body BLOB)")
        mem.executemany("INSERT INTO job_views VALUES (?, ?, ?)", rendered)
        mem.execute("CREATE INDEX job_views_created ON job_views (created_at, job_id)")

        def prerendered() -> bytes:
            bodies = mem.execute(
                "SELECT body FROM job_views ORDER BY created_at, job_id LIMIT 100"
            ).fetchall()
            jobs = msgspec.json.encode([msgspec.Raw(b) for (b,) in bodies])
            return b'{"success":true,"count":100,"jobs":' + jobs + b"}"

        results["jobs page from pre-rendered JSON + index, encoded"] = timed(prerendered, 30)
        group = "SELECT status, COUNT(*) FROM stats_jobs GROUP BY status"
        by_type = "SELECT schedule_type, COUNT(*) FROM stats_jobs GROUP BY schedule_type"
        results["stats: 2 GROUP BYs, in memory, no index (as today)"] = timed(
            lambda: (mem.execute(group).fetchall(), mem.execute(by_type).fetchall()), 30
        )
        mem.execute("CREATE INDEX stats_jobs_status ON stats_jobs (status)")
        mem.execute("CREATE INDEX stats_jobs_type ON stats_jobs (schedule_type)")
        results["stats: 2 GROUP BYs + an index each"] = timed(
            lambda: (mem.execute(group).fetchall(), mem.execute(by_type).fetchall()), 30
        )
        mem.execute(
            "CREATE TABLE stats_job_counts AS SELECT status, schedule_type, COUNT(*) AS n"
            " FROM stats_jobs GROUP BY status, schedule_type"
        )
        results["stats: the same two answers from a counters table"] = timed(
            lambda: (
                mem.execute(
                    "SELECT status, SUM(n) FROM stats_job_counts GROUP BY status"
                ).fetchall(),
                mem.execute(
                    "SELECT schedule_type, SUM(n) FROM stats_job_counts GROUP BY schedule_type"
                ).fetchall(),
            ),
            30,
        )
    finally:
        mem.close()
    return results


# -- the run ----------------------------------------------------------------------------------


@dataclass
class Settings:
    jobs: int
    executions: int
    runs: int
    duration: float
    warmup: float
    connections: int
    threads: int
    keep_db: Path | None
    tmpdir: Path | None
    output: Path
    profile: str  # "auto" (when a target is missed), "always" or "never"
    profile_seconds: float


def _proc_field(path: str, name: str) -> str:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(name):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def machine_info() -> dict[str, Any]:
    import litestar
    import uvicorn

    mem = _proc_field("/proc/meminfo", "MemTotal").split()
    ram_gib = round(int(mem[0]) / 1024 / 1024, 1) if mem and mem[0].isdigit() else None
    wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
    loops = [name for name in ("uvloop", "httptools") if _importable(name)]
    return {
        "cpu_model": _proc_field("/proc/cpuinfo", "model name"),
        "logical_cores": os.cpu_count(),
        "ram_gib": ram_gib,
        "os": platform.platform(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "sqlite": sqlite3.sqlite_version,
        "litestar": litestar.__version__.formatted(),
        "uvicorn": uvicorn.__version__,
        "msgspec": msgspec.__version__,
        "uvicorn_speedups": loops or "none (asyncio loop, h11)",
        "wrk": (wrk.stdout or wrk.stderr).split("Copyright")[0].strip(),
    }


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def measure(
    settings: Settings, lablink: Child, hello: Child, sizes: dict[str, int]
) -> list[Figure]:
    figures: list[Figure] = []
    for endpoint, path in ENDPOINTS:
        figure = Figure(endpoint, path, sizes[endpoint], Series("lablink"), Series("hello-world"))
        for server in (lablink, hello):
            load(settings, server, path, settings.warmup)
        for run in range(1, settings.runs + 1):
            # Take turns, so drift on the machine touches both servers alike.
            for server, series in ((lablink, figure.lablink), (hello, figure.hello)):
                result = load(settings, server, path, settings.duration)
                series.runs.append(result)
                say(
                    f"{endpoint:<10} run {run}/{settings.runs} {server.name:<13}"
                    f" {result.requests_per_second:8,.0f} req/s"
                    f"  p50 {result.p50_ms:7.2f} ms  p99 {result.p99_ms:7.2f} ms"
                    f"  server CPU {result.server_cpu_ms_per_request:.2f} ms/req"
                )
        figures.append(figure)
    return figures


def measure_single(settings: Settings, lablink: Child, hello: Child) -> dict[str, Any]:
    """Informative: one connection, one run each: the time one request takes, no queueing."""
    single: dict[str, Any] = {}
    for endpoint, path in ENDPOINTS:
        single[endpoint] = {}
        for server in (lablink, hello):
            result = load(settings, server, path, settings.duration / 2, connections=1)
            single[endpoint][server.name] = result.as_json()
            say(
                f"{endpoint:<10} 1 connection {server.name:<13}"
                f" {result.requests_per_second:8,.0f} req/s"
                f"  p50 {result.p50_ms:7.2f} ms  p99 {result.p99_ms:7.2f} ms"
            )
    return single


def print_table(figures: Sequence[Figure]) -> None:
    table = Table(title="LabLink HTTP API (median of runs, 100 connections)", show_lines=True)
    for column in ("Endpoint", "LabLink req/s", "p50 ms", "p99 ms", "Hello req/s"):
        table.add_column(column, justify="left" if column == "Endpoint" else "right")
    for column in ("Hello p50", "Hello p99", "Ratio", "Ratio met", "p99 met"):
        table.add_column(column, justify="right")
    for f in figures:
        table.add_row(
            f.path,
            f"{f.lablink.median('requests_per_second'):,.0f}",
            f"{f.lablink.median('p50_ms'):.1f}",
            f"{f.lablink.median('p99_ms'):.1f}",
            f"{f.hello.median('requests_per_second'):,.0f}",
            f"{f.hello.median('p50_ms'):.1f}",
            f"{f.hello.median('p99_ms'):.1f}",
            f"{f.ratio:.2f}x",
            "[green]yes[/]" if f.ratio_met else "[red]no[/]",
            "[green]yes[/]" if f.p99_met else "[red]no[/]",
        )
    console.print(table)


def run(settings: Settings) -> dict[str, Any]:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed: apt-get install -y wrk")
    started = datetime.now(UTC)
    load_before = os.getloadavg()
    machine = machine_info()
    say(
        f"{machine['cpu_model']}, {machine['logical_cores']} cores, {machine['ram_gib']} GiB,"
        f" Python {machine['python']}, {machine['wrk']}"
    )
    settings.output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="lablink-bench-api-", dir=settings.tmpdir) as name:
        tmp = Path(name)
        data_dir = settings.keep_db or tmp / "data"
        db_info = database(data_dir, settings.jobs, settings.executions)
        lablink = start_lablink(data_dir)
        hello: Child | None = None
        try:
            startup = lablink.ready(timeout=600)
            scheduler = next(r for r in lablink.seen if r.get("event") == "scheduler started")
            say(f"lablink serve ready in {startup:.2f} s ({scheduler.get('jobs')} jobs planned)")
            bodies = {e: json.loads(fetch(lablink.url(p))) for e, p in ENDPOINTS}
            if bodies["jobs"]["count"] != 100 or bodies["jobs"]["total"] != settings.jobs:
                raise RuntimeError(f"unexpected jobs body: total {bodies['jobs']['total']}")
            bodies_path = tmp / "bodies.json"
            bodies_path.write_text(json.dumps(bodies))
            hello = start_hello(bodies_path)
            hello.ready(timeout=60)
            sizes: dict[str, int] = {}
            for endpoint, path in ENDPOINTS:
                ours, theirs = fetch(lablink.url(path)), fetch(hello.url(path))
                if json.loads(ours) != json.loads(theirs) or len(ours) != len(theirs):
                    raise RuntimeError(f"{endpoint}: the hello-world body differs from LabLink's")
                sizes[endpoint] = len(ours)
            command = " ".join(wrk_command(settings, "<url>", settings.duration))
            say(f"response sizes: {sizes} bytes; load: {command}")
            figures = measure(settings, lablink, hello, sizes)
            single = measure_single(settings, lablink, hello)
            missed = any(not (f.ratio_met and f.p99_met) for f in figures)
            profiles: dict[str, Any] = {}
            reads: dict[str, Any] | None = None
            if settings.profile == "always" or (settings.profile == "auto" and missed):
                for endpoint, path in ENDPOINTS:
                    out = settings.output.with_name(
                        f"{settings.output.stem}-profile-{endpoint}.txt"
                    )
                    say(f"profiling lablink serve under load on {path} -> {out}")
                    profiles[endpoint] = {
                        "raw_stacks": str(out),
                        **py_spy_profile(settings, lablink, path, out, settings.profile_seconds),
                    }
                # `lablink serve` folds the views into views.db (and the log's own copies
                # are dropped once it has): read them where the server does.
                views = data_dir / "views.db"
                reads = in_process(views if views.exists() else data_dir / "scheduler.db", bodies)
        finally:
            codes = {"lablink": lablink.stop(), "hello": hello.stop() if hello else None}
    finished = datetime.now(UTC)
    machine["loadavg_1_5_15_before"] = [round(x, 2) for x in load_before]
    machine["loadavg_1_5_15_after"] = [round(x, 2) for x in os.getloadavg()]
    print_table(figures)
    result: dict[str, Any] = {
        "benchmark": "HTTP API (issue 4)",
        "command": "python -m bench.bench_api " + " ".join(sys.argv[1:]),
        "date": started.isoformat(timespec="seconds"),
        "duration_seconds": round((finished - started).total_seconds(), 1),
        "machine": machine,
        "settings": {
            "jobs": settings.jobs,
            "executions": settings.executions,
            "runs": settings.runs,
            "duration_seconds": settings.duration,
            "warmup_seconds": settings.warmup,
            "connections": settings.connections,
            "wrk_threads": settings.threads,
            "wrk_command": wrk_command(settings, "<url>", settings.duration),
            "lablink_env": (
                "LABLINK_AUTH=off LABLINK_EXECUTOR=noop LABLINK_TIMEZONE=UTC LABLINK_NATS=off"
            ),
            "uvicorn": "log_level=warning, access_log=False, lifespan=on (both servers)",
        },
        "database": db_info,
        "lablink_startup_seconds": round(startup, 2),
        "exit_codes_after_sigterm": codes,
        "figures": [f.as_json() for f in figures],
        "targets_met": not missed,
        "single_connection": single,
        "profiles": profiles,
        "in_process_reads": reads,
    }
    settings.output.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    say(f"results written to {settings.output} in {result['duration_seconds']} s")
    return result


def positive(text: str) -> int:
    value = int(text.replace("_", "").replace(",", ""))
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def parse_args(argv: Sequence[str] | None = None) -> Settings:
    parser = argparse.ArgumentParser(
        prog="python -m bench.bench_api",
        description="Benchmark `lablink serve` against a Litestar hello-world, with wrk.",
    )
    parser.add_argument("--jobs", type=positive, default=10_000)
    parser.add_argument("--executions", type=positive, default=1_000_000)
    parser.add_argument("--runs", type=positive, default=3, help="runs per figure (median)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per run")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up")
    parser.add_argument("--connections", type=positive, default=100)
    parser.add_argument(
        "--threads", type=positive, default=1, help="wrk threads (1 leaves a core to the server)"
    )
    parser.add_argument(
        "--keep-db",
        type=Path,
        default=None,
        help="build the database in this folder and keep it; reused if built < 2 h ago",
    )
    parser.add_argument("--tmpdir", type=Path, default=None, help="where temporary files go")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument(
        "--profile",
        choices=("auto", "always", "never"),
        default="auto",
        help="py-spy the server (auto: when a target is missed)",
    )
    parser.add_argument("--profile-seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    if args.executions < args.jobs:
        parser.error("--executions must be at least --jobs")
    return Settings(
        jobs=args.jobs,
        executions=args.executions,
        runs=args.runs,
        duration=args.duration,
        warmup=args.warmup,
        connections=args.connections,
        threads=args.threads,
        keep_db=args.keep_db.resolve() if args.keep_db else None,
        tmpdir=args.tmpdir,
        output=args.output,
        profile=args.profile,
        profile_seconds=args.profile_seconds,
    )


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["hello-server"]:
        serve_hello(int(args[1]), Path(args[2]))
        return
    run(parse_args(args))


if __name__ == "__main__":
    main()
