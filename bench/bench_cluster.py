"""Cluster mode (issue 18, "Benchmark"): failover time, and dispatch lateness at 1,000 fires/s
beside the single-node default in the same run.

Run it from the repository root::

    .venv/bin/python -m bench.bench_cluster            # the full run (about 15 minutes)
    .venv/bin/python -m bench.bench_cluster --help     # counts, jobs, window, followers
    # a smoke run (about 3 minutes):
    .venv/bin/python -m bench.bench_cluster --failovers 1 --dispatch-runs 1 --window 10 \\
        --output /tmp/cluster.json

**Failover** (real processes on loopback). deploy/nats-server.conf as three nats-servers
(``tests/support/nats_thread.nats_cluster``), two ``lablink serve`` replicas in cluster mode
(``tests/support/cluster_replicas.replica``: the simulated bench, views folded by a thread)
with the default lease (``LABLINK_LEASE_SECONDS`` 5 s), ``--failover-jobs`` (100) interval jobs
of 1 s created over the API (so spread over the second by their creation times). Then
``--failovers`` times per scenario, on the same cluster:

- ``replica``: the replica holding the lease is SIGKILLed;
- ``node``: the stream leader's nats-server (the node JetStream's Raft group for
  ``LABLINK_LOG`` is led by, asked from the stream's info: the worst node to lose, as the
  record has no leader until the election) is SIGKILLed, together with the lease holder (the
  node first, the replica right after).

The figure is taken from the record, not from the bench's clock: fires do not name the replica
that made them, but every append the engine makes is fenced by the lease, so a fire recorded
after the new holder's acquiring lease message (its epoch is that message's stream sequence,
read from the new holder's ``/health``) is the new leader's, and one recorded before it is the
old leader's. **Failover = the first fire (``execution.pending``, scheduled or catch-up)
after the new epoch − the last fire before it**, both by their ``occurred_at`` (the deciding
replica's wall clock; every process here shares one machine's clock). Also reported: the kill
→ that first fire, and the first *scheduled* (not catch-up) fire. After each failover the
killed replica (and node) is started again and the stream is let catch up before the next.
Every run is checked with ``tests/support/cluster_check.check`` over the whole record read
so far (read incrementally from the stream): no ``(job, scheduled time)`` decided twice,
every due fire decided or in a missed/coalesced window, every acknowledged job present. At
the end of each scenario the replicas are stopped and the check runs again with every
replica's copy and views compared to the record.

**Dispatch lateness** (as ``bench_engine`` measures it: the instant the executor was handed
the execution − its scheduled time, noted by ``bench_engine.DispatchTimes``, a NoOpExecutor,
in the process that fires). ``--jobs`` (1,000) interval jobs of 1 s spread evenly over the
second (bench_engine's "spread"), created before start. Each run is a fresh subprocess
running ``lablink.runtime.Runtime``, what ``lablink serve`` runs minus its HTTP server, with
that executor injected; the two modes take turns:

- ``single``: the single-node default (SQLite log, a private nats-server and the relay,
  views folded by a child process);
- ``cluster``: cluster mode on a fresh 3-node cluster (R3 record, local copy, lease, fenced
  appends, relay to the cluster), ``--followers`` (0) more ``lablink serve`` replicas
  following it.

The difference from ``bench_engine``: there the bare ``Engine`` runs on ``open_store``; here
the whole runtime runs (the relay, the lease keeper, presence, the record's copy), since in
cluster mode the engine only exists inside the runtime's leadership (started on the lease,
appending through the fence). Both modes here go through the same code, so the side by side
differs only in the mode. Over the window: dispatch p50/p99/max, fires dispatched and
completed (the executions view) per second, recorded %, CPU of the firing process.

Results: rich tables on the terminal, ``bench/results/cluster.json`` (every run, the machine,
the load average, the git commit). BENCHMARKS.md, "2026-12-06: cluster mode".
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import math
import os
import queue
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import nats
from nats.js.api import ConsumerConfig, DeliverPolicy
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from bench.bench_engine import (
    SETTLE_SECONDS,
    DispatchTimes,
    GcWatch,
    anchors,
    creation_requests,
    executions_in_window,
    git_state,
    job_spec,
    measure_window,
    median_of,
    summary_ms,
    window_figures,
)
from bench.bench_store import machine_info
from lablink.eventstore import SQLiteEventStore
from lablink.eventstore.jetstream import JetStreamEventStore
from lablink.eventstore.lease import DEFAULT_TTL
from lablink.eventstore.record_format import SUBJECTS, is_lease, row_of
from lablink.eventstore.record_link import RECORD_STREAM
from lablink.logconfig import configure_logging
from lablink.runtime import Runtime, record_options
from lablink.settings import Settings
from tests.support.cluster_check import Acknowledged, Row, check, due_margin
from tests.support.cluster_replicas import (
    create_interval_jobs,
    holder,
    lease_of,
    replica,
    role,
)
from tests.support.eventually import eventually_sync
from tests.support.nats_cluster import SCHEDULER
from tests.support.nats_thread import ServerThread, nats_cluster
from tests.support.serve import Server

RESULTS_DIR = Path(__file__).resolve().parent / "results"
DEFAULT_OUTPUT = RESULTS_DIR / "cluster.json"
REPO_ROOT = Path(__file__).resolve().parent.parent

Scenario = Literal["replica", "node"]
Mode = Literal["single", "cluster"]
SCENARIOS: tuple[Scenario, ...] = ("replica", "node")
MODES: tuple[Mode, ...] = ("single", "cluster")
SCENARIO_LABELS = {
    "replica": "leader replica SIGKILLed",
    "node": "stream leader's nats-server + leader replica SIGKILLed",
}
MODE_LABELS = {
    "single": "single-node default (SQLite log, private nats-server, relay)",
    "cluster": "cluster mode (3-node R3 record, lease, fenced appends)",
}

# Issue 18's targets.
TARGET_SECONDS: dict[Scenario, float] = {"replica": 5.0, "node": 15.0}
P99_RATIO_TARGET = 3.0

CREATE_CHUNK = 500  # JobCreated appends per append_batch while seeding (an R3 batch each)
NEW_FIRES_SECONDS = 2.0  # how long the new leader fires before the killed parts come back
HOLDER_TIMEOUT = 45.0  # 3x the node target: a run failing waits no longer (budget of 15 min)

console = Console() if sys.stdout.isatty() else Console(width=160)


def say(message: str) -> None:
    console.log(message)


# -- the record, read as it grows -------------------------------------------------------------


@dataclass(frozen=True)
class Fire:
    position: int
    at: datetime  # occurred_at: the deciding replica's clock
    job_id: str
    scheduled: str
    trigger: str


@dataclass
class RecordTail:
    """The record's events read from the stream, a little more at each ``read`` (the lease's
    messages passed over, as ``cluster_check.read_record`` does, which reads from the start)."""

    url: str
    rows: list[Row] = field(default_factory=list)
    fires: list[Fire] = field(default_factory=list)
    read_up_to: int = 0  # stream sequence

    def read(self, timeout: float = 30.0) -> None:
        asyncio.run(self._read(timeout))

    async def _read(self, wait: float) -> None:
        nc = await nats.connect(
            servers=self.url.split(","), user=SCHEDULER[0], password=SCHEDULER[1]
        )
        try:
            js = nc.jetstream()
            last = (await js.stream_info(RECORD_STREAM)).state.last_seq
            if last <= self.read_up_to:
                return
            sub = await js.subscribe(
                SUBJECTS,
                stream=RECORD_STREAM,
                ordered_consumer=True,
                config=ConsumerConfig(
                    deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                    opt_start_seq=self.read_up_to + 1,
                ),
            )
            try:
                while True:
                    msg = await sub.next_msg(timeout=wait)
                    sequence = msg.metadata.sequence.stream
                    self.read_up_to = sequence
                    if not is_lease(msg.subject):
                        self._add(row_of(sequence, msg.subject, msg.headers, msg.data))
                    # A lease message at the end may have expired (its TTL) since stream_info:
                    # nothing pending is the end too.
                    if sequence >= last or msg.metadata.num_pending == 0:
                        return
            finally:
                await sub.unsubscribe()
        finally:
            await nc.close()

    def _add(self, copied: tuple[Any, ...]) -> None:
        position, event_id, stream_id, type_, at, _, _, payload = copied
        self.rows.append((position, event_id, stream_id, type_, at, payload))
        if type_ == "execution.pending":
            event = json.loads(payload)
            if event["trigger_info"] != "manual":
                self.fires.append(
                    Fire(
                        position,
                        datetime.fromisoformat(at),
                        event["job_id"],
                        event["scheduled_time"],
                        event["trigger_info"],
                    )
                )

    def doubled(self) -> int:
        """(job, scheduled time) pairs fired more than once (the checker names the first)."""
        counts = Counter((f.job_id, f.scheduled) for f in self.fires)
        return sum(1 for n in counts.values() if n > 1)


def checked(tail: RecordTail, acknowledged: Acknowledged, until: datetime) -> str:
    """The issue's checker over the record read so far: "ok" or what it found wrong."""
    try:
        found = check(tail.rows, {}, acknowledged, until)
    except AssertionError as exc:
        return f"FAILED: {str(exc)[:500]}"
    return f"ok ({found.fires} fires decided, {found.in_windows} due in missed/coalesced windows)"


