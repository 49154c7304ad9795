"""The drawing process's cost per part (issue 16): the CPU one drawing of a job page's
summary, chart and executions, of the jobs table and of the equipment pages takes, drawn in
this process exactly as the drawing process draws them (draw_main.draw over a
DrawingContext), on a log of N daily jobs with M executions folded into views.db.

The dashboard benchmark measures what the drawings cost the engine under load, which this
machine's noise blurs by ±30 %; this one measures the drawings themselves, in CPU time,
which is what the engine's second core gives them.

    .venv/bin/python -m bench.bench_drawing [--jobs 100 --executions 100000 --rounds 5]

Runs another checkout's drawings with ``PYTHONPATH=<checkout>``.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.bench_dashboard import build
from bench.bench_store import machine_info
from lablink.dashboard.draw_main import draw
from lablink.dashboard.drawings import Drawing, DrawingContext, Live, Where, environment
from lablink.projections.follower import connect_views

console = Console()
RANGE = "24h"


def parts(job_ids: Sequence[str]) -> dict[str, Callable[[int], Drawing]]:
    """Each part, as the n-th screen of 20 different ones asks for it."""
    return {
        "job summary": lambda n: Drawing("job", (job_ids[n], "summary", RANGE, None)),
        "job chart": lambda n: Drawing("job", (job_ids[n], "chart", RANGE, None)),
        "job executions": lambda n: Drawing("job", (job_ids[n], "executions", RANGE, None)),
        "jobs table": lambda n: Drawing("jobs_table", (f"page={n % 5 + 1}", True)),
        "equipment list": lambda n: Drawing("equipment_list"),
        "equipment page": lambda n: Drawing("equipment_detail", ("multimeter_1",)),
    }


def measure(directory: Path, job_ids: list[str], rounds: int, per_round: int) -> dict[str, Any]:
    where = Where(
        log_path=str(directory / "scheduler.db"),
        views_path=str(directory / "views.db"),
        timezone="UTC",
        calibration_warn_days=30.0,
        require_calibration=False,
    )
    reader = connect_views(Path(where.log_path), Path(where.views_path or ""))
    templates = environment()
    figures: dict[str, Any] = {}
    try:
        for name, drawing in parts(job_ids[:20]).items():
            # Warm: the templates compiled, the pages cached, as in a running child.
            live = Live(now=datetime.now(UTC))
            draw(DrawingContext(reader, where, live, templates), [drawing(0)])
            per_round_us: list[float] = []
            size = 0
            for _ in range(rounds):
                gc.collect()
                started = time.process_time()
                for n in range(per_round):
                    context = DrawingContext(reader, where, Live(now=datetime.now(UTC)), templates)
                    size = len(draw(context, [drawing(n % 20)])[0])
                per_round_us.append((time.process_time() - started) / per_round * 1e6)
            figures[name] = {
                "cpu_us_median": round(statistics.median(per_round_us), 1),
                "cpu_us_rounds": [round(x, 1) for x in per_round_us],
                "bytes": size,
            }
    finally:
        reader.close()
    return figures


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--executions", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--per-round", type=int, default=200)
    parser.add_argument("--keep-db", type=Path, help="build here and reuse (two hours)")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-drawing-") as tmp:
        directory = args.keep_db or Path(tmp)
        built = build(directory, args.jobs, args.executions)
        job_ids = [f"job_{index:016x}" for index in range(args.jobs)]
        figures = measure(directory, job_ids, args.rounds, args.per_round)
        info = machine_info(directory)
    result = {"machine": info, "built": built, "parts": figures, "args": vars(args)}
    table = Table(title=f"CPU per drawing, {args.jobs} jobs, {args.executions:,} executions")
    for column in ("part", "CPU µs (median)", "rounds", "bytes"):
        table.add_column(column)
    for name, figure in figures.items():
        table.add_row(
            name,
            f"{figure['cpu_us_median']:,.0f}",
            " · ".join(f"{x:,.0f}" for x in figure["cpu_us_rounds"]),
            f"{figure['bytes']:,}",
        )
    console.print(table)
    if args.output:
        args.output.write_text(json.dumps(result, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
