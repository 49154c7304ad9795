"""The event-loop thread's CPU per fire, alone (issue 14, "Loop cost per fire").

``bench_engine`` measures a whole process on the real clock, where the loop thread shares the
GIL with the group-commit writer and the projector, and where a busy machine moves every
figure. This one isolates the loop thread's share: an ``Engine`` on a real SQLite log (no
views), a ``ManualClock`` moved tick by tick, the ``NoOpExecutor``, and the garbage
collector set as ``lablink/runtime.py`` sets it. It reports the CPU time of the loop thread
(``time.thread_time``, which a busy machine inflates far less than wall time) per fire and
its finish, tick by tick, and the process's CPU (loop + the writer's thread).

    .venv/bin/python -m bench.bench_loop --jobs 1000 --ticks 20 [--spread] [--output f.json]

It imports only ``lablink``, so ``PYTHONPATH=<another checkout> python bench/bench_loop.py``
measures that checkout's engine with the same driver.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from lablink.clock import ManualClock
from lablink.domain.job import CreateJob, JobState, decide
from lablink.domain.requests import parse_job_request
from lablink.events import stamp
from lablink.eventstore import AppendRequest, SQLiteEventStore
from lablink.logconfig import configure_logging
from lablink.repository import JobRepository
from lablink.runtime import freeze_startup
from lablink.scheduler.engine import Engine
from lablink.scheduler.executor import NoOpExecutor

START = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
STEPS_PER_SECOND = 100  # spread: the clock moves 10 ms a tick, 1 % of the jobs due each


def creations(jobs: int, spread: bool) -> list[AppendRequest]:
    requests = []
    for index in range(jobs):
        job_id = f"job_{index:06d}"
        offset = index / jobs if spread else 0.0
        first = START + timedelta(seconds=1 + offset)
        request = parse_job_request(
            {
                "name": f"Voltage reading {index:06d}",
                "schedule_type": "measurement",
                "equipment_id": "dmm-01",
                "trigger_type": "interval",
                "interval_seconds": 1,
                "parameters": {"command": "MEAS:VOLT:DC?"},
                "start_date": first.isoformat(),
                "timezone": "UTC",
            }
        )
        command = CreateJob(
            job_id=job_id, request=request, default_timezone="UTC", created_by="user:bench"
        )
        events = decide(JobState(job_id=job_id), command, START)
        requests.append(
            AppendRequest(
                stream_id=job_id, expected_version=0, events=stamp(events, "user:bench", START)
            )
        )
    return requests


async def measure(jobs: int, ticks: int, spread: bool, directory: Path) -> dict[str, Any]:
    store = SQLiteEventStore(directory / "scheduler.db")
    requests = creations(jobs, spread)
    for begin in range(0, jobs, 1000):
        store.append_batch(requests[begin : begin + 1000])
    clock = ManualClock(START)
    engine = Engine(store, clock, NoOpExecutor(), jobs=JobRepository(store))
    await engine.open([(r.stream_id, None) for r in requests], [])
    step = 1.0 / STEPS_PER_SECOND if spread else 1.0
    per_second = STEPS_PER_SECOND if spread else 1

    async def second() -> None:
        for _ in range(per_second):
            clock.advance(step)
            await engine.tick()
            await asyncio.gather(*engine.tasks().values())  # each records its outcome

    await second()  # warm: each job's state is loaded from the log on its first fire
    freeze_startup()  # as lablink serve does once started
    collected = [0.0]
    began = [0.0]

    def watch(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            began[0] = time.thread_time()
        else:
            collected[0] += time.thread_time() - began[0]

    gc.callbacks.append(watch)
    seconds: list[float] = []
    process, wall = time.process_time(), time.perf_counter()
    for _ in range(ticks):
        before = time.thread_time()
        await second()
        seconds.append(time.thread_time() - before)
    process, wall = time.process_time() - process, time.perf_counter() - wall
    gc.callbacks.remove(watch)
    await engine.aclose()
    (events,) = store.conn.execute("SELECT COUNT(*) FROM events").fetchone()
    store.close()
    fires = jobs * ticks
    return {
        "jobs": jobs,
        "alignment": "spread" if spread else "aligned",
        "ticks": ticks,
        "events": events,
        "loop_us_per_fire_median_second": round(1e6 * statistics.median(seconds) / jobs, 1),
        "loop_us_per_fire_min_second": round(1e6 * min(seconds) / jobs, 1),
        "loop_us_per_fire": round(1e6 * sum(seconds) / fires, 1),
        "process_us_per_fire": round(1e6 * process / fires, 1),
        "gc_us_per_fire": round(1e6 * collected[0] / fires, 1),
        "wall_us_per_fire": round(1e6 * wall / fires, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--ticks", type=int, default=20, help="simulated seconds measured")
    parser.add_argument("--spread", action="store_true", help="fires spread over each second")
    parser.add_argument("--output", type=Path, default=None, help="append the figures (JSON lines)")
    parser.add_argument("--label", default="", help="kept with the figures")
    args = parser.parse_args()
    configure_logging("info", json=True)
    with tempfile.TemporaryDirectory(prefix="lablink-loop-bench-") as name:
        figures = asyncio.run(measure(args.jobs, args.ticks, args.spread, Path(name)))
    figures["label"] = args.label
    figures["load_average"] = Path("/proc/loadavg").read_text().split()[:3]
    figures["at"] = datetime.now(UTC).isoformat(timespec="seconds")
    line = json.dumps(figures)
    print(line)
    if args.output is not None:
        with args.output.open("a", encoding="utf-8") as out:
            out.write(line + "\n")


if __name__ == "__main__":
    main()