# -- failover ---------------------------------------------------------------------------------


async def _stream_cluster(url: str) -> tuple[str | None, list[tuple[str, bool]]]:
    nc = await nats.connect(servers=url.split(","), user=SCHEDULER[0], password=SCHEDULER[1])
    try:
        info = await nc.jetstream().stream_info(RECORD_STREAM)
        assert info.cluster is not None
        peers = [(str(p.name), bool(p.current)) for p in info.cluster.replicas or []]
        return info.cluster.leader, peers
    finally:
        await nc.close()


def stream_leader(url: str) -> str:
    leader, _ = eventually_sync(
        lambda: asyncio.run(_stream_cluster(url)),
        until=lambda found: found[0] is not None,
        timeout=60,
        ignoring=(Exception,),
    )
    assert leader is not None
    return leader


def stream_whole(url: str) -> None:
    """Wait until the record has a leader and both other replicas are current (a node
    started again has caught up), so that the next kill leaves a majority."""
    eventually_sync(
        lambda: asyncio.run(_stream_cluster(url)),
        until=lambda found: (
            found[0] is not None and len(found[1]) == 2 and all(current for _, current in found[1])
        ),
        timeout=120,
        ignoring=(Exception,),
    )


def first_fire_after(data_dir: Path, position: int) -> bool:
    """The replica's copy holds a fire recorded after ``position``."""
    conn = sqlite3.connect(f"file:{data_dir / 'scheduler.db'}?mode=ro", uri=True)
    try:
        row = conn.execute(
            "SELECT 1 FROM events WHERE type = 'execution.pending' AND position > ? LIMIT 1",
            (position,),
        ).fetchone()
    finally:
        conn.close()
    return row is not None


