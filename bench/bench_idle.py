"""The idle benchmark (issue 11): what a `lablink serve` left alone costs.

Run it from the repository root::

    .venv/bin/python -m bench.bench_idle                 # 10 minutes per scenario
    .venv/bin/python -m bench.bench_idle --minutes 3     # a shorter run
    .venv/bin/python -m bench.bench_idle --help

Each scenario starts a real `lablink serve` on a fresh data directory in a temporary folder,
with the embedded defaults (the private nats-server, the simulated bench's agent, retention
on), ``LABLINK_AUTH=off`` so that jobs can be created without a key, on 127.0.0.1:

- ``idle``: no jobs;
- ``100 hourly jobs``: 100 interval jobs (``interval_hours: 1``, created through the API), none
  due during the run.

After the server answers and a warm-up (``--warmup``, default 30 s: start-up work, the first
retention pass, the agents' first heartbeats), the CPU time (user + system) of the server and
every process under it (the nats-server) is read from ``/proc/<pid>/stat`` once per sample
period (``--sample-seconds``, default 60 s), and each sample becomes CPU seconds per minute.
The figure is the median sample, with the highest, and as % of one core. RSS (``VmRSS`` of
the server and its children, from ``/proc/<pid>/status``) is read at the end, after
``--minutes``. The target: under 1 % of a core idle (0.6 CPU s per minute).

``--env NAME=VALUE`` passes a setting to the server (``--env LABLINK_NATS=off``: no bus, no
agents: the scheduler and the API alone), ``--only idle|jobs`` runs one scenario.

Results go to a rich table on the terminal and to ``bench/results/idle.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

LABLINK = str(Path(sys.executable).parent / "lablink")
HOST = "127.0.0.1"
TARGET_PERCENT = 1.0
HOURLY_JOB: dict[str, Any] = {
    "name": "Hourly reading",
    "schedule_type": "measurement",
    "equipment_id": "power_supply_1",
    "trigger_type": "interval",
    "interval_hours": 1,
    "parameters": {"command": "get_voltage"},
}


@dataclass
class Scenario:
    name: str
    jobs: int
    samples_cpu_s_per_min: list[float] = field(default_factory=list)
    median_cpu_s_per_min: float = 0.0
    max_cpu_s_per_min: float = 0.0
    percent_of_core: float = 0.0
    rss_mib_server: float = 0.0
    rss_mib_children: float = 0.0
    minutes: float = 0.0
    processes: list[str] = field(default_factory=list)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def descendants(pid: int) -> list[int]:
    """Every process under ``pid`` (the nats-server, helpers), from /proc's children lists."""
    found: list[int] = []
    stack = [pid]
    while stack:
        current = stack.pop()
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                children = (task / "children").read_text().split()
            except OSError:
                continue
            for child in map(int, children):
                found.append(child)
                stack.append(child)
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process so far (all its threads)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def command_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def tree_cpu(pid: int) -> float:
    return cpu_seconds(pid) + sum(cpu_seconds(child) for child in descendants(pid))


def wait_until_answering(port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"lablink serve exited with {proc.returncode}")
        try:
            if httpx.get(f"http://{HOST}:{port}/health/live", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"lablink serve did not answer within {timeout} s")


