"""The jobs view: one row per live job, every guide field plus status, version and next run.

The row's state column is the job aggregate's own state, folded with the domain's evolve, so
the view can never disagree with what the command side decides from.

The fold is incremental. Each job it touched keeps its state in memory between batches
(``_Job``, bounded by ``MAX_JOBS_IN_MEMORY``), so a batch reads no row back for a job it
already knows. A definition (created, updated, paused, resumed, completed) renders the row
whole; a batch with only execution facts for a job writes just the columns a fire changes,
in one UPDATE per job, and re-assembles the stored API view from the text kept around the
four values a fire changes (``_ViewText``) rather than rendering and encoding it again.
"""

from __future__ import annotations

import functools
import itertools
import json
import sqlite3
from collections.abc import Generator, Sequence
from datetime import datetime
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin
from zoneinfo import ZoneInfo

import msgspec
import sqlite_utils

from lablink.domain.job import JobState, evolve
from lablink.domain.requests import FIELD_ORDER
from lablink.events import (
    JobCompleted,
    JobCreated,
    JobDeleted,
    JobEvent,
    JobPaused,
    JobResumed,
    JobSpec,
    JobUpdated,
    RecordedEvent,
)
from lablink.projections.base import Where, instant, to_json
from lablink.projections.continuity import Continuity
from lablink.projections.views import iso

# The spec's fields, each a column, in the guide's order (the order the API shows them).
SPEC_COLUMNS: tuple[str, ...] = tuple(f for f in FIELD_ORDER if f in JobSpec.__struct_fields__)


def _kinds(column: str) -> set[Any]:
    """The types a spec field holds, None aside (``float | None`` -> {float})."""
    kind = _SPEC_TYPES[column]
    kinds = get_args(kind) if get_origin(kind) in (Union, UnionType) else (kind,)
    return {get_origin(k) or k for k in kinds} - {type(None)}


_SPEC_TYPES = {field.name: field.type for field in msgspec.structs.fields(JobSpec)}
# Stored as JSON text (parameters, tags) and as UTC instants (run_date, start_date, end_date).
_SPEC_JSON = frozenset(c for c in SPEC_COLUMNS if _kinds(c) & {dict, tuple, list})
_SPEC_INSTANTS = frozenset(c for c in SPEC_COLUMNS if _kinds(c) == {datetime})
COLUMNS = (
    "job_id",
    *SPEC_COLUMNS,
    "enabled",
    "status",
    "version",
    "created_by",
    "created_at",
    "updated_at",
    "next_run_time",
    "last_fire_time",
    "execution_count",
    "running_count",
    "queued_count",
    "parameters_check",
    "state",
    "view",
)
# How many jobs the fold keeps between batches, the least recently touched let go first: one
# it no longer holds is read back from its row (a SELECT, a decode: about 10 µs) when its next
# fact comes. A job kept costs about 3.6 KB (its state and its view's text), so this bounds
# the memory near 90 MB; a lab of 100,000 jobs keeps the busiest quarter.
MAX_JOBS_IN_MEMORY = 25_000

_DEFINITIONS = frozenset((JobCreated, JobUpdated, JobPaused, JobResumed, JobCompleted))
_JOB_EVENTS = frozenset(JobEvent)
_state_decoder = msgspec.json.Decoder(JobState)

_UPSERT = (
    f"INSERT INTO jobs ({', '.join(COLUMNS)}) VALUES ({', '.join('?' for _ in COLUMNS)})"
    f" ON CONFLICT(job_id) DO UPDATE SET"
    f" {', '.join(f'{c} = excluded.{c}' for c in COLUMNS if c != 'job_id')}"
)
# What a fire changes: the schedule, the counts, the version, the state and the view.
_FIRED = (
    "UPDATE jobs SET version = ?, next_run_time = ?, last_fire_time = ?, execution_count = ?,"
    " running_count = ?, queued_count = ?, state = ?, view = ? WHERE job_id = ?"
)
_LOAD = "SELECT state, version, updated_at, view FROM jobs WHERE job_id = ?"