def failover_figures(fires: Sequence[Fire], epoch: int, killed_at: float) -> dict[str, Any]:
    """From the record: the old leader's last fire (before the new epoch's lease message),
    the new leader's first (after it)."""
    before = [f for f in fires if f.position < epoch]
    after = [f for f in fires if f.position > epoch]
    if not before or not after:
        return {"failover_seconds": None, "why": "no fire on one side of the new epoch"}
    last_old, first_new = before[-1], after[0]
    scheduled = next((f for f in after if f.trigger == "scheduled"), None)
    killed = datetime.fromtimestamp(killed_at, UTC)
    return {
        "failover_seconds": round((first_new.at - last_old.at).total_seconds(), 3),
        "kill_to_first_new_fire_seconds": round((first_new.at - killed).total_seconds(), 3),
        "last_old_fire_before_kill_seconds": round((killed - last_old.at).total_seconds(), 3),
        "first_new_fire_trigger": first_new.trigger,
        "last_old_fire_to_first_scheduled_fire_seconds": (
            None if scheduled is None else round((scheduled.at - last_old.at).total_seconds(), 3)
        ),
        "catch_up_fires_at_takeover": sum(
            1 for f in after if f.trigger == "catch_up" and f.position < (scheduled or f).position
        ),
    }


@dataclass
class Cluster:
    """Two replicas on a 3-node cluster, as one failover scenario runs them."""

    root: Path
    thread: ServerThread
    nodes: list[Any]
    url: str
    lease_seconds: float
    replicas: dict[str, Server] = field(default_factory=dict)
    started: list[Server] = field(default_factory=list)

    def start(self, name: str) -> Server:
        server = replica(self.root / name, name, self.url, lease_seconds=self.lease_seconds)
        self.started.append(server)
        self.replicas[name] = server
        return server

    def node_named(self, name: str) -> Any:
        return self.nodes[int(name.removeprefix("nats-")) - 1]


def complaints(server: Server, keep: int = 5) -> list[str]:
    """The replica's last warnings and errors (its JSON log lines), with how many there were."""
    with contextlib.suppress(queue.Empty):
        while True:
            server.seen.append(server.lines.get_nowait())
    bad = [line for line in server.seen if line.get("level") in ("warning", "error")]
    counts = Counter(str(line.get("event")) for line in bad)
    last = [
        f"last: {line.get('event')}: {line.get('why') or line.get('error') or ''}"[:300]
        for line in bad[-3:]
    ]
    return [f"{n} x {event}" for event, n in counts.most_common(keep)] + last