def run_scenario(
    name: str,
    jobs: int,
    minutes: float,
    warmup: float,
    sample_seconds: float,
    keep: Path | None,
    extra_env: dict[str, str],
) -> Scenario:
    console = Console(stderr=True)
    with tempfile.TemporaryDirectory(prefix="lablink-idle-") as folder:
        data_dir = Path(folder) / "data"
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("LABLINK_")}
        env.update(
            LABLINK_DATA_DIR=str(data_dir),
            LABLINK_HOST=HOST,
            LABLINK_PORT=str(port),
            LABLINK_AUTH="off",
            LABLINK_TIMEZONE="UTC",
        )
        env.update(extra_env)
        log_path = (keep or Path(folder)) / f"serve-{name.replace(' ', '-')}.log"
        with log_path.open("wb") as log_file:
            proc = subprocess.Popen(
                [LABLINK, "serve"], env=env, stdout=log_file, stderr=subprocess.STDOUT
            )
            try:
                wait_until_answering(port, proc, timeout=120)
                with httpx.Client(base_url=f"http://{HOST}:{port}", timeout=30) as client:
                    for n in range(jobs):
                        response = client.post(
                            "/api/scheduler/jobs/create", json={**HOURLY_JOB, "name": f"Hourly {n}"}
                        )
                        response.raise_for_status()
                console.log(f"{name}: serving on port {port}, {jobs} jobs; warm-up {warmup} s")
                time.sleep(warmup)
                scenario = Scenario(name=name, jobs=jobs, minutes=minutes)
                end = time.monotonic() + minutes * 60
                previous_cpu, previous_at = tree_cpu(proc.pid), time.monotonic()
                while time.monotonic() < end:
                    time.sleep(min(sample_seconds, max(end - time.monotonic(), 0.1)))
                    cpu, now = tree_cpu(proc.pid), time.monotonic()
                    per_minute = (cpu - previous_cpu) / (now - previous_at) * 60
                    scenario.samples_cpu_s_per_min.append(round(per_minute, 4))
                    console.log(f"{name}: {per_minute:.3f} CPU s/min")
                    previous_cpu, previous_at = cpu, now
                children = descendants(proc.pid)
                scenario.rss_mib_server = round(rss_mib(proc.pid), 1)
                scenario.rss_mib_children = round(sum(rss_mib(c) for c in children), 1)
                scenario.processes = ["lablink serve", *(command_name(c) for c in children)]
            finally:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                    try:
                        proc.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
    samples = scenario.samples_cpu_s_per_min
    scenario.median_cpu_s_per_min = round(statistics.median(samples), 4)
    scenario.max_cpu_s_per_min = round(max(samples), 4)
    scenario.percent_of_core = round(scenario.median_cpu_s_per_min / 60 * 100, 3)
    return scenario


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="measured minutes per run")
    parser.add_argument("--warmup", type=float, default=30.0, help="seconds before measuring")
    parser.add_argument("--sample-seconds", type=float, default=60.0, help="sample period")
    parser.add_argument("--jobs", type=int, default=100, help="hourly jobs in the second run")
    parser.add_argument("--output", type=Path, default=Path("bench/results/idle.json"))
    parser.add_argument("--keep-logs", type=Path, default=None, help="folder for server logs")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for the server (LABLINK_NATS=off: no bus); repeatable",
    )
    parser.add_argument(
        "--only", choices=("idle", "jobs"), default=None, help="run one scenario only"
    )
    args = parser.parse_args()
    extra_env = dict(item.split("=", 1) for item in args.env)

    runs = [("idle", 0), (f"{args.jobs} hourly jobs", args.jobs)]
    if args.only is not None:
        runs = [runs[0] if args.only == "idle" else runs[1]]
    results = [
        run_scenario(
            name, jobs, args.minutes, args.warmup, args.sample_seconds, args.keep_logs, extra_env
        )
        for name, jobs in runs
    ]
    table = Table(title=f"lablink serve left alone ({args.minutes:g} min, target < 1 % of a core)")
    for column in (
        "scenario",
        "CPU s/min (median)",
        "max",
        "% of a core",
        "RSS server",
        "RSS children",
        "met",
    ):
        table.add_column(column)
    for result in results:
        table.add_row(
            result.name,
            f"{result.median_cpu_s_per_min:.3f}",
            f"{result.max_cpu_s_per_min:.3f}",
            f"{result.percent_of_core:.2f} %",
            f"{result.rss_mib_server:.1f} MiB",
            f"{result.rss_mib_children:.1f} MiB",
            "yes" if result.percent_of_core < TARGET_PERCENT else "NO",
        )
    Console().print(table)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(
        json.dumps(
            {
                "machine": machine(),
                "args": {k: str(v) for k, v in vars(args).items()},
                "scenarios": [asdict(r) for r in results],
            },
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
