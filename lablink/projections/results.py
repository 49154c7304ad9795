"""The results view: a job's series, one row per execution that ran to an end.

For a measurement job the row holds the value and unit read; for a state capture the
captured readings and settings (``fields``: ``{"measurements.voltage": {"value", "unit"}}``);
for an acquisition the summary of its captured data (object, rows, sha256, size, status).
Rows exist for the jobs whose ``schedule_type`` yields a series (RESULT_KINDS), whatever
the execution's status: a failed or timed-out point says why the series has a gap.
Executions that never ran (skipped, missed, coalesced) have no row.

The fold reads nothing back in Python. An opened execution's scheduled time waits in
``result_pending`` (the end facts do not carry it); its end moves it into ``results`` with
one ``INSERT ... SELECT`` per row, joined with the job's kind in ``result_jobs``: one
executemany per statement per batch.

A late result (``execution.late_result``, completed) fills the value of a row that ended
without one; the row keeps the execution's status and says ``late``. Retention's
``executions.pruned`` drops the rows the executions view drops (ended before the cut-off).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import msgspec
import sqlite_utils

from lablink.events import (
    ENDED_STATUS,
    ExecutionDataRemoved,
    ExecutionDataStored,
    ExecutionEnded,
    ExecutionLateResult,
    ExecutionQueued,
    ExecutionRequested,
    ExecutionsPruned,
    ExecutionSucceeded,
    JobCreated,
    JobUpdated,
    RecordedEvent,
)
from lablink.projections.base import instant, to_json

# The job types whose executions make a series.
RESULT_KINDS = ("measurement", "state_capture", "acquisition")
COLUMNS = (
    "execution_id",
    "job_id",
    "kind",
    "scheduled_time",
    "started_at",
    "completed_at",
    "status",
    "value",  # JSON text: a number, a string or a boolean as the instrument gave it
    "unit",
    "fields",  # JSON object: {name: {"value": ..., "unit": ...}} (state captures)
    "field_names",  # JSON list of [name, unit]: the fields' signature, for CSV headers
    "data",  # JSON object: the capture's summary (acquisitions)
    "late",
)
_KINDS_SQL = ", ".join(f"'{k}'" for k in RESULT_KINDS)
# The columns an end fact sets; the rest come from the pending row and the job.
_END_COLUMNS = COLUMNS[4:]
_MOVE = (
    f"INSERT INTO results ({', '.join(COLUMNS)})"
    f" SELECT p.execution_id, p.job_id, j.kind, p.scheduled_time,"
    f" {', '.join('?' for _ in _END_COLUMNS)}"
    " FROM result_pending p JOIN result_jobs j ON j.job_id = p.job_id"
    f" WHERE p.execution_id = ? AND j.kind IN ({_KINDS_SQL})"
    " ON CONFLICT(execution_id) DO NOTHING"
)
# An execution opened and ended within one batch (nearly all of them in a rebuild's large
# batches) goes straight to results: its pending row would be written and deleted in the
# same transaction (the rebuild's costliest fold, BENCHMARKS.md "Replay", 2026-12-05).
_DIRECT = (
    f"INSERT INTO results ({', '.join(COLUMNS)})"
    f" SELECT ?, ?, j.kind, ?, {', '.join('?' for _ in _END_COLUMNS)}"
    f" FROM result_jobs j WHERE j.job_id = ? AND j.kind IN ({_KINDS_SQL})"
    " ON CONFLICT(execution_id) DO NOTHING"
)
_LATE = (
    "UPDATE results SET value = ?, unit = ?, fields = ?, field_names = ?, data = ?, late = 1"
    " WHERE execution_id = ? AND status != 'completed' AND late = 0"
)
_DATA_STATUS = (
    "UPDATE results SET data = json_set(data, '$.status', ?)"
    " WHERE execution_id = ? AND data IS NOT NULL"
)


class Extracted(NamedTuple):
    value: str | None
    unit: str | None
    fields: str | None
    field_names: str | None
    data: str | None


_NOTHING = Extracted(None, None, None, None, None)


def extract(result: Mapping[str, Any]) -> Extracted:
    """The series' columns from an execution's result, by its shape: ``value``/``unit``
    (a measurement), ``measurements``/``settings`` (a state capture), ``data`` (a capture)."""
    if not result:
        return _NOTHING
    value = result.get("value")
    unit = result.get("unit")
    fields: dict[str, dict[str, Any]] = {}
    for group in ("measurements", "settings"):
        readings = result.get(group)
        if isinstance(readings, Mapping):
            for name, reading in readings.items():
                if isinstance(reading, Mapping):
                    fields[f"{group}.{name}"] = {
                        "value": reading.get("value"),
                        "unit": _text(reading.get("unit")) or "",
                    }
    data = result.get("data")
    summary: dict[str, Any] | None = None
    if isinstance(data, Mapping):
        # Typed as the API documents them: whatever an agent sent, the answer stays valid.
        summary = {key: _text(data.get(key)) for key in ("object", "file_name", "sha256")}
        summary.update(size=_count(data.get("size")), rows=_count(data.get("rows")))
        summary["status"] = _text(data.get("status"))
    return Extracted(
        value=to_json(value) if value is not None and not isinstance(value, dict | list) else None,
        unit=unit if isinstance(unit, str) else None,
        fields=to_json(fields) if fields else None,
        field_names=to_json([[n, f["unit"]] for n, f in fields.items()]) if fields else None,
        data=to_json(summary) if summary is not None else None,
    )


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class ResultsProjection:
    """Nothing is kept in memory between batches: the pending table is the fold's memory."""

    name = "results"
    tables: tuple[str, ...] = ("results", "result_pending", "result_jobs")

    def create(self, db: sqlite_utils.Database) -> None:
        types: dict[str, Any] = {c: str for c in COLUMNS}
        types["late"] = int
        db.table("results").create(
            types, pk="execution_id", not_null={"late"}, defaults={"late": 0}, if_not_exists=True
        )
        # The series' one order: a job's rows by scheduled time (ties by execution id).
        db.table("results").create_index(
            ["job_id", "scheduled_time", "execution_id"], if_not_exists=True
        )
        # Retention drops rows by their end.
        db.table("results").create_index(["completed_at"], if_not_exists=True)
        db.table("result_pending").create(
            {"execution_id": str, "job_id": str, "scheduled_time": str},
            pk="execution_id",
            if_not_exists=True,
        )
        db.table("result_jobs").create(
            {"job_id": str, "kind": str}, pk="job_id", if_not_exists=True
        )

    def forget(self) -> None:
        """Nothing is kept between batches."""

    def apply(self, conn: sqlite3.Connection, events: Sequence[RecordedEvent]) -> None:
        batch = _Batch(conn)
        for recorded in events:
            event = recorded.event
            if isinstance(event, ExecutionEnded):
                batch.ended(event)
            elif type(event) is ExecutionRequested or type(event) is ExecutionQueued:
                batch.pending[event.execution_id] = (
                    event.job_id,
                    instant(event.scheduled_time),
                )
            elif type(event) is ExecutionLateResult:
                if event.status == "completed":
                    batch.late.append((*extract(event.result), event.execution_id))
            elif isinstance(event, JobCreated | JobUpdated):
                batch.jobs[event.job_id] = event.spec.schedule_type
            elif type(event) is ExecutionDataStored:
                batch.data_status.append(("stored", event.execution_id))
            elif type(event) is ExecutionDataRemoved:
                batch.data_status.append(("removed", event.execution_id))
            elif type(event) is ExecutionsPruned:
                batch.flush()
                conn.execute("DELETE FROM results WHERE completed_at < ?", (instant(event.cutoff),))
        batch.flush()