def one_failover(
    cluster: Cluster, scenario: Scenario, tail: RecordTail, acknowledged: Acknowledged
) -> dict[str, Any]:
    old = holder(cluster.replicas, timeout=HOLDER_TIMEOUT)
    (other,) = [name for name in cluster.replicas if name != old]
    old_epoch = lease_of(cluster.replicas[old])["epoch"]
    node_name = stream_leader(cluster.url) if scenario == "node" else None
    found: dict[str, Any] = {"killed_replica": old, "killed_node": node_name, "new_holder": other}
    killed_at = time.time()
    try:
        if node_name is not None:
            cluster.thread.kill(cluster.node_named(node_name))
        cluster.replicas[old].crash()
        found["kill_seconds"] = round(time.time() - killed_at, 3)
        eventually_sync(
            lambda: role(cluster.replicas[other]),
            until=lambda r: r == "holder",
            timeout=HOLDER_TIMEOUT,
        )
        found["holder_seen_after_seconds"] = round(time.time() - killed_at, 3)
        new_epoch = int(lease_of(cluster.replicas[other])["epoch"])
        eventually_sync(
            lambda: first_fire_after(cluster.root / other, new_epoch),
            until=bool,
            timeout=HOLDER_TIMEOUT,
        )
        time.sleep(NEW_FIRES_SECONDS)
    except Exception as exc:
        found.update(
            failover_seconds=None,
            error=f"{type(exc).__name__}: {str(exc)[:300]}",
            complaints={name: complaints(s) for name, s in cluster.replicas.items()},
        )
        return found
    finally:
        # The killed parts come back before the next run: a node first, then the replica.
        if node_name is not None:
            cluster.thread.call(cluster.node_named(node_name).start())
        cluster.start(old).listening()
        stream_whole(cluster.url)
    until = due_margin(datetime.now(UTC))
    tail.read()
    return {
        **found,
        "old_epoch": old_epoch,
        "new_epoch": new_epoch,
        **failover_figures(tail.fires, new_epoch, killed_at),
        "doubled_fires": tail.doubled(),
        "check": checked(tail, acknowledged, until),
        "events_read": len(tail.rows),
        "new_holder_complaints": complaints(cluster.replicas[other]),
    }


def failover_scenario(
    scenario: Scenario, settings: BenchSettings, root: Path, step: Callable[[str], None]
) -> dict[str, Any]:
    acknowledged = Acknowledged()
    runs: list[dict[str, Any]] = []
    final = "not run"
    with nats_cluster(root / "nats") as (thread, nodes):
        cluster = Cluster(
            root, thread, nodes, ",".join(n.url for n in nodes), settings.lease_seconds
        )
        try:
            for name in ("a", "b"):
                cluster.start(name)
            for server in list(cluster.replicas.values()):
                server.listening()
            leader = holder(cluster.replicas, timeout=HOLDER_TIMEOUT)
            create_interval_jobs(
                cluster.replicas[leader], settings.failover_jobs, acknowledged, prefix=scenario
            )
            tail = RecordTail(cluster.url)
            time.sleep(3.0)  # a few rounds of fires by the first leader
            for run in range(settings.failovers):
                try:
                    result = one_failover(cluster, scenario, tail, acknowledged)
                except Exception as exc:  # one failed run must not cost the others
                    result = {"failover_seconds": None, "error": f"{type(exc).__name__}: {exc}"}
                runs.append(result)
                step(
                    f"{scenario} failover {run + 1}/{settings.failovers}:"
                    f" {fmt_s(result.get('failover_seconds'))} s"
                    f" (kill → first new fire {fmt_s(result.get('kill_to_first_new_fire_seconds'))}"
                    f" s, first by {result.get('first_new_fire_trigger')}),"
                    f" doubled {result.get('doubled_fires')}, check"
                    f" {result.get('check', result.get('error'))}"
                )
            until = due_margin(datetime.now(UTC))
            for server in cluster.replicas.values():
                server.terminate()
            for server in cluster.replicas.values():
                server.proc.wait(timeout=60)
            tail.read()
            try:
                found = check(
                    tail.rows, {n: root / n for n in cluster.replicas}, acknowledged, until
                )
                final = f"ok: {found}"
            except AssertionError as exc:
                final = f"FAILED: {str(exc)[:1000]}"
            say(f"{scenario}: final check with the replicas' copies and views: {final}")
        finally:
            for server in cluster.started:
                server.cleanup()
    return {"runs": runs, "final_check": final, "summary": failover_summary(scenario, runs)}


def failover_summary(scenario: Scenario, runs: list[dict[str, Any]]) -> dict[str, Any]:
    times = [r["failover_seconds"] for r in runs if r.get("failover_seconds") is not None]
    median = median_of(times)
    doubled = sum(r.get("doubled_fires") or 0 for r in runs)
    checks_ok = sum(1 for r in runs if str(r.get("check", "")).startswith("ok"))
    return {
        "runs": len(runs),
        "measured": len(times),
        "failover_median_seconds": median,
        "failover_min_seconds": min(times, default=None),
        "failover_max_seconds": max(times, default=None),
        "kill_to_first_new_fire_median_seconds": median_of(
            [r.get("kill_to_first_new_fire_seconds") for r in runs]
        ),
        "to_first_scheduled_fire_median_seconds": median_of(
            [r.get("last_old_fire_to_first_scheduled_fire_seconds") for r in runs]
        ),
        "doubled_fires": doubled,
        "runs_checked_ok": checks_ok,
        "target_seconds": TARGET_SECONDS[scenario],
        "met": median is not None
        and median <= TARGET_SECONDS[scenario]
        and doubled == 0
        and checks_ok == len(runs),
    }


