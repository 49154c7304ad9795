"""The drawing process (drawings.py has the wire; draw_process.py starts it): the views, the
log and the templates opened once, then each ``Ask`` drawn and answered.

Its own module: it names the pages' drawings, and the pages name the drawer that starts it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

import msgspec

from lablink.dashboard.drawings import (
    Ask,
    Drawing,
    DrawingContext,
    Drawn,
    Where,
    environment,
    frame,
    read_frame,
)
from lablink.dashboard.equipment_pages import draw_equipment_detail, draw_equipment_list
from lablink.dashboard.job_detail import draw_job_part
from lablink.dashboard.jobs_list import draw_jobs_table
from lablink.projections.follower import connect_views

# How much less the drawing process asks of the CPU than the scheduler (nice(1)): under
# contention it gets about a tenth of what a process at the default priority gets.
NICE = 10

# Each drawing a page's card may name (drawings.Drawing).
DRAWINGS: dict[str, Callable[..., str]] = {
    "job": draw_job_part,
    "jobs_table": draw_jobs_table,
    "equipment_list": draw_equipment_list,
    "equipment_detail": draw_equipment_detail,
}


def draw(
    context: DrawingContext,
    drawings: list[Drawing],
    found: Mapping[str, Callable[..., str]] = DRAWINGS,
) -> list[str]:
    """Each drawing, each statement a read of its own (autocommit), as the request path
    reads: a read transaction held across whole drawings, 20 a second, would hold back the
    log's checkpoints for as long as each lasts."""
    unknown = [d.name for d in drawings if d.name not in found]
    if unknown:
        raise ValueError(f"no drawing is named {unknown[0]!r}: one of {', '.join(found)}")
    return [found[d.name](context, *d.args) for d in drawings]


def main() -> None:
    """The drawing process: ``Where`` on stdin, then an ``Ask`` per drawing, each answered
    with a ``Drawn`` on stdout; it ends with its stdin."""
    # Below the scheduler's processes: a core the engine wants is the engine's.
    os.nice(NICE)
    source = sys.stdin.buffer
    # The answers have stdout to themselves: anything a library prints goes to stderr.
    sink = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    first = read_frame(source)
    if first is None:
        return
    where = msgspec.msgpack.decode(first, type=Where)
    views = Path(where.views_path) if where.views_path is not None else None
    reader = connect_views(Path(where.log_path), views)
    templates = environment()
    asks = msgspec.msgpack.Decoder(Ask)
    encoder = msgspec.msgpack.Encoder()
    try:
        while (body := read_frame(source)) is not None:
            ask = asks.decode(body)
            context = DrawingContext(reader, where, ask.live, templates)
            try:
                answer = Drawn(html=draw(context, ask.drawings))
            except Exception as exc:  # a drawing's failure is the asker's to report
                answer = Drawn(error=f"{type(exc).__name__}: {exc}")
            sink.write(frame(encoder.encode(answer)))
            sink.flush()
    finally:
        reader.close()
