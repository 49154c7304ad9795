"""Next-fire examples with their expected runs written out: the guide, DST days, month ends."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from lablink.domain.schedule import Schedule
from lablink.domain.triggers import (
    count_fires_between,
    cron_problem,
    fires_between,
    next_fire,
    next_fires,
)

BERLIN = "Europe/Berlin"
# A Friday afternoon, 15:20 in Berlin (CET, +01:00).
FRIDAY = datetime.fromisoformat("2025-11-14T15:20:00+01:00")
FRIDAY_UTC = datetime.fromisoformat("2025-11-14T15:20:00+00:00")


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def ats(*texts: str) -> list[datetime]:
    return [at(t) for t in texts]


def cron(expression: str, zone: str = BERLIN, **kwargs: Any) -> Schedule:
    return Schedule(
        trigger_type="cron",
        timezone=zone,
        anchor=FRIDAY,
        cron_expression=expression,
        **kwargs,
    )


def daily(hh_mm: str, zone: str = BERLIN, **kwargs: Any) -> Schedule:
    return Schedule(
        trigger_type="daily",
        timezone=zone,
        anchor=FRIDAY,
        time_of_day=time.fromisoformat(hh_mm),
        **kwargs,
    )


def monthly(day: int, hh_mm: str = "12:00", zone: str = "UTC") -> Schedule:
    return Schedule(
        trigger_type="monthly",
        timezone=zone,
        anchor=FRIDAY,
        day_of_month=day,
        time_of_day=time.fromisoformat(hh_mm),
    )


def interval(seconds: float, anchor: datetime, **kwargs: Any) -> Schedule:
    return Schedule(
        trigger_type="interval",
        timezone=BERLIN,
        anchor=anchor,
        interval=seconds,
        **kwargs,
    )


# --- the guide's cron patterns, from a Friday afternoon --------------------------------------


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        (
            "0 */6 * * *",
            ats(
                "2025-11-14T18:00:00+01:00",
                "2025-11-15T00:00:00+01:00",
                "2025-11-15T06:00:00+01:00",
                "2025-11-15T12:00:00+01:00",
                "2025-11-15T18:00:00+01:00",
            ),
        ),
        (
            "0 * * * *",
            ats(
                "2025-11-14T16:00:00+01:00",
                "2025-11-14T17:00:00+01:00",
                "2025-11-14T18:00:00+01:00",
                "2025-11-14T19:00:00+01:00",
            ),
        ),
        (
            "0 0 * * *",
            ats(
                "2025-11-15T00:00:00+01:00",
                "2025-11-16T00:00:00+01:00",
                "2025-11-17T00:00:00+01:00",
            ),
        ),
        (
            "*/15 * * * *",
            ats(
                "2025-11-14T15:30:00+01:00",
                "2025-11-14T15:45:00+01:00",
                "2025-11-14T16:00:00+01:00",
                "2025-11-14T16:15:00+01:00",
            ),
        ),
        (
            "0 9-17 * * 1-5",
            ats(
                "2025-11-14T16:00:00+01:00",
                "2025-11-14T17:00:00+01:00",
                "2025-11-17T09:00:00+01:00",
                "2025-11-17T10:00:00+01:00",
                "2025-11-17T11:00:00+01:00",
                "2025-11-17T12:00:00+01:00",
            ),
        ),
    ],
)
def test_guide_cron_patterns_in_berlin(expression: str, expected: list[datetime]) -> None:
    assert next_fires(cron(expression), FRIDAY, len(expected)) == expected


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        (
            "0 */6 * * *",
            ats("2025-11-14T18:00:00+00:00", "2025-11-15T00:00:00+00:00"),
        ),
        (
            "0 * * * *",
            ats("2025-11-14T16:00:00+00:00", "2025-11-14T17:00:00+00:00"),
        ),
        (
            "0 0 * * *",
            ats("2025-11-15T00:00:00+00:00", "2025-11-16T00:00:00+00:00"),
        ),
        (
            "*/15 * * * *",
            ats("2025-11-14T15:30:00+00:00", "2025-11-14T15:45:00+00:00"),
        ),
        (
            "0 9-17 * * 1-5",
            ats(
                "2025-11-14T16:00:00+00:00",
                "2025-11-14T17:00:00+00:00",
                "2025-11-17T09:00:00+00:00",
            ),
        ),
    ],
)
def test_guide_cron_patterns_in_utc(expression: str, expected: list[datetime]) -> None:
    assert next_fires(cron(expression, "UTC"), FRIDAY_UTC, len(expected)) == expected


def test_business_hours_in_new_york() -> None:
    friday_ny = at("2025-11-14T15:20:00-05:00")
    assert next_fires(cron("0 9-17 * * 1-5", "America/New_York"), friday_ny, 4) == ats(
        "2025-11-14T16:00:00-05:00",
        "2025-11-14T17:00:00-05:00",
        "2025-11-17T09:00:00-05:00",
        "2025-11-17T10:00:00-05:00",
    )


def test_results_are_utc_whatever_the_zone_of_after() -> None:
    fires = next_fires(cron("0 * * * *"), FRIDAY.astimezone(UTC), 2)
    assert all(f.tzinfo is UTC for f in fires)
    assert (
        next_fires(cron("0 * * * *"), FRIDAY.astimezone(ZoneInfo("America/New_York")), 2) == fires
    )


# --- the guide's other trigger examples -------------------------------------------------------


def test_interval_minutes_30_counts_from_creation() -> None:
    schedule = interval(30 * 60, anchor=FRIDAY)
    assert next_fires(schedule, FRIDAY, 3) == ats(
        "2025-11-14T15:50:00+01:00",
        "2025-11-14T16:20:00+01:00",
        "2025-11-14T16:50:00+01:00",
    )
    assert next_fire(schedule, at("2025-11-14T16:00:00+01:00")) == at("2025-11-14T16:20:00+01:00")


def test_interval_with_start_date_fires_at_start_date() -> None:
    start = at("2025-11-14T16:00:00+01:00")
    schedule = interval(30 * 60, anchor=start, anchor_fires=True, start_date=start)
    assert next_fires(schedule, FRIDAY, 3) == ats(
        "2025-11-14T16:00:00+01:00",
        "2025-11-14T16:30:00+01:00",
        "2025-11-14T17:00:00+01:00",
    )


def test_daily_14_30() -> None:
    assert next_fires(daily("14:30:00"), FRIDAY, 3) == ats(
        "2025-11-15T14:30:00+01:00",
        "2025-11-16T14:30:00+01:00",
        "2025-11-17T14:30:00+01:00",
    )


def test_weekly_day_1_is_tuesday() -> None:
    schedule = Schedule(
        trigger_type="weekly",
        timezone=BERLIN,
        anchor=FRIDAY,
        day_of_week=1,
        time_of_day=time(9, 0),
    )
    assert next_fires(schedule, FRIDAY, 3) == ats(
        "2025-11-18T09:00:00+01:00",
        "2025-11-25T09:00:00+01:00",
        "2025-12-02T09:00:00+01:00",
    )
    assert all(f.astimezone(FRIDAY.tzinfo).weekday() == 1 for f in next_fires(schedule, FRIDAY, 3))


def test_monthly_day_15_at_noon() -> None:
    assert next_fires(monthly(15, zone=BERLIN), FRIDAY, 3) == ats(
        "2025-11-15T12:00:00+01:00",
        "2025-12-15T12:00:00+01:00",
        "2026-01-15T12:00:00+01:00",
    )


def test_date_fires_once() -> None:
    run = at("2025-12-25T10:00:00+01:00")  # the guide's 2025-12-25T10:00:00, wall time in Berlin
    schedule = Schedule(trigger_type="date", timezone=BERLIN, anchor=FRIDAY, run_date=run)
    assert next_fires(schedule, FRIDAY, 3) == [run]
    assert next_fire(schedule, run) is None
    assert next_fire(schedule, run - timedelta(microseconds=1)) == run


def test_daily_9_with_start_and_end_runs_exactly_the_days_in_the_window() -> None:
    schedule = daily(
        "09:00:00",
        start_date=at("2025-11-01T00:00:00+01:00"),
        end_date=at("2025-12-01T00:00:00+01:00"),
    )
    expected = [at(f"2025-11-{day:02}T09:00:00+01:00") for day in range(1, 31)]
    everything = (at("2025-10-01T00:00:00+00:00"), at("2026-01-01T00:00:00+00:00"))
    assert fires_between(schedule, *everything, limit=100) == expected
    assert count_fires_between(schedule, *everything) == 30
    assert next_fire(schedule, expected[-1]) is None


# --- DST: spring forward runs at the transition instant, fall back at the first pass ----------


def test_spring_forward_berlin_runs_at_the_transition_instant() -> None:
    fires = next_fires(daily("02:30"), at("2026-03-27T12:00:00+00:00"), 3)
    assert fires == ats(
        "2026-03-28T02:30:00+01:00",
        "2026-03-29T01:00:00+00:00",  # 02:30 does not exist; 03:00 CEST is the jump
        "2026-03-30T02:30:00+02:00",
    )


def test_spring_forward_new_york() -> None:
    fires = next_fires(daily("02:30", "America/New_York"), at("2026-03-06T12:00:00+00:00"), 3)
    assert fires == ats(
        "2026-03-07T02:30:00-05:00",
        "2026-03-08T03:00:00-04:00",
        "2026-03-09T02:30:00-04:00",
    )


def test_spring_forward_with_seconds_still_runs_at_the_transition_instant() -> None:
    fire = next_fire(daily("02:59:59.5"), at("2026-03-29T00:00:00+00:00"))
    assert fire == at("2026-03-29T03:00:00+02:00")


def test_fall_back_berlin_runs_once_at_the_first_occurrence() -> None:
    fires = next_fires(daily("02:30"), at("2025-10-25T12:00:00+00:00"), 2)
    assert fires == ats("2025-10-26T02:30:00+02:00", "2025-10-27T02:30:00+01:00")


def test_fall_back_from_inside_the_repeated_hour() -> None:
    schedule = daily("02:30")
    first_pass = at("2025-10-26T02:10:00+02:00")
    second_pass = at("2025-10-26T02:10:00+01:00")
    assert next_fire(schedule, first_pass) == at("2025-10-26T02:30:00+02:00")
    assert next_fire(schedule, second_pass) == at("2025-10-27T02:30:00+01:00")


def test_fall_back_new_york() -> None:
    fires = next_fires(daily("01:30", "America/New_York"), at("2025-10-31T12:00:00+00:00"), 3)
    assert fires == ats(
        "2025-11-01T01:30:00-04:00",
        "2025-11-02T01:30:00-04:00",
        "2025-11-03T01:30:00-05:00",
    )


def test_lord_howe_half_hour_spring_forward() -> None:
    # 2025-10-05 02:00 +10:30 becomes 02:30 +11:00.
    fires = next_fires(daily("02:15", "Australia/Lord_Howe"), at("2025-10-04T00:00:00+00:00"), 2)
    assert fires == ats("2025-10-05T02:30:00+11:00", "2025-10-06T02:15:00+11:00")


def test_lord_howe_half_hour_fall_back() -> None:
    # 2026-04-05 02:00 +11:00 becomes 01:30 +10:30: 01:30-02:00 happens twice.
    fires = next_fires(daily("01:45", "Australia/Lord_Howe"), at("2026-04-04T00:00:00+00:00"), 2)
    assert fires == ats("2026-04-05T01:45:00+11:00", "2026-04-06T01:45:00+10:30")


def test_weekly_on_the_sunday_of_spring_forward() -> None:
    schedule = Schedule(
        trigger_type="weekly",
        timezone=BERLIN,
        anchor=FRIDAY,
        day_of_week=6,
        time_of_day=time(2, 0),
    )
    assert next_fires(schedule, at("2026-03-23T00:00:00+00:00"), 2) == ats(
        "2026-03-29T03:00:00+02:00",
        "2026-04-05T02:00:00+02:00",
    )


def test_monthly_on_a_dst_day() -> None:
    schedule = monthly(29, "02:30", zone=BERLIN)
    assert next_fires(schedule, at("2026-03-01T00:00:00+00:00"), 2) == ats(
        "2026-03-29T03:00:00+02:00",
        "2026-04-29T02:30:00+02:00",
    )


def test_fixed_time_cron_follows_the_wall_clock_rules() -> None:
    spring = next_fires(cron("15,45 2 * * *"), at("2026-03-27T12:00:00+00:00"), 4)
    assert spring == ats(
        "2026-03-28T02:15:00+01:00",
        "2026-03-28T02:45:00+01:00",
        "2026-03-29T03:00:00+02:00",  # both missing times collapse into one run
        "2026-03-30T02:15:00+02:00",
    )
    fall = next_fires(cron("30 2 * * *"), at("2025-10-25T12:00:00+00:00"), 2)
    assert fall == ats("2025-10-26T02:30:00+02:00", "2025-10-27T02:30:00+01:00")


def test_wildcard_cron_follows_elapsed_time() -> None:
    # Minute field starts with "*": no run for missing wall times, runs in both passes.
    spring = next_fires(cron("*/30 2 * * *"), at("2026-03-27T12:00:00+00:00"), 4)
    assert spring == ats(
        "2026-03-28T02:00:00+01:00",
        "2026-03-28T02:30:00+01:00",
        "2026-03-30T02:00:00+02:00",
        "2026-03-30T02:30:00+02:00",
    )
    fall = next_fires(cron("*/30 2 * * *"), at("2025-10-25T12:00:00+00:00"), 5)
    assert fall == ats(
        "2025-10-26T02:00:00+02:00",
        "2025-10-26T02:30:00+02:00",
        "2025-10-26T02:00:00+01:00",
        "2025-10-26T02:30:00+01:00",
        "2025-10-27T02:00:00+01:00",
    )


def test_hourly_cron_runs_in_both_passes_of_a_repeated_hour() -> None:
    fires = next_fires(cron("0 * * * *", "America/New_York"), at("2025-11-02T00:30:00-04:00"), 3)
    assert fires == ats(
        "2025-11-02T01:00:00-04:00",
        "2025-11-02T01:00:00-05:00",
        "2025-11-02T02:00:00-05:00",
    )


def test_hourly_cron_from_the_first_pass_still_sees_the_second() -> None:
    fires = next_fires(cron("*/20 * * * *", "America/New_York"), at("2025-11-02T01:50-04:00"), 4)
    assert fires == ats(
        "2025-11-02T01:00:00-05:00",
        "2025-11-02T01:20:00-05:00",
        "2025-11-02T01:40:00-05:00",
        "2025-11-02T02:00:00-05:00",
    )


def test_interval_ignores_dst() -> None:
    schedule = interval(3600, anchor=at("2026-03-29T00:00:00+01:00"))
    assert next_fires(schedule, at("2026-03-29T00:00:00+01:00"), 3) == ats(
        "2026-03-29T01:00:00+01:00",
        "2026-03-29T03:00:00+02:00",
        "2026-03-29T04:00:00+02:00",
    )


def test_count_of_every_minute_over_a_local_week_with_spring_forward() -> None:
    week = (at("2026-03-23T00:00:00+01:00"), at("2026-03-30T00:00:00+02:00"))
    assert count_fires_between(cron("* * * * *"), *week) == 7 * 24 * 60 - 60


# --- month ends and leap days -----------------------------------------------------------------


def test_monthly_day_31_skips_short_months() -> None:
    assert next_fires(monthly(31), at("2026-01-01T00:00:00+00:00"), 7) == ats(
        "2026-01-31T12:00:00+00:00",
        "2026-03-31T12:00:00+00:00",
        "2026-05-31T12:00:00+00:00",
        "2026-07-31T12:00:00+00:00",
        "2026-08-31T12:00:00+00:00",
        "2026-10-31T12:00:00+00:00",
        "2026-12-31T12:00:00+00:00",
    )


def test_monthly_day_30_skips_february() -> None:
    assert next_fires(monthly(30), at("2026-01-31T00:00:00+00:00"), 2) == ats(
        "2026-03-30T12:00:00+00:00",
        "2026-04-30T12:00:00+00:00",
    )


def test_monthly_last_day() -> None:
    assert next_fires(monthly(-1), at("2026-01-01T00:00:00+00:00"), 4) == ats(
        "2026-01-31T12:00:00+00:00",
        "2026-02-28T12:00:00+00:00",
        "2026-03-31T12:00:00+00:00",
        "2026-04-30T12:00:00+00:00",
    )
    assert next_fire(monthly(-1), at("2028-02-01T00:00:00+00:00")) == at(
        "2028-02-29T12:00:00+00:00"
    )


def test_monthly_day_29_in_leap_and_common_years() -> None:
    assert next_fires(monthly(29), at("2027-01-30T00:00:00+00:00"), 1) == ats(
        "2027-03-29T12:00:00+00:00"
    )
    assert next_fires(monthly(29), at("2028-01-30T00:00:00+00:00"), 2) == ats(
        "2028-02-29T12:00:00+00:00",
        "2028-03-29T12:00:00+00:00",
    )


def test_cron_february_29_waits_for_a_leap_year() -> None:
    assert next_fires(cron("0 0 29 2 *", "UTC"), at("2025-01-01T00:00:00+00:00"), 2) == ats(
        "2028-02-29T00:00:00+00:00",
        "2032-02-29T00:00:00+00:00",
    )


def test_cron_day_31_skips_short_months() -> None:
    assert next_fires(cron("0 0 31 * *", "UTC"), at("2026-01-31T01:00:00+00:00"), 2) == ats(
        "2026-03-31T00:00:00+00:00",
        "2026-05-31T00:00:00+00:00",
    )


# --- cron day rules and syntax ----------------------------------------------------------------


def test_day_of_month_or_day_of_week_when_both_are_restricted() -> None:
    # February 2026 starts on a Sunday: Fridays 6, 13, 20, 27, then March 1 (a Sunday) by day.
    assert next_fires(cron("0 0 1 * 5", "UTC"), at("2026-02-01T12:00:00+00:00"), 6) == ats(
        "2026-02-06T00:00:00+00:00",
        "2026-02-13T00:00:00+00:00",
        "2026-02-20T00:00:00+00:00",
        "2026-02-27T00:00:00+00:00",
        "2026-03-01T00:00:00+00:00",
        "2026-03-06T00:00:00+00:00",
    )


def test_day_of_month_and_day_of_week_when_one_starts_with_a_star() -> None:
    # Days 1, 11, 21, 31 that are also Mondays.
    assert next_fires(cron("0 0 */10 * 1", "UTC"), at("2026-01-01T12:00:00+00:00"), 3) == ats(
        "2026-05-11T00:00:00+00:00",
        "2026-06-01T00:00:00+00:00",
        "2026-08-31T00:00:00+00:00",
    )


def test_february_30_or_monday_fires_every_monday_of_february() -> None:
    assert next_fires(cron("0 0 30 2 1", "UTC"), at("2026-01-01T00:00:00+00:00"), 5) == ats(
        "2026-02-02T00:00:00+00:00",
        "2026-02-09T00:00:00+00:00",
        "2026-02-16T00:00:00+00:00",
        "2026-02-23T00:00:00+00:00",
        "2027-02-01T00:00:00+00:00",
    )


@pytest.mark.parametrize("sunday", ["0", "7", "sun", "SUN", "7-7"])
def test_sunday_is_0_or_7_in_cron(sunday: str) -> None:
    assert next_fires(cron(f"0 12 * * {sunday}", "UTC"), FRIDAY_UTC, 2) == ats(
        "2025-11-16T12:00:00+00:00", "2025-11-23T12:00:00+00:00"
    )


def test_names_for_months_and_days() -> None:
    assert next_fire(cron("30 8 * jan,FEB mon-fri", "UTC"), FRIDAY_UTC) == at(
        "2026-01-01T08:30:00+00:00"
    )


@pytest.mark.parametrize(
    ("expression", "problem"),
    [
        ("0 0 * * * *", "expected 5 fields (minute hour day-of-month month day-of-week), got 6"),
        ("0 0 * *", "expected 5 fields (minute hour day-of-month month day-of-week), got 4"),
        ("60 * * * *", "invalid value '60' in minute field (allowed 0-59)"),
        ("0 24 * * *", "invalid value '24' in hour field (allowed 0-23)"),
        ("0 0 0 * *", "invalid value '0' in day-of-month field (allowed 1-31)"),
        ("0 0 * 13 *", "invalid value '13' in month field (allowed 1-12)"),
        ("0 0 * * 8", "invalid value '8' in day-of-week field (allowed 0-7)"),
        ("0 0 * * funday", "invalid value 'funday' in day-of-week field (allowed 0-7)"),
        ("a b c d e", "invalid value 'a' in minute field (allowed 0-59)"),
        ("0 0 L * *", "invalid value 'L' in day-of-month field (allowed 1-31)"),
        ("0 0 * * 1#2", "invalid value '1#2' in day-of-week field"),
        ("*/0 * * * *", "invalid step '*/0' in minute field (step must be >= 1)"),
        ("5-3 * * * *", "invalid range '5-3' in minute field (start after end)"),
        ("1,,2 * * * *", "invalid value '' in minute field"),
        ("0 0 30 2 *", "never fires: no month in {2} has day 30"),
        ("0 0 31 4,6,9,11 *", "never fires: no month in {4, 6, 9, 11} has day 31"),
        ("0 0 30,31 2 *", "never fires: no month in {2} has day 30"),
    ],
)
def test_cron_problem_explains(expression: str, problem: str) -> None:
    assert cron_problem(expression) == problem


@pytest.mark.parametrize(
    "expression",
    [
        "0 0 29 2 *",  # fires in leap years
        "0 0 30 2 1",  # day-of-week is ORed: every Monday in February
        "0 0 31 4,6,9,12 *",
        "0 */6 * * *",
        "0 9-17 * * 1-5",
        "*/15 * * * *",
        "59/15 * * * *",
        "  0   0 * * *  ",
    ],
)
def test_cron_problem_accepts(expression: str) -> None:
    assert cron_problem(expression) is None


def test_a_cron_that_never_fires_has_no_next_fire() -> None:
    assert next_fire(cron("0 0 30 2 *"), FRIDAY) is None
    assert count_fires_between(cron("0 0 30 2 *"), FRIDAY, FRIDAY + timedelta(days=3650)) == 0


def test_step_from_a_value_runs_to_the_end_of_the_field() -> None:
    assert next_fires(cron("50/4 * * * *", "UTC"), at("2026-01-01T00:00:00+00:00"), 4) == ats(
        "2026-01-01T00:50:00+00:00",
        "2026-01-01T00:54:00+00:00",
        "2026-01-01T00:58:00+00:00",
        "2026-01-01T01:50:00+00:00",
    )


def test_equal_range_is_one_value() -> None:
    assert next_fires(cron("5-5 * * * *", "UTC"), at("2026-01-01T00:00:00+00:00"), 2) == ats(
        "2026-01-01T00:05:00+00:00",
        "2026-01-01T01:05:00+00:00",
    )


# --- start/end bounds, limits, dates ----------------------------------------------------------


def test_bounds_include_fires_exactly_at_start_and_end() -> None:
    schedule = cron(
        "0 * * * *",
        "UTC",
        start_date=at("2026-01-01T10:00:00+00:00"),
        end_date=at("2026-01-01T12:00:00+00:00"),
    )
    assert next_fires(schedule, at("2026-01-01T09:30:00+00:00"), 10) == ats(
        "2026-01-01T10:00:00+00:00",
        "2026-01-01T11:00:00+00:00",
        "2026-01-01T12:00:00+00:00",
    )
    assert next_fire(schedule, at("2026-01-01T12:00:00+00:00")) is None


def test_interval_respects_start_and_end() -> None:
    anchor = at("2026-01-01T00:00:00+00:00")
    schedule = interval(
        600,
        anchor=anchor,
        start_date=at("2026-01-01T00:25:00+00:00"),
        end_date=at("2026-01-01T01:00:00+00:00"),
    )
    assert next_fires(schedule, anchor, 10) == ats(
        "2026-01-01T00:30:00+00:00",
        "2026-01-01T00:40:00+00:00",
        "2026-01-01T00:50:00+00:00",
        "2026-01-01T01:00:00+00:00",
    )
    assert count_fires_between(schedule, anchor, at("2027-01-01T00:00:00+00:00")) == 4


def test_interval_count_is_arithmetic() -> None:
    anchor = at("2026-01-01T00:00:00+00:00")
    schedule = interval(1, anchor=anchor)
    # A century of one-second fires: only an O(1) count can answer this.
    century = at("2126-01-01T00:00:00+00:00")
    assert count_fires_between(schedule, anchor, century) == (century - anchor) // timedelta(
        seconds=1
    )
    assert count_fires_between(schedule, anchor, anchor + timedelta(days=7)) == 604_800
    assert count_fires_between(schedule, anchor + timedelta(days=1), anchor) == 0
    assert next_fire(schedule, century + timedelta(microseconds=500_000)) == century + timedelta(
        seconds=1
    )


def test_interval_fractional_seconds() -> None:
    anchor = at("2026-01-01T00:00:00+00:00")
    assert next_fires(interval(1.5, anchor=anchor), anchor, 3) == [
        anchor + timedelta(seconds=1.5),
        anchor + timedelta(seconds=3),
        anchor + timedelta(seconds=4.5),
    ]


def test_interval_before_the_anchor() -> None:
    anchor = at("2026-01-01T00:00:00+00:00")
    earlier = anchor - timedelta(days=1)
    assert next_fire(interval(60, anchor=anchor), earlier) == anchor + timedelta(seconds=60)
    assert next_fire(interval(60, anchor=anchor, anchor_fires=True), earlier) == anchor


def test_date_outside_the_window_never_fires() -> None:
    run = at("2026-01-01T10:00:00+00:00")
    late = Schedule(
        trigger_type="date",
        timezone="UTC",
        anchor=FRIDAY,
        run_date=run,
        end_date=run - timedelta(seconds=1),
    )
    early = Schedule(
        trigger_type="date",
        timezone="UTC",
        anchor=FRIDAY,
        run_date=run,
        start_date=run + timedelta(seconds=1),
    )
    assert next_fire(late, FRIDAY) is None
    assert next_fire(early, FRIDAY) is None


def test_fires_between_stops_at_the_limit_and_at_until() -> None:
    schedule = cron("*/15 * * * *")
    assert fires_between(schedule, FRIDAY, FRIDAY + timedelta(days=1), limit=2) == ats(
        "2025-11-14T15:30:00+01:00", "2025-11-14T15:45:00+01:00"
    )
    assert fires_between(schedule, FRIDAY, at("2025-11-14T16:00:00+01:00"), limit=10) == ats(
        "2025-11-14T15:30:00+01:00",
        "2025-11-14T15:45:00+01:00",
        "2025-11-14T16:00:00+01:00",
    )
    assert fires_between(schedule, FRIDAY, FRIDAY, limit=10) == []
    assert next_fires(schedule, FRIDAY, 0) == []


# --- misuse -----------------------------------------------------------------------------------


def test_naive_after_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        next_fire(cron("0 * * * *"), datetime(2026, 1, 1))


@pytest.mark.parametrize(
    "schedule",
    [
        Schedule(trigger_type="cron", timezone="UTC", anchor=FRIDAY),
        Schedule(trigger_type="cron", timezone="UTC", anchor=FRIDAY, cron_expression="0 0 * *"),
        Schedule(trigger_type="interval", timezone="UTC", anchor=FRIDAY),
        Schedule(trigger_type="interval", timezone="UTC", anchor=FRIDAY, interval=0.5),
        Schedule(trigger_type="daily", timezone="UTC", anchor=FRIDAY),
        Schedule(trigger_type="weekly", timezone="UTC", anchor=FRIDAY, time_of_day=time(9)),
        Schedule(
            trigger_type="monthly",
            timezone="UTC",
            anchor=FRIDAY,
            time_of_day=time(9),
            day_of_month=0,
        ),
        Schedule(trigger_type="date", timezone="UTC", anchor=FRIDAY),
    ],
)
def test_incomplete_schedules_are_refused(schedule: Schedule) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
        next_fire(schedule, FRIDAY)