class _Batch:
    """The statements one batch runs, in the order that keeps each fact after its cause:
    jobs, opened executions, ends, late results, data statuses."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.jobs: dict[str, str] = {}
        # Executions opened in this batch (an execution opens once: requested or queued).
        self.pending: dict[str, tuple[str, str | None]] = {}
        self.direct: list[tuple[Any, ...]] = []
        self.moved: list[tuple[Any, ...]] = []
        self.late: list[tuple[Any, ...]] = []
        self.data_status: list[tuple[str, str]] = []

    def ended(self, event: ExecutionEnded) -> None:
        extracted = extract(event.result) if type(event) is ExecutionSucceeded else _NOTHING
        end = (
            instant(event.started_at),
            instant(event.completed_at),
            ENDED_STATUS[type(event)],
            *extracted,
            0,
        )
        opened = self.pending.pop(event.execution_id, None)
        if opened is None:
            self.moved.append((*end, event.execution_id))
        else:
            job_id, scheduled_time = opened
            self.direct.append((event.execution_id, job_id, scheduled_time, *end, job_id))

    def flush(self) -> None:
        conn = self.conn
        if self.jobs:
            conn.executemany(
                "INSERT INTO result_jobs (job_id, kind) VALUES (?, ?)"
                " ON CONFLICT(job_id) DO UPDATE SET kind = excluded.kind",
                list(self.jobs.items()),
            )
        if self.pending:
            conn.executemany(
                "INSERT INTO result_pending (execution_id, job_id, scheduled_time)"
                " VALUES (?, ?, ?) ON CONFLICT(execution_id) DO UPDATE SET"
                " job_id = excluded.job_id, scheduled_time = excluded.scheduled_time",
                [(execution_id, *opened) for execution_id, opened in self.pending.items()],
            )
        if self.direct:
            conn.executemany(_DIRECT, self.direct)
        if self.moved:
            conn.executemany(_MOVE, self.moved)
            conn.executemany(
                "DELETE FROM result_pending WHERE execution_id = ?",
                [(row[-1],) for row in self.moved],
            )
        if self.late:
            conn.executemany(_LATE, self.late)
        if self.data_status:
            conn.executemany(_DATA_STATUS, self.data_status)
        self.jobs.clear()
        self.pending.clear()
        self.direct.clear()
        self.moved.clear()
        self.late.clear()
        self.data_status.clear()


# -- reads (this module owns the results, result_pending and result_jobs tables) -------------

_SELECT = f"SELECT {', '.join(COLUMNS)} FROM results"
_decode = msgspec.json.decode


def job_known(conn: sqlite3.Connection, job_id: str) -> bool:
    """Was the job ever defined (deleted jobs keep their series)?"""
    row = conn.execute("SELECT 1 FROM result_jobs WHERE job_id = ?", (job_id,)).fetchone()
    return row is not None


def series_shape(
    conn: sqlite3.Connection, job_id: str, since: datetime | None, until: datetime | None
) -> tuple[list[str], list[tuple[str, str]]]:
    """The kinds of the rows in range, and the state fields' (name, unit) in the order they
    first appear: what a CSV header needs before the first row is written."""
    where, args = _range(job_id, since, until)
    kinds = [
        str(k) for (k,) in conn.execute(f"SELECT DISTINCT kind FROM results WHERE {where}", args)
    ]
    names: dict[tuple[str, str], None] = {}
    for (signature,) in conn.execute(
        f"SELECT DISTINCT field_names FROM results WHERE {where} AND field_names IS NOT NULL",
        args,
    ):
        for name, unit in _decode(signature):
            names.setdefault((name, unit), None)
    return kinds, list(names)


def series_rows(
    conn: sqlite3.Connection,
    job_id: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    after: tuple[str, str] | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Oldest first by scheduled time (ties by execution id), from after ``after`` (the
    (scheduled_time, execution_id) of the last row of the previous page); ``since``
    inclusive, ``until`` exclusive. JSON columns decoded."""
    where, args = _range(job_id, since, until)
    if after is not None:
        where += " AND (scheduled_time, execution_id) > (?, ?)"
        args = [*args, *after]
    cursor = conn.execute(
        f"{_SELECT} WHERE {where} ORDER BY scheduled_time, execution_id LIMIT ?", [*args, limit]
    )
    return [_row(r) for r in cursor]


