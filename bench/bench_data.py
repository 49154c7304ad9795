"""Capture transfer (issue 15): upload and download throughput of a captured file.

Run it from the repository root::

    .venv/bin/python -m bench.bench_data                 # 100 MB and 1 GB, 3 runs each
    .venv/bin/python -m bench.bench_data --sizes 100 --runs 1   # a quick look

One nats-server (JetStream on disk, in a temporary folder) and, for each size, a CSV capture
of that many megabytes (10^6 bytes). Each run measures, on the same bytes:

- **copy**: a plain file copy (``shutil.copyfile``), the disk's own pace;
- **raw put / raw get**: nats-py's own object store, ``ObjectStore.put`` of the open file and
  ``ObjectStore.get(writeinto=file)``: the ceiling any upload or download through the bus
  can reach on this machine;
- **agent upload**: the agent's upload (``lablink.equipment_agent.upload.put_file``: chunks
  published with the nuid recorded first, digest checked, the object's description last),
  into the ``LABLINK_DATA`` bucket as an agent does it; the file's SHA-256, which the agent
  takes when the capture ends, is timed apart;
- **HTTP download**: ``GET /api/scheduler/executions/{id}/data`` of a real ``lablink serve``
  (a child process on 127.0.0.1, LABLINK_NATS_URL at the same nats-server, auth off),
  streamed to a file by httpx; the file is checked byte for byte (SHA-256) after the clock
  stops, and the server's resident memory is sampled while it streams (its growth).

Figures are the median of the runs (MB/s, 10^6 bytes per second). The target: the agent's
upload and the HTTP download at >= 70 % of the raw put and get. Results go to a table and to
``bench/results/data.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import nats
from nats.js.api import ObjectMeta, ObjectMetaOptions

from lablink.application import JobService
from lablink.bus.data_bucket import ensure_data_bucket
from lablink.bus.server import NatsServer, nats_server_binary
from lablink.clock import ManualClock
from lablink.equipment_agent.upload import (
    CHUNK_SIZE,
    file_sha256,
    new_nuid,
    object_name,
    provenance_headers,
    put_file,
)
from lablink.events import (
    AnyEvent,
    ExecutionRequested,
    ExecutionStarted,
    ExecutionSucceeded,
    NewEvent,
)
from lablink.events.data import DATA_BUCKET
from lablink.ids import SequentialIds
from lablink.logstore import open_store

MB = 1_000_000
TARGET = 0.70
RESULTS = Path(__file__).parent / "results" / "data.json"
LABLINK = str(Path(sys.executable).parent / "lablink")


# -- the capture ------------------------------------------------------------------------------


def write_capture(path: Path, size: int) -> None:
    """A CSV of ``size`` bytes as an acquisition writes it: a provenance header block, then
    ``time_s`` and four channels; the rows change from block to block."""
    header = "".join(
        f"# {key}: {value}\n"
        for key, value in (
            ("job_id", "job_bench"),
            ("execution_id", path.stem),
            ("instrument", "SIM,SCOPE,1,1.0"),
            ("sample_rate", "1000000"),
        )
    )
    header += "time_s,ch1_V,ch2_V,ch3_V,ch4_V\n"
    with path.open("w") as out:
        out.write(header)
        written = len(header)
        row = 0
        while written < size:
            lines = []
            for _ in range(2000):
                t = row * 1e-6
                lines.append(
                    f"{t:.6f},{(row % 997) * 1e-3:.6f},{(row % 991) * -1e-3:.6f},"
                    f"{(row % 983) * 2e-3:.6f},{(row % 977) * 5e-4:.6f}\n"
                )
                row += 1
            block = "".join(lines)
            block = block[: size - written]
            out.write(block)
            written += len(block)


# -- measurements --------------------------------------------------------------------------


@dataclass
class Figures:
    seconds: dict[str, list[float]] = field(default_factory=dict)
    extra: dict[str, list[float]] = field(default_factory=dict)

    def add(self, name: str, seconds: float) -> None:
        self.seconds.setdefault(name, []).append(seconds)

    def note(self, name: str, value: float) -> None:
        self.extra.setdefault(name, []).append(value)

    def rate(self, name: str, size: int) -> float:
        return size / MB / statistics.median(self.seconds[name])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class RssWatch:
    """The largest resident size of a process while it works, sampled every 20 ms."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.start = rss_kib(pid)
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, rss_kib(self.pid))

    def growth_mib(self) -> float:
        self._stop.set()
        self._thread.join()
        return (self.peak - self.start) / 1024


