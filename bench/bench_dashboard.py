"""The dashboard benchmark (issue 16): the overview's render, and what live dashboards cost the
engine.

Run it from the repository root::

    .venv/bin/python -m bench.bench_dashboard            # both parts (about 30 minutes)
    .venv/bin/python -m bench.bench_dashboard --help     # sizes, runs, window, --keep-db
    # a smoke run (about 2 minutes):
    .venv/bin/python -m bench.bench_dashboard --jobs 200 --executions 20000 --runs 1 \\
        --live-jobs 100 --window 5 --output /tmp/dashboard.json

The figures are in BENCHMARKS.md, "Dashboard (2026-12-03)" (and its 2026-12-05 sub-section).

Render: a database with 10,000 jobs and 1,000,000 executions (bench_api's daily jobs, 3,010,000
events) is written through ``append_batch`` with no projections attached, then ``open_store``
folds views.db from it (``--keep-db``: reused for two hours). A real ``lablink serve``
(LABLINK_AUTH=off, LABLINK_EXECUTOR=noop, LABLINK_NATS=off) serves it on 127.0.0.1 and a
keep-alive httpx client fetches, in turns, the overview page ``/``, every fragment the page
loads (its ``hx-get`` URLs) and the API's ``GET /api/scheduler/statistics``: the first call of
each (cold) and the median of ``--runs`` calls after it, with the body's size.

Live: one process runs, as ``lablink serve`` does, the real engine (``SystemClock``, the
NoOpExecutor noting each dispatch instant, views folded behind the log in their own thread)
with ``--live-jobs`` interval jobs of 1 s (1,000 fires/s), and the Litestar app with the
dashboard served by uvicorn on the same event loop. Another process, at the lowest priority
(``nice 19``: the screens' browsers would run on other machines), holds ``--clients`` SSE
streams (httpx). Modes, taking turns in fresh processes, ``--runs`` each (``--modes``):
``none``, no dashboards; ``sse``, streams on ``/live`` (topics only); ``sse+refresh``, streams
on ``/live`` and, for every message, a fetch of each overview fragment showing that topic
(``overview.SHOWS``), as the overview's htmx did until 2026-12-05; ``overview``, what the
overview page does now: its own stream (the page's ``sse-connect``, ``/live/overview``), which
sends the cards' HTML itself, plus a fetch for any element of the page whose ``hx-trigger``
names a topic (none). Each run waits up to ``--quiet-wait`` s for a quiet machine.
Measured over a window after a warm-up: the engine's dispatch lateness (p50/p99), the
server's CPU, the SSE messages each client got per second, the log positions they covered per
second (the events represented), and the lag from each group commit to the first message whose
id reaches its position.

Results go to a rich table on the terminal and to ``bench/results/dashboard.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import gc
import html
import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from bench.bench_api import (
    BUILD_BATCH,
    HOST,
    MAX_REUSE_AGE,
    chunks,
    execution_requests,
    free_port,
    make_jobs,
    start_lablink,
)
from bench.bench_engine import (
    CREATE_BATCH,
    GcWatch,
    anchors,
    creation_requests,
    job_spec,
    measure_window,
    percentile,
    summary_ms,
    wait_for_quiet,
)
from bench.bench_store import machine_info as store_machine_info
from lablink.eventstore import AppendRequest, SQLiteEventStore
from lablink.eventstore.base import AppendOutcome
from lablink.logconfig import configure_logging
from lablink.logstore import open_store
from lablink.runtime import freeze_startup
from lablink.settings import Settings as LablinkSettings

RESULTS_DIR = Path(__file__).resolve().parent / "results"
DEFAULT_OUTPUT = RESULTS_DIR / "dashboard.json"
REPO_ROOT = Path(__file__).resolve().parent.parent

# The target: connected dashboards cost the engine under 10 % of its dispatch p99.
COST_TARGET_PERCENT = 10.0
MODES = ("none", "sse", "sse+refresh", "overview", "job", "equipment", "jobs", "alarms")
# The modes that open a page as a browser does and do what its markup says: connect to its
# ``sse-connect`` stream, and fetch each element whose ``hx-trigger`` names a topic when a
# message names it. ``job``: each client a different job's page.
PAGES = {
    "overview": "/",
    "job": None,
    "equipment": "/equipment",
    "jobs": "/jobs",
    "alarms": "/alarms",
}
MODE_LABELS = {
    "none": "no dashboards",
    "sse": "SSE streams only",
    "sse+refresh": "SSE + fragment fetches (the overview until 2026-12-05)",
    "overview": "overview page (/)",
    "job": "job pages (/jobs/<id>, one job each)",
    "equipment": "equipment page (/equipment)",
    "jobs": "jobs list page (/jobs)",
    "alarms": "alarms page (/alarms)",
}

console = Console() if sys.stdout.isatty() else Console(width=150)


def say(message: str) -> None:
    console.log(message)


# -- render: the big database -----------------------------------------------------------------


def build(directory: Path, job_count: int, execution_count: int) -> dict[str, Any]:
    """The log through append_batch with no projections, then views.db folded by open_store
    (as `lablink serve` finds it after `lablink replay`); reused when a recent run left it."""
    path = directory / "scheduler.db"
    meta_path = directory / "bench-dashboard.json"
    if path.exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        age = datetime.now(UTC) - datetime.fromisoformat(meta["built_at"])
        if (meta["jobs"], meta["executions"]) == (job_count, execution_count) and (
            age < MAX_REUSE_AGE
        ):
            say(f"reusing {path} (built {age.total_seconds() / 60:.0f} min ago)")
            return {**meta, "reused": True}
    for stale in [*directory.glob("scheduler.db*"), *directory.glob("views.db*")]:
        stale.unlink()
    directory.mkdir(parents=True, exist_ok=True)
    say(f"building {job_count:,} jobs and {execution_count:,} executions in {path}")
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
    finally:
        store.close()
    appended = time.perf_counter()
    say("  folding views.db (open_store)")
    folded = open_store(path)
    try:
        events = folded.last_position()
    finally:
        folded.close()
    finished = time.perf_counter()
    meta = {
        "built_at": now.isoformat(),
        "jobs": job_count,
        "executions": execution_count,
        "events": events,
        "append_seconds": round(appended - started, 1),
        "fold_seconds": round(finished - appended, 1),
        "log_bytes": path.stat().st_size,
        "views_bytes": (directory / "views.db").stat().st_size,
    }
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    return {**meta, "reused": False}


FRAGMENT = re.compile(r'hx-get="(/fragments/[^"]+)"')


def timed_get(client: httpx.Client, path: str) -> tuple[float, int, int]:
    started = time.perf_counter()
    response = client.get(path)
    seconds = time.perf_counter() - started
    return seconds, response.status_code, len(response.content)


def measure_render(data_dir: Path, runs: int) -> dict[str, Any]:
    """The overview, its fragments and the statistics call, in turns, on a real server."""
    child = start_lablink(data_dir)
    try:
        child.ready(timeout=900)
        with httpx.Client(base_url=child.url(""), timeout=300) as client:
            # The server answers 503 while its views fold what it appended at start-up (or
            # rebuild, after an upgrade of the views' schema): measure once they have.
            waited = time.perf_counter()
            page = client.get("/")
            while page.status_code == 503 and time.perf_counter() - waited < 1800:
                time.sleep(2)
                page = client.get("/")
            views_wait = time.perf_counter() - waited
            if page.status_code != 200:
                raise RuntimeError(f"GET / answered {page.status_code}: {page.text[:300]}")
            fragments = sorted(set(FRAGMENT.findall(page.text)))
            targets = {
                "overview page /": "/",
                **{f"fragment {f}": f for f in fragments},
                "API /api/scheduler/statistics": "/api/scheduler/statistics",
            }
            samples: dict[str, list[float]] = {name: [] for name in targets}
            cold: dict[str, float] = {}
            sizes: dict[str, int] = {}
            statuses: dict[str, int] = {}
            for turn in range(runs + 1):
                for name, path in targets.items():
                    if path.startswith("/fragments/"):
                        # Screens asking for a card at the same log position and clock second
                        # share one read of it (overview.card_data): each fetch here is in a
                        # second of its own, so that it is a whole read and render.
                        time.sleep(1.0 - time.time() % 1.0 + 0.01)
                    seconds, status, size = timed_get(client, path)
                    statuses[name], sizes[name] = status, size
                    if turn == 0:
                        cold[name] = seconds
                    else:
                        samples[name].append(seconds)
        rss = _rss_mib(child.proc.pid)
    finally:
        child.stop()
    rows = [
        {
            "what": name,
            "path": path,
            "status": statuses[name],
            "bytes": sizes[name],
            "cold_ms": round(cold[name] * 1000.0, 1),
            "median_ms": round(statistics.median(samples[name]) * 1000.0, 1),
            "min_ms": round(min(samples[name]) * 1000.0, 1),
            "max_ms": round(max(samples[name]) * 1000.0, 1),
        }
        for name, path in targets.items()
    ]
    page_total = sum(r["median_ms"] for r in rows if r["path"] != "/api/scheduler/statistics")
    return {
        "rows": rows,
        "page_and_fragments_median_ms": round(page_total, 1),
        "page_and_fragments_bytes": sum(
            r["bytes"] for r in rows if r["path"] != "/api/scheduler/statistics"
        ),
        "server_rss_mib": rss,
        "seconds_until_views_served": round(views_wait, 1),
        "transport": "real `lablink serve` (uvicorn) on 127.0.0.1, one keep-alive httpx client",
    }


def _rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024.0, 1)
    except OSError:
        pass
    return None


# -- live: the engine and the dashboards ------------------------------------------------------


@dataclass
class LiveSpec:
    mode: str
    jobs: int
    clients: int
    spread: bool
    warmup: float
    window: float
    tail: float
    directory: str
    ready: str
    result: str
    profile: str | None = None
    port: int = 0
    first: float = 0.0
    projector: str = "process"
    fire_lead: float = 0.0


class CommitLog:
    """Wraps the store's append_batch: when each group commit ended and the last position it
    wrote (what an SSE message must reach to name it)."""

    def __init__(self, store: SQLiteEventStore) -> None:
        self.inner = store.append_batch
        self.commits: list[tuple[float, int]] = []

    def __call__(self, requests: Sequence[AppendRequest]) -> list[AppendOutcome]:
        outcomes = self.inner(requests)
        last = max((o[-1].position for o in outcomes if isinstance(o, list) and o), default=None)
        if last is not None:
            self.commits.append((time.time(), last))
        return outcomes


async def live_worker(spec: LiveSpec) -> dict[str, Any]:
    import cProfile

    import uvicorn

    from bench.bench_engine import DispatchTimes
    from lablink.api.app import create_app
    from lablink.api.context import ApiContext
    from lablink.application import JobService
    from lablink.clock import SystemClock
    from lablink.dashboard.plugin import DashboardPlugin
    from lablink.projections.jobs import read_snapshot
    from lablink.projections.reading import reading_views
    from lablink.repository import JobRepository
    from lablink.scheduler.engine import Engine, recovery_lists
    from lablink.settings import Settings

    directory = Path(spec.directory)
    path = directory / "scheduler.db"
    # As `lablink serve` folds them (LABLINK_PROJECTOR): by default in a child process.
    store = open_store(path, background=True, fold_process=spec.projector == "process")
    views = store.views
    now = datetime.now(UTC)
    first = float(math.ceil(time.time() + 3.0 + spec.jobs * 0.0004))
    starts = anchors(spec.jobs, first, 1.0 if spec.spread else 0.0)
    requests = creation_requests(job_spec(now), starts, now)
    for begin in range(0, len(requests), CREATE_BATCH):
        store.append_batch(requests[begin : begin + CREATE_BATCH])
    if not await asyncio.to_thread(views.settled, 60.0):
        raise RuntimeError("the views did not fold the created jobs in time")

    def snapshot(job_id: str) -> Any:
        with reading_views(store) as reader:
            return read_snapshot(reader, job_id)

    commits = CommitLog(store)
    store.append_batch = commits  # type: ignore[method-assign]
    clock = SystemClock()
    repository = JobRepository(store, snapshots=snapshot)
    executor = DispatchTimes()
    engine = Engine(store, clock, executor, jobs=repository, fire_lead=spec.fire_lead)
    with reading_views(store) as reader:
        active, unfinished = recovery_lists(reader)
    await engine.start(active, unfinished)
    settings = Settings(data_dir=directory, timezone="UTC", auth=False, port=spec.port)
    context = ApiContext(
        settings=settings,
        clock=clock,
        store=store,
        service=JobService(store, clock, default_timezone="UTC", repository=repository),
        engine=engine,
        auth_enabled=False,
    )
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(context, plugins=[DashboardPlugin()]),
            host=HOST,
            port=spec.port,
            log_level="warning",
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=2,
        )
    )
    serving = asyncio.create_task(server.serve())
    while not server.started:
        if serving.done():
            serving.result()
        await asyncio.sleep(0.05)
    freeze_startup()  # as lablink serve does once started
    _write(spec.ready, json.dumps({"first": first}))

    gc_watch = GcWatch()
    gc.callbacks.append(gc_watch)
    start, end = first + spec.warmup, first + spec.warmup + spec.window
    profiler = cProfile.Profile() if spec.profile else None
    window = await measure_window(start, end, gc_watch, profiler)
    await asyncio.sleep(spec.tail)
    server.should_exit = True
    await serving
    await engine.aclose(grace_seconds=5.0)
    await asyncio.to_thread(views.settled, 120.0)
    context.close()
    store.close()
    gc.callbacks.remove(gc_watch)
    if profiler is not None and spec.profile:
        _write(spec.profile, _profile_text(profiler))
    dispatch = [d - s for s, d in executor.seen if start <= s < end]
    return {
        "mode": spec.mode,
        "start": start,
        "end": end,
        "dispatch_lateness": summary_ms(dispatch),
        "fires_in_window": len(dispatch),
        "cpu_percent": round(100.0 * window.cpu_seconds / window.wall_seconds, 1),
        "other_processes_cpu_percent": round(
            100.0 * window.other_cpu_seconds / window.wall_seconds, 1
        ),
        "commits": [c for c in commits.commits if start <= c[0] < end],
    }


def _write(path: str, text: str) -> None:
    Path(path).write_text(text)


def _profile_text(profiler: Any) -> str:
    import io
    import pstats

    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("cumulative").print_stats(50)
    stats.sort_stats("tottime").print_stats(40)
    return out.getvalue()


async def sse_clients(spec: LiveSpec) -> dict[str, Any]:
    """``spec.clients`` SSE streams until the window's end (+1 s); each message makes its
    client fetch the fragments listening for its topic (``listeners``, by mode)."""
    from lablink.dashboard.overview import SHOWS

    base = f"http://{HOST}:{spec.port}"
    end = spec.first + spec.warmup + spec.window + 1.0
    limits = httpx.Limits(max_connections=spec.clients * 4)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:
        screens: list[tuple[str, dict[str, list[str]]]] = []
        if spec.mode == "sse+refresh":
            listeners: dict[str, list[str]] = {}
            for card, topics in SHOWS.items():
                for topic in topics:
                    listeners.setdefault(topic, []).append(f"/fragments/overview/{card}")
            screens = [("/live", listeners)] * spec.clients
        elif spec.mode in PAGES:
            paths = await _page_paths(client, spec.mode, spec.clients)
            screens = [await _screen(client, path) for path in paths]
        else:
            screens = [("/live", {})] * spec.clients
        results = await asyncio.gather(
            *(_one_client(client, stream, listeners, end) for stream, listeners in screens)
        )
    return {
        "clients": results,
        "listeners": screens[0][1] if screens else {},
        "stream": screens[0][0] if screens else None,
    }


async def _page_paths(client: httpx.AsyncClient, mode: str, count: int) -> list[str]:
    path = PAGES[mode]
    if path is not None:
        return [path] * count
    found = (await client.get("/api/scheduler/jobs", params={"limit": count})).json()
    jobs = found["jobs"] if isinstance(found, dict) else found
    return [f"/jobs/{job['job_id']}" for job in jobs[:count]]


async def _screen(client: httpx.AsyncClient, path: str) -> tuple[str, dict[str, list[str]]]:
    """What a browser showing ``path`` does: its stream, and the fragments each topic fetches."""
    page = (await client.get(path)).text
    connect = re.search(r'sse-connect="([^"]+)"', page)
    stream = html.unescape(connect.group(1)) if connect else "/live"
    listeners: dict[str, list[str]] = {}
    for element in re.finditer(r"<[^>]*hx-get=\"([^\"]+)\"[^>]*>", page):
        for topic in sorted(set(re.findall(r"sse:(\w+)", element.group(0)))):
            listeners.setdefault(topic, []).append(html.unescape(element.group(1)))
    return stream, listeners


async def _one_client(
    client: httpx.AsyncClient, stream: str, listeners: dict[str, list[str]], end: float
) -> dict[str, Any]:
    messages: list[tuple[float, str, int]] = []  # (received, event, id)
    cards: list[tuple[float, int]] = []  # (received, bytes of HTML) of the pushed cards
    refreshes: list[float] = []
    busy: set[str] = set()

    async def fetch(url: str) -> None:
        # As htmx: a part already being fetched is not fetched again on top.
        if url in busy:
            return
        busy.add(url)
        try:
            started = time.perf_counter()
            await client.get(url)
            refreshes.append(time.perf_counter() - started)
        finally:
            busy.discard(url)

    tasks: set[asyncio.Task[None]] = set()

    async def read() -> None:
        async with client.stream("GET", stream) as response:
            event, ident, size = "message", None, 0
            async for line in response.aiter_lines():
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("id:"):
                    ident = line[3:].strip()
                elif line.startswith("data:"):
                    size += len(line) - 5
                elif line == "":
                    if event.startswith("card-"):
                        cards.append((time.time(), size))
                    elif ident is not None and ident.isdigit():
                        messages.append((time.time(), event, int(ident)))
                        for url in listeners.get(event, ()):
                            task = asyncio.create_task(fetch(url))
                            tasks.add(task)
                            task.add_done_callback(tasks.discard)
                    event, ident, size = "message", None, 0

    reader = asyncio.create_task(read())
    await asyncio.sleep(max(0.0, end - time.time()))
    reader.cancel()
    await asyncio.gather(reader, *tasks, return_exceptions=True)
    return {"messages": messages, "cards": cards, "refresh_seconds": refreshes}


def _worker_entry(kind: str, spec_path: str) -> None:
    spec = LiveSpec(**json.loads(Path(spec_path).read_text()))
    # Production logging, as bench_engine's workers: JSON lines at level info (the engine's
    # per-event debug lines filtered out), to the file the parent gives stdout to.
    configure_logging("info", json=True)
    action = live_worker if kind == "live-worker" else sse_clients
    result = asyncio.run(action(spec))
    Path(spec.result).write_text(json.dumps(result))


def _spawn(kind: str, spec: LiveSpec, spec_path: Path) -> subprocess.Popen[bytes]:
    spec_path.write_text(json.dumps(asdict(spec)))
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABLINK_")}
    env["PYTHONPATH"] = str(REPO_ROOT)
    log = spec_path.with_suffix(".log").open("w")
    # The browsers of 20 screens run on 20 other machines, not on the server's second core:
    # the clients run at the lowest priority, so that they take only what the server leaves.
    nice = ["nice", "-n", "19"] if kind == "sse-clients" else []
    return subprocess.Popen(
        [*nice, sys.executable, "-m", "bench.bench_dashboard", kind, str(spec_path)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def run_live(settings: Settings, mode: str, tmp: Path, run: int) -> dict[str, Any]:
    directory = tmp / f"live-{mode.replace('+', '-')}-{run}"
    directory.mkdir(parents=True, exist_ok=True)
    clients = 0 if mode == "none" else settings.clients
    spec = LiveSpec(
        mode=mode,
        jobs=settings.live_jobs,
        clients=clients,
        spread=settings.spread,
        warmup=settings.warmup,
        window=settings.window,
        tail=2.0,
        directory=str(directory),
        ready=str(directory / "ready.json"),
        result=str(directory / "engine.json"),
        profile=str(
            settings.output.parent / f"dashboard-profile-{mode.replace('+', '-')}-{run}.txt"
        )
        if settings.profile
        else None,
        port=free_port(),
        projector=settings.projector,
        fire_lead=settings.fire_lead,
    )
    # Other processes' load swamps the engine's lateness on 2 shared cores: wait a while for a
    # quiet machine, and say how busy it was.
    quiet = wait_for_quiet(settings.quiet_wait)
    worker = _spawn("live-worker", spec, directory / "worker-spec.json")
    client_proc = None
    deadline = time.monotonic() + 120
    while not Path(spec.ready).exists():
        if worker.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the live worker ({mode}) never became ready")
        time.sleep(0.05)
    spec.first = json.loads(Path(spec.ready).read_text())["first"]
    if clients:
        client_spec = LiveSpec(**{**asdict(spec), "result": str(directory / "clients.json")})
        client_proc = _spawn("sse-clients", client_spec, directory / "client-spec.json")
    if worker.wait(timeout=settings.warmup + settings.window + 180) != 0:
        raise RuntimeError(f"the live worker ({mode}) failed")
    engine = json.loads(Path(spec.result).read_text())
    out: dict[str, Any] = {
        "mode": mode,
        "dispatch_p50_ms": engine["dispatch_lateness"]["p50_ms"],
        "dispatch_p99_ms": engine["dispatch_lateness"]["p99_ms"],
        "dispatch_max_ms": engine["dispatch_lateness"]["max_ms"],
        "fires_in_window": engine["fires_in_window"],
        "server_cpu_percent": engine["cpu_percent"],
        "other_cpu_percent": engine["other_processes_cpu_percent"],
        "profile": spec.profile,
        **quiet,
    }
    if client_proc is not None:
        if client_proc.wait(timeout=120) != 0:
            raise RuntimeError("the SSE clients failed")
        seen = json.loads((directory / "clients.json").read_text())
        out.update(sse_figures(engine, seen["clients"], settings.window))
        out["listeners"] = seen["listeners"]
        out["stream"] = seen["stream"]
    return out


def sse_figures(
    engine: dict[str, Any], clients: list[dict[str, Any]], window: float
) -> dict[str, Any]:
    start, end = engine["start"], engine["end"]
    commits = engine["commits"]
    rates, covered, lags, refreshes = [], [], [], []
    card_rates, card_bytes = [], []
    for client in clients:
        pushed = [(t, n) for t, n in client.get("cards", []) if start <= t < end]
        card_rates.append(len(pushed) / window)
        card_bytes.append(sum(n for _, n in pushed) / window)
        topical = [(t, e, i) for t, e, i in client["messages"] if e not in ("hello", "tick")]
        inside = [m for m in topical if start <= m[0] < end]
        rates.append(len(inside) / window)
        if inside:
            covered.append((inside[-1][2] - inside[0][2]) / window)
        ids = [i for _, _, i in topical]
        for committed, position in commits:
            at = bisect.bisect_left(ids, position)
            if at < len(ids):
                lags.append(topical[at][0] - committed)
        refreshes.extend(client["refresh_seconds"])
    lags.sort()
    refreshes.sort()
    return {
        "clients": len(clients),
        "messages_per_second_per_client": round(statistics.median(rates), 2),
        "messages_per_second_all_clients": round(sum(rates), 1),
        "positions_per_second_per_client": round(statistics.median(covered), 1)
        if covered
        else None,
        "commit_to_message_lag_ms": {
            "count": len(lags),
            "p50_ms": _ms(percentile(lags, 50)),
            "p99_ms": _ms(percentile(lags, 99)),
            "max_ms": _ms(lags[-1] if lags else None),
        },
        "cards_per_second_per_client": round(statistics.median(card_rates), 2),
        "card_kib_per_second_per_client": round(statistics.median(card_bytes) / 1024.0, 1),
        "fragment_refreshes": len(refreshes),
        "fragment_refresh_p50_ms": _ms(percentile(refreshes, 50)),
        "fragment_refresh_p99_ms": _ms(percentile(refreshes, 99)),
    }


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000.0, 1)


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    def med(key: str) -> float | None:
        values = [r[key] for r in runs if r.get(key) is not None]
        return round(statistics.median(values), 2) if values else None

    out: dict[str, Any] = {"runs": len(runs)}
    for key in (
        "dispatch_p50_ms",
        "dispatch_p99_ms",
        "dispatch_max_ms",
        "fires_in_window",
        "server_cpu_percent",
        "other_cpu_percent",
        "busy_percent_before",
        "messages_per_second_per_client",
        "messages_per_second_all_clients",
        "positions_per_second_per_client",
        "cards_per_second_per_client",
        "card_kib_per_second_per_client",
        "fragment_refreshes",
        "fragment_refresh_p50_ms",
        "fragment_refresh_p99_ms",
    ):
        out[key] = med(key)
    lag = [r["commit_to_message_lag_ms"] for r in runs if "commit_to_message_lag_ms" in r]
    if lag:
        for q in ("p50_ms", "p99_ms", "max_ms"):
            values = [x[q] for x in lag if x[q] is not None]
            out[f"lag_{q}"] = round(statistics.median(values), 1) if values else None
    return out


# -- the run ----------------------------------------------------------------------------------


@dataclass
class Settings:
    jobs: int
    executions: int
    runs: int
    data_dir: Path | None
    live_jobs: int
    clients: int
    spread: bool
    warmup: float
    window: float
    modes: tuple[str, ...]
    render: bool
    live: bool
    profile: bool
    quiet_wait: float
    output: Path
    projector: str = "process"
    fire_lead: float = 0.0


def machine_info(directory: Path) -> dict[str, Any]:
    import litestar
    import uvicorn

    return {
        **store_machine_info(directory),
        "litestar": litestar.__version__.formatted(),
        "uvicorn": uvicorn.__version__,
        "httpx": httpx.__version__,
        "load_average": os.getloadavg(),
    }


def run(settings: Settings) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-dashboard-") as scratch:
        tmp = Path(scratch)
        result: dict[str, Any] = {
            "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": machine_info(tmp),
            "settings": {k: str(v) for k, v in asdict(settings).items()},
        }
        if settings.render:
            data_dir = settings.data_dir or tmp / "render"
            result["database"] = build(data_dir, settings.jobs, settings.executions)
            say("render: overview, fragments and statistics on a real lablink serve")
            result["render"] = measure_render(data_dir, settings.runs)
        if settings.live:
            per_mode: dict[str, list[dict[str, Any]]] = {m: [] for m in settings.modes}
            for index in range(settings.runs):
                for mode in settings.modes:
                    say(f"live: run {index + 1}/{settings.runs}, {MODE_LABELS[mode]}")
                    figures = run_live(settings, mode, tmp, index)
                    say(
                        f"  dispatch p99 {figures['dispatch_p99_ms']} ms,"
                        f" msgs/s/client {figures.get('messages_per_second_per_client')}"
                    )
                    per_mode[mode].append(figures)
            summary = {m: aggregate(r) for m, r in per_mode.items()}
            base = summary.get("none", {}).get("dispatch_p99_ms")
            for mode, figures in summary.items():
                p99 = figures.get("dispatch_p99_ms")
                if mode != "none" and base and p99 is not None:
                    figures["p99_cost_percent"] = round(100.0 * (p99 - base) / base, 1)
                    figures["target_met"] = figures["p99_cost_percent"] < COST_TARGET_PERCENT
            result["live"] = {"summary": summary, "runs": per_mode}
    return result


def print_tables(result: dict[str, Any]) -> None:
    console.print(f"machine: {result['machine']}")
    if "render" in result:
        db = result["database"]
        table = Table(
            title=f"Render: {db['jobs']:,} jobs, {db['executions']:,} executions,"
            f" {db['events']:,} events ({result['render']['transport']})"
        )
        for column in ("what", "status", "bytes", "cold ms", "median ms", "min ms", "max ms"):
            table.add_column(column, justify="left" if column == "what" else "right")
        for row in result["render"]["rows"]:
            table.add_row(
                row["what"],
                str(row["status"]),
                f"{row['bytes']:,}",
                str(row["cold_ms"]),
                str(row["median_ms"]),
                str(row["min_ms"]),
                str(row["max_ms"]),
            )
        console.print(table)
    if "live" in result:
        table = Table(title="Live: engine dispatch lateness with dashboards connected")
        columns = (
            "mode",
            "dispatch p50/p99/max ms",
            "p99 cost",
            "server CPU %",
            "msgs/s per client",
            "positions/s per client",
            "commit→message p50/p99 ms",
            "cards/s, KiB/s per client",
            "fetches per run",
            "refresh p50/p99 ms",
        )
        for column in columns:
            table.add_column(column, justify="left" if column == "mode" else "right")
        for mode, f in result["live"]["summary"].items():
            table.add_row(
                MODE_LABELS[mode],
                f"{f['dispatch_p50_ms']} / {f['dispatch_p99_ms']} / {f['dispatch_max_ms']}",
                f"{f['p99_cost_percent']} %" if "p99_cost_percent" in f else "-",
                str(f["server_cpu_percent"]),
                str(f.get("messages_per_second_per_client") or "-"),
                str(f.get("positions_per_second_per_client") or "-"),
                f"{f.get('lag_p50_ms', '-')} / {f.get('lag_p99_ms', '-')}",
                f"{_shown(f.get('cards_per_second_per_client'))},"
                f" {_shown(f.get('card_kib_per_second_per_client'))}",
                _shown(f.get("fragment_refreshes")),
                f"{f.get('fragment_refresh_p50_ms') or '-'} /"
                f" {f.get('fragment_refresh_p99_ms') or '-'}",
            )
        console.print(table)


def _shown(value: Any) -> str:
    return "-" if value is None else str(value)


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected 1 or more")
    return value


def parse_args(argv: Sequence[str] | None = None) -> Settings:
    parser = argparse.ArgumentParser(
        prog="python -m bench.bench_dashboard", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--jobs", type=positive, default=10_000, help="render: jobs")
    parser.add_argument("--executions", type=positive, default=1_000_000, help="render: executions")
    parser.add_argument("--runs", type=positive, default=5, help="runs per figure (median)")
    parser.add_argument(
        "--keep-db",
        type=Path,
        default=None,
        metavar="DIR",
        help="build the render database in DIR and reuse it for two hours",
    )
    parser.add_argument("--live-jobs", type=positive, default=1_000, help="1 s interval jobs")
    parser.add_argument("--clients", type=positive, default=20, help="SSE clients")
    parser.add_argument("--aligned", action="store_true", help="all jobs fire at the same instant")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds before the window")
    parser.add_argument("--window", type=float, default=20.0, help="measured seconds")
    parser.add_argument(
        "--modes", default=",".join(MODES), help=f"comma-separated, of {', '.join(MODES)}"
    )
    parser.add_argument("--no-render", action="store_true")
    parser.add_argument("--no-live", action="store_true")
    parser.add_argument("--profile", action="store_true", help="cProfile each live worker")
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=60.0,
        help="seconds to wait before each live run for other processes to quieten",
    )
    parser.add_argument(
        "--projector",
        choices=("process", "thread"),
        default="process",
        help="where the live worker folds the views, as LABLINK_PROJECTOR (the entries of "
        "2026-12-06 and before: thread)",
    )
    parser.add_argument(
        "--fire-lead",
        type=float,
        default=LablinkSettings().fire_lead,
        help="the engine's LABLINK_FIRE_LEAD, s (default: serve's; the entries of "
        "2026-12-07 and before: 0)",
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    modes = tuple(m.strip() for m in args.modes.split(",") if m.strip())
    for mode in modes:
        if mode not in MODES:
            parser.error(f"--modes: {mode!r} is not one of {', '.join(MODES)}")
    return Settings(
        jobs=args.jobs,
        executions=args.executions,
        runs=args.runs,
        data_dir=args.keep_db,
        live_jobs=args.live_jobs,
        clients=args.clients,
        spread=not args.aligned,
        warmup=args.warmup,
        window=args.window,
        modes=modes,
        render=not args.no_render,
        live=not args.no_live,
        profile=args.profile,
        quiet_wait=args.quiet_wait,
        output=args.output,
        projector=args.projector,
        fire_lead=args.fire_lead,
    )


def main(argv: Sequence[str] | None = None) -> None:
    arguments = sys.argv[1:] if argv is None else list(argv)
    if arguments and arguments[0] in ("live-worker", "sse-clients"):
        _worker_entry(arguments[0], arguments[1])
        return
    settings = parse_args(arguments)
    result = run(settings)
    settings.output.parent.mkdir(parents=True, exist_ok=True)
    settings.output.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print_tables(result)
    say(f"results in {settings.output}")


if __name__ == "__main__":
    main()
