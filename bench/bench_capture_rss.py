"""Capture upload memory (issue 15 point 7): the peak RSS of a `lablink agent` process during
a large full-rate capture and its upload to the object store.

Run it from the repository root::

    .venv/bin/python -m bench.bench_capture_rss                      # 1 channel, 1 MS/s, 5 s
    .venv/bin/python -m bench.bench_capture_rss --duration 1 --channels 2

A real nats-server and a `lablink agent` process (the simulated oscilloscope_1, its own data
folder) in a temporary folder; the scheduler's engine and executor in this process (the
tests' ``AgentLab``). After a small warm-up capture, the agent's ``VmRSS`` is read from
``/proc/<pid>/status``; then one acquisition with ``"decimate": false`` runs to its end
(written to disk record by record; its result sent; uploaded in 128 KiB chunks, the local
copy deleted, ``execution.data_stored`` recorded), and the agent's ``VmHWM`` (its peak RSS
over its whole life) is read. The figure: the peak, and its growth over the resident size
before the capture, beside the file's size.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lablink.bus.server import NatsServer
from lablink.clock import ManualClock
from lablink.events import ExecutionDataStored
from tests.support.agent_lab import AgentLab, bench_config, spawn_agent, write_lab_toml
from tests.support.bench import copy_bench
from tests.support.eventually import eventually


def memory(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM of ``pid``, in MiB."""
    found: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0]) / 1024
    return found


async def measure(folder: Path, duration: float, rate: float, channels: int) -> dict[str, Any]:
    server = await NatsServer(folder / "nats").start()
    clock = ManualClock(datetime(2026, 12, 3, 9, tzinfo=UTC))
    lab = await AgentLab(
        folder / "scheduler" / "scheduler.db", server.url, clock, heartbeat_timeout=600
    ).start()
    try:
        config = bench_config(
            copy_bench(folder / "bench"),
            folder / "agent-data",
            agent_id="bench",
            only=("oscilloscope_1",),
        )
        process = await spawn_agent(write_lab_toml(folder / "lab.toml", config, server.url))
        lab.processes.append(process)
        await lab.online("oscilloscope_1", within=60)
        small = {"duration": 1, "sample_rate": 1000, "channels": [1]}
        await lab.run(
            {"schedule_type": "acquisition", "equipment_id": "oscilloscope_1", "parameters": small}
        )
        before = memory(process.pid)
        started = time.monotonic()
        parameters = {
            "duration": duration,
            "sample_rate": rate,
            "channels": list(range(1, channels + 1)),
            "decimate": False,
        }
        row = await lab.run(
            {
                "schedule_type": "acquisition",
                "equipment_id": "oscilloscope_1",
                "parameters": parameters,
            },
            within=7200,
        )
        # A large capture's result goes before its upload: wait for the store to have it.
        await eventually(
            lambda: (
                [
                    e
                    for e in lab.events(lab.jobs.stream_id(row["job_id"]))
                    if isinstance(e, ExecutionDataStored)
                ]
                or row["status"] != "completed"
            ),
            timeout=7200,
            what="the upload",
        )
        elapsed = time.monotonic() - started
        after = memory(process.pid)
        result = json.loads(row["result"]) if row["result"] else {}
        data = result.get("data", {})
        return {
            "status": row["status"],
            "data_status": data.get("status"),
            "file_mb": round(data.get("size", 0) / 1e6, 1),
            "rows": data.get("rows"),
            "channels": channels,
            "seconds": round(elapsed, 1),
            "rss_before_mib": round(before["VmRSS"], 1),
            "peak_rss_mib": round(after["VmHWM"], 1),
            "growth_mib": round(after["VmHWM"] - before["VmRSS"], 1),
        }
    finally:
        await lab.close()
        await server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of capture")
    parser.add_argument("--rate", type=float, default=1e6, help="samples per second")
    parser.add_argument("--channels", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lablink-capture-rss-") as tmp:
        figures = asyncio.run(measure(Path(tmp), args.duration, args.rate, args.channels))
    print(json.dumps(figures, indent=2))
    out = Path(__file__).parent / "results" / "capture-rss.json"
    out.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