# -- dispatch: the worker (a subprocess per run) ----------------------------------------------


@dataclass
class DispatchSpec:
    mode: Mode
    jobs: int
    lead: float
    warmup: float
    window: float
    tail: float
    directory: str
    result: str
    ready: str
    nats_url: str | None = None
    lease_seconds: float = DEFAULT_TTL
    fire_lead: float | None = None


def runtime_settings(spec: DispatchSpec) -> Settings:
    """As `lablink serve` would be set, the executor aside (injected)."""
    data_dir = Path(spec.directory) / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    common: dict[str, Any] = {
        "data_dir": data_dir,
        "timezone": "UTC",
        "auth": False,
        "executor": "noop",
        "agents": False,
    }
    if spec.fire_lead is not None:
        common["fire_lead"] = spec.fire_lead
    if spec.mode == "single":
        return Settings(**common)
    return Settings(
        **common,
        cluster=True,
        nats_url=spec.nats_url,
        nats_user=SCHEDULER[0],
        nats_password=SCHEDULER[1],
        nats_replicas=3,
        replica_id="bench-leader",
        lease_seconds=spec.lease_seconds,
    )


def seed(settings: Settings, spec: DispatchSpec, first: float) -> None:
    """The jobs, created before the runtime starts (as bench_engine does): into the SQLite
    log, or into the record through a copy of its own (the runtime's copy then takes them)."""
    now = datetime.now(UTC)
    requests = creation_requests(job_spec(now), anchors(spec.jobs, first, 1.0), now)
    if spec.mode == "single":
        log = SQLiteEventStore(settings.db_path)
        try:
            log.append_batch(requests)
        finally:
            log.close()
        return
    record = JetStreamEventStore(Path(spec.directory) / "seed.db", record_options(settings))
    try:
        for begin in range(0, len(requests), CREATE_CHUNK):
            record.append_batch(requests[begin : begin + CREATE_CHUNK])
    finally:
        record.close()


async def dispatch_worker(spec: DispatchSpec) -> dict[str, Any]:
    settings = runtime_settings(spec)
    first = float(math.ceil(time.time() + spec.lead))
    setup_started = time.perf_counter()
    seed(settings, spec, first)
    executor = DispatchTimes()
    runtime = await Runtime(settings, executor=executor).__aenter__()
    closing_error: str | None = None
    try:
        if runtime.leadership is not None:  # cluster mode: firing once the lease is held
            firing = asyncio.Event()
            loop = asyncio.get_running_loop()

            def changed(_: object) -> None:
                loop.call_soon_threadsafe(firing.set)

            runtime.on_engine.append(changed)
            if runtime.leadership.engine is None:
                await asyncio.wait_for(firing.wait(), HOLDER_TIMEOUT)
        setup_seconds = time.perf_counter() - setup_started
        overrun = time.time() - first
        await asyncio.to_thread(Path(spec.ready).write_text, json.dumps({"first": first}))
        gc_watch = GcWatch()
        gc.callbacks.append(gc_watch)
        start, end = first + spec.warmup, first + spec.warmup + spec.window
        views = runtime.store.views
        window = await measure_window(start, end, gc_watch, helpers=lambda: [views.pid])
        await asyncio.sleep(spec.tail)
        settled = await asyncio.to_thread(views.settled, SETTLE_SECONDS)
        gc.callbacks.remove(gc_watch)
        keeper = runtime.leadership.keeper if runtime.leadership is not None else None
        lease = (
            {}
            if keeper is None
            else {"lease_gained": keeper.gained, "lease_lost": keeper.lost, **keeper.status()}
        )
    finally:
        try:
            await runtime.__aexit__(None, None, None)
        except Exception as exc:  # noted with the figures: a lease lost and not regained
            closing_error = f"{type(exc).__name__}: {exc}"[:500]
    if not settled:
        raise RuntimeError("the views did not fold the window's fires in time")
    figures = executions_in_window(settings.db_path, settings.views_path, start, end, spec.jobs)
    dispatch = [d - s for s, d in executor.seen if start <= s < end]
    completed = figures["recorded"] - figures["runs_not_completed"]
    return {
        "mode": spec.mode,
        "fire_lead_seconds": settings.fire_lead,
        **figures,
        "dispatch_lateness": summary_ms(dispatch),
        "fires_dispatched_per_second": round(len(dispatch) / spec.window, 1),
        "fires_completed_per_second": round(completed / spec.window, 1),
        **window_figures(window, gc_watch, figures["recorded"]),
        "setup_seconds": round(setup_seconds, 3),
        "setup_overrun_seconds": round(max(0.0, overrun), 3),
        "lease": lease,
        "closing_error": closing_error,
    }