async def raw_put(js: Any, path: Path, name: str) -> float:
    store = await js.object_store(DATA_BUCKET)
    meta = ObjectMeta(name=name, options=ObjectMetaOptions(max_chunk_size=CHUNK_SIZE))
    started = time.perf_counter()
    with path.open("rb") as data:
        await store.put(name, data, meta=meta)
    return time.perf_counter() - started


async def raw_get(js: Any, name: str, target: Path) -> float:
    store = await js.object_store(DATA_BUCKET)
    started = time.perf_counter()
    with target.open("wb") as out:
        await store.get(name, writeinto=out)
    elapsed = time.perf_counter() - started
    await store.delete(name)
    return elapsed


async def agent_upload(js: Any, path: Path, execution_id: str, sha256: str) -> float:
    started = time.perf_counter()
    await put_file(
        js,
        path,
        execution_id=execution_id,
        name=object_name(execution_id),
        nuid=new_nuid(),
        sha256=sha256,
        headers=provenance_headers({"job_id": "job_bench", "execution_id": execution_id}),
    )
    return time.perf_counter() - started


def record_executions(data_dir: Path, captures: list[tuple[str, Path, str]]) -> str:
    """The log of a scheduler that ran the captures: an acquisition job and, per capture, an
    execution that completed with its data stored. Returns the job's id."""
    clock = ManualClock(datetime.now(UTC) - timedelta(hours=1))
    store = open_store(data_dir / "scheduler.db")
    try:
        service = JobService(store, clock, default_timezone="UTC", ids=SequentialIds())
        job_id = service.create_job(
            {
                "name": "bench capture",
                "schedule_type": "acquisition",
                "equipment_id": "scope_1",
                "parameters": {"duration": 1, "sample_rate": 1000, "channels": [1]},
                "trigger_type": "interval",
                "interval_hours": 1,
                "enabled": False,
            },
            actor="bench",
        )
        for execution_id, path, sha256 in captures:
            now = clock.now()
            size = path.stat().st_size
            data = {
                "bucket": DATA_BUCKET,
                "object": object_name(execution_id),
                "file_name": path.name,
                "size": size,
                "sha256": sha256,
                "rows": 0,
                "columns": [{"name": "time", "unit": "s"}],
                "sample_rate": 1e6,
                "provenance": {"job_id": job_id, "execution_id": execution_id},
                "status": "stored",
            }
            events: list[AnyEvent] = [
                ExecutionRequested(
                    job_id=job_id,
                    execution_id=execution_id,
                    scheduled_time=now,
                    actual_time=now,
                    trigger_info="manual",
                ),
                ExecutionStarted(job_id=job_id, execution_id=execution_id, started_at=now),
                ExecutionSucceeded(
                    job_id=job_id,
                    execution_id=execution_id,
                    completed_at=now,
                    started_at=now,
                    result={"equipment_id": "scope_1", "format": "csv", "data": data},
                ),
            ]
            store.append(
                job_id,
                store.stream_version(job_id),
                [
                    NewEvent(event=e, actor="bench", occurred_at=now, correlation_id=execution_id)
                    for e in events
                ],
            )
            clock.advance(1)
        return job_id
    finally:
        store.close()