def page_end(
    conn: sqlite3.Connection,
    job_id: str,
    *,
    since: datetime | None,
    until: datetime | None,
    after: tuple[str, str] | None,
    limit: int,
) -> tuple[str, str] | None:
    """(scheduled_time, execution_id) of the ``limit``-th row from ``after``, if more rows
    follow it: the next page's cursor, known before the page is written."""
    where, args = _range(job_id, since, until)
    if after is not None:
        where += " AND (scheduled_time, execution_id) > (?, ?)"
        args = [*args, *after]
    found = conn.execute(
        f"SELECT scheduled_time, execution_id FROM results WHERE {where}"
        " ORDER BY scheduled_time, execution_id LIMIT 2 OFFSET ?",
        [*args, limit - 1],
    ).fetchall()
    return (found[0][0], found[0][1]) if len(found) == 2 else None


def iter_series(
    conn: sqlite3.Connection,
    job_id: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    after: tuple[str, str] | None = None,
    chunk: int = 2000,
) -> Iterator[list[dict[str, Any]]]:
    """The whole range in chunks, each a fresh keyset query (no statement stays open)."""
    while rows := series_rows(conn, job_id, since=since, until=until, after=after, limit=chunk):
        yield rows
        if len(rows) < chunk:
            return
        after = (rows[-1]["scheduled_time"], rows[-1]["execution_id"])


