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
from datetime import datetime
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
                batch.pending.append(
                    (event.execution_id, event.job_id, instant(event.scheduled_time))
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
        self.pending: list[tuple[str, str, str | None]] = []
        self.moved: list[tuple[Any, ...]] = []
        self.late: list[tuple[Any, ...]] = []
        self.data_status: list[tuple[str, str]] = []

    def ended(self, event: ExecutionEnded) -> None:
        extracted = extract(event.result) if type(event) is ExecutionSucceeded else _NOTHING
        self.moved.append(
            (
                instant(event.started_at),
                instant(event.completed_at),
                ENDED_STATUS[type(event)],
                *extracted,
                0,
                event.execution_id,
            )
        )

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
                self.pending,
            )
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
