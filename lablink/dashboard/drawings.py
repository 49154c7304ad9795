"""The pages' pushed parts (pushed.PageCards) as drawings a process of its own makes: a
``Drawing`` names one of the drawings of draw_main.py and its arguments, plain values that
cross a pipe; draw_main.py is the drawing process, draw_process.py starts it and talks to it.

Drawn on a thread of the engine's own process, the parts of 20 screens held its interpreter
lock while they rendered, and the engine's dispatch p99 paid 20-31 % for it (BENCHMARKS.md,
"Dashboard"). The parts need only the views, the log (a job's state past its snapshot) and
the templates, which another interpreter opens as well as this one, and the few live things
the engine's process knows (the clock, the instruments' last sightings and queues), which
travel with each request (``Live``).

The wire: each frame is a 4-byte big-endian length and that many bytes of msgpack. The
parent sends ``Where`` once, then an ``Ask`` per drawing; the child answers each with one
``Drawn``. End of its stdin: the child exits.
"""

from __future__ import annotations

import sqlite3
import struct
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import IO, Any
from zoneinfo import ZoneInfo

import msgspec
from jinja2 import Environment

from lablink.api.calibration_views import CalibrationRules
from lablink.api.queries import get_job
from lablink.dashboard.rendering import no_token, templates
from lablink.domain.job import JobState, evolve
from lablink.errors import JobNotFound
from lablink.eventstore.sqlite import LogReader
from lablink.instruments.protocol import QueueDepth
from lablink.projections.jobs import read_snapshot

TEMPLATES = Path(__file__).parent / "templates"
LENGTH = struct.Struct(">I")
# One frame's most: a drawing of the jobs list is about 50 KiB.
MOST = 64 * 1024 * 1024

Arg = str | int | float | bool | None


class Drawing(msgspec.Struct, frozen=True, array_like=True):
    """One part drawn: ``DRAWINGS[name](context, *args)``."""

    name: str
    args: tuple[Arg, ...] = ()


class Live(msgspec.Struct, frozen=True):
    """What the engine's process knows now and the log does not: its clock, each
    instrument's last sighting (when, online) and its queue (queued, running)."""

    now: datetime
    sightings: dict[str, tuple[datetime, bool]] = {}
    queues: dict[str, tuple[int, int]] = {}


class Where(msgspec.Struct, frozen=True):
    """What the drawing process opens: the log, the views' file (None: in the log's file),
    and the settings the parts are worked out with."""

    log_path: str
    views_path: str | None
    timezone: str
    calibration_warn_days: float
    require_calibration: bool


class Ask(msgspec.Struct, frozen=True):
    drawings: list[Drawing]
    live: Live


class Drawn(msgspec.Struct, frozen=True):
    """The HTML of each drawing asked, in order; or why they could not be drawn."""

    html: list[str] = []
    error: str | None = None


# -- the drawing process's side ---------------------------------------------------------------


class Instant:
    """A clock stopped at the instant the engine's process asked for the drawing."""

    def __init__(self, now: datetime) -> None:
        self._now = now

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._now.timestamp()


class LoggedStates:
    """A job's state as its events fold: the jobs view's snapshot, then the events past it."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.log = LogReader(conn)

    def get_state(self, job_id: str) -> JobState:
        found = read_snapshot(self.conn, job_id)
        state, version = found if found is not None else (JobState(job_id=job_id), 0)
        for recorded in self.log.read_stream(job_id, after_version=version):
            state = evolve(state, recorded.event)
        if not state.exists or state.status == "deleted":
            raise JobNotFound(job_id)
        return state


class DrawingContext:
    """lablink.api.reads.Reads in the drawing process, for one request: the views as they
    are, the engine's clock and live state as it sent them, and a job read once for all the
    parts of the request."""

    def __init__(
        self,
        reader: sqlite3.Connection,
        where: Where,
        live: Live,
        environment: Environment,
    ) -> None:
        self.reader = reader
        self.where = where
        self.live = live
        self.environment = environment
        self.clock = Instant(live.now)
        self.service = LoggedStates(reader)
        self.zone = ZoneInfo(where.timezone)
        self._jobs: dict[str, dict[str, Any] | None] = {}

    def sightings(self) -> dict[str, tuple[datetime, bool]]:
        return dict(self.live.sightings)

    def queues(self) -> dict[str, QueueDepth]:
        return {eid: QueueDepth(*depth) for eid, depth in self.live.queues.items()}

    def calibration_rules(self) -> CalibrationRules:
        return CalibrationRules(
            now=self.clock.now(),
            zone=self.zone,
            warn_days=self.where.calibration_warn_days,
            require=self.where.require_calibration,
        )

    def job(self, job_id: str) -> dict[str, Any] | None:
        if job_id not in self._jobs:
            self._jobs[job_id] = get_job(self.reader, job_id)
        return self._jobs[job_id]

    def fragment(self, name: str, values: Mapping[str, Any]) -> str:
        """A fragment's template, drawn for every screen: it may not ask for a screen's CSRF
        token (none of the pushed parts holds a form)."""
        template = self.environment.get_template(f"fragments/{name}.html")
        return template.render(csrf_token=no_token, **values)


def environment() -> Environment:
    """The templates as the app's Jinja engine has them (plugin.py)."""
    return templates(TEMPLATES)


def read_frame(source: IO[bytes]) -> bytes | None:
    head = source.read(LENGTH.size)
    if len(head) < LENGTH.size:
        return None
    (size,) = LENGTH.unpack(head)
    if size > MOST:
        raise ValueError(f"a frame of {size} bytes: at most {MOST}")
    body = source.read(size)
    if len(body) < size:
        return None
    return body


def frame(payload: bytes) -> bytes:
    return LENGTH.pack(len(payload)) + payload
