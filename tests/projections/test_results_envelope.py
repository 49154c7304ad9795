"""The chart's envelope of a series (``series_envelope``): per time bucket the rows holding
the lowest and the highest numeric value, bucketed by SQLite, checked against a brute-force
computation over the same rows; the few-rows fallback; and how many rows reach Python."""

from __future__ import annotations

import bisect
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import sqlite_utils
from hypothesis import given, settings
from hypothesis import strategies as st

from lablink.dashboard import chart as charts
from lablink.projections.base import instant
from lablink.projections.results import Envelope, ResultsProjection, series_envelope

SINCE = datetime(2026, 3, 1, tzinfo=UTC)
UNTIL = SINCE + timedelta(hours=1)


def results_db() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:")
    ResultsProjection().create(sqlite_utils.Database(conn))
    return conn


def insert(conn: sqlite3.Connection, rows: list[tuple[str, str, datetime, Any, str]]) -> None:
    conn.executemany(
        "INSERT INTO results (execution_id, job_id, kind, scheduled_time, value, unit, late)"
        " VALUES (?, ?, 'measurement', ?, ?, ?, 0)",
        [
            (e, j, instant(at), None if v is None else msgspec.json.encode(v).decode(), u)
            for e, j, at, v, u in rows
        ],
    )


VALUES = st.one_of(
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False),
    st.integers(min_value=-1000, max_value=1000),
    st.sampled_from(["OK", True, False, None]),
)


@settings(max_examples=150, deadline=None)
@given(
    # Seconds into the hour: few distinct ones, so many rows share a timestamp.
    series=st.lists(
        st.tuples(st.integers(min_value=-60, max_value=3660), VALUES, st.sampled_from("VW")),
        max_size=120,
    ),
    buckets=st.integers(min_value=1, max_value=30),
    few=st.sampled_from([0, 5, 1000]),
    newest=st.integers(min_value=0, max_value=10),
)
def test_the_envelope_is_each_buckets_lowest_and_highest(
    series: list[tuple[int, Any, str]], buckets: int, few: int, newest: int
) -> None:
    conn = results_db()
    rows = [
        (f"exec_{i:04d}", "job", SINCE + timedelta(seconds=s), v, u)
        for i, (s, v, u) in enumerate(series)
    ]
    # Another job's rows are never read.
    insert(conn, [*rows, ("other_1", "other", SINCE + timedelta(seconds=5), 1e9, "V")])
    found = series_envelope(conn, "job", SINCE, UNTIL, buckets, few=few, newest=newest)

    inside = [r for r in rows if SINCE <= r[2] < UNTIL]
    numeric = [r for r in inside if isinstance(r[3], int | float) and not isinstance(r[3], bool)]
    if len(inside) <= few:
        assert found.rows is not None
        assert [r["execution_id"] for r in found.rows] == [
            e for e, *_ in sorted(inside, key=lambda r: (r[2], r[0]))
        ]
        return
    assert found.rows is None
    span = (UNTIL - SINCE) // timedelta(microseconds=1)
    edges = [SINCE + timedelta(microseconds=span * i // buckets) for i in range(buckets + 1)]
    expected: dict[int, list[float]] = {}
    for _, _, at, value, _ in numeric:
        expected.setdefault(bisect.bisect_right(edges, at) - 1, []).append(float(value))
    by_id = {
        e: (at, float(v) if v is not None and not isinstance(v, str) else v, u)
        for e, _, at, v, u in inside
    }
    got: dict[int, list[float]] = {}
    for extreme in found.extremes:
        at, value, unit = by_id[extreme.execution_id]  # a real row of the job, as it is
        assert instant(at) == extreme.scheduled_time
        assert value == extreme.value
        assert unit == extreme.unit
        got.setdefault(bisect.bisect_right(edges, at) - 1, []).append(extreme.value)
    assert sorted(got) == sorted(expected)
    for bucket, values in expected.items():
        assert min(got[bucket]) == min(values)
        assert max(got[bucket]) == max(values)
        assert len(got[bucket]) <= 2
    drawn = [(e.scheduled_time, e.execution_id) for e in found.extremes]
    assert drawn == sorted(drawn)  # time order
    assert found.numeric == len(numeric)
    assert found.skipped == sum(1 for r in inside if isinstance(r[3], str | bool))
    assert found.units == sorted({r[4] for r in numeric})
    ordered = sorted(numeric, key=lambda r: (r[2], r[0]))
    assert (found.first.execution_id if found.first else None) == (
        ordered[0][0] if ordered else None
    )
    assert [e.execution_id for e in found.newest] == [r[0] for r in reversed(ordered)][:newest]


class Counting:
    """A connection that counts every row leaving SQLite."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.rows = 0

    def execute(self, sql: str, args: Any = ()) -> Rows:
        fetched = self.conn.execute(sql, args).fetchall()
        self.rows += len(fetched)
        return Rows(fetched)


class Rows:
    def __init__(self, rows: list[Any]) -> None:
        self.rows = rows

    def fetchone(self) -> Any:
        return self.rows[0] if self.rows else None

    def fetchall(self) -> list[Any]:
        return self.rows

    def __iter__(self) -> Iterator[Any]:
        return iter(self.rows)


def test_a_month_of_200000_rows_reaches_python_as_two_rows_a_column() -> None:
    conn = results_db()
    until = SINCE + timedelta(days=30)
    every = (until - SINCE) / 200_000
    insert(
        conn,
        [
            (f"exec_{i:06d}", "job", SINCE + every * i, 1_000.0 if i == 123_457 else i % 97, "V")
            for i in range(200_000)
        ],
    )
    counting = Counting(conn)
    columns = charts.columns_of()
    found: Envelope = series_envelope(
        counting,  # type: ignore[arg-type]
        "job",
        SINCE,
        until,
        columns,
        newest=charts.TABLE_AT_MOST,
    )
    # The count, each column's two extremes, the units, the first row, the table's newest.
    assert counting.rows <= 2 * columns + charts.TABLE_AT_MOST + 3
    c = charts.chart_of(found, since=SINCE, until=until, zone="UTC")
    assert c.count == 200_000
    assert c.downsampled
    assert len(c.marks) <= 2 * columns
    assert max(m.point.value for m in c.marks) == 1_000.0  # the spike survives
    assert min(m.point.value for m in c.marks) == 0.0
    assert (c.minimum, c.maximum) == (0.0, 1_000.0)
    assert c.first is not None
    assert c.first.execution_id == "exec_000000"
    assert c.last is not None
    assert c.last.execution_id == "exec_199999"
    assert len(c.table) == charts.TABLE_AT_MOST
    assert c.table[0].execution_id == "exec_199999"
    assert all(m.point.execution_id.startswith("exec_") for m in c.marks)