def _range(job_id: str, since: datetime | None, until: datetime | None) -> tuple[str, list[Any]]:
    where = "job_id = ?"
    args: list[Any] = [job_id]
    if since is not None:
        where += " AND scheduled_time >= ?"
        args.append(instant(since))
    if until is not None:
        where += " AND scheduled_time < ?"
        args.append(instant(until))
    return where, args


def _row(values: Sequence[Any]) -> dict[str, Any]:
    row = dict(zip(COLUMNS, values, strict=True))
    for column in ("value", "fields", "data"):
        text = row[column]
        row[column] = _decode(text) if text is not None else None
    del row["field_names"]
    row["late"] = bool(row["late"])
    return row


# -- a chart's envelope: what a plot of the series needs, bucketed in SQL ---------------------

# Below this many rows in range, the rows themselves are read (as series_rows gives them).
FEW_ROWS = 2_000
# A value the chart draws: a JSON number (text, booleans and null are not).
_NUMBER = "json_type(value) IN ('integer', 'real')"


class Extreme(NamedTuple):
    """A numeric measurement of the series, as a chart draws it."""

    scheduled_time: str
    execution_id: str
    value: float
    unit: str | None


class Envelope(NamedTuple):
    """A measurement series over a window. ``rows``: every row in range (series_rows's
    dicts), when there are no more than ``few``; otherwise None, and ``extremes`` holds each
    time bucket's lowest and highest numeric row (in time order, one when they are the same
    row), with the range's ``numeric`` values' count, the ``skipped`` non-numeric values, the
    ``units`` seen, the ``first`` numeric row and the ``newest`` ones (newest first)."""

    rows: list[dict[str, Any]] | None
    extremes: list[Extreme]
    numeric: int
    skipped: int
    units: list[str]
    first: Extreme | None
    newest: list[Extreme]


