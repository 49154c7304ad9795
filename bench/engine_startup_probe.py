"""Where a scheduler process's start-up time goes, phase by phase (helper of bench_engine).

    python -m bench.engine_startup_probe DB RESULT_JSON [PROFILE_TXT]

Does what ``lablink scheduler`` does up to the engine's first tick -- import the CLI, configure
logging, ``open_store`` (the projector in a thread of its own, as the runtime opens it),
``recovery_lists``, ``Engine.open`` (plans every job) -- timing each step, then closes without
firing. Only the standard library is imported before the clock
starts, so the import phase is what the real process pays.
"""

from __future__ import annotations

import time

_MODULE_START = time.perf_counter()

import asyncio  # noqa: E402
import cProfile  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import pstats  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402


def process_age_seconds() -> float:
    """Seconds since the kernel started this process (10 ms resolution)."""
    with open("/proc/self/stat", encoding="ascii") as handle:
        text = handle.read()
    fields = text[text.rindex(")") + 2 :].split()
    started = int(fields[19]) / os.sysconf("SC_CLK_TCK")
    return time.clock_gettime(time.CLOCK_BOOTTIME) - started


async def phases(db: Path, profiler: cProfile.Profile | None) -> dict[str, float | int]:
    marks: dict[str, float | int] = {}
    clock = time.perf_counter
    t = clock()
    marks["interpreter_start_to_probe_seconds"] = process_age_seconds() - (t - _MODULE_START)
    import lablink.cli  # noqa: F401  (what the scheduler process imports)
    from lablink.clock import SystemClock
    from lablink.logconfig import configure_logging
    from lablink.logstore import open_store
    from lablink.projections.jobs import read_snapshot
    from lablink.projections.reading import reading_views
    from lablink.repository import JobRepository
    from lablink.scheduler.engine import Engine, recovery_lists
    from lablink.scheduler.executor import NoOpExecutor
    from lablink.settings import Settings

    marks["imports_seconds"] = clock() - t
    if profiler is not None:
        profiler.enable()
    t = clock()
    configure_logging("warning", json=True)
    Settings.from_env(data_dir=db.parent, executor="noop")
    marks["settings_and_logging_seconds"] = clock() - t
    t = clock()
    store = open_store(db, background=True)  # as lablink/runtime.py opens it
    marks["open_store_seconds"] = clock() - t

    def snapshot(job_id: str) -> Any:
        with reading_views(store) as views:
            return read_snapshot(views, job_id)

    t = clock()
    jobs = JobRepository(store, snapshots=snapshot)
    engine = Engine(store, SystemClock(), NoOpExecutor(), jobs=jobs)
    with reading_views(store) as views:
        active, unfinished = recovery_lists(views)
    marks["recovery_lists_seconds"] = clock() - t
    marks["active_jobs"] = len(active)
    marks["unfinished_jobs"] = len(unfinished)
    t = clock()
    await engine.open(active, unfinished)
    marks["engine_open_seconds"] = clock() - t
    if profiler is not None:
        profiler.disable()
    marks["process_start_to_engine_ready_seconds"] = process_age_seconds()
    await engine.aclose(grace_seconds=1.0)
    store.close()
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in marks.items()}


def main() -> None:
    db, result = Path(sys.argv[1]), Path(sys.argv[2])
    profile_path = Path(sys.argv[3]) if len(sys.argv) > 3 else None
    profiler = cProfile.Profile() if profile_path is not None else None
    marks = asyncio.run(phases(db, profiler))
    result.write_text(json.dumps(marks, indent=2) + "\n", encoding="utf-8")
    if profiler is not None and profile_path is not None:
        report = io.StringIO()
        stats = pstats.Stats(profiler, stream=report)
        stats.sort_stats("tottime").print_stats(25)
        stats.sort_stats("cumulative").print_stats(25)
        profile_path.write_text(report.getvalue(), encoding="utf-8")


if __name__ == "__main__":
    main()