@functools.cache
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def _shown(value: datetime | None, zone: ZoneInfo) -> str | None:
    """An instant as the API shows a job's: ISO 8601 in the job's zone (``views.iso``)."""
    return None if value is None else value.astimezone(zone).isoformat()


_VERSION, _NEXT_RUN = ',"version":', ',"next_run_time":'
_COUNT, _RUNNING = ',"execution_count":', ',"running_executions":'


class _ViewText:
    """A job's API view as text, cut around the four values a fire changes (version, next
    run, execution count, running executions), so that a fire assembles it from strings.

    Measured on a loaded two-core machine against the alternatives: patching the stored text
    with SQLite's ``json_set`` costs about 9 µs a row (SQLite parses and writes the whole view
    again), encoding a kept dict with msgspec about 4 µs, this under 1 µs.
    """

    __slots__ = ("head", "middle", "tail")

    def __init__(self, text: str) -> None:
        # A view ends with these keys, in this order, and none of the values from "version"
        # on is an object; a JSON string never holds an unescaped quote, so the last
        # occurrence of each key in the text is the view's own.
        version = text.rindex(_VERSION) + len(_VERSION)
        next_run = text.rindex(_NEXT_RUN) + len(_NEXT_RUN)
        count = text.rindex(_COUNT) + len(_COUNT)
        running = text.rindex(_RUNNING) + len(_RUNNING)
        self.head = text[:version]
        self.middle = text[text.index(",", version) : next_run]
        self.tail = text[text.index(",", count) : running]

    def text(self, version: int, next_run: str | None, count: int, running: int) -> str:
        """The view with these values, exactly as msgspec encodes it (ints as ``str`` writes
        them; an ISO instant needs no escapes)."""
        shown = "null" if next_run is None else f'"{next_run}"'
        return f"{self.head}{version}{self.middle}{shown}{_COUNT}{count}{self.tail}{running}}}"


class _Job:
    """What the fold keeps of one job between batches."""

    __slots__ = (
        "next_run",
        "schedule",
        "shown_next_run",
        "state",
        "updated_at",
        "version",
        "view",
    )

    def __init__(
        self, state: JobState, version: int, updated_at: str | None, view: _ViewText | None
    ) -> None:
        self.state = state
        self.version = version
        self.updated_at = updated_at
        self.view = view  # None until the row is rendered whole
        # The inputs of the next fire time it was last computed from (None: never), and the
        # result stored and shown: a start or an end of a run does not move the schedule.
        self.schedule: tuple[Any, ...] | None = None
        self.next_run: str | None = None
        self.shown_next_run: str | None = None

    def plan(self) -> None:
        state = self.state
        schedule = (
            state.spec,
            state.anchor,
            state.status,
            state.rescheduled_at,
            state.last_fire_time,
        )
        if schedule != self.schedule:
            assert state.spec is not None
            when = state.next_fire_time()
            self.next_run = instant(when)
            self.shown_next_run = _shown(when, _zone(state.spec.timezone))
            self.schedule = schedule

    def fired(self) -> tuple[Any, ...]:
        """The arguments of ``_FIRED``."""
        self.plan()
        state = self.state
        assert self.view is not None
        running = len(state.running) + len(state.pending)
        return (
            self.version,
            self.next_run,
            instant(state.last_fire_time),
            state.counted_runs,
            running,
            len(state.queued),
            to_json(state),
            self.view.text(self.version, self.shown_next_run, state.counted_runs, running),
            state.job_id,
        )

    def whole(self) -> tuple[Any, ...]:
        """The row in COLUMNS order, its API view rendered from the state itself."""
        self.plan()
        state = self.state
        spec = state.spec
        assert spec is not None
        zone = _zone(spec.timezone)
        values: list[Any] = [state.job_id]
        view: dict[str, Any] = {"job_id": state.job_id}
        for column in SPEC_COLUMNS:
            value: Any = getattr(spec, column)
            if column in _SPEC_JSON:
                values.append(to_json(value))
            elif column in _SPEC_INSTANTS:
                values.append(instant(value))
                value = _shown(value, zone)
            else:
                values.append(value)
            view[column] = value
        running = len(state.running) + len(state.pending)
        values += (
            int(state.enabled),
            state.status,
            self.version,
            state.created_by,
            instant(state.created_at),
            self.updated_at,
            self.next_run,
            instant(state.last_fire_time),
            state.counted_runs,
            running,
            len(state.queued),
            state.parameters_check,
            to_json(state),
        )
        view.update(
            enabled=state.enabled,
            status=state.status,
            version=self.version,
            created_by=state.created_by,
            created_at=_shown(state.created_at, zone),
            updated_at=iso(self.updated_at, zone),
            next_run_time=self.shown_next_run,
            execution_count=state.counted_runs,
            parameters_check=state.parameters_check,
            running_executions=running,
        )
        text = to_json(view)
        self.view = _ViewText(text)
        values.append(text)
        return tuple(values)