def worker_main(spec_path: str) -> None:
    """Entry point of a dispatch subprocess: run one spec, write its result as JSON."""
    spec = DispatchSpec(**json.loads(Path(spec_path).read_text(encoding="utf-8")))
    configure_logging("info", json=True)  # production logging, to the run's log file
    result = asyncio.run(dispatch_worker(spec))
    Path(spec.result).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


# -- dispatch: the parent ---------------------------------------------------------------------


@contextlib.contextmanager
def cluster_for(mode: Mode, root: Path) -> Iterator[tuple[str | None, Cluster | None]]:
    if mode == "single":
        yield None, None
        return
    with nats_cluster(root / "nats") as (thread, nodes):
        url = ",".join(n.url for n in nodes)
        yield url, Cluster(root, thread, nodes, url, DEFAULT_TTL)


def dispatch_run(mode: Mode, settings: BenchSettings, root: Path) -> dict[str, Any]:
    root.mkdir(parents=True)
    with cluster_for(mode, root) as (url, cluster):
        spec = DispatchSpec(
            mode=mode,
            jobs=settings.jobs,
            lead=settings.lead,
            warmup=settings.warmup,
            window=settings.window,
            tail=2.0,
            directory=str(root),
            result=str(root / "result.json"),
            ready=str(root / "ready.json"),
            nats_url=url,
            lease_seconds=settings.lease_seconds,
            fire_lead=settings.fire_leads.get(mode),
        )
        spec_path = root / "spec.json"
        spec_path.write_text(json.dumps(asdict(spec)), encoding="utf-8")
        log_path = root / "worker.log"
        budget = settings.lead * 3 + settings.warmup + settings.window + SETTLE_SECONDS + 60
        command = [
            sys.executable,
            "-c",
            "import sys; from bench.bench_cluster import worker_main; worker_main(sys.argv[1])",
            str(spec_path),
        ]
        with open(log_path, "wb") as log_file:
            worker = subprocess.Popen(
                command, cwd=REPO_ROOT, stdout=log_file, stderr=subprocess.STDOUT
            )
            try:
                if cluster is not None and settings.followers:
                    # Followers only once the bench's replica holds the lease (it must fire).
                    eventually_sync(
                        lambda: Path(spec.ready).exists() or worker.poll() is not None,
                        until=bool,
                        timeout=budget,
                    )
                    for n in range(settings.followers):
                        cluster.start(f"follower-{n + 1}")
                worker.wait(timeout=budget)
            finally:
                if worker.poll() is None:
                    worker.kill()
                    worker.wait()
                if cluster is not None:
                    for server in cluster.started:
                        server.cleanup()
        if worker.returncode != 0:
            tail = log_path.read_text(encoding="utf-8", errors="replace")[-3000:]
            raise RuntimeError(
                f"{mode} worker exited {worker.returncode}; its output ends:\n{tail}"
            )
    result: dict[str, Any] = json.loads(Path(spec.result).read_text(encoding="utf-8"))
    result["followers"] = settings.followers if mode == "cluster" else 0
    return result


def dispatch_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    def med(*path: str) -> float | None:
        values: list[Any] = []
        for run in runs:
            value: Any = run
            for key in path:
                value = value.get(key) if isinstance(value, dict) else None
            values.append(value)
        return median_of(values)

    return {
        "runs": len(runs),
        "dispatch_p50_ms": med("dispatch_lateness", "p50_ms"),
        "dispatch_p99_ms": med("dispatch_lateness", "p99_ms"),
        "dispatch_max_ms": med("dispatch_lateness", "max_ms"),
        "fires_dispatched_per_second": med("fires_dispatched_per_second"),
        "fires_completed_per_second": med("fires_completed_per_second"),
        "recorded_percent": med("recorded_percent"),
        "catch_up_runs": sum(r.get("catch_up_runs", 0) for r in runs),
        "missed_fires": sum(r.get("missed_fires", 0) for r in runs),
        "cpu_percent": med("cpu_percent"),
        "other_processes_cpu_percent": med("other_processes_cpu_percent"),
        "setup_overrun_seconds_max": max((r["setup_overrun_seconds"] for r in runs), default=None),
        "lease_lost": sum(r.get("lease", {}).get("lease_lost", 0) for r in runs),
        "closing_errors": [r["closing_error"] for r in runs if r.get("closing_error")],
    }


# -- the run ----------------------------------------------------------------------------------


@dataclass
class BenchSettings:
    failovers: int
    failover_jobs: int
    scenarios: list[Scenario]
    dispatch_runs: int
    jobs: int
    followers: int
    lead: float
    warmup: float
    window: float
    lease_seconds: float
    tmpdir: Path | None
    output: Path
    # LABLINK_FIRE_LEAD per mode; a mode not named runs with serve's default.
    fire_leads: dict[str, float] = field(default_factory=dict)