class Serve:
    """`lablink serve` on the bench's data dir and nats-server."""

    def __init__(self, data_dir: Path, nats_url: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "LABLINK_DATA_DIR": str(data_dir),
            "LABLINK_PORT": str(self.port),
            "LABLINK_AUTH": "off",
            "LABLINK_NATS_URL": nats_url,
            "LABLINK_AGENTS": "off",
            "LABLINK_EXECUTOR": "noop",
            "LABLINK_LOG_LEVEL": "warning",
        }
        self.log = (data_dir / "serve.log").open("wb")
        self.process = subprocess.Popen(
            [LABLINK, "serve"], env=env, stdout=self.log, stderr=subprocess.STDOUT
        )

    def wait_ready(self, seconds: float = 90.0) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"lablink serve exited with {self.process.returncode}")
            try:
                if httpx.get(f"{self.url}/health/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError("lablink serve was not ready in time")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


def http_download(serve: Serve, execution_id: str, target: Path) -> tuple[float, float]:
    """(seconds, server RSS growth in MiB) of one download streamed to ``target``."""
    watch = RssWatch(serve.process.pid)
    started = time.perf_counter()
    with (
        httpx.stream(
            "GET", f"{serve.url}/api/scheduler/executions/{execution_id}/data", timeout=120
        ) as answer,
        target.open("wb") as out,
    ):
        if answer.status_code != 200:
            answer.read()
            raise RuntimeError(f"download of {execution_id}: {answer.status_code} {answer.text}")
        for chunk in answer.iter_raw(1 << 20):
            out.write(chunk)
    elapsed = time.perf_counter() - started
    return elapsed, watch.growth_mib()


def same_bytes(a: Path, b: Path) -> bool:
    return a.stat().st_size == b.stat().st_size and file_sha256(a) == file_sha256(b)


# -- the run --------------------------------------------------------------------------------


async def measure(sizes_mb: list[int], runs: int, folder: Path) -> dict[int, Figures]:
    server = await NatsServer(folder / "nats").start()
    nc = await nats.connect(server.url)
    js = nc.jetstream()
    await ensure_data_bucket(js)
    figures: dict[int, Figures] = {mb: Figures() for mb in sizes_mb}
    captures: list[tuple[str, Path, str]] = []
    by_size: dict[int, list[tuple[str, Path, str]]] = {mb: [] for mb in sizes_mb}
    try:
        for mb in sizes_mb:
            size = mb * MB
            source = folder / f"capture-{mb}MB.csv"
            print(f"{mb} MB: writing the capture", flush=True)
            write_capture(source, size)
            f = figures[mb]
            for run in range(runs):
                copy = folder / "copy.csv"
                started = time.perf_counter()
                shutil.copyfile(source, copy)
                f.add("copy", time.perf_counter() - started)
                copy.unlink()
                started = time.perf_counter()
                sha256 = await asyncio.to_thread(file_sha256, source)
                f.add("sha256", time.perf_counter() - started)
                execution_id = f"exec_bench_{mb}_{run}"
                raw_name = f"raw/{execution_id}.csv"
                # Take turns: neither side always gets the warmer cache.
                if run % 2 == 0:
                    f.add("raw_put", await raw_put(js, source, raw_name))
                    f.add("agent_upload", await agent_upload(js, source, execution_id, sha256))
                else:
                    f.add("agent_upload", await agent_upload(js, source, execution_id, sha256))
                    f.add("raw_put", await raw_put(js, source, raw_name))
                got = folder / "raw-get.csv"
                f.add("raw_get", await raw_get(js, raw_name, got))
                if not same_bytes(source, got):
                    raise RuntimeError(f"raw get of {raw_name} returned other bytes")
                got.unlink()
                by_size[mb].append((execution_id, source, sha256))
                captures.append((execution_id, source, sha256))
                print(f"{mb} MB run {run + 1}: uploads done", flush=True)
        await nc.close()
        data_dir = folder / "data"
        data_dir.mkdir()
        record_executions(data_dir, captures)
        serve = Serve(data_dir, server.url)
        try:
            serve.wait_ready()
            for mb in sizes_mb:
                for execution_id, source, _ in by_size[mb]:
                    target = folder / "download.csv"
                    seconds, growth = await asyncio.to_thread(
                        http_download, serve, execution_id, target
                    )
                    if not same_bytes(source, target):
                        raise RuntimeError(f"the download of {execution_id} differs")
                    target.unlink()
                    figures[mb].add("http_download", seconds)
                    figures[mb].note("server_rss_growth_mib", growth)
                    print(f"{mb} MB: downloaded {execution_id}", flush=True)
        finally:
            serve.stop()
    finally:
        if not nc.is_closed:
            await nc.close()
        await server.stop()
    return figures


def summary(figures: dict[int, Figures]) -> list[dict[str, Any]]:
    rows = []
    for mb, f in figures.items():
        size = mb * MB
        rates = {name: round(f.rate(name, size), 1) for name in f.seconds}
        rows.append(
            {
                "size_mb": mb,
                "runs": len(f.seconds["copy"]),
                "mb_per_s": rates,
                "seconds": {k: [round(s, 3) for s in v] for k, v in f.seconds.items()},
                "upload_vs_raw_put": round(rates["agent_upload"] / rates["raw_put"], 3),
                "download_vs_raw_get": round(rates["http_download"] / rates["raw_get"], 3),
                "server_rss_growth_mib": [
                    round(g, 1) for g in f.extra.get("server_rss_growth_mib", [])
                ],
            }
        )
    return rows


def machine() -> dict[str, Any]:
    def field_of(path: str, name: str) -> str:
        for line in Path(path).read_text().splitlines():
            if line.startswith(name):
                return line.split(":", 1)[1].strip()
        return "unknown"

    version = subprocess.run(
        [nats_server_binary(), "-v"],
        capture_output=True,
        text=True,
        check=False,
    )
    return {
        "cpu_model": field_of("/proc/cpuinfo", "model name"),
        "logical_cores": os.cpu_count(),
        "ram": field_of("/proc/meminfo", "MemTotal"),
        "os": platform.platform(),
        "python": platform.python_version(),
        "nats_py": importlib.metadata.version("nats-py"),
        "nats_server": (version.stdout or version.stderr).strip() or "unknown",
        "load_average_at_start": os.getloadavg(),
    }


def print_table(rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="capture transfer, MB/s (median)")
    for column in (
        "size",
        "copy",
        "raw put",
        "agent upload",
        "upload/raw",
        "raw get",
        "HTTP download",
        "download/raw",
        "SHA-256",
        "server RSS growth",
    ):
        table.add_column(column, justify="right")
    for row in rows:
        r = row["mb_per_s"]
        table.add_row(
            f"{row['size_mb']} MB",
            f"{r['copy']}",
            f"{r['raw_put']}",
            f"{r['agent_upload']}",
            f"{row['upload_vs_raw_put']:.0%}",
            f"{r['raw_get']}",
            f"{r['http_download']}",
            f"{row['download_vs_raw_get']:.0%}",
            f"{r['sha256']}",
            f"{max(row['server_rss_growth_mib'], default=0):.1f} MiB",
        )
    Console().print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100,1000", help="MB per capture, comma-separated")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--folder", type=Path, default=None, help="where the files go")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    with tempfile.TemporaryDirectory(prefix="lablink-bench-data-", dir=args.folder) as tmp:
        info = machine()
        started = time.perf_counter()
        figures = asyncio.run(measure(sizes, args.runs, Path(tmp)))
        rows = summary(figures)
    print_table(rows)
    verdict = all(
        r["upload_vs_raw_put"] >= TARGET and r["download_vs_raw_get"] >= TARGET for r in rows
    )
    met = "met" if verdict else "MISSED"
    print(f"target (>= {TARGET:.0%} of the raw object store both ways): {met}")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "benchmark": "capture transfer (issue 15)",
                "date": datetime.now(UTC).isoformat(timespec="seconds"),
                "machine": info,
                "load_average_at_end": os.getloadavg(),
                "wall_seconds": round(time.perf_counter() - started, 1),
                "target_met": verdict,
                "results": rows,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"written {RESULTS}")


if __name__ == "__main__":
    main()