def bucket_edges(since: datetime, until: datetime, buckets: int) -> list[datetime]:
    """The ``buckets + 1`` edges of equal time buckets over [since, until), to the microsecond
    (bucket i is [edge i, edge i+1))."""
    span = (until - since) // timedelta(microseconds=1)
    return [since + timedelta(microseconds=span * i // buckets) for i in range(buckets + 1)]


def _extreme(row: tuple[str, str, Any, str | None]) -> Extreme:
    at, execution_id, value, unit = row
    return Extreme(at, execution_id, float(value), unit)  # Python's parse: correctly rounded


def series_envelope(
    conn: sqlite3.Connection,
    job_id: str,
    since: datetime,
    until: datetime,
    buckets: int,
    *,
    few: int = FEW_ROWS,
    newest: int = 0,
) -> Envelope:
    """A measurement job's series over [since, until) for a plot ``buckets`` columns wide:
    at most 2 × ``buckets`` + ``newest`` rows leave SQLite, whatever the range holds."""
    where, args = _range(job_id, since, until)
    (total,) = conn.execute(f"SELECT count(*) FROM results WHERE {where}", args).fetchone()
    if total <= few:
        return Envelope(
            series_rows(conn, job_id, since=since, until=until, limit=max(few, 1)),
            [],
            0,
            0,
            [],
            None,
            [],
        )
    measured = f"{where} AND kind = 'measurement'"
    edges = [instant(e) for e in bucket_edges(since, until, max(buckets, 1))]
    values = ", ".join("(?, ?, ?)" for _ in edges[1:])
    bounds = [x for i in range(len(edges) - 1) for x in (i, edges[i], edges[i + 1])]
    # One index range per bucket (a VALUES list of the buckets' bounds, joined); a query with
    # one min() (or max()) takes its other columns from the row holding it (bare columns).
    points = (
        "SELECT e.column1 AS b, r.scheduled_time AS t, r.execution_id AS id, r.unit AS unit,"
        " r.value AS raw,"
        " CASE WHEN json_type(r.value) IN ('integer', 'real') THEN CAST(r.value AS REAL) END"
        " AS v, (r.value IS NOT NULL AND json_type(r.value) NOT IN ('integer', 'real', 'null'))"
        f" AS o FROM (VALUES {values}) AS e JOIN results r ON r.job_id = ?"
        " AND r.scheduled_time >= e.column2 AND r.scheduled_time < e.column3"
        " WHERE r.kind = 'measurement'"
    )
    found = conn.execute(
        f"SELECT b, min(v), t, id, unit, count(v), sum(o), raw FROM ({points}) GROUP BY b"
        f" UNION ALL SELECT b, max(v), t, id, unit, NULL, NULL, raw FROM ({points}) GROUP BY b",
        [*bounds, job_id, *bounds, job_id],
    ).fetchall()
    count = sum(r[5] or 0 for r in found)
    skipped = sum(r[6] or 0 for r in found)
    by_bucket: dict[int, dict[tuple[str, str], Extreme]] = {}
    for b, value, at, execution_id, unit, _, _, raw in found:
        if value is not None:
            # The value as recorded, parsed by Python: SQLite's text-to-real is not always
            # correctly rounded (1 ulp off at 5e-302), and the row ranks the same either way.
            extreme = Extreme(at, execution_id, float(raw), unit)
            by_bucket.setdefault(b, {})[(at, execution_id)] = extreme
    extremes = [extreme for b in sorted(by_bucket) for _, extreme in sorted(by_bucket[b].items())]
    units = sorted(
        str(u)
        for (u,) in conn.execute(
            f"SELECT DISTINCT unit FROM results WHERE {measured} AND {_NUMBER}"
            " AND unit IS NOT NULL AND unit != ''",
            args,
        )
    )
    pick = (
        f"SELECT scheduled_time, execution_id, value, unit FROM results"
        f" WHERE {measured} AND {_NUMBER}"
    )
    first = conn.execute(f"{pick} ORDER BY scheduled_time, execution_id LIMIT 1", args).fetchone()
    latest = conn.execute(
        f"{pick} ORDER BY scheduled_time DESC, execution_id DESC LIMIT ?", [*args, newest]
    ).fetchall()
    return Envelope(
        None,
        extremes,
        count,
        skipped,
        units,
        _extreme(first) if first is not None else None,
        [_extreme(row) for row in latest],
    )


def series_mark(conn: sqlite3.Connection, job_id: str) -> tuple[Any, ...] | None:
    """The job's newest row (its time, execution, status, value, late): one index lookup that
    changes when an execution of the job ends (or its late result arrives)."""
    row = conn.execute(
        "SELECT scheduled_time, execution_id, status, value, late FROM results"
        " WHERE job_id = ? ORDER BY scheduled_time DESC, execution_id DESC LIMIT 1",
        (job_id,),
    ).fetchone()
    return tuple(row) if row is not None else None
