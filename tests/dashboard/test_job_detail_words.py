"""A job's schedule in words (lablink/dashboard/words.py): every trigger and option of the
guide, and cron expressions read by the scheduler's own parser."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lablink.dashboard.words import WEEKDAYS, cron_words, describe, every, policies, when

ZONE = "Europe/Berlin"
BASE: dict[str, Any] = {
    "timezone": ZONE,
    "created_at": "2026-12-03T10:00:00+01:00",
    "misfire_grace_time": 300.0,
    "coalesce": True,
    "conflict_policy": "skip",
    "max_instances": 1,
    "timeout_seconds": 120.0,
    "on_failure_alarm": False,
}


def job(**fields: Any) -> dict[str, Any]:
    return {**BASE, **fields}


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        (
            {"trigger_type": "interval", "interval_hours": 1},
            "every 1 h from 2026-12-03 10:00 " + ZONE,
        ),
        (
            {
                "trigger_type": "interval",
                "interval_hours": 1,
                "start_date": "2026-12-03T10:00:00+00:00",
                "timezone": "UTC",
            },
            "every 1 h from 2026-12-03 10:00 UTC",
        ),
        ({"trigger_type": "interval", "interval_minutes": 30}, "every 30 min from"),
        ({"trigger_type": "interval", "interval_seconds": 1.5}, "every 1.5 s from"),
        (
            {
                "trigger_type": "interval",
                "interval_days": 1,
                "interval_hours": 2,
                "interval_minutes": 30,
            },
            "every 1 d 2 h 30 min from",
        ),
        ({"trigger_type": "daily", "time_of_day": "03:00:00"}, f"every day at 03:00 {ZONE}"),
        ({"trigger_type": "daily", "time_of_day": "03:00:15"}, f"every day at 03:00:15 {ZONE}"),
        (
            {"trigger_type": "weekly", "day_of_week": 0, "time_of_day": "08:00:00"},
            f"every Monday at 08:00 {ZONE}",
        ),
        (
            {"trigger_type": "weekly", "day_of_week": 6, "time_of_day": "08:00:00"},
            f"every Sunday at 08:00 {ZONE}",
        ),
        (
            {"trigger_type": "monthly", "day_of_month": 15, "time_of_day": "12:00:00"},
            f"every month on the 15th at 12:00 {ZONE}",
        ),
        (
            {"trigger_type": "monthly", "day_of_month": -1, "time_of_day": "23:00:00"},
            f"every month on the last day at 23:00 {ZONE}",
        ),
        (
            {"trigger_type": "monthly", "day_of_month": 31, "time_of_day": "12:00:00"},
            "(a month without a 31st is skipped)",
        ),
        (
            {"trigger_type": "date", "run_date": "2025-12-25T10:00:00+01:00"},
            f"once at 2025-12-25 10:00 {ZONE}",
        ),
        (
            # An instant given in another offset reads in the job's zone.
            {"trigger_type": "date", "run_date": "2025-12-25T09:00:00+00:00"},
            f"once at 2025-12-25 10:00 {ZONE}",
        ),
        (
            {"trigger_type": "cron", "cron_expression": "0 8 * * 1-5"},
            f"cron 0 8 * * 1-5 (every weekday at 08:00 {ZONE})",
        ),
        (
            {
                "trigger_type": "daily",
                "time_of_day": "09:00:00",
                "max_executions": 30,
                "start_date": "2025-11-01T00:00:00+01:00",
                "end_date": "2025-12-01T00:00:00+01:00",
            },
            f"every day at 09:00 {ZONE}, from 2025-11-01 00:00 {ZONE}"
            f" until 2025-12-01 00:00 {ZONE}, at most 30 runs",
        ),
        (
            {"trigger_type": "date", "run_date": "2025-12-25T10:00:00+01:00", "max_executions": 1},
            "at most 1 run",
        ),
    ],
)
def test_every_trigger_in_words(fields: dict[str, Any], words: str) -> None:
    assert words in describe(job(**fields))


@pytest.mark.parametrize(
    ("expression", "words"),
    [
        # The guide's common patterns.
        ("0 */6 * * *", "every 6 hours on the hour (from 00:00 Europe/Berlin)"),
        ("0 * * * *", "every hour on the hour"),
        ("0 0 * * *", "every day at 00:00 Europe/Berlin"),
        ("*/15 * * * *", "every 15 minutes"),
        ("0 9-17 * * 1-5", "every hour from 09:00 to 17:00 Europe/Berlin on weekdays"),
        # Day-of-week lists, ranges, names, 7 = Sunday, weekends.
        ("30 7 * * mon,wed,fri", "every Monday, Wednesday and Friday at 07:30 Europe/Berlin"),
        ("30 7 * * 2-4", "every Tuesday to Thursday at 07:30 Europe/Berlin"),
        ("15 3 * * 7", "every Sunday at 03:15 Europe/Berlin"),
        ("0 10 * * 6,0", "every Saturday and Sunday at 10:00 Europe/Berlin"),
        ("0 10 * * 5-7", "every Friday to Sunday at 10:00 Europe/Berlin"),
        # Days of the month, months, and cron's OR of the two day fields.
        ("30 2 1,15 * *", "on the 1st and 15th of every month at 02:30 Europe/Berlin"),
        ("0 0 * jan-mar *", "every day at 00:00 Europe/Berlin, in January to March"),
        ("0 12 1 * mon", "on the 1st of every month and every Monday at 12:00 Europe/Berlin"),
        ("0 12 1 * *", "on the 1st of every month at 12:00"),
        # Several times, minutes lists, steps from an offset, hour spans.
        ("0 8,20 * * *", "every day at 08:00 and 20:00 Europe/Berlin"),
        ("5,35 * * * *", "every hour at minutes 5 and 35"),
        ("5/20 * * * *", "every 20 minutes from minute 5"),
        ("*/10 9-17 * * mon-fri", "every 10 minutes, during 09:00–17:59 Europe/Berlin on weekdays"),
        ("* * * * *", "every minute"),
        ("0 9-12,14-17 * * *", "every hour from 09:00 to 12:00 and from 14:00 to 17:00"),
        # Not valid: said so, with the scheduler's reason.
        ("0 25 * * *", "not valid: invalid value '25' in hour field"),
        ("0 8 * *", "not valid: expected 5 fields"),
    ],
)
def test_cron_in_words(expression: str, words: str) -> None:
    assert words in cron_words(expression, ZONE)


@given(
    minute=st.integers(0, 59),
    hour=st.integers(0, 23),
    days=st.sets(st.integers(0, 6), min_size=1, max_size=6),
)
def test_a_cron_time_on_some_weekdays_names_exactly_those_days(
    minute: int, hour: int, days: set[int]
) -> None:
    expression = f"{minute} {hour} * * {','.join(str(d) for d in sorted(days))}"
    words = cron_words(expression, ZONE)
    assert f"at {hour:02d}:{minute:02d} {ZONE}" in words
    named = {i for i, name in enumerate(WEEKDAYS) if name in words}
    monday_first = {(d - 1) % 7 for d in days}
    if monday_first == {0, 1, 2, 3, 4}:
        assert "every weekday" in words
    elif monday_first == {5, 6}:
        assert "every Saturday and Sunday" in words
    else:
        # Ranges name their ends only: every named day is one of them, and the ends are.
        assert named <= monday_first
        assert min(monday_first) in named
        assert max(monday_first) in named


@given(
    fields=st.tuples(
        st.sampled_from(["*", "0", "*/5", "1-10", "3,7", "0-30/15"]),
        st.sampled_from(["*", "8", "*/2", "9-17", "6,18"]),
        st.sampled_from(["*", "1", "1,15", "10-20", "*/2"]),
        st.sampled_from(["*", "1", "jan-jun", "*/3"]),
        st.sampled_from(["*", "1-5", "sun", "0,6", "mon-wed"]),
    )
)
def test_any_valid_expression_gets_words_without_failing(fields: tuple[str, ...]) -> None:
    words = cron_words(" ".join(fields), ZONE)
    assert words
    assert "not valid" not in words


@given(seconds=st.integers(1, 400 * 86400))
def test_an_interval_in_words_adds_up_to_its_seconds(seconds: int) -> None:
    sizes = {"d": 86400, "h": 3600, "min": 60, "s": 1}
    tokens = every(seconds).split()
    total = sum(float(n) * sizes[u] for n, u in zip(tokens[::2], tokens[1::2], strict=True))
    assert total == seconds


def test_policies_cover_misfire_coalesce_conflict_timeout_alarm_profile() -> None:
    lines = " ".join(
        policies(
            job(
                conflict_policy="queue",
                on_failure_alarm=True,
                profile_id="high_res_1GS",
                alarm_after_missed=3,
            )
        )
    )
    assert "cannot start within 5 min of its time is missed" in lines
    assert "combined into one run" in lines
    assert "waits for it to end (at most one waits)" in lines
    assert "stopped (timed out) after 2 min" in lines
    assert "raises an alarm" in lines
    assert "after 3 missed runs" in lines
    assert "Profile high_res_1GS" in lines
    replace = " ".join(policies(job(conflict_policy="replace", max_instances=3, coalesce=False)))
    assert "up to 3 at once" in replace
    assert "each run due within the grace time runs in turn" in replace
    assert "is skipped" in " ".join(policies(job()))


def test_an_instant_reads_in_the_jobs_zone_with_seconds_only_when_there_are_some() -> None:
    assert when("2026-07-01T06:00:00+00:00", ZONE) == f"2026-07-01 08:00 {ZONE}"
    assert when("2026-07-01T06:00:07+00:00", ZONE) == f"2026-07-01 08:00:07 {ZONE}"
