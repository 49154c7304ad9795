"""Properties of the trigger functions, and cron checked against cronsim (Debian cron's rules).

Instants are biased towards DST transitions in the zones that make them awkward: a whole-hour
shift (Berlin, New York), a half-hour shift (Lord Howe), and none (UTC).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise, takewhile
from zoneinfo import ZoneInfo

import pytest
from cronsim import CronSim, CronSimError
from dateutil import rrule
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from lablink.domain.schedule import Schedule
from lablink.domain.triggers import (
    count_fires_between,
    cron_problem,
    fires_between,
    next_fire,
    next_fires,
)

ZONES = ("Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "UTC")
LORD_HOWE = "Australia/Lord_Howe"
T2020 = datetime(2020, 1, 1, tzinfo=UTC)
US = timedelta(microseconds=1)
SETTINGS = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def _transitions(zone_name: str) -> list[datetime]:
    zone = ZoneInfo(zone_name)
    found = []
    day = T2020 - timedelta(days=1)
    while day < datetime(2031, 1, 1, tzinfo=UTC):
        if (
            day.astimezone(zone).utcoffset()
            != (day + timedelta(days=1)).astimezone(zone).utcoffset()
        ):
            low, high = 0, 86400  # seconds into the day: find the first with the new offset
            while high - low > 1:
                mid = (low + high) // 2
                probe = (day + timedelta(seconds=mid)).astimezone(zone).utcoffset()
                if probe == day.astimezone(zone).utcoffset():
                    low = mid
                else:
                    high = mid
            found.append(day + timedelta(seconds=high))
        day += timedelta(days=1)
    return found


TRANSITIONS = {zone: _transitions(zone) for zone in ZONES}
TRANSITIONS["UTC"] = TRANSITIONS["Europe/Berlin"]  # nothing happens there; any instants do


def instants(zone: str) -> st.SearchStrategy[datetime]:
    near = st.sampled_from(TRANSITIONS[zone])
    anywhere = st.integers(0, 11 * 365 * 86400).map(lambda s: T2020 + timedelta(seconds=s))
    within_days = st.builds(
        lambda t, s: t + timedelta(seconds=s), near, st.integers(-3 * 86400, 3 * 86400)
    )
    within_hours = st.builds(
        lambda t, m: t + timedelta(minutes=m), near, st.integers(-3 * 60, 3 * 60)
    )
    micros = st.one_of(st.just(0), st.integers(0, 999_999))
    return st.builds(
        lambda t, us: t + timedelta(microseconds=us),
        st.one_of(anywhere, within_days, within_hours, within_hours),
        micros,
    )


@st.composite
def bounds(draw: st.DrawFn, after: datetime) -> tuple[datetime | None, datetime | None]:
    start = draw(st.none() | st.integers(-10, 40 * 24).map(lambda h: after + timedelta(hours=h)))
    base = start or after
    end = draw(st.none() | st.integers(0, 120 * 24).map(lambda h: base + timedelta(hours=h)))
    return start, end


def exists(wall: datetime, zone: ZoneInfo) -> bool:
    return wall.replace(tzinfo=zone).astimezone(UTC).astimezone(zone).replace(tzinfo=None) == wall


def real_instants(wall: datetime, zone: ZoneInfo) -> set[datetime]:
    """Every instant whose wall clock in `zone` reads `wall` (none, one or two)."""
    out = set()
    for fold in (0, 1):
        instant = wall.replace(tzinfo=zone, fold=fold).astimezone(UTC)
        if instant.astimezone(zone).replace(tzinfo=None) == wall:
            out.add(instant)
    return out


def assert_ascending_after(fires: list[datetime], after: datetime) -> None:
    assert all(f.tzinfo is UTC for f in fires)
    assert all(a < b for a, b in zip([after, *fires], fires, strict=False))


def assert_in_bounds(fires: list[datetime], schedule: Schedule) -> None:
    assert schedule.start_date is None or all(f >= schedule.start_date for f in fires)
    assert schedule.end_date is None or all(f <= schedule.end_date for f in fires)


def assert_wall_clock(fire: datetime, wall: datetime, zone: ZoneInfo) -> None:
    """`fire` is `wall` at its first occurrence, or the end of the gap `wall` falls in."""
    if exists(wall, zone):
        assert fire == wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    else:
        before, local = (fire - US).astimezone(zone), fire.astimezone(zone)
        assert before.utcoffset() != local.utcoffset()
        assert before.replace(tzinfo=None) < wall < local.replace(tzinfo=None)


# --- daily / weekly / monthly -----------------------------------------------------------------


def last_day(d: date) -> int:
    return ((d.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1)).day


@st.composite
def calendar_cases(draw: st.DrawFn) -> tuple[Schedule, datetime]:
    zone = draw(st.sampled_from(ZONES))
    hour = draw(st.sampled_from([0, 1, 2, 3]) | st.integers(0, 23))
    minute = draw(st.sampled_from([0, 15, 30, 45]) | st.integers(0, 59))
    second = draw(st.just(0) | st.integers(0, 59))
    after = draw(instants(zone))
    start, end = draw(bounds(after))
    return Schedule(
        trigger_type=draw(st.sampled_from(["daily", "weekly", "monthly"])),
        timezone=zone,
        anchor=after,
        time_of_day=time(hour, minute, second),
        day_of_week=draw(st.integers(0, 6)),
        day_of_month=draw(st.sampled_from([-1, 1, 15, 28, 29, 30, 31]) | st.integers(1, 31)),
        start_date=start,
        end_date=end,
    ), after


def calendar_day_matches(schedule: Schedule, day: date) -> bool:
    if schedule.trigger_type == "weekly":
        return day.weekday() == schedule.day_of_week
    if schedule.trigger_type == "monthly":
        wanted = schedule.day_of_month
        return day.day == (last_day(day) if wanted == -1 else wanted)
    return True


@pytest.mark.slow
@SETTINGS
@given(calendar_cases())
def test_calendar_fires_are_the_wall_clock_times_asked_for(case: tuple[Schedule, datetime]) -> None:
    schedule, after = case
    zone = ZoneInfo(schedule.timezone)
    assert schedule.time_of_day is not None
    fires = next_fires(schedule, after, 6)
    assert schedule.end_date is not None or len(fires) == 6
    assert_ascending_after(fires, after)
    assert_in_bounds(fires, schedule)
    days = [f.astimezone(zone).date() for f in fires]
    for fire, day in zip(fires, days, strict=True):
        assert calendar_day_matches(schedule, day)
        assert_wall_clock(fire, datetime.combine(day, schedule.time_of_day), zone)
    # No matching day is skipped, between the fires nor before the first one.
    lower = max(after, (schedule.start_date or after) - US)
    first_candidate = lower.astimezone(zone).date()
    first_wall = datetime.combine(first_candidate, schedule.time_of_day)
    if fires and days[0] != first_candidate and calendar_day_matches(schedule, first_candidate):
        assert not exists(first_wall, zone) or first_wall.replace(tzinfo=zone) <= lower
    for earlier, later in zip([first_candidate, *days], days, strict=False):
        skipped = (earlier + timedelta(days=n) for n in range(1, (later - earlier).days))
        assert not any(calendar_day_matches(schedule, d) for d in skipped)


def rrule_walls(schedule: Schedule, wall_after: datetime) -> Iterator[datetime]:
    assert schedule.time_of_day is not None
    start = datetime.combine(wall_after.date().replace(day=1), schedule.time_of_day)
    if schedule.trigger_type == "daily":
        rule = rrule.rrule(rrule.DAILY, dtstart=start)
    elif schedule.trigger_type == "weekly":
        rule = rrule.rrule(rrule.WEEKLY, dtstart=start, byweekday=schedule.day_of_week)
    else:
        rule = rrule.rrule(rrule.MONTHLY, dtstart=start, bymonthday=schedule.day_of_month)
    return (w for w in rule if w > wall_after)


def dst_day(day: date, zone: ZoneInfo) -> bool:
    midnight = datetime.combine(day, time()).replace(tzinfo=zone)
    return midnight.utcoffset() != (midnight + timedelta(days=1, hours=1)).utcoffset()


@pytest.mark.slow
@SETTINGS
@given(calendar_cases())
def test_calendar_agrees_with_rrule_on_days_without_a_dst_change(
    case: tuple[Schedule, datetime],
) -> None:
    schedule, after = case
    unbounded = Schedule(
        trigger_type=schedule.trigger_type,
        timezone=schedule.timezone,
        anchor=schedule.anchor,
        time_of_day=schedule.time_of_day,
        day_of_week=schedule.day_of_week,
        day_of_month=schedule.day_of_month,
    )
    zone = ZoneInfo(schedule.timezone)
    ours = next_fires(unbounded, after, 5)
    walls = rrule_walls(unbounded, after.astimezone(zone).replace(tzinfo=None))
    instants = (w.replace(tzinfo=zone).astimezone(UTC) for w in walls)
    expected = [
        f
        for f in takewhile(lambda f: f <= ours[-1], instants)
        if not dst_day(f.astimezone(zone).date(), zone)
    ]
    ours = [f for f in ours if not dst_day(f.astimezone(zone).date(), zone)]
    assert ours == expected


# --- interval and date ------------------------------------------------------------------------


@st.composite
def interval_cases(draw: st.DrawFn) -> tuple[Schedule, datetime]:
    zone = draw(st.sampled_from(ZONES))
    anchor = draw(instants(zone))
    seconds = draw(
        st.sampled_from([1.0, 1.5, 60.0, 1800.0, 3600.0, 86400.0])
        | st.integers(1, 10**7).map(float)
        | st.floats(1, 10**6).map(lambda f: round(f, 6))
    )
    anchor_fires = draw(st.booleans())
    after = anchor + timedelta(seconds=draw(st.integers(-(10**6), 10**9)) / 7)
    start, end = draw(bounds(after))
    if anchor_fires:
        start = anchor
    return Schedule(
        trigger_type="interval",
        timezone=zone,
        anchor=anchor,
        interval=seconds,
        anchor_fires=anchor_fires,
        start_date=start,
        end_date=end,
    ), after


@pytest.mark.slow
@SETTINGS
@given(interval_cases())
def test_interval_fires_are_anchor_plus_whole_intervals(case: tuple[Schedule, datetime]) -> None:
    schedule, after = case
    assert schedule.interval is not None
    step = timedelta(microseconds=round(schedule.interval * 1e6))
    fires = next_fires(schedule, after, 5)
    assert schedule.end_date is not None or len(fires) == 5
    assert_ascending_after(fires, after)
    assert_in_bounds(fires, schedule)
    smallest = 0 if schedule.anchor_fires else 1
    for fire in fires:
        n, rest = divmod(fire - schedule.anchor, step)
        assert rest == timedelta(0)
        assert n >= smallest
    assert all(b - a == step for a, b in pairwise(fires))
    if fires:
        previous = fires[0] - step
        assert (
            previous <= after
            or previous < schedule.anchor + smallest * step
            or (schedule.start_date is not None and previous < schedule.start_date)
        )


@pytest.mark.slow
@SETTINGS
@given(interval_cases(), st.integers(0, 10**5))
def test_interval_count_matches_the_listed_fires(
    case: tuple[Schedule, datetime], span: int
) -> None:
    schedule, after = case
    until = after + timedelta(seconds=span)
    listed = fires_between(schedule, after, until, limit=10**7)
    assert count_fires_between(schedule, after, until) == len(listed)


@pytest.mark.slow
@SETTINGS
@given(st.sampled_from(ZONES).flatmap(lambda z: st.tuples(instants(z), instants(z))))
def test_date_fires_once_if_still_ahead(pair: tuple[datetime, datetime]) -> None:
    run, after = pair
    schedule = Schedule(trigger_type="date", timezone="UTC", anchor=after, run_date=run)
    assert next_fire(schedule, after) == (run if run > after else None)
    assert next_fires(schedule, after, 3) == ([run] if run > after else [])


# --- cron against cronsim ---------------------------------------------------------------------


@st.composite
def cron_field(draw: st.DrawFn, low: int, high: int, star: bool = True) -> str:
    kind = draw(st.sampled_from(["*", "*/s", "list", "list", "list"] if star else ["list"]))
    if kind == "*":
        return "*"
    if kind == "*/s":
        return f"*/{draw(st.integers(1, high - low + 1))}"
    items = []
    for _ in range(draw(st.integers(1, 3))):
        a = draw(st.integers(low, high))
        b = draw(st.integers(a, high))
        shape = draw(st.sampled_from(["value", "value", "range", "range/step", "value/step"]))
        if shape == "value" or b == a:
            items.append(str(a))
        elif shape == "range":
            items.append(f"{a}-{b}")
        elif shape == "range/step":
            items.append(f"{a}-{b}/{draw(st.integers(1, b - a + 1))}")
        else:
            items.append(f"{a}/{draw(st.integers(1, high - low + 1))}")
    return ",".join(items)


@st.composite
def cron_expressions(draw: st.DrawFn) -> str:
    fixed = draw(st.booleans())  # fixed minute and hour: Debian cron's wall-clock jobs
    minute = str(draw(st.integers(0, 59))) if fixed else draw(cron_field(0, 59))
    hour = draw(cron_field(0, 23, star=not fixed))
    dom = draw(cron_field(1, 31))
    month = draw(st.just("*") | cron_field(1, 12))
    dow = draw(cron_field(0, 7) | st.sampled_from(["mon-fri", "SUN", "sat,sun", "7"]))
    return f"{minute} {hour} {dom} {month} {dow}"


def cron_schedule(expression: str, zone: str, after: datetime) -> Schedule:
    return Schedule(trigger_type="cron", timezone=zone, anchor=after, cron_expression=expression)


def cronsim_fires(expression: str, zone: str, after: datetime, count: int) -> list[datetime]:
    out: list[datetime] = []
    for fire in CronSim(expression, after.astimezone(ZoneInfo(zone))):
        out.append(fire.astimezone(UTC))
        if len([f for f in out if f > after]) == count:
            break
    return out


def wall_clock_expression(expression: str) -> bool:
    minute, hour, *_ = expression.split()
    return not minute.startswith("*") and not hour.startswith("*")


def elapsed_time_fires(
    expression: str, zone: str, after: datetime, until: datetime
) -> list[datetime]:
    """Brute force: every instant in (after, until] whose wall clock matches (cronsim's parser)."""
    spec = CronSim(expression, T2020)
    tz = ZoneInfo(zone)
    day = after.astimezone(tz).date() - timedelta(days=1)
    found: set[datetime] = set()
    while day <= until.astimezone(tz).date():
        if day.month in spec.months and spec.match_day(day):
            for hour in spec.hours:
                for minute in spec.minutes:
                    found |= real_instants(datetime.combine(day, time(hour, minute)), tz)
        day += timedelta(days=1)
    return sorted(f for f in found if after < f <= until)


def cron_cases() -> st.SearchStrategy[tuple[str, str, datetime]]:
    return st.tuples(cron_expressions(), st.sampled_from(ZONES)).flatmap(
        lambda ez: st.tuples(st.just(ez[0]), st.just(ez[1]), instants(ez[1]))
    )


@pytest.mark.slow
@settings(SETTINGS, max_examples=600)
@given(cron_cases())
def test_cron_agrees_with_cronsim(case: tuple[str, str, datetime]) -> None:
    expression, zone, after = case
    assume(cron_problem(expression) is None)
    ours = next_fires(cron_schedule(expression, zone, after), after, 5)
    assert_ascending_after(ours, after)
    theirs = cronsim_fires(expression, zone, after, 5)
    early = [f for f in theirs if f <= after]
    if early:  # documented: cronsim restarts from the wall time of a second pass
        assert wall_clock_expression(expression)
        assert after.astimezone(ZoneInfo(zone)).fold == 1
    theirs = [f for f in theirs if f > after]
    if ours != theirs:  # documented: cronsim's hour stepping across a half-hour shift
        assert zone == LORD_HOWE
        assert not wall_clock_expression(expression)
        assert ours == elapsed_time_fires(expression, zone, after, ours[-1])


def cron_matches(spec: CronSim, wall: datetime) -> bool:
    return (
        wall.month in spec.months
        and spec.match_day(wall.date())
        and wall.hour in spec.hours
        and wall.minute in spec.minutes
    )


@pytest.mark.slow
@SETTINGS
@given(cron_cases())
def test_cron_fires_read_as_the_expression_on_the_wall_clock(
    case: tuple[str, str, datetime],
) -> None:
    expression, zone, after = case
    assume(cron_problem(expression) is None)
    tz = ZoneInfo(zone)
    spec = CronSim(expression, T2020)
    for fire in next_fires(cron_schedule(expression, zone, after), after, 5):
        wall = fire.astimezone(tz).replace(tzinfo=None)
        if not wall_clock_expression(expression):
            assert cron_matches(spec, wall)
        elif cron_matches(spec, wall) and exists(wall, tz):
            assert fire == wall.replace(tzinfo=tz, fold=0).astimezone(UTC)  # first pass
        else:  # the end of a gap that swallowed a matching wall time
            before = (fire - US).astimezone(tz)
            assert before.utcoffset() != fire.astimezone(tz).utcoffset()
            gap_start = before.replace(tzinfo=None, second=0, microsecond=0) + timedelta(minutes=1)
            minutes = (wall - gap_start) // timedelta(minutes=1)
            gap = (gap_start + timedelta(minutes=m) for m in range(minutes))
            assert any(cron_matches(spec, w) for w in gap)


@pytest.mark.slow
@SETTINGS
@given(cron_cases(), st.integers(0, 3 * 86400))
def test_cron_count_matches_the_listed_fires(case: tuple[str, str, datetime], span: int) -> None:
    expression, zone, after = case
    assume(cron_problem(expression) is None)
    schedule = cron_schedule(expression, zone, after)
    until = after + timedelta(seconds=span)
    listed = fires_between(schedule, after, until, limit=10**6)
    assert count_fires_between(schedule, after, until) == len(listed)
    assert listed == fires_between(schedule, after, until, limit=len(listed) + 1)
    assert fires_between(schedule, after, until, limit=3) == listed[:3]


@SETTINGS
@given(
    st.builds(
        lambda m, d, mo, w: f"{m} 0 {d} {mo} {w}",
        st.integers(0, 59),
        cron_field(1, 31) | st.sampled_from(["29", "30", "31", "30,31", "*/30"]),
        cron_field(1, 12) | st.sampled_from(["2", "4,6,9,11", "2,4"]),
        st.sampled_from(["*", "1", "*/2", "mon-fri"]),
    )
)
def test_cron_problem_says_never_exactly_when_cronsim_refuses(expression: str) -> None:
    try:
        CronSim(expression, T2020)
    except CronSimError:
        refused = True
    else:
        refused = False
    problem = cron_problem(expression)
    assert refused == (problem is not None)
    assert problem is None or problem.startswith("never fires")


# --- the documented disagreements with cronsim, one example each ------------------------------


def test_second_pass_of_a_repeated_hour_cronsim_returns_an_earlier_fire() -> None:
    zone = "America/New_York"
    after = datetime.fromisoformat("2025-11-02T01:30:00-05:00")  # second pass of 01:xx
    theirs = next(iter(CronSim("45 1 * * *", after.astimezone(ZoneInfo(zone)))))
    assert theirs.astimezone(UTC) == datetime.fromisoformat("2025-11-02T01:45:00-04:00")
    ours = next_fire(cron_schedule("45 1 * * *", zone, after), after)
    assert ours == datetime.fromisoformat("2025-11-03T01:45:00-05:00")


def test_lord_howe_half_hour_shift_cronsim_skips_a_matching_hour() -> None:
    after = datetime.fromisoformat("2026-10-03T14:30:00+10:30")
    expected_ours = [
        datetime.fromisoformat(t)
        for t in (
            "2026-10-04T00:08:00+10:30",
            "2026-10-04T14:08:00+11:00",  # 14:08 exists after the 02:00 -> 02:30 jump
            "2026-10-05T00:08:00+11:00",
        )
    ]
    ours = next_fires(cron_schedule("8 */14 * * *", LORD_HOWE, after), after, 3)
    assert ours == expected_ours
    theirs = cronsim_fires("8 */14 * * *", LORD_HOWE, after, 2)
    assert theirs == [expected_ours[0], expected_ours[2]]


def test_equal_range_with_step_is_one_value_unlike_cronsim() -> None:
    after = datetime(2026, 1, 1, tzinfo=UTC)
    ours = next_fires(cron_schedule("5-5/10 * * * *", "UTC", after), after, 2)
    assert ours == [after + timedelta(minutes=5), after + timedelta(minutes=65)]
    theirs = cronsim_fires("5-5/10 * * * *", "UTC", after, 2)
    assert theirs == [after + timedelta(minutes=5), after + timedelta(minutes=15)]
