"""The measurement chart's layout (lablink/dashboard/chart.py): value ticks, time ticks in the
job's zone, units, scaling, and the edge cases (no data, one point, constant values, text
values, thousands of points)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from lablink.dashboard import chart as charts

UNTIL = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def rows(
    values: list[Any], *, every: timedelta = timedelta(minutes=10), unit: str = "V"
) -> list[dict[str, Any]]:
    start = UNTIL - every * len(values)
    return [
        {
            "kind": "measurement",
            "value": value,
            "unit": unit,
            "scheduled_time": (start + every * i).isoformat(),
            "execution_id": f"exec_{i:06d}",
        }
        for i, value in enumerate(values)
    ]


def draw(data: list[dict[str, Any]], window: str = "24h", zone: str = "UTC") -> charts.Chart:
    return charts.chart(data, since=UNTIL - charts.RANGES[window], until=UNTIL, zone=zone)


def test_points_map_onto_the_plot_with_the_unit_and_ticks_that_cover_them() -> None:
    c = draw(rows([1.0, 2.0, 4.0]))
    assert c.unit == "V"
    assert [p.value for p in c.points] == [1.0, 2.0, 4.0]
    assert c.low <= 1.0
    assert c.high >= 4.0
    ys = [m.y for m in c.marks]
    assert ys[0] > ys[1] > ys[2]  # higher values are drawn higher up (smaller y)
    assert all(c.top <= y <= c.bottom for y in ys)
    xs = [m.x for m in c.marks]
    assert xs == sorted(xs)
    assert all(c.left <= x <= c.right for x in xs)
    # The newest point, at the window's end, sits on the right edge.
    assert abs(xs[-1] - (c.right - (c.right - c.left) * 600 / 86400)) < 0.01
    assert (c.low, c.high) == (1.0, 4.0)
    assert [t.label for t in c.y_ticks] == ["1", "2", "3", "4"]
    assert c.path.startswith("M")
    assert c.path.count("L") == 2


def test_value_ticks_are_one_two_five_steps_inside_the_domain() -> None:
    assert charts.nice_step(0.7) == 1.0
    assert charts.nice_step(1.3) == 2.0
    assert charts.nice_step(2.2) == 2.5
    assert charts.nice_step(3.0) == 5.0
    assert charts.nice_step(0.00031) == 0.0005
    assert charts.value_domain(0.2, 9.7) == (0.0, 10.0)
    assert charts.value_ticks(0.0, 10.0) == [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]
    assert charts.value_label(2.5, 2.5) == "2.5"
    assert charts.value_label(1_500_000.0, 500_000.0) == "1.5e+06"
    # Large values one small step apart keep the digits that tell them apart (hypothesis
    # found ticks of 8.16e+08 repeated at a step of 10⁵).
    assert charts.value_label(816_300_000.0, 100_000.0) == "8.163e+08"
    assert charts.value_label(816_250_000.0, 250_000.0) == "8.1625e+08"
    assert charts.value_label(25.0, 25.0) == "25"


@given(
    st.lists(
        st.floats(min_value=-1e9, max_value=1e9, allow_nan=False, allow_infinity=False),
        min_size=1,
        max_size=50,
    )
)
def test_any_values_fit_the_axis_with_a_few_distinct_ticks(values: list[float]) -> None:
    low, high = charts.value_domain(min(values), max(values))
    assert low <= min(values)
    assert high >= max(values)
    assert high > low
    ticks = charts.value_ticks(low, high)
    assert 2 <= len(ticks) <= 2 * charts.TARGET_VALUE_TICKS + 2
    step = charts.tick_step(low, high)
    labels = [charts.value_label(t, step) for t in ticks]
    assert len(set(labels)) == len(labels)


def test_no_data_one_point_and_constant_values() -> None:
    empty = draw([])
    assert empty.points == []
    assert empty.marks == []
    assert empty.path == ""
    one = draw(rows([3.3]))
    assert len(one.marks) == 1
    assert one.low < 3.3 < one.high
    flat = draw(rows([5.0] * 20))
    assert flat.low < 5.0 < flat.high  # room around a constant series, not a zero division
    assert len({round(m.y, 6) for m in flat.marks}) == 1
    zero = draw(rows([0.0, 0.0]))
    assert zero.low < 0.0 < zero.high


def test_text_and_booleans_are_counted_not_drawn_and_failures_are_skipped() -> None:
    data = rows([1.0, "OK", True, None, 2.0])
    c = draw(data)
    assert [p.value for p in c.points] == [1.0, 2.0]
    assert c.skipped == 2


def test_a_changed_unit_is_noticed_and_the_latest_labels_the_axis() -> None:
    c = draw(rows([1.0]) + rows([900.0], unit="mV", every=timedelta(minutes=5)))
    assert c.units == ["V", "mV"]
    assert c.unit == "mV"


def test_thousands_of_points_are_drawn_as_each_columns_lowest_and_highest() -> None:
    values = [float(i % 97) for i in range(20_000)]
    values[12_345] = 1_000.0  # a spike survives downsampling
    c = draw(rows(values, every=timedelta(seconds=4)))
    columns = (c.right - c.left) // charts.COLUMN_PIXELS
    assert c.downsampled
    assert len(c.marks) <= 2 * columns
    assert max(m.point.value for m in c.marks) == 1_000.0
    assert min(m.point.value for m in c.marks) == 0.0
    assert [m.point.at for m in c.marks] == sorted(m.point.at for m in c.marks)
    assert not c.show_marks  # circles only while readable
    assert len(c.table) == charts.TABLE_AT_MOST
    assert c.table[0].execution_id == "exec_019999"  # newest first


def test_time_ticks_are_whole_steps_of_the_zone() -> None:
    day = charts.time_ticks(UNTIL - timedelta(hours=24), UNTIL, "Europe/Berlin")
    labels = [label for _, label in day]
    # 24 h: every 3 h of Berlin's clock (UTC+1 in March), the midnight named by its date.
    assert labels == ["15:00", "18:00", "21:00", "02 Mar", "03:00", "06:00", "09:00", "12:00"]
    assert all(at.astimezone(UTC).minute == 0 for at, _ in day)
    week = charts.time_ticks(UNTIL - timedelta(days=7), UNTIL, "UTC")
    assert [label for _, label in week] == [
        "24 Feb",
        "25 Feb",
        "26 Feb",
        "27 Feb",
        "28 Feb",
        "01 Mar",
        "02 Mar",
    ]
    month = charts.time_ticks(UNTIL - timedelta(days=30), UNTIL, "UTC")
    assert all(at.weekday() == 0 for at, _ in month)  # weekly ticks fall on Mondays
    assert 3 <= len(month) <= charts.TARGET_TIME_TICKS


def test_time_ticks_across_a_dst_change_stay_on_the_wall_clock() -> None:
    until = datetime(2026, 3, 29, 12, 0, tzinfo=UTC)  # Berlin springs forward at 02:00
    ticks = charts.time_ticks(until - timedelta(hours=24), until, "Europe/Berlin")
    labels = [label for _, label in ticks]
    assert "29 Mar" in labels
    assert "06:00" in labels
    instants = [at.astimezone(UTC) for at, _ in ticks]
    assert instants == sorted(set(instants))


@given(hours=st.integers(1, 24 * 60))
def test_time_ticks_stay_inside_the_window_and_few(hours: int) -> None:
    since = UNTIL - timedelta(hours=hours)
    ticks = charts.time_ticks(since, UNTIL, "America/New_York")
    assert all(since <= at <= UNTIL for at, _ in ticks)
    assert len(ticks) <= charts.TARGET_TIME_TICKS + 2
