"""End to end through the agents (issue 19): what a user gets from `lablink serve`.

Run it from the repository root::

    .venv/bin/python -m bench.bench_e2e              # the default run (17 min quiet, 24 busy)
    .venv/bin/python -m bench.bench_e2e --quick      # a smoke run (under 2 minutes)
    .venv/bin/python -m bench.bench_e2e --help       # scenarios, runs, window, --profile

LabLink: a real ``lablink serve`` in a fresh data directory (embedded nats-server, embedded
agent driving the simulated bench: the six pyvisa-sim instruments of ``bench.yaml``;
LABLINK_AUTH=off, LABLINK_RETENTION_DAYS=0, production logging to a file). N interval jobs of
1 s are created over the API (``POST /api/scheduler/jobs/create``), measurement jobs reading
each instrument's primary quantity (``get_voltage``, ``get_vpp``, ``get_current``,
``get_temperature``), job i on instrument i mod 6, their ``start_date`` spread evenly over the
second (``spread``) or all the same (``aligned``). After a warm-up, over a window of whole
seconds:

- offered = N x window seconds fires; an execution belongs to the window by its
  ``scheduled_time``. Once the window (and a tail) has passed, one API read waits until the
  views have folded everything committed (read-your-writes), then the executions of the window
  are read from ``views.db``, read-only: completed %, every status, and lateness p50/p99/max
  of every instant the execution view records against ``scheduled_time``: ``actual_time``
  (the engine decided to fire), ``started_at`` (recorded start), ``completed_at`` and, when
  the view has them, the instrument's own start and end and the dispatch instant (any
  ``*_at`` column or result field; "n/a" when absent). The API's execution body is checked
  for the same fields.
- fsyncs: ``perf stat`` counting the fsync/fdatasync/sync_file_range syscalls of the serve
  process (all its threads) and of its children, nats-server, the projector's fold process
  and, with ``--embedded-agent process``, the agent, over the window (kernel tracepoint
  counters: the processes are not stopped). ``--fsync-counter strace`` attaches
  ``strace -f -c`` instead, as the issue first asked; strace without seccomp stops the tracee at
  every system call, which slows the serve process several-fold at these rates, so its windows'
  lateness is not comparable. Per execution: the window's fsyncs over the executions completed
  in it.
- CPU of the serve process and of its children (``/proc/<pid>/stat``), and what other
  processes used meanwhile (the machine is shared: the load average is noted before and after).

Beside it, in the same run, the baseline: APScheduler 3.11's ``AsyncIOScheduler`` with its
memory store, the same jobs calling the same pyvisa-sim instruments in-process (the same
operation the agent runs, ``run_operation``, on the same per-instrument session: one worker
thread and one lock per instrument), with no bus and no record: completion lateness, the
instrument's own start, completed %. The same process first times one operation on each
instrument (serially, 200 times): the per-operation time behind the "serial-queue physics" of
the aligned target (ceil(N / 6) operations in series).

``--profile`` adds one LabLink run under a sampling profiler inside the serve process (every
thread's Python stack every 10 ms while the window lasts, ``sys._current_frames``; py-spy is not
installed here and ``perf`` sees no Python frames on CPython 3.11): busy samples per thread, per
lablink module and per function, written beside the JSON.

Results: rich tables, ``bench/results/e2e.json`` and the tables as Markdown beside it (``.md``).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import math
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
from rich.table import Table

from bench.bench_api import HOST, LABLINK, free_port
from bench.bench_engine import (
    _system_busy_seconds,
    console,
    fmt_ms,
    fmt_pct,
    fmt_ratio,
    git_state,
    median_of,
    met_text,
    percentile,
    say,
    summary_ms,
    wait_for_quiet,
)
from bench.bench_store import machine_info
from lablink.eventstore.base import format_instant, parse_instant
from lablink.instruments.drivers import MODELS
from lablink.instruments.simulated import SIMULATED_BENCH

RESULTS_DIR = Path(__file__).resolve().parent / "results"
DEFAULT_OUTPUT = RESULTS_DIR / "e2e.json"
REPO_ROOT = Path(__file__).resolve().parent.parent

# Targets from issue 19.
TARGET_RATE_JOBS = 1_000
TARGET_WINDOW_SECONDS = 60.0
INSTRUMENT_START_P99_TARGET_MS = 20.0
COMPLETION_RATIO_TARGET = 3.0  # LabLink's completion p99 within 3x of APScheduler's
PHYSICS_RATIO_TARGET = 2.0  # aligned: instrument-start p99 within 2x of the serial queues
ALIGNED_TARGET_JOBS = 100
FSYNCS_PER_EXECUTION_TARGET = 3.0

INSTRUMENT_COUNT = len(SIMULATED_BENCH)
# One reading per instrument: its primary quantity, as a user's measurement job asks for it.
INSTRUMENTS: tuple[tuple[str, str], ...] = tuple(
    (equipment_id, f"get_{MODELS[kind].primary}")
    for equipment_id, (kind, _) in SIMULATED_BENCH.items()
)
CREATE_CONCURRENCY = 8
CREATE_SECONDS_PER_JOB = (
    0.01  # a first guess of the API's pace (measured: 250 jobs/s), for the lead
)
OP_TIMING_REPEATS = 200
FSYNC_SYSCALLS = ("fsync", "fdatasync", "sync_file_range")
PERF = shutil.which("perf")
STRACE = shutil.which("strace")
SAMPLE_SECONDS = 0.01

# Fields of an execution that are not instants of its life.
NOT_LIFE_INSTANTS = {"scheduled_time", "window_start", "window_end"}
# The names of the lateness points in the tables, by field; any other instant is shown by name.
POINT_LABELS = {
    "actual_time": "decided (actual_time)",
    "dispatched_at": "dispatched",
    "started_at": "recorded started_at",
    "instrument_started_at": "instrument started",
    "instrument_ended_at": "instrument ended",
    "completed_at": "completed_at",
}
PER_SECOND_POINTS = ("dispatched_at", "instrument_started_at", "completed_at")
INSTRUMENT_START_FIELDS = ("instrument_started_at", "result.instrument_started_at")


# -- scenarios --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    jobs: int
    alignment: str  # "spread" or "aligned"
    window: float

    @property
    def key(self) -> str:
        return f"{self.jobs}_{self.alignment}_{self.window:g}s"

    @property
    def label(self) -> str:
        rate = f"{self.jobs:,}/s spread" if self.alignment == "spread" else f"{self.jobs:,} aligned"
        return f"{rate}, {self.window:g} s"


def parse_scenario(text: str) -> Scenario:
    """``JOBS:spread|aligned[:WINDOW]``, e.g. ``1000:spread:60``."""
    parts = text.split(":")
    if len(parts) not in (2, 3) or parts[1] not in ("spread", "aligned"):
        raise argparse.ArgumentTypeError(
            f"scenario {text!r}: expected JOBS:spread|aligned[:WINDOW_SECONDS], e.g. 1000:spread:60"
        )
    try:
        jobs = int(parts[0].replace("_", "").replace(",", ""))
        window = float(parts[2]) if len(parts) == 3 else 0.0
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"scenario {text!r}: {exc}") from None
    if jobs < 1 or window < 0:
        raise argparse.ArgumentTypeError(f"scenario {text!r}: jobs >= 1 and window >= 0 needed")
    return Scenario(jobs, parts[1], window)


def instrument_of(index: int) -> tuple[str, str]:
    return INSTRUMENTS[index % INSTRUMENT_COUNT]


def start_offsets(scenario: Scenario) -> list[float]:
    spread = scenario.alignment == "spread"
    return [index / scenario.jobs if spread else 0.0 for index in range(scenario.jobs)]


def job_body(index: int, start: float) -> dict[str, Any]:
    equipment_id, command = instrument_of(index)
    return {
        "name": f"e2e reading {index:05d}",
        "description": "End-to-end benchmark job (bench/bench_e2e.py).",
        "schedule_type": "measurement",
        "equipment_id": equipment_id,
        "trigger_type": "interval",
        "interval_seconds": 1,
        "start_date": datetime.fromtimestamp(start, UTC).isoformat(),
        "timezone": "UTC",
        "parameters": {"command": command},
        "tags": ["bench"],
    }


# -- processes --------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (all its threads) so far; 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[tuple[int, str]]:
    """(pid, command name) of each child process of ``pid``."""
    found: list[tuple[int, str]] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            found.append((int(entry.name), comm))
    return found


def helper_role(pid: int, comm: str) -> str:
    """What a child of serve does: ``nats``, ``projector`` (the views' fold process),
    ``drawing`` (the dashboard's), or ``agent``."""
    if comm.startswith("nats-server"):
        return "nats"
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        command = b""
    if b"fold_process" in command:
        return "projector"
    if b"drawing" in command:
        return "drawing"
    return "agent"


class Serve:
    """A `lablink serve` with the embedded nats-server and agent, its log in a file."""

    def __init__(
        self,
        data_dir: Path,
        profile_report: Path | None,
        embedded_agent: str | None,
        fire_lead: float | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("LABLINK_")}
        env.update(
            LABLINK_DATA_DIR=str(data_dir),
            LABLINK_HOST=HOST,
            LABLINK_PORT=str(self.port),
            LABLINK_AUTH="off",
            LABLINK_RETENTION_DAYS="0",
            LABLINK_TIMEZONE="UTC",
        )
        if embedded_agent is not None:
            env["LABLINK_EMBEDDED_AGENT"] = embedded_agent
        if fire_lead is not None:
            env["LABLINK_FIRE_LEAD"] = str(fire_lead)
        command = [LABLINK, "serve"]
        if profile_report is not None:
            command = [
                sys.executable,
                "-c",
                "import sys; from bench.bench_e2e import profiled_serve; profiled_serve()",
                str(profile_report),
                "serve",
            ]
        data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = data_dir.parent / f"{data_dir.name}.serve.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            command, env=env, cwd=REPO_ROOT, stdout=self._log, stderr=subprocess.STDOUT
        )
        # The processes serve started that do its work: nats-server, and the agent when it
        # runs as a child (LABLINK_EMBEDDED_AGENT=process): their fsyncs and CPU count too.
        self.helpers: dict[str, int] = {}

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, timeout: float = 120.0) -> float:
        started = time.perf_counter()
        while time.perf_counter() - started < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"lablink serve exited with {self.proc.returncode}: {self.log_tail()}"
                )
            try:
                if httpx.get(f"{self.url}/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        else:
            raise RuntimeError(f"lablink serve not ready in {timeout} s: {self.log_tail()}")
        for pid, comm in children(self.pid):
            self.helpers[helper_role(pid, comm)] = pid
        return time.perf_counter() - started

    def log_tail(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")[-2000:]

    def signal(self, number: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(number)

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


# -- counting fsyncs --------------------------------------------------------------------------


class FsyncCounter:
    """fsync-family system calls of one process (every thread) while it runs."""

    def __init__(self, tool: str, pid: int, output: Path) -> None:
        self.tool, self.pid, self.output = tool, pid, output
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if self.tool == "perf":
            assert PERF is not None
            events = ",".join(f"syscalls:sys_enter_{name}" for name in FSYNC_SYSCALLS)
            command = [PERF, "stat", "-x", ",", "-o", str(self.output), "-e", events]
            command += ["-p", str(self.pid)]
        else:
            assert STRACE is not None
            command = [STRACE, "-f", "-c", "-o", str(self.output)]
            command += ["-e", "trace=" + ",".join(FSYNC_SYSCALLS), "-p", str(self.pid)]
        self.proc = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )

    def stop(self) -> dict[str, int] | None:
        """Counts by system call, or None when the tool gave none (the reason is logged)."""
        if self.proc is None:
            return None
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        try:
            text = self.output.read_text()
        except OSError:
            text = ""
        counts = parse_perf(text) if self.tool == "perf" else parse_strace(text)
        if counts is None:
            say(f"{self.tool} on pid {self.pid} counted nothing: {text[-500:]!r}")
        return counts


def parse_perf(text: str) -> dict[str, int] | None:
    counts: dict[str, int] = {}
    for line in text.splitlines():
        fields = line.split(",")
        if len(fields) >= 3 and fields[2].startswith("syscalls:sys_enter_"):
            name = fields[2].removeprefix("syscalls:sys_enter_")
            counts[name] = int(fields[0]) if fields[0].isdigit() else 0
    return counts or None


def parse_strace(text: str) -> dict[str, int] | None:
    counts: dict[str, int] = {}
    for line in text.splitlines():
        fields = line.split()
        if fields and fields[-1] in FSYNC_SYSCALLS and len(fields) >= 5:
            counts[fields[-1]] = int(fields[3])
    # strace prints no row for a call never made, but its header says it ran.
    return counts if counts or "% time" in text else None


def fsync_tool(requested: str) -> str:
    if requested == "auto":
        return "perf" if PERF and perf_works() else ("strace" if STRACE else "none")
    return requested


def perf_works() -> bool:
    """Whether perf can count the syscall tracepoints here (a container may forbid it)."""
    assert PERF is not None
    done = subprocess.run(
        [PERF, "stat", "-x", ",", "-e", "syscalls:sys_enter_fsync", "--", "true"],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.returncode == 0 and "sys_enter_fsync" in done.stderr


# -- the sampling profiler inside `lablink serve` ---------------------------------------------


# (file name ending, function) of a frame on top of a thread that waits for work.
IDLE_FRAMES = (
    ("selectors.py", "select"),
    ("runners.py", "run"),  # uvloop's loop waits in C under asyncio.Runner.run
    ("threading.py", "wait"),
    ("threading.py", "_wait_for_tstate_lock"),
    ("futures/thread.py", "_worker"),
    ("queue.py", "get"),
    ("socket.py", "accept"),
)


class Sampler:
    """Every thread's Python stack every SAMPLE_SECONDS while armed (a poor man's py-spy:
    it samples when it gets the GIL, so a thread holding the GIL is seen at its next release)."""

    def __init__(self, report: Path) -> None:
        self.report = report
        self.armed = threading.Event()
        self.finish = threading.Event()
        self.ticks = 0
        self.started = 0.0
        self.seconds = 0.0
        self.thread_busy: collections.Counter[str] = collections.Counter()
        self.thread_samples: collections.Counter[str] = collections.Counter()
        self.inclusive: collections.Counter[str] = collections.Counter()
        self.own: collections.Counter[str] = collections.Counter()
        self.modules: collections.Counter[str] = collections.Counter()
        self.busy = 0
        threading.Thread(target=self._run, name="bench-sampler", daemon=True).start()

    # The signal handlers only set events: whatever a handler raised would surface in the
    # server's own code, wherever the main thread happened to be.
    def arm(self, *_: object) -> None:
        self.armed.set()

    def disarm(self, *_: object) -> None:
        self.finish.set()

    def _run(self) -> None:
        me = threading.get_ident()
        self.armed.wait()
        self.started = time.perf_counter()
        while not self.finish.is_set():
            names = {t.ident: t.name for t in threading.enumerate()}
            for ident, frame in sys._current_frames().items():
                if ident != me:
                    self._note(names.get(ident, str(ident)), frame)
            self.ticks += 1
            time.sleep(SAMPLE_SECONDS)
        self.seconds = time.perf_counter() - self.started
        self.report.write_text(json.dumps(self.figures(), indent=1) + "\n", encoding="utf-8")

    def _note(self, thread: str, top: FrameType) -> None:
        # Worker threads are numbered (visa-scope_1_0, ThreadPoolExecutor-0_3): one row each kind.
        kind = thread.rstrip("0123456789_").rstrip("-") or thread
        self.thread_samples[kind] += 1
        code = top.f_code
        if any(code.co_filename.endswith(f) and code.co_name == n for f, n in IDLE_FRAMES):
            return
        self.busy += 1
        self.thread_busy[kind] += 1
        self.own[frame_name(top)] += 1
        seen: set[str] = set()
        modules: set[str] = set()
        frame: FrameType | None = top
        while frame is not None:
            seen.add(frame_name(frame))
            path = frame.f_code.co_filename
            if "/lablink/" in path:
                modules.add("lablink/" + path.rsplit("/lablink/", 1)[1])
            frame = frame.f_back
        self.inclusive.update(seen)
        self.modules.update(modules)

    def figures(self) -> dict[str, Any]:
        def share(counter: collections.Counter[str], top: int) -> list[list[Any]]:
            return [
                [name, count, round(100.0 * count / max(self.busy, 1), 1)]
                for name, count in counter.most_common(top)
            ]

        return {
            "seconds": round(self.seconds, 1),
            "ticks": self.ticks,
            "busy_samples": self.busy,
            "note": "percentages are of busy thread-samples (a thread not waiting for work)",
            "threads": {
                kind: {
                    "samples": self.thread_samples[kind],
                    "busy": self.thread_busy[kind],
                    "busy_percent_of_ticks": round(
                        100.0 * self.thread_busy[kind] / max(self.ticks, 1), 1
                    ),
                }
                for kind, _ in self.thread_samples.most_common()
            },
            "lablink_modules_inclusive": share(self.modules, 30),
            "functions_inclusive": share(self.inclusive, 60),
            "functions_own": share(self.own, 40),
        }


def frame_name(frame: FrameType) -> str:
    path = frame.f_code.co_filename
    for marker in ("/site-packages/", "/lablink/", "/lib/python3"):
        if marker in path:
            path = path.rsplit(marker, 1)[1]
            if marker == "/lablink/":
                path = "lablink/" + path
            break
    return f"{frame.f_code.co_name} ({path}:{frame.f_code.co_firstlineno})"


def profiled_serve() -> None:
    """`lablink <argv[2:]>` with a Sampler armed by SIGUSR1 and written by SIGUSR2 to argv[1]."""
    sampler = Sampler(Path(sys.argv[1]))
    signal.signal(signal.SIGUSR1, sampler.arm)
    signal.signal(signal.SIGUSR2, sampler.disarm)
    sys.argv = ["lablink", *sys.argv[2:]]
    from lablink.cli import main

    main()


# -- LabLink: one run -------------------------------------------------------------------------


async def create_jobs(url: str, bodies: Sequence[dict[str, Any]]) -> None:
    limit = asyncio.Semaphore(CREATE_CONCURRENCY)
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:

        async def create(body: dict[str, Any]) -> None:
            async with limit:
                for attempt in range(20):
                    answer = await client.post("/api/scheduler/jobs/create", json=body)
                    if answer.status_code != 503:
                        break
                    await asyncio.sleep(0.5 * (attempt + 1))  # views behind: as told, retry
                if answer.status_code not in (200, 201):
                    raise RuntimeError(
                        f"creating {body['name']!r}: {answer.status_code} {answer.text[:500]}"
                    )

        await asyncio.gather(*(create(body) for body in bodies))


def wait_for_views(url: str, timeout: float) -> tuple[float, dict[str, Any] | None] | None:
    """One API read, retried while it answers 503: once it answers, the views have folded
    everything committed before it (read-your-writes). Returns the wait and one execution, or
    None if the views stayed behind for ``timeout`` s (a server that cannot keep up)."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        try:
            answer = httpx.get(f"{url}/api/scheduler/executions?limit=1", timeout=30)
            if answer.status_code == 200:
                executions = answer.json()["executions"]
                return time.perf_counter() - started, executions[0] if executions else None
        except httpx.HTTPError:
            pass
        time.sleep(1.0)
    return None


def fold_after_stop(data_dir: Path) -> None:
    """The views folded up to the end of the log of a stopped server (as its next start would)."""
    from lablink.logstore import open_store

    open_store(data_dir / "scheduler.db").close()


def sleep_until(instant: float) -> None:
    time.sleep(max(0.0, instant - time.time()))


def lateness_points(row: dict[str, Any]) -> dict[str, float]:
    """Seconds from scheduled_time to every other instant recorded for the execution."""
    scheduled = parse_instant(row["scheduled_time"]).timestamp()
    out: dict[str, float] = {}
    for name, value in row.items():
        if (
            isinstance(value, str)
            and (name.endswith("_at") or name.endswith("_time"))
            and name not in NOT_LIFE_INSTANTS
        ):
            try:
                out[name] = parse_instant(value).timestamp() - scheduled
            except ValueError:
                continue
    result = row.get("result")
    if isinstance(result, str) and result.startswith("{"):
        for name, value in json.loads(result).items():
            if isinstance(value, str) and name.endswith("_at"):
                try:
                    out[f"result.{name}"] = parse_instant(value).timestamp() - scheduled
                except ValueError:
                    continue
    return out


def read_window(views: Path, start: float, end: float) -> list[dict[str, Any]]:
    low = format_instant(datetime.fromtimestamp(start, UTC))
    high = format_instant(datetime.fromtimestamp(end, UTC))
    conn = sqlite3.connect(f"file:{views}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        rows = conn.execute(
            "SELECT * FROM executions WHERE scheduled_time >= ? AND scheduled_time < ?",
            (low, high),
        ).fetchall()
    finally:
        conn.close()
    return [dict(row) for row in rows]


def execution_figures(rows: list[dict[str, Any]], offered: int) -> dict[str, Any]:
    statuses = collections.Counter(row["status"] for row in rows)
    errors: collections.Counter[str] = collections.Counter()
    examples: dict[str, str] = {}
    for row in rows:
        if row.get("error"):
            error = json.loads(row["error"])
            kind = str(error.get("type")) if isinstance(error, dict) else "?"
            errors[kind] += 1
            examples.setdefault(kind, str(error.get("message"))[:300])
        elif row["status"] == "skipped" and row.get("message"):
            examples.setdefault("skipped", str(row["message"])[:300])
    done = [row for row in rows if row["status"] == "completed"]
    points: dict[str, list[float]] = collections.defaultdict(list)
    per_instrument: dict[str, dict[str, list[float]]] = collections.defaultdict(
        lambda: collections.defaultdict(list)
    )
    durations: list[float] = []
    by_second: dict[int, dict[str, list[float]]] = collections.defaultdict(
        lambda: collections.defaultdict(list)
    )
    for row in done:
        lateness = lateness_points(row)
        second = by_second[int(parse_instant(row["scheduled_time"]).timestamp())]
        for name in PER_SECOND_POINTS:
            if name in lateness:
                second[name].append(lateness[name])
        for name, seconds in lateness.items():
            points[name].append(seconds)
        board = per_instrument[row["equipment_id"]]
        board["completed"].append(1.0)
        for name in ("completed_at", *INSTRUMENT_START_FIELDS):
            if name in lateness:
                board[name].append(lateness[name])
        started = lateness.get("instrument_started_at")
        ended = lateness.get("instrument_ended_at")
        if started is not None and ended is not None:
            durations.append(ended - started)
    return {
        "offered": offered,
        "rows": len(rows),
        "completed": len(done),
        "completed_percent": round(100.0 * len(done) / offered, 3) if offered else None,
        "statuses": dict(statuses),
        "errors": dict(errors),
        "examples": examples,
        "lateness": {name: summary_ms(values) for name, values in sorted(points.items())},
        "instrument_operation": summary_ms(durations) if durations else None,
        "per_instrument": {
            equipment_id: {
                "completed": len(board["completed"]),
                **{
                    f"{name}_p99_ms": summary_ms(board[name])["p99_ms"]
                    for name in ("completed_at", *INSTRUMENT_START_FIELDS)
                    if board.get(name)
                },
            }
            for equipment_id, board in sorted(per_instrument.items())
        },
        # Second by second (by scheduled time), so a stretch of late fires can be placed.
        "per_second": [
            {
                "second": second - min(by_second),
                "completed": len(values["completed_at"]),
                **{
                    f"{name}_{q}_ms": summary_ms(values[name])[f"{q}_ms"]
                    for name in PER_SECOND_POINTS
                    if values.get(name)
                    for q in ("p50", "p99")
                },
            }
            for second, values in sorted(by_second.items())
        ],
    }


def lablink_run(
    scenario: Scenario, settings: Settings, tmp: Path, name: str, profile: Path | None = None
) -> dict[str, Any]:
    data_dir = tmp / name
    serve = Serve(data_dir, profile, settings.embedded_agent, settings.fire_lead)
    counters: list[tuple[str, FsyncCounter]] = []
    try:
        ready_seconds = serve.wait_ready()
        lead = 3.0 + scenario.jobs * CREATE_SECONDS_PER_JOB
        first = float(math.ceil(time.time() + lead))
        bodies = [job_body(i, first + offset) for i, offset in enumerate(start_offsets(scenario))]
        created_at = time.perf_counter()
        asyncio.run(create_jobs(serve.url, bodies))
        create_seconds = time.perf_counter() - created_at
        created_by = time.time()
        start = float(math.ceil(max(first, time.time()) + settings.warmup))
        end = start + scenario.window
        sleep_until(start - 0.5)
        processes = {"serve": serve.pid, **serve.helpers}
        tool = settings.fsync_tool
        if tool != "none":
            counters = [
                (who, FsyncCounter(tool, pid, tmp / f"{name}.{who}.{tool}.txt"))
                for who, pid in processes.items()
            ]
        sleep_until(start)
        for _, counter in counters:
            counter.start()
        if profile is not None:
            serve.signal(signal.SIGUSR1)
        cpu0 = {who: cpu_seconds(pid) for who, pid in processes.items()}
        mine0, busy0, wall0 = time.process_time(), _system_busy_seconds(), time.perf_counter()
        sleep_until(start + scenario.window / 2)
        health = health_snapshot(serve.url)
        sleep_until(end)
        wall = time.perf_counter() - wall0
        cpu = {who: cpu_seconds(pid) - cpu0[who] for who, pid in processes.items()}
        others = _system_busy_seconds() - busy0 - sum(cpu.values()) - (time.process_time() - mine0)
        if profile is not None:
            serve.signal(signal.SIGUSR2)
        fsyncs = {who: counter.stop() for who, counter in counters}
        counters = []
        sleep_until(end + settings.tail)
        caught_up = wait_for_views(serve.url, settings.views_timeout)
        views_wait, sample = caught_up or (None, None)
        if caught_up is not None:
            rows = read_window(data_dir / "views.db", start, end)
    finally:
        for _, counter in counters:
            counter.stop()
        code = serve.stop()
    if caught_up is None:
        # Still firing and still behind: what the window's executions became is read once the
        # server has stopped (any still in flight then are interrupted, and not completed).
        say(f"{name}: views still behind after {settings.views_timeout:g} s; stopped, folding")
        fold_after_stop(data_dir)
        rows = read_window(data_dir / "views.db", start, end)
    figures = execution_figures(rows, round(scenario.jobs * scenario.window))
    completed = figures["completed"]
    fsync_total = (
        sum(sum(c.values()) for c in fsyncs.values() if c is not None)
        if fsyncs and all(c is not None for c in fsyncs.values())
        else None
    )
    api_fields = sorted(sample) if sample else []
    return {
        **figures,
        "api_execution_fields": api_fields,
        "api_instrument_fields": [f for f in api_fields if "instrument" in f or "dispatch" in f],
        "fsync_tool": settings.fsync_tool,
        "fsyncs": fsyncs,
        "fsyncs_total": fsync_total,
        "fsyncs_per_execution": (
            round(fsync_total / completed, 3) if fsync_total is not None and completed else None
        ),
        # Per execution recorded in the window whatever its status (skipped, failed): a server
        # that cannot keep up completes few, and the first figure then says little.
        "fsyncs_per_recorded_execution": (
            round(fsync_total / figures["rows"], 3)
            if fsync_total is not None and figures["rows"]
            else None
        ),
        "cpu_percent": {who: round(100.0 * s / wall, 1) for who, s in cpu.items()},
        "cpu_ms_per_execution": {
            who: round(1000.0 * s / completed, 3) if completed else None for who, s in cpu.items()
        },
        "other_processes_cpu_percent": round(100.0 * max(others, 0.0) / wall, 1),
        "health_mid_window": health,
        "ready_seconds": round(ready_seconds, 2),
        "create_seconds": round(create_seconds, 2),
        # Jobs created after their start_date caught up once (before the window).
        "create_overran_first_fire": created_by > first,
        "views_wait_seconds": None if views_wait is None else round(views_wait, 2),
        "read_while_serving": caught_up is not None,
        "window_start": datetime.fromtimestamp(start, UTC).isoformat(),
        "serve_exit_code": code,
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
    }


def health_snapshot(url: str) -> dict[str, Any] | None:
    """/health in the middle of the window: its components' states and any queue figures."""
    try:
        body = httpx.get(f"{url}/health", timeout=10).json()
    except (httpx.HTTPError, ValueError):
        return None
    if not isinstance(body, dict):
        return None
    components = body.get("components", body)
    out: dict[str, Any] = {"status": body.get("status")}
    if isinstance(components, dict):
        for name, component in components.items():
            if isinstance(component, dict):
                out[name] = {
                    "state": component.get("state"),
                    **{k: v for k, v in (component.get("details") or {}).items() if "queue" in k},
                }
    return out


# -- the baseline: APScheduler in-process -----------------------------------------------------


@dataclass
class WorkerSpec:
    jobs: int
    alignment: str
    window: float
    warmup: float
    tail: float
    directory: str
    result: str


def op_timing(bench: Any, directory: Path) -> dict[str, Any]:
    """One measurement operation on each instrument, serially, timed on its worker thread."""
    from lablink.equipment_agent.operations import OperationOptions, run_operation
    from lablink.instruments.context import Job, RunContext

    options = OperationOptions(data_dir=directory)
    per_instrument: dict[str, dict[str, Any]] = {}
    pooled: list[float] = []
    for equipment_id, command in INSTRUMENTS:
        session = bench.session(equipment_id)
        job = Job(
            execution_id="exec_timing",
            job_id="job_timing",
            job_name="timing",
            equipment_id=equipment_id,
            schedule_type="measurement",
            parameters={"command": command},
        )

        def timed(inst: Any, job: Job = job, equipment_id: str = equipment_id) -> float:
            began = time.perf_counter()
            run_operation(inst, job, RunContext(equipment_id=equipment_id), options)
            return time.perf_counter() - began

        for _ in range(20):
            session.call(timed)
        inner: list[float] = []
        round_trip: list[float] = []
        for _ in range(OP_TIMING_REPEATS):
            began = time.perf_counter()
            inner.append(session.call(timed))
            round_trip.append(time.perf_counter() - began)
        pooled += inner
        per_instrument[equipment_id] = {
            "command": command,
            "operation": summary_ms(inner),
            "with_thread_handoff": summary_ms(round_trip),
        }
    return {
        "repeats": OP_TIMING_REPEATS,
        "operation_median_ms": round(1000.0 * (percentile(sorted(pooled), 50) or 0.0), 4),
        "per_instrument": per_instrument,
    }


async def aps_worker(spec: WorkerSpec) -> dict[str, Any]:
    from apscheduler.events import (
        EVENT_JOB_ERROR,
        EVENT_JOB_EXECUTED,
        EVENT_JOB_MAX_INSTANCES,
        EVENT_JOB_MISSED,
    )
    from apscheduler.jobstores.memory import MemoryJobStore
    from apscheduler.schedulers.asyncio import AsyncIOScheduler
    from apscheduler.triggers.interval import IntervalTrigger

    from lablink.equipment_agent.bench import open_simulated_bench
    from lablink.equipment_agent.operations import OperationOptions, run_operation
    from lablink.instruments.context import Job, RunContext

    directory = Path(spec.directory)
    bench = open_simulated_bench()
    try:
        timing = op_timing(bench, directory)
        options = OperationOptions(data_dir=directory)

        def operation(index: int) -> Callable[[Any], tuple[float, float]]:
            equipment_id, command = instrument_of(index)
            job = Job(
                execution_id="exec",
                job_id=f"job_{index:05d}",
                job_name=f"e2e reading {index:05d}",
                equipment_id=equipment_id,
                schedule_type="measurement",
                parameters={"command": command},
            )

            def run(inst: Any) -> tuple[float, float]:
                began = time.time()
                run_operation(inst, job, RunContext(equipment_id=equipment_id), options)
                return began, time.time()

            return run

        async def fire(index: int) -> tuple[float, float, float, float]:
            ran = time.time()
            session = bench.session(instrument_of(index)[0])
            began, ended = await asyncio.wrap_future(session.submit(operation(index)))
            return ran, began, ended, time.time()

        logger = __import__("logging").getLogger("apscheduler")
        logger.setLevel("ERROR")
        scheduler = AsyncIOScheduler(
            timezone=UTC,
            jobstores={"default": MemoryJobStore()},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 300},
        )
        done: list[tuple[float, tuple[float, float, float, float]]] = []
        # (scheduled, what): the fires that did not run, and when they were due.
        other: list[tuple[float, str]] = []

        def listener(event: Any) -> None:
            if event.code == EVENT_JOB_EXECUTED:
                done.append((event.scheduled_run_time.timestamp(), event.retval))
                return
            what = {EVENT_JOB_MISSED: "missed", EVENT_JOB_MAX_INSTANCES: "max_instances"}.get(
                event.code, "error"
            )
            due = getattr(event, "scheduled_run_time", None) or min(
                getattr(event, "scheduled_run_times", None) or [datetime.now(UTC)]
            )
            other.append((due.timestamp(), what))

        scheduler.add_listener(
            listener,
            EVENT_JOB_EXECUTED | EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES | EVENT_JOB_ERROR,
        )
        first = float(math.ceil(time.time() + 2.0 + spec.jobs * 0.0005))
        scenario = Scenario(spec.jobs, spec.alignment, spec.window)
        for index, offset in enumerate(start_offsets(scenario)):
            scheduler.add_job(
                fire,
                IntervalTrigger(
                    seconds=1, start_date=datetime.fromtimestamp(first + offset, UTC), timezone=UTC
                ),
                args=[index],
                id=f"job_{index:05d}",
            )
        scheduler.start()
        start = first + spec.warmup
        end = start + spec.window
        await asyncio.sleep(max(0.0, start - time.time()))
        cpu0, wall0, busy0 = time.process_time(), time.perf_counter(), _system_busy_seconds()
        await asyncio.sleep(max(0.0, end - time.time()))
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        others = _system_busy_seconds() - busy0 - cpu
        await asyncio.sleep(spec.tail)
        scheduler.shutdown(wait=False)
        await asyncio.sleep(0.2)
    finally:
        bench.close()
    inside = [(s, r) for s, r in done if start <= s < end]
    offered = round(spec.jobs * spec.window)
    points = {
        "dispatched (job function ran)": [r[0] - s for s, r in inside],
        "instrument started": [r[1] - s for s, r in inside],
        "instrument ended": [r[2] - s for s, r in inside],
        "completed": [r[3] - s for s, r in inside],
    }
    return {
        "offered": offered,
        "completed": len(inside),
        "completed_percent": round(100.0 * len(inside) / offered, 3),
        # Errors after the window are the fires in flight when the bench closed the instruments.
        "other_events_in_window": dict(
            collections.Counter(w for t, w in other if start <= t < end)
        ),
        "other_events_outside": dict(
            collections.Counter(w for t, w in other if not start <= t < end)
        ),
        "lateness": {name: summary_ms(values) for name, values in points.items()},
        "instrument_operation": summary_ms([r[2] - r[1] for _, r in inside]),
        "cpu_percent": round(100.0 * cpu / wall, 1),
        "cpu_ms_per_execution": round(1000.0 * cpu / len(inside), 3) if inside else None,
        "other_processes_cpu_percent": round(100.0 * max(others, 0.0) / wall, 1),
        "op_timing": timing,
    }


def worker_main(spec_path: str) -> None:
    spec = WorkerSpec(**json.loads(Path(spec_path).read_text(encoding="utf-8")))
    result = asyncio.run(aps_worker(spec))
    Path(spec.result).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


def aps_run(scenario: Scenario, settings: Settings, tmp: Path, name: str) -> dict[str, Any]:
    directory = tmp / name
    directory.mkdir()
    spec = WorkerSpec(
        jobs=scenario.jobs,
        alignment=scenario.alignment,
        window=scenario.window,
        warmup=settings.warmup,
        tail=settings.tail,
        directory=str(directory),
        result=str(tmp / f"{name}.result.json"),
    )
    spec_path = tmp / f"{name}.spec.json"
    spec_path.write_text(json.dumps(asdict(spec)), encoding="utf-8")
    log_path = tmp / f"{name}.log"
    command = [
        sys.executable,
        "-c",
        "import sys; from bench.bench_e2e import worker_main; worker_main(sys.argv[1])",
        str(spec_path),
    ]
    budget = 60 + settings.warmup + scenario.window + settings.tail + scenario.jobs * 0.01
    with open(log_path, "wb") as log_file:
        try:
            subprocess.run(
                command,
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


# -- the parent -------------------------------------------------------------------------------


@dataclass
class Settings:
    scenarios: list[Scenario]
    runs: int
    warmup: float
    window: float
    tail: float
    systems: list[str]
    fsync_tool: str
    profile: Scenario | None
    embedded_agent: str | None
    views_timeout: float
    quiet_wait: float
    tmpdir: Path | None
    output: Path
    fire_lead: float | None = None


@dataclass
class Outcome:
    scenario: Scenario
    runs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    failed: dict[str, list[str]] = field(default_factory=dict)


def med(runs: Sequence[dict[str, Any]], *path: str) -> float | None:
    values: list[float | None] = []
    for run in runs:
        value: Any = run
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        values.append(value if isinstance(value, int | float) else None)
    return median_of(values)


def lateness_names(runs: Sequence[dict[str, Any]]) -> list[str]:
    names: list[str] = []
    for run in runs:
        names += [n for n in run.get("lateness", {}) if n not in names]
    return names


def summarise(runs: Sequence[dict[str, Any]], system: str) -> dict[str, Any]:
    if not runs:
        return {}
    out: dict[str, Any] = {
        "runs": len(runs),
        "completed_percent": med(runs, "completed_percent"),
        "completed_percent_lowest": min(r["completed_percent"] for r in runs),
        "lateness": {
            name: {p: med(runs, "lateness", name, f"{p}_ms") for p in ("p50", "p99", "max")}
            for name in lateness_names(runs)
        },
        "instrument_operation_p50_ms": med(runs, "instrument_operation", "p50_ms"),
    }
    if system == "lablink":
        out.update(
            fsyncs_per_execution=med(runs, "fsyncs_per_execution"),
            fsyncs_per_recorded_execution=med(runs, "fsyncs_per_recorded_execution"),
            serve_cpu_percent=med(runs, "cpu_percent", "serve"),
            nats_cpu_percent=med(runs, "cpu_percent", "nats"),
            serve_cpu_ms_per_execution=med(runs, "cpu_ms_per_execution", "serve"),
            nats_cpu_ms_per_execution=med(runs, "cpu_ms_per_execution", "nats"),
            other_processes_cpu_percent=med(runs, "other_processes_cpu_percent"),
            fsyncs_serve=med_fsyncs(runs, "serve"),
            fsyncs_nats=med_fsyncs(runs, "nats"),
            fsyncs_agent=med_fsyncs(runs, "agent"),
            fsyncs_projector=med_fsyncs(runs, "projector"),
            projector_cpu_percent=med(runs, "cpu_percent", "projector"),
            projector_cpu_ms_per_execution=med(runs, "cpu_ms_per_execution", "projector"),
            agent_cpu_percent=med(runs, "cpu_percent", "agent"),
            agent_cpu_ms_per_execution=med(runs, "cpu_ms_per_execution", "agent"),
            api_instrument_fields=runs[-1].get("api_instrument_fields", []),
        )
    else:
        out.update(
            cpu_percent=med(runs, "cpu_percent"),
            cpu_ms_per_execution=med(runs, "cpu_ms_per_execution"),
            other_processes_cpu_percent=med(runs, "other_processes_cpu_percent"),
            operation_median_ms=med(runs, "op_timing", "operation_median_ms"),
        )
    return out


def med_fsyncs(runs: Sequence[dict[str, Any]], who: str) -> float | None:
    values: list[float | None] = []
    for run in runs:
        counts = (run.get("fsyncs") or {}).get(who)
        values.append(sum(counts.values()) if counts is not None else None)
    return median_of(values)


def instrument_start_p99(summary: dict[str, Any]) -> float | None:
    for name in INSTRUMENT_START_FIELDS:
        value = summary.get("lateness", {}).get(name, {}).get("p99")
        if value is not None:
            return float(value)
    return None


def p99_of(summary: dict[str, Any], name: str) -> float | None:
    value = summary.get("lateness", {}).get(name, {}).get("p99")
    return None if value is None else float(value)


def operation_ms(outcomes: Sequence[dict[str, Any]]) -> float | None:
    """The measured per-operation time: the baseline workers' medians, else None."""
    return median_of([o["summary"].get("aps", {}).get("operation_median_ms") for o in outcomes])


def targets(outcomes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    op_ms = operation_ms(outcomes)
    for o in outcomes:
        scenario = Scenario(**o["scenario"])
        mine = o["summary"].get("lablink", {})
        theirs = o["summary"].get("aps", {})
        if not mine:
            continue
        start_p99 = instrument_start_p99(mine)
        if scenario.jobs == TARGET_RATE_JOBS and scenario.alignment == "spread":
            full = scenario.window >= TARGET_WINDOW_SECONDS
            all_done = (mine.get("completed_percent_lowest") or 0.0) >= 100.0
            out.append(
                {
                    "target": f"1,000/s spread for 60 s: 100 % completed, instrument-start p99"
                    f" <= {INSTRUMENT_START_P99_TARGET_MS:g} ms",
                    "scenario": scenario.label,
                    "figures": f"completed {fmt_pct(mine.get('completed_percent_lowest'))} %"
                    f" (lowest run), instrument-start p99 {fmt_ms(start_p99)} ms"
                    + ("" if start_p99 is not None else " (not recorded yet)")
                    + ("" if full else f" (window {scenario.window:g} s, not 60)"),
                    "met": None
                    if start_p99 is None
                    else all_done and start_p99 <= INSTRUMENT_START_P99_TARGET_MS,
                }
            )
            mine_p99, aps_p99 = p99_of(mine, "completed_at"), p99_of(theirs, "completed")
            ratio = None if mine_p99 is None or not aps_p99 else mine_p99 / aps_p99
            out.append(
                {
                    "target": f"completion p99 within {COMPLETION_RATIO_TARGET:g}x APScheduler's",
                    "scenario": scenario.label,
                    "figures": f"LabLink {fmt_ms(mine_p99)} ms, APScheduler {fmt_ms(aps_p99)} ms,"
                    f" ratio {fmt_ratio(ratio)}",
                    "met": None if ratio is None else ratio <= COMPLETION_RATIO_TARGET,
                }
            )
        if scenario.jobs == ALIGNED_TARGET_JOBS and scenario.alignment == "aligned":
            series = math.ceil(scenario.jobs / INSTRUMENT_COUNT)
            physics = None if op_ms is None else series * op_ms
            out.append(
                {
                    "target": f"100 aligned: instrument-start p99 <= {PHYSICS_RATIO_TARGET:g}x"
                    " the serial queues' physics",
                    "scenario": scenario.label,
                    "figures": f"instrument-start p99 {fmt_ms(start_p99)} ms"
                    + ("" if start_p99 is not None else " (not recorded yet)")
                    + f"; physics {series} x {fmt_ms(op_ms)} ms = {fmt_ms(physics)} ms,"
                    f" limit {fmt_ms(None if physics is None else PHYSICS_RATIO_TARGET * physics)}"
                    " ms",
                    "met": None
                    if start_p99 is None or physics is None
                    else start_p99 <= PHYSICS_RATIO_TARGET * physics,
                }
            )
        per_execution = mine.get("fsyncs_per_execution")
        out.append(
            {
                "target": f"fsyncs per execution <= {FSYNCS_PER_EXECUTION_TARGET:g}",
                "scenario": scenario.label,
                "figures": f"{fmt_num(per_execution)} per completed execution"
                f" (serve {fmt_num(mine.get('fsyncs_serve'))},"
                f" nats-server {fmt_num(mine.get('fsyncs_nats'))}"
                + agent_part(fmt_num(mine.get("fsyncs_agent"))).replace(" / ", ", agent ")
                + agent_part(fmt_num(mine.get("fsyncs_projector"))).replace(" / ", ", projector ")
                + " in the window)",
                "met": None
                if per_execution is None
                else per_execution <= FSYNCS_PER_EXECUTION_TARGET,
            }
        )
    return out


def fmt_num(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"


def agent_part(text: str) -> str:
    """ " / <figure>" for an agent running as serve's child; nothing when it ran inside."""
    return "" if text in ("-", "n/a") else f" / {text}"


def pair_ms(summary: dict[str, Any], name: str) -> str:
    figures = summary.get("lateness", {}).get(name)
    if not figures:
        return "n/a"
    return f"{fmt_ms(figures.get('p50'))} / {fmt_ms(figures.get('p99'))}"


Rows = tuple[str, list[str], list[list[str]]]


def tables(result: dict[str, Any]) -> list[Rows]:
    main: list[list[str]] = []
    points: list[list[str]] = []
    costs: list[list[str]] = []
    instruments: list[list[str]] = []
    for o in result["scenarios"]:
        label = Scenario(**o["scenario"]).label
        mine = o["summary"].get("lablink", {})
        theirs = o["summary"].get("aps", {})
        runs = f"{mine.get('runs', 0)}/{theirs.get('runs', 0)}"
        main.append(
            [
                f"{label} (runs {runs})",
                f"{fmt_pct(mine.get('completed_percent'))} / "
                f"{fmt_pct(theirs.get('completed_percent'))}",
                pair_ms(mine, "completed_at"),
                pair_ms(theirs, "completed"),
                pair_ms(mine, "started_at"),
                pair_ms(mine, "instrument_started_at"),
                pair_ms(theirs, "instrument started"),
                fmt_num(mine.get("fsyncs_per_execution")),
                f"{fmt_pct(mine.get('serve_cpu_percent'))} / "
                f"{fmt_pct(mine.get('nats_cpu_percent'))}"
                + agent_part(fmt_pct(mine.get("agent_cpu_percent")))
                + agent_part(fmt_pct(mine.get("projector_cpu_percent"))),
                fmt_pct(mine.get("other_processes_cpu_percent")),
            ]
        )
        for system, summary in (("LabLink", mine), ("APScheduler", theirs)):
            for name, figures in summary.get("lateness", {}).items():
                points.append(
                    [
                        label,
                        system,
                        POINT_LABELS.get(name, name),
                        "/".join(fmt_ms(figures.get(p)) for p in ("p50", "p99", "max")),
                    ]
                )
        if mine:
            costs.append(
                [
                    label,
                    fmt_num(mine.get("fsyncs_serve")),
                    fmt_num(mine.get("fsyncs_nats"))
                    + agent_part(fmt_num(mine.get("fsyncs_agent")))
                    + agent_part(fmt_num(mine.get("fsyncs_projector"))),
                    fmt_num(mine.get("fsyncs_per_execution")),
                    fmt_num(mine.get("fsyncs_per_recorded_execution")),
                    f"{fmt_num(mine.get('serve_cpu_ms_per_execution'))} / "
                    f"{fmt_num(mine.get('nats_cpu_ms_per_execution'))}"
                    + agent_part(fmt_num(mine.get("agent_cpu_ms_per_execution")))
                    + agent_part(fmt_num(mine.get("projector_cpu_ms_per_execution"))),
                    f"{fmt_num(theirs.get('cpu_ms_per_execution'))}",
                    ", ".join(mine.get("api_instrument_fields") or []) or "none",
                ]
            )
        for run in o["runs"].get("lablink", [])[-1:]:
            for equipment_id, board in run.get("per_instrument", {}).items():
                instruments.append(
                    [
                        label,
                        equipment_id,
                        str(board["completed"]),
                        fmt_ms(board.get("completed_at_p99_ms")),
                        fmt_ms(board.get("instrument_started_at_p99_ms")),
                    ]
                )
    verdicts = [
        [t["target"], t["scenario"], t["figures"], met_text(t["met"])] for t in result["targets"]
    ]
    return [
        (
            "End to end, LabLink (lablink serve, NATS, embedded agent) vs APScheduler 3.11 memory"
            " store calling the instruments in-process; lateness p50 / p99 (ms), medians of runs",
            [
                "scenario",
                "completed % L / A",
                "LabLink completed_at",
                "APS completed",
                "LabLink started_at",
                "LabLink instrument start",
                "APS instrument start",
                "fsyncs per exec.",
                "CPU % serve / nats (/ agent / projector)",
                "other CPU %",
            ],
            main,
        ),
        (
            "Every lateness point recorded (p50/p99/max ms, medians of runs)",
            ["scenario", "system", "point", "p50/p99/max"],
            points,
        ),
        (
            "Costs in the window: fsyncs (medians), CPU per completed execution (ms)",
            [
                "scenario",
                "fsyncs serve",
                "fsyncs nats-server (/ agent / projector)",
                "per completed execution",
                "per recorded execution",
                "CPU ms serve / nats (/ agent / projector)",
                "CPU ms APS",
                "instrument fields in the API",
            ],
            costs,
        ),
        (
            "Per instrument (last LabLink run): completed, completion and instrument-start p99"
            " (ms)",
            ["scenario", "instrument", "completed", "completed_at p99", "instrument start p99"],
            instruments,
        ),
        ("Issue 19's targets", ["target", "scenario", "figures", "met?"], verdicts),
    ]


def print_tables(result: dict[str, Any]) -> None:
    for title, header, rows in tables(result):
        if not rows:
            continue
        table = Table(title=title, show_lines=True)
        for index, column in enumerate(header):
            table.add_column(column, justify="left" if index < 3 else "right")
        for row in rows:
            table.add_row(*row)
        console.print(table)


def markdown(result: dict[str, Any]) -> str:
    lines: list[str] = []
    for title, header, rows in tables(result):
        if not rows:
            continue
        lines += [f"**{title}**", "", "| " + " | ".join(header) + " |"]
        lines.append("|" + "---|" * len(header))
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        lines.append("")
    return "\n".join(lines)


def run_one(
    system: str, scenario: Scenario, settings: Settings, tmp: Path, name: str
) -> dict[str, Any]:
    if system == "lablink":
        return lablink_run(scenario, settings, tmp, name)
    return aps_run(scenario, settings, tmp, name)


def report_line(system: str, scenario: Scenario, run: int, result: dict[str, Any]) -> str:
    lateness = result["lateness"]
    completion = lateness.get("completed_at") or lateness.get("completed") or {}
    start = lateness.get("instrument_started_at") or lateness.get("instrument started") or {}
    extra = ""
    if system == "lablink":
        extra = (
            f", fsyncs/exec {fmt_num(result.get('fsyncs_per_execution'))},"
            f" CPU {'/'.join(result['cpu_percent'])}"
            f" {'/'.join(f'{v:.0f}' for v in result['cpu_percent'].values())} %,"
            f" create {result['create_seconds']:.1f} s"
        )
    return (
        f"{scenario.label}, {system}, run {run}: completed {result['completed_percent']:.2f} %,"
        f" completion p50/p99 {fmt_ms(completion.get('p50_ms'))}/{fmt_ms(completion.get('p99_ms'))}"
        f" ms, instrument start p99 {fmt_ms(start.get('p99_ms'))} ms{extra},"
        f" other processes {result['other_processes_cpu_percent']:.0f} %"
    )


def run(settings: Settings) -> dict[str, Any]:
    started = datetime.now(UTC)
    load_before = os.getloadavg()
    code = git_state()
    outcomes = [Outcome(s) for s in settings.scenarios]
    profile_report: dict[str, Any] | None = None
    with tempfile.TemporaryDirectory(prefix="lablink-e2e-bench-", dir=settings.tmpdir) as name:
        tmp = Path(name)
        machine = machine_info(tmp)
        say(
            f"{machine['cpu_model']}, {machine['logical_cores']} cores, {machine['ram_gib']} GiB,"
            f" fsync {machine['fsync_4k_median_ms']} ms, load {load_before[0]:.2f};"
            f" fsyncs counted with {settings.fsync_tool}; in {tmp}"
        )
        for outcome in outcomes:
            scenario = outcome.scenario
            for run_number in range(1, settings.runs + 1):
                for system in settings.systems:
                    label = f"{system}-{scenario.key}-{run_number}"
                    quiet = wait_for_quiet(settings.quiet_wait)
                    try:
                        measured = run_one(system, scenario, settings, tmp, label)
                    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                        outcome.failed.setdefault(system, []).append(str(exc)[:2000])
                        say(f"{scenario.label}, {system}, run {run_number}: FAILED {exc!s:.300}")
                        continue
                    measured["quiet_wait"] = quiet
                    outcome.runs.setdefault(system, []).append(measured)
                    say(report_line(system, scenario, run_number, measured))
                    shutil.rmtree(tmp / label, ignore_errors=True)
            partial = settings.output.with_suffix(".partial.json")
            partial.parent.mkdir(parents=True, exist_ok=True)
            partial.write_text(
                json.dumps([asdict(o) for o in outcomes], indent=1, default=str), encoding="utf-8"
            )
        if settings.profile is not None:
            profile_report = profile_run(settings.profile, settings, tmp)
    finished = datetime.now(UTC)
    machine["loadavg_1_5_15_before"] = [round(x, 2) for x in load_before]
    machine["loadavg_1_5_15_after"] = [round(x, 2) for x in os.getloadavg()]
    machine["perf"] = subprocess.run(
        [PERF or "perf", "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    figures = [
        {
            "scenario": asdict(o.scenario),
            "label": o.scenario.label,
            "summary": {system: summarise(runs, system) for system, runs in o.runs.items()},
            "runs": o.runs,
            "failed": o.failed,
        }
        for o in outcomes
    ]
    import apscheduler

    import lablink

    # A run may measure another tree's code (PYTHONPATH=<a snapshot>): say whose.
    code["lablink_imported_from"] = str(Path(lablink.__file__).parent)
    result: dict[str, Any] = {
        "benchmark": "end to end through the agents (issue 19)",
        "command": "python -m bench.bench_e2e " + " ".join(sys.argv[1:]),
        "date": started.isoformat(timespec="seconds"),
        "duration_seconds": round((finished - started).total_seconds(), 1),
        "machine": machine,
        "code": code,
        "versions": {"apscheduler": apscheduler.__version__},
        "settings": {
            "scenarios": [asdict(s) for s in settings.scenarios],
            "runs": settings.runs,
            "warmup_seconds": settings.warmup,
            "tail_seconds": settings.tail,
            "systems": settings.systems,
            "fsync_counter": settings.fsync_tool,
            "instruments": dict(INSTRUMENTS),
            "serve_env": "LABLINK_AUTH=off LABLINK_RETENTION_DAYS=0 LABLINK_TIMEZONE=UTC",
            "embedded_agent": settings.embedded_agent or "unset (the product default)",
            "fire_lead": "unset (the product default)"
            if settings.fire_lead is None
            else settings.fire_lead,
            "aps_job_defaults": "coalesce, max_instances 1, misfire grace 300 s",
        },
        "scenarios": figures,
        "operation_median_ms": operation_ms(figures),
        "profile": profile_report,
    }
    result["targets"] = targets(figures)
    settings.output.parent.mkdir(parents=True, exist_ok=True)
    settings.output.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    settings.output.with_suffix(".md").write_text(markdown(result), encoding="utf-8")
    print_tables(result)
    say(f"results written to {settings.output} (tables: .md) in {result['duration_seconds']} s")
    return result


def profile_run(scenario: Scenario, settings: Settings, tmp: Path) -> dict[str, Any] | None:
    """One LabLink run with the sampler in the serve process; its report beside the JSON."""
    target = settings.output.parent / f"{settings.output.stem}-profile-{scenario.key}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.unlink(missing_ok=True)
    try:
        result = lablink_run(scenario, settings, tmp, f"profile-{scenario.key}", profile=target)
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        say(f"profile run FAILED: {exc!s:.500}")
        return None
    say(report_line("lablink (sampled)", scenario, 1, result))
    report: dict[str, Any] | None = None
    for _ in range(50):  # the sampler thread writes it once it sees SIGUSR2
        if target.exists():
            report = json.loads(target.read_text(encoding="utf-8"))
            say(f"profile written to {target}")
            break
        time.sleep(0.2)
    else:
        say("the profiled server wrote no report")
    return {"scenario": scenario.label, "path": str(target), "report": report, "run": result}


def seconds_arg(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


DEFAULT_SCENARIOS = ("100:spread", "300:spread", "1000:spread:60", "100:aligned")
QUICK_SCENARIOS = ("100:spread:5", "100:aligned:5")


def parse_args(argv: Sequence[str] | None = None) -> Settings:
    parser = argparse.ArgumentParser(
        prog="python -m bench.bench_e2e",
        description="End to end through the agents: lablink serve vs APScheduler in-process.",
    )
    parser.add_argument(
        "--scenarios",
        nargs="+",
        type=parse_scenario,
        default=None,
        help="JOBS:spread|aligned[:WINDOW_SECONDS] each (default: "
        + " ".join(DEFAULT_SCENARIOS)
        + "; no window: --window)",
    )
    parser.add_argument("--runs", type=positive, default=None, help="runs per scenario and system")
    parser.add_argument("--window", type=seconds_arg, default=10.0, help="measured seconds")
    parser.add_argument("--warmup", type=seconds_arg, default=5.0, help="seconds before it")
    parser.add_argument(
        "--tail", type=seconds_arg, default=3.0, help="seconds after it before reading back"
    )
    parser.add_argument(
        "--systems", nargs="+", choices=("lablink", "aps"), default=["lablink", "aps"]
    )
    parser.add_argument(
        "--fsync-counter",
        choices=("auto", "perf", "strace", "none"),
        default="auto",
        help="how to count the fsyncs (auto: perf's syscall tracepoints, else strace)",
    )
    parser.add_argument(
        "--profile",
        nargs="?",
        const="1000:spread",
        type=parse_scenario,
        default=None,
        help="afterwards, one sampled LabLink run of this scenario (default 1000:spread)",
    )
    parser.add_argument(
        "--fire-lead",
        type=float,
        default=None,
        help="LABLINK_FIRE_LEAD for lablink serve (default: unset, the product default)",
    )
    parser.add_argument(
        "--embedded-agent",
        choices=("inprocess", "process"),
        default=None,
        help="LABLINK_EMBEDDED_AGENT for the server (default: unset, the product's default);"
        " a child agent's fsyncs and CPU are counted beside the server's",
    )
    parser.add_argument(
        "--views-timeout",
        type=seconds_arg,
        default=60.0,
        help="after the tail, how long the API may answer 503 (views behind) before the server"
        " is stopped and its views folded to read the window",
    )
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: 100 spread and 100 aligned, 5 s, once"
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=0.0,
        help="before each run, wait up to this many seconds for a quiet machine",
    )
    parser.add_argument("--tmpdir", type=Path, default=None, help="where data directories go")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    chosen = args.scenarios or [
        parse_scenario(s) for s in (QUICK_SCENARIOS if args.quick else DEFAULT_SCENARIOS)
    ]
    window = 5.0 if args.quick else args.window
    scenarios = [s if s.window else Scenario(s.jobs, s.alignment, window) for s in chosen]
    profile = args.profile
    if profile is not None and not profile.window:
        profile = Scenario(profile.jobs, profile.alignment, window)
    tool = fsync_tool(args.fsync_counter)
    if (tool == "perf" and not PERF) or (tool == "strace" and not STRACE):
        parser.error(f"--fsync-counter {tool}: {tool} is not installed")
    return Settings(
        scenarios=scenarios,
        runs=args.runs or (1 if args.quick else 3),
        warmup=3.0 if args.quick else args.warmup,
        window=window,
        tail=args.tail,
        systems=list(args.systems),
        fsync_tool=tool,
        profile=profile,
        embedded_agent=args.embedded_agent,
        fire_lead=args.fire_lead,
        views_timeout=args.views_timeout,
        quiet_wait=args.quiet_wait,
        tmpdir=args.tmpdir,
        output=args.output,
    )


def main(argv: Sequence[str] | None = None) -> None:
    run(parse_args(argv))


if __name__ == "__main__":
    main()