class JobsProjection:
    name = "jobs"
    tables: tuple[str, ...] = ("jobs",)

    def __init__(self) -> None:
        self._jobs: dict[str, _Job] = {}
        self._continuity = Continuity()

    def create(self, db: sqlite_utils.Database) -> None:
        types: dict[str, Any] = {c: str for c in COLUMNS}
        for c in SPEC_COLUMNS:
            if _kinds(c) == {float}:
                types[c] = float
            elif _kinds(c) <= {int, bool}:
                types[c] = int
        for c in ("enabled", "version", "execution_count", "running_count", "queued_count"):
            types[c] = int
        db.table("jobs").create(types, pk="job_id", if_not_exists=True)
        for columns in (
            # Covers the start's plan (active jobs and their next run) and the next to fire:
            # without it the start read every row of the table (0.65 s of 1.8 s with
            # 100,000 jobs). It replaces the plain next_run_time index (a fire updates it).
            ["status", "next_run_time", "job_id"],
            ["equipment_id"],
            ["schedule_type"],
            ["enabled"],
            ["running_count"],
            ["queued_count"],  # with running_count: the executions a start must recover
            ["created_at", "job_id"],
        ):
            db.table("jobs").create_index(columns, if_not_exists=True)

    def forget(self) -> None:
        """Drop the states kept in memory: the next batch reads its jobs from the table."""
        self._jobs.clear()
        self._continuity.reset()

    def apply(self, conn: sqlite3.Connection, events: Sequence[RecordedEvent]) -> None:
        if not events:
            return
        if not self._continuity.holds(conn, events):
            self.forget()
        jobs = self._jobs
        touched: dict[str, _Job] = {}
        defined: set[str] = set()
        deleted: set[str] = set()
        for recorded in events:
            event = recorded.event
            kind = type(event)
            if kind not in _JOB_EVENTS:
                continue
            # Every job event has a job id: the membership test above is what mypy misses.
            job_id: str = event.job_id  # type: ignore[union-attr,assignment]
            if kind is JobDeleted:
                jobs.pop(job_id, None)
                touched.pop(job_id, None)
                defined.discard(job_id)
                deleted.add(job_id)
                continue
            job = touched.get(job_id)
            if job is None:
                if kind is JobCreated:
                    job = _Job(JobState(job_id=job_id), 0, None, None)
                elif job_id in deleted:
                    continue  # execution facts of a job deleted earlier in this batch
                else:
                    job = jobs.pop(job_id, None) or self._load(conn, job_id)
                    if job is None:
                        continue  # execution facts of a job deleted in an earlier batch
                touched[job_id] = job
            job.state = evolve(job.state, event)
            job.version = recorded.version
            if kind in _DEFINITIONS:
                job.updated_at = instant(recorded.occurred_at)
                defined.add(job_id)
        if deleted:
            conn.executemany("DELETE FROM jobs WHERE job_id = ?", [(j,) for j in deleted])
        if defined:
            conn.executemany(_UPSERT, [touched[j].whole() for j in defined])
        fired = [job.fired() for job_id, job in touched.items() if job_id not in defined]
        if fired:
            conn.executemany(_FIRED, fired)
        # Most recently touched last: the oldest are let go first.
        jobs.update(touched)
        if len(jobs) > MAX_JOBS_IN_MEMORY:
            for job_id in list(itertools.islice(jobs, len(jobs) - MAX_JOBS_IN_MEMORY)):
                del jobs[job_id]
        self._continuity.folded(conn, events)

    @staticmethod
    def _load(conn: sqlite3.Connection, job_id: str) -> _Job | None:
        row = conn.execute(_LOAD, (job_id,)).fetchone()
        if row is None:
            return None
        return _Job(_state_decoder.decode(row[0]), int(row[1]), row[2], _ViewText(row[3]))


