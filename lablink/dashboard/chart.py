"""A measurement job's values over time, drawn on the server as SVG (no JavaScript library).

``chart(rows, since=…, until=…, zone=…)`` takes the rows of the results view (the query the
API's ``GET /api/scheduler/jobs/{id}/results`` uses) and lays out a line chart: a time axis
over the chosen window with ticks in whole steps of the job's zone (every 2 h, every day…),
a value axis with 1-2-5 ticks and the unit the results carry, and a text alternative (the
template's <title>, <desc> and a table of the points).

Thousands of points are drawn as at most two per pixel column: each column keeps its lowest
and highest value (in time order), so a spike stays visible and the path stays small. A
window of many rows is bucketed so by SQLite (``chart_of`` over ``series_envelope``): no more
than two rows per column, and the newest ``TABLE_AT_MOST`` for the table, reach Python. The
table lists the points themselves, newest first, up to ``TABLE_AT_MOST``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

from lablink.projections.results import Envelope, Extreme

RANGES: dict[str, timedelta] = {
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
}
RANGE_LABELS = {"24h": "Last 24 h", "7d": "Last 7 d", "30d": "Last 30 d"}
DEFAULT_RANGE = "24h"

WIDTH, HEIGHT = 900, 300
# Room for the value labels (left), the unit (top), the time labels (bottom).
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 72, 20, 28, 44
# Each pixel column keeps at most two points (its min and max) when there are more.
COLUMN_PIXELS = 2
# Circles (one per point, with its data) only while they stay readable.
MARKS_AT_MOST = 300
TABLE_AT_MOST = 500
# Time-axis steps in seconds, finest first: the first giving at most TARGET_TIME_TICKS wins.
TIME_STEPS = (
    60,
    300,
    600,
    900,
    1800,
    3600,
    2 * 3600,
    3 * 3600,
    6 * 3600,
    12 * 3600,
    86400,
    2 * 86400,
    7 * 86400,
)
TARGET_TIME_TICKS = 8
TARGET_VALUE_TICKS = 5


class Point(NamedTuple):
    # A tuple, not a dataclass: a month of a fast job is a million of them.
    at: datetime
    value: float
    execution_id: str
    unit: str | None = None


@dataclass(frozen=True)
class Mark:
    x: float
    y: float
    point: Point


@dataclass(frozen=True)
class Tick:
    offset: float  # pixels along its axis
    label: str


@dataclass(frozen=True)
class Chart:
    since: datetime
    until: datetime
    zone: str
    unit: str | None
    points: list[Point]  # the numeric points read (all of them, or each column's extremes)
    marks: list[Mark]  # what is drawn
    x_ticks: list[Tick]
    y_ticks: list[Tick]
    low: float
    high: float
    downsampled: bool
    units: list[str] = field(default_factory=list)  # more than one: the series changed unit
    skipped: int = 0  # values in the window that are not numbers (text, booleans)
    width: int = WIDTH
    height: int = HEIGHT
    count: int = 0  # the numeric points in the window
    first: Point | None = None
    last: Point | None = None
    minimum: float | None = None
    maximum: float | None = None
    table: list[Point] = field(default_factory=list)  # the newest points, newest first

    @property
    def left(self) -> int:
        return MARGIN_LEFT

    @property
    def right(self) -> int:
        return self.width - MARGIN_RIGHT

    @property
    def top(self) -> int:
        return MARGIN_TOP

    @property
    def bottom(self) -> int:
        return self.height - MARGIN_BOTTOM

    @property
    def path(self) -> str:
        return " ".join(
            f"{'M' if i == 0 else 'L'}{m.x:.1f},{m.y:.1f}" for i, m in enumerate(self.marks)
        )

    @property
    def show_marks(self) -> bool:
        return len(self.marks) <= MARKS_AT_MOST


def numeric(value: Any) -> float | None:
    """A value the chart can draw: a finite number (booleans and text are not)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def points_of(rows: Iterable[Mapping[str, Any]]) -> tuple[list[Point], int]:
    """The measurements' numeric values (oldest first, as the results view orders them),
    and how many values were not numbers."""
    points: list[Point] = []
    skipped = 0
    for row in rows:
        if row.get("kind") != "measurement" or row.get("value") is None:
            continue
        number = numeric(row["value"])
        if number is None:
            skipped += 1
            continue
        points.append(
            Point(
                at=datetime.fromisoformat(row["scheduled_time"]),
                value=number,
                execution_id=str(row["execution_id"]),
                unit=row.get("unit"),
            )
        )
    return points, skipped