def fmt_s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def fmt_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def run(settings: BenchSettings) -> dict[str, Any]:
    started = datetime.now(UTC)
    began = time.perf_counter()
    load_before = os.getloadavg()
    code = git_state()
    steps = settings.failovers * len(settings.scenarios) + settings.dispatch_runs * len(MODES)
    failover: dict[str, Any] = {}
    dispatch: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
    failed: list[str] = []
    with (
        tempfile.TemporaryDirectory(prefix="lablink-cluster-bench-", dir=settings.tmpdir) as name,
        Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(),
            console=console,
        ) as progress,
    ):
        tmp = Path(name)
        machine = machine_info(tmp)
        say(
            f"{machine['cpu_model']}, {machine['logical_cores']} cores, {machine['ram_gib']} GiB,"
            f" fsync {machine['fsync_4k_median_ms']} ms, load {load_before[0]:.2f}; in {tmp}"
        )
        task = progress.add_task("cluster bench", total=steps)

        def step(message: str) -> None:
            say(message)
            progress.advance(task)

        for scenario in settings.scenarios:
            if settings.failovers == 0:
                continue
            progress.update(task, description=f"failover: {scenario}")
            try:
                failover[scenario] = failover_scenario(
                    scenario, settings, tmp / f"failover-{scenario}", step
                )
            except Exception as exc:
                failed.append(f"failover {scenario}: {type(exc).__name__}: {exc}"[:3000])
                say(f"failover {scenario} FAILED: {failed[-1][:300]}")
        for n in range(settings.dispatch_runs):
            for mode in MODES:  # taking turns, run by run
                progress.update(task, description=f"dispatch: {mode}")
                try:
                    result = dispatch_run(mode, settings, tmp / f"dispatch-{mode}-{n + 1}")
                except Exception as exc:
                    failed.append(f"dispatch {mode} {n + 1}: {exc}"[:3000])
                    step(f"dispatch {mode}, run {n + 1}: FAILED ({str(exc)[:300]})")
                    continue
                dispatch[mode].append(result)
                lat = result["dispatch_lateness"]
                step(
                    f"dispatch {mode}, run {n + 1}: p50/p99/max {fmt_ms(lat['p50_ms'])}/"
                    f"{fmt_ms(lat['p99_ms'])}/{fmt_ms(lat['max_ms'])} ms,"
                    f" {result['fires_completed_per_second']:,.0f} fires completed/s,"
                    f" recorded {result['recorded_percent']:.2f} %,"
                    f" CPU {result['cpu_percent']:.0f} %"
                    f" (other processes {result['other_processes_cpu_percent']:.0f} %),"
                    f" start overrun {result['setup_overrun_seconds']:.2f} s"
                    + (f", lease {result['lease']}" if result.get("lease") else "")
                    + (f", closing: {result['closing_error']}" if result["closing_error"] else "")
                )
    summaries = {mode: dispatch_summary(runs) for mode, runs in dispatch.items() if runs}
    single_p99 = summaries.get("single", {}).get("dispatch_p99_ms")
    cluster_p99 = summaries.get("cluster", {}).get("dispatch_p99_ms")
    ratio = round(cluster_p99 / single_p99, 2) if single_p99 and cluster_p99 else None
    machine["loadavg_1_5_15_before"] = [round(x, 2) for x in load_before]
    machine["loadavg_1_5_15_after"] = [round(x, 2) for x in os.getloadavg()]
    targets: dict[str, Any] = {
        f"failover <= {TARGET_SECONDS[s]:g} s ({SCENARIO_LABELS[s]}), no doubled fire": (
            failover[s]["summary"]["met"]
        )
        for s in settings.scenarios
        if s in failover
    }
    if ratio is not None:
        targets[f"cluster dispatch p99 within {P99_RATIO_TARGET:g}x single-node"] = (
            ratio <= P99_RATIO_TARGET
        )
    return {
        "benchmark": "cluster mode (issue 18): failover, dispatch beside single-node",
        "command": "python -m bench.bench_cluster " + " ".join(sys.argv[1:]),
        "date": started.isoformat(timespec="seconds"),
        "duration_seconds": round(time.perf_counter() - began, 1),
        "machine": machine,
        "code": code,
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(settings).items()},
        "failover": failover,
        "dispatch": {"summary": summaries, "cluster_to_single_p99": ratio, "runs": dispatch},
        "targets": targets,
        "failed": failed,
    }