# -- reads (this module owns the jobs table) ------------------------------------------------


def get_job(conn: sqlite3.Connection, job_id: str) -> dict[str, Any] | None:
    """The job as the API shows it (rendered when folded), or None."""
    row = conn.execute("SELECT view FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
    return json.loads(row[0]) if row else None


JobOrder = Literal["created", "next_run", "name"]
# job_id last in each: a stable order, so that the pages of a listing never overlap.
_ORDERS: dict[str, str] = {
    "created": "created_at, job_id",
    # Stored as UTC instants of one width: text order is time order.
    "next_run": "next_run_time IS NULL, next_run_time, job_id",
    "name": "name COLLATE NOCASE, job_id",
}


def list_job_views(
    conn: sqlite3.Connection,
    *,
    enabled: bool | None = None,
    schedule_type: str | None = None,
    equipment_id: str | None = None,
    tag: str | None = None,
    search: str | None = None,
    status: str | None = None,
    trigger_type: str | None = None,
    anywhere: str | None = None,
    order: JobOrder = "created",
    limit: int = 1000,
    offset: int = 0,
) -> tuple[int, list[str]]:
    """(total matching, the page as the jobs' rendered JSON views).

    ``search`` is a substring of the name or description (the API's); ``anywhere`` also
    finds it in the equipment id or a tag (the dashboard's one search box). ``order``:
    oldest first (the API's), soonest next run first (jobs without one last), or by name."""
    where = Where()
    where.equals("enabled", int(enabled) if enabled is not None else None)
    where.equals("schedule_type", schedule_type).equals("equipment_id", equipment_id)
    where.equals("status", status).equals("trigger_type", trigger_type)
    if tag is not None:
        where.add("EXISTS (SELECT 1 FROM json_each(jobs.tags) WHERE value = ?)", tag)
    if search:
        pattern = _like(search)
        where.add("(name LIKE ? ESCAPE '\\' OR description LIKE ? ESCAPE '\\')", pattern, pattern)
    if anywhere:
        pattern = _like(anywhere)
        where.add(
            "(name LIKE ? ESCAPE '\\' OR description LIKE ? ESCAPE '\\'"
            " OR equipment_id LIKE ? ESCAPE '\\'"
            " OR EXISTS (SELECT 1 FROM json_each(jobs.tags) WHERE value LIKE ? ESCAPE '\\'))",
            *[pattern] * 4,
        )
    (total,) = conn.execute(f"SELECT COUNT(*) FROM jobs{where}", where.args).fetchone()
    # The page's ids first, then their views: sorting the views themselves (about 1 KB each)
    # read every matching row's whole view, 17 ms of 18 for a page of 10,000 jobs by next run.
    page = [
        row[0]
        for row in conn.execute(
            f"SELECT job_id FROM jobs{where} ORDER BY {_ORDERS[order]} LIMIT ? OFFSET ?",
            [*where.args, limit, offset],
        )
    ]
    views = [
        row[0]
        for row in conn.execute(
            "SELECT jobs.view FROM json_each(?) AS page JOIN jobs ON jobs.job_id = page.value"
            " ORDER BY page.key",
            (json.dumps(page),),
        )
    ]
    return int(total), views


def _like(text: str) -> str:
    """A LIKE pattern finding ``text`` anywhere, its wildcards taken literally."""
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def schedule_of(conn: sqlite3.Connection, job_id: str) -> tuple[str | None, str] | None:
    """(next run time as stored, time zone) of the job, or None."""
    row = conn.execute(
        "SELECT next_run_time, timezone FROM jobs WHERE job_id = ?", (job_id,)
    ).fetchone()
    return (row[0], row[1]) if row else None


def next_to_fire(conn: sqlite3.Connection, limit: int = 10) -> list[tuple[str, str, str, str]]:
    """(job id, name, next run time, time zone) of the next active jobs to fire."""
    return conn.execute(
        "SELECT job_id, name, next_run_time, timezone FROM jobs"
        " WHERE status = 'active' AND next_run_time IS NOT NULL"
        " ORDER BY next_run_time LIMIT ?",
        (limit,),
    ).fetchall()


def schedule_types(conn: sqlite3.Connection, job_ids: Sequence[str]) -> dict[str, str]:
    """The schedule type of each of ``job_ids`` the view holds (a deleted job is gone)."""
    found: dict[str, str] = {}
    ids = list(job_ids)
    for start in range(0, len(ids), 500):  # under SQLite's limit on bound parameters
        chunk = ids[start : start + 500]
        marks = ", ".join("?" * len(chunk))
        found.update(
            conn.execute(
                f"SELECT job_id, schedule_type FROM jobs WHERE job_id IN ({marks})", chunk
            ).fetchall()
        )
    return found


def active_schedules(conn: sqlite3.Connection) -> list[tuple[str, str | None]]:
    """(job id, next run time as stored) of every active job."""
    return conn.execute("SELECT job_id, next_run_time FROM jobs WHERE status = 'active'").fetchall()


def with_unfinished(conn: sqlite3.Connection) -> list[str]:
    """Ids of the jobs with executions running or queued."""
    return [
        r[0]
        for r in conn.execute("SELECT job_id FROM jobs WHERE running_count > 0 OR queued_count > 0")
    ]


def read_snapshot(conn: sqlite3.Connection, job_id: str) -> tuple[JobState, int] | None:
    """The job aggregate's own fold as the view stored it, with the version it reflects.

    A starting point for loading the aggregate without folding a long stream: the caller
    reads only the events past this version, and an append from a stale one fails cleanly.
    """
    row = conn.execute("SELECT state, version FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
    if row is None:
        return None
    return _state_decoder.decode(row[0]), int(row[1])


def due_by(
    conn: sqlite3.Connection, until: datetime
) -> Generator[tuple[str, JobState], None, None]:
    """(job id, state) of each active job whose next run is due by ``until``, soonest first
    (the index on status and next run), decoded one at a time as the caller reads on: a
    caller that needs only the first few fires reads only the first few jobs."""
    rows = conn.execute(
        "SELECT job_id, state FROM jobs WHERE status = 'active' AND next_run_time IS NOT NULL"
        " AND next_run_time <= ? ORDER BY next_run_time, job_id",
        (instant(until),),
    )
    try:
        for job_id, state in rows:
            yield job_id, _state_decoder.decode(state)
    finally:
        # A reader that stops early ends the read here, not when the cursor is collected.
        rows.close()


def count_due_by(conn: sqlite3.Connection, until: datetime) -> int:
    """How many active jobs have their next run due by ``until`` (the index alone)."""
    (count,) = conn.execute(
        "SELECT COUNT(*) FROM jobs WHERE status = 'active' AND next_run_time IS NOT NULL"
        " AND next_run_time <= ?",
        (instant(until),),
    ).fetchone()
    return int(count)


def paused_states(conn: sqlite3.Connection) -> list[tuple[str, JobState]]:
    """(job id, state) of every paused job (their next run is not stored: a paused job does
    not fire)."""
    rows = conn.execute("SELECT job_id, state FROM jobs WHERE status = 'paused' ORDER BY job_id")
    return [(job_id, _state_decoder.decode(state)) for job_id, state in rows]