def columns_of(width: int = WIDTH) -> int:
    """How many pixel columns the plot's points are bucketed into."""
    return max((width - MARGIN_RIGHT - MARGIN_LEFT) // COLUMN_PIXELS, 1)


def chart(
    rows: Iterable[Mapping[str, Any]],
    *,
    since: datetime,
    until: datetime,
    zone: str,
    width: int = WIDTH,
    height: int = HEIGHT,
) -> Chart:
    """The chart of the rows themselves (all of the window's)."""
    points, skipped = points_of(rows)
    drawn = downsample(points, since=since, until=until, columns=columns_of(width))
    values = [p.value for p in points]
    return _layout(
        drawn,
        since=since,
        until=until,
        zone=zone,
        width=width,
        height=height,
        points=points,
        count=len(points),
        units=sorted({p.unit for p in points if p.unit}),
        skipped=skipped,
        first=points[0] if points else None,
        last=points[-1] if points else None,
        extent=(min(values), max(values)) if values else None,
        table=list(reversed(points[-TABLE_AT_MOST:])),
    )


def chart_of(
    envelope: Envelope,
    *,
    since: datetime,
    until: datetime,
    zone: str,
    width: int = WIDTH,
    height: int = HEIGHT,
) -> Chart:
    """The chart of a series read as ``series_envelope`` gives it: its rows when few, else
    each pixel column's lowest and highest (bucketed by SQLite)."""
    if envelope.rows is not None:
        return chart(envelope.rows, since=since, until=until, zone=zone, width=width, height=height)
    drawn = [_point(e) for e in envelope.extremes]
    table = [_point(e) for e in envelope.newest]
    values = [p.value for p in drawn]
    return _layout(
        drawn,
        since=since,
        until=until,
        zone=zone,
        width=width,
        height=height,
        points=drawn,
        count=envelope.numeric,
        units=envelope.units,
        skipped=envelope.skipped,
        first=_point(envelope.first) if envelope.first is not None else None,
        last=table[0] if table else None,
        extent=(min(values), max(values)) if values else None,
        table=table,
    )


def _point(extreme: Extreme) -> Point:
    return Point(
        at=datetime.fromisoformat(extreme.scheduled_time),
        value=extreme.value,
        execution_id=extreme.execution_id,
        unit=extreme.unit,
    )


def _layout(
    drawn: list[Point],
    *,
    since: datetime,
    until: datetime,
    zone: str,
    width: int,
    height: int,
    points: list[Point],
    count: int,
    units: list[str],
    skipped: int,
    first: Point | None,
    last: Point | None,
    extent: tuple[float, float] | None,
    table: list[Point],
) -> Chart:
    unit = last.unit if last is not None else None
    low, high = value_domain(*extent) if extent is not None else (0.0, 1.0)
    left, right = MARGIN_LEFT, width - MARGIN_RIGHT
    top, bottom = MARGIN_TOP, height - MARGIN_BOTTOM
    span = (until - since).total_seconds()

    def x_of(at: datetime) -> float:
        return left + (right - left) * (at - since).total_seconds() / span

    def y_of(value: float) -> float:
        return bottom - (bottom - top) * (value - low) / (high - low)

    marks = [Mark(x=x_of(p.at), y=y_of(p.value), point=p) for p in drawn]
    x_ticks = [Tick(offset=x_of(at), label=label) for at, label in time_ticks(since, until, zone)]
    y_ticks = [
        Tick(offset=y_of(v), label=value_label(v, step))
        for v, step in ((v, tick_step(low, high)) for v in value_ticks(low, high))
    ]
    return Chart(
        since=since,
        until=until,
        zone=zone,
        unit=unit,
        points=points,
        marks=marks,
        x_ticks=x_ticks,
        y_ticks=y_ticks,
        low=low,
        high=high,
        downsampled=len(drawn) < count,
        units=units,
        skipped=skipped,
        width=width,
        height=height,
        count=count,
        first=first,
        last=last,
        minimum=extent[0] if extent is not None else None,
        maximum=extent[1] if extent is not None else None,
        table=table,
    )


def downsample(
    points: list[Point], *, since: datetime, until: datetime, columns: int
) -> list[Point]:
    """At most two points per column (its lowest and highest, in time order); all of them
    when there are no more than two per column on average."""
    if len(points) <= 2 * columns:
        return points
    span = (until - since).total_seconds() or 1.0
    buckets: dict[int, list[Point]] = {}
    for point in points:
        column = min(int((point.at - since).total_seconds() / span * columns), columns - 1)
        buckets.setdefault(column, []).append(point)
    kept: list[Point] = []
    for column in sorted(buckets):
        bucket = buckets[column]
        lowest = min(bucket, key=lambda p: p.value)
        highest = max(bucket, key=lambda p: p.value)
        if lowest is highest:
            kept.append(lowest)
        else:
            kept.extend(sorted((lowest, highest), key=lambda p: p.at))
    return kept


def nice_step(raw: float) -> float:
    """The 1-2-2.5-5 × 10ⁿ step at or above ``raw``."""
    exponent = math.floor(math.log10(raw))
    base = 10.0**exponent
    for factor in (1.0, 2.0, 2.5, 5.0, 10.0):
        if factor * base >= raw * (1 - 1e-9):
            return factor * base
    return 10.0 * base


def value_domain(low: float, high: float) -> tuple[float, float]:
    """The value axis's ends: the data's range widened to whole ticks; a constant series
    gets room around its value (10 % of it, or 1 for zero)."""
    # Spreads too small to tick (or subnormal) are drawn as the constant they look like.
    if high - low <= max(abs(low), abs(high)) * 1e-9 or high - low < 1e-200:
        pad = abs(low) * 0.1 if abs(low) > 1e-200 else 1.0
        low, high = low - pad, high + pad
    step = nice_step((high - low) / TARGET_VALUE_TICKS)
    bottom, top = math.floor(low / step) * step, math.ceil(high / step) * step
    # A subnormal end divided by the step underflows to 0: one step more keeps it inside.
    if top < high:
        top += step
    if bottom > low:
        bottom -= step
    return bottom, top


def tick_step(low: float, high: float) -> float:
    return nice_step((high - low) / TARGET_VALUE_TICKS)


def value_ticks(low: float, high: float) -> list[float]:
    step = tick_step(low, high)
    first = math.ceil(low / step - 1e-9)
    last = math.floor(high / step + 1e-9)
    # Rounded to the step's own precision: 0.30000000000000004 is 0.3.
    return [float(f"{i * step:.12g}") for i in range(first, last + 1)]


def value_label(value: float, step: float) -> str:
    """Enough decimals to tell neighbouring ticks apart, no more."""
    if value == 0:
        return "0"
    step_exponent = math.floor(math.log10(step) + 1e-9)
    finer = 1 if round(step / 10**step_exponent, 6) % 1 else 0  # 2.5 × 10ⁿ needs one more
    if abs(value) >= 1e6 or step < 1e-4:
        # Three significant digits, or as many as the step needs beside the value's size
        # (8.163e+08 and 8.164e+08 are one step of 10⁵ apart).
        digits = math.floor(math.log10(abs(value))) - step_exponent + 1 + finer
        return f"{value:.{max(3, digits)}g}"
    decimals = max(0, -step_exponent)
    if step_exponent <= 0:
        decimals += finer
    return f"{value:.{decimals}f}"


def time_step(span_seconds: float) -> int:
    for step in TIME_STEPS:
        if span_seconds / step <= TARGET_TIME_TICKS:
            return step
    return TIME_STEPS[-1]


def time_ticks(since: datetime, until: datetime, zone: str) -> list[tuple[datetime, str]]:
    """Ticks at whole steps of the zone's wall clock (08:00, 10:00…; midnights; Mondays),
    labelled as that clock reads them; a midnight tick names its day."""
    tz = ZoneInfo(zone)
    step = time_step((until - since).total_seconds())
    local = since.astimezone(tz).replace(tzinfo=None)
    cursor = datetime(local.year, local.month, local.day)
    if step >= 7 * 86400:
        cursor -= timedelta(days=cursor.weekday())  # weeks start on Monday
    seen: set[datetime] = set()
    ticks: list[tuple[datetime, str]] = []
    end = until.astimezone(tz).replace(tzinfo=None) + timedelta(days=1)
    while cursor <= end:
        at = cursor.replace(tzinfo=tz)
        utc = at.astimezone(ZoneInfo("UTC"))
        if since <= at <= until and utc not in seen:
            seen.add(utc)
            midnight = cursor.hour == 0 and cursor.minute == 0
            label = cursor.strftime("%d %b") if midnight else cursor.strftime("%H:%M")
            ticks.append((at, label))
        cursor += timedelta(seconds=step)
    return ticks