def print_tables(result: dict[str, Any]) -> None:
    table = Table(title="Failover: last fire by the old leader → first fire by the new (record)")
    for column in (
        "scenario",
        "runs",
        "median s",
        "min–max s",
        "kill → first new fire, median s",
        "→ first scheduled fire, median s",
        "doubled fires",
        "runs checked ok",
        "target",
    ):
        table.add_column(column)
    for scenario, found in result["failover"].items():
        s = found["summary"]
        table.add_row(
            SCENARIO_LABELS[scenario],
            f"{s['measured']}/{s['runs']}",
            fmt_s(s["failover_median_seconds"]),
            f"{fmt_s(s['failover_min_seconds'])}–{fmt_s(s['failover_max_seconds'])}",
            fmt_s(s["kill_to_first_new_fire_median_seconds"]),
            fmt_s(s["to_first_scheduled_fire_median_seconds"]),
            str(s["doubled_fires"]),
            f"{s['runs_checked_ok']}/{s['runs']}",
            f"≤ {s['target_seconds']:g} s: {'met' if s['met'] else 'NOT met'}",
        )
    console.print(table)
    table = Table(title="Dispatch lateness, 1,000 interval jobs of 1 s spread (medians of runs)")
    for column in (
        "mode",
        "runs",
        "p50 ms",
        "p99 ms",
        "max ms",
        "fires completed/s",
        "recorded %",
        "CPU %",
        "others' CPU %",
    ):
        table.add_column(column)
    for mode, s in result["dispatch"]["summary"].items():
        table.add_row(
            MODE_LABELS[mode],
            str(s["runs"]),
            fmt_ms(s["dispatch_p50_ms"]),
            fmt_ms(s["dispatch_p99_ms"]),
            fmt_ms(s["dispatch_max_ms"]),
            fmt_ms(s["fires_completed_per_second"]),
            fmt_ms(s["recorded_percent"]),
            fmt_ms(s["cpu_percent"]),
            fmt_ms(s["other_processes_cpu_percent"]),
        )
    console.print(table)
    console.print(f"cluster p99 / single-node p99: {result['dispatch']['cluster_to_single_p99']}")
    for target, met in result["targets"].items():
        console.print(f"target {target}: {'met' if met else 'NOT met'}")
    for failure in result["failed"]:
        console.print(f"[red]failed:[/red] {failure[:500]}")


def parse_args(argv: Sequence[str] | None = None) -> BenchSettings:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--failovers", type=int, default=10, help="runs per scenario (10)")
    parser.add_argument("--failover-jobs", type=int, default=100, help="jobs of 1 s (100)")
    parser.add_argument(
        "--scenarios", nargs="+", choices=SCENARIOS, default=list(SCENARIOS), metavar="SCENARIO"
    )
    parser.add_argument("--dispatch-runs", type=int, default=2, help="runs per mode (2)")
    parser.add_argument("--jobs", type=int, default=1_000, help="dispatch: jobs of 1 s (1,000)")
    parser.add_argument(
        "--followers",
        type=int,
        default=0,
        help="dispatch: `lablink serve` followers beside the firing replica (0)",
    )
    parser.add_argument("--lead", type=float, default=12.0, help="s from start to first fire")
    parser.add_argument("--warmup", type=float, default=5.0, help="s of fires before the window")
    parser.add_argument("--window", type=float, default=30.0, help="dispatch window, s (30)")
    parser.add_argument(
        "--lease-seconds",
        type=float,
        default=DEFAULT_TTL,
        help=f"LABLINK_LEASE_SECONDS ({DEFAULT_TTL:g}, the default)",
    )
    parser.add_argument(
        "--fire-lead",
        action="append",
        default=[],
        metavar="[MODE=]SECONDS",
        help="dispatch: LABLINK_FIRE_LEAD, for both modes or one (cluster=0.8); "
        "serve's default when not given",
    )
    parser.add_argument("--tmpdir", type=Path, default=None)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    fire_leads: dict[str, float] = {}
    for given in args.fire_lead:
        mode, _, seconds = given.rpartition("=")
        for name in (mode,) if mode else ("single", "cluster"):
            if name not in ("single", "cluster"):
                parser.error(f"--fire-lead {given!r}: expected single= or cluster=")
            fire_leads[name] = float(seconds)
    return BenchSettings(
        failovers=args.failovers,
        failover_jobs=args.failover_jobs,
        scenarios=list(args.scenarios),
        dispatch_runs=args.dispatch_runs,
        jobs=args.jobs,
        followers=args.followers,
        lead=args.lead,
        warmup=args.warmup,
        window=args.window,
        lease_seconds=args.lease_seconds,
        tmpdir=args.tmpdir,
        output=args.output,
        fire_leads=fire_leads,
    )


def main(argv: Sequence[str] | None = None) -> None:
    settings = parse_args(argv)
    result = run(settings)
    settings.output.parent.mkdir(parents=True, exist_ok=True)
    settings.output.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print_tables(result)
    console.print(f"total {result['duration_seconds'] / 60:.1f} min; results in {settings.output}")


if __name__ == "__main__":
    main()
