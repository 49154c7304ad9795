"""A job's configuration in words: "every weekday at 08:00 Europe/Berlin".

Pure functions of the job as the API shows it (the jobs view's dict), so the jobs list can
use the same words. The cron reading comes from the scheduler's own parser
(``triggers.cron_fields``): the words say what the scheduler will do, not what a second
parser thinks the expression means.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo

from lablink.dashboard.rendering import duration
from lablink.domain.triggers import cron_fields

# Monday first, as the guide numbers weekly.day_of_week (0 = Monday).
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
# The number of times a cron field may list before the words give ranges instead.
LIST_AT_MOST = 6


def describe(job: Mapping[str, Any]) -> str:
    """The schedule in one sentence: the trigger, then its window and run limit."""
    zone = str(job.get("timezone") or "UTC")
    trigger = job.get("trigger_type")
    words = _trigger(job, trigger, zone)
    window: list[str] = []
    start, end = job.get("start_date"), job.get("end_date")
    # An interval's start_date is its anchor, already said.
    if start and trigger != "interval":
        window.append(f"from {when(start, zone)}")
    if end:
        window.append(f"until {when(end, zone)}")
    if window:
        words += ", " + " ".join(window)
    limit = job.get("max_executions")
    if limit:
        words += f", at most {limit} run{'s' if limit != 1 else ''}"
    return words


def policies(job: Mapping[str, Any]) -> list[str]:
    """What happens around each run: lateness, overlap, timeout, alarms, profile."""
    lines = []
    grace = job.get("misfire_grace_time")
    if grace is not None:
        lines.append(f"A run that cannot start within {duration(grace)} of its time is missed.")
    if job.get("coalesce", True):
        lines.append("After downtime, the runs due are combined into one run.")
    else:
        lines.append("After downtime, each run due within the grace time runs in turn.")
    policy = job.get("conflict_policy") or "skip"
    instances = job.get("max_instances") or 1
    if policy == "queue":
        waits = " (at most one waits)" if job.get("coalesce", True) else ""
        lines.append(f"A run due while one is running waits for it to end{waits}.")
    elif policy == "replace":
        lines.append(f"Runs may overlap, up to {instances} at once; beyond that a run is skipped.")
    else:
        lines.append("A run due while one is running is skipped.")
    timeout = job.get("timeout_seconds")
    if timeout:
        lines.append(f"A run is stopped (timed out) after {duration(timeout)}.")
    if job.get("on_failure_alarm"):
        lines.append("A failed, timed-out or interrupted run raises an alarm.")
    missed = job.get("alarm_after_missed")
    if missed:
        lines.append(f"An alarm is raised after {missed} missed runs in a row.")
    if job.get("profile_id"):
        lines.append(f"Profile {job['profile_id']} is applied before each run.")
    return lines


def when(value: str | datetime, zone: str) -> str:
    """An instant as the job's zone reads it: '2026-12-03 10:00 Europe/Berlin'."""
    instant = datetime.fromisoformat(value) if isinstance(value, str) else value
    if instant.tzinfo is not None:
        instant = instant.astimezone(ZoneInfo(zone))
    text = instant.strftime("%Y-%m-%d %H:%M:%S" if instant.second else "%Y-%m-%d %H:%M")
    return f"{text} {zone}"


def every(seconds: float) -> str:
    """An interval in its own units: 5400 → '1 h 30 min', 1.5 → '1.5 s'."""
    parts = []
    rest = float(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        count, rest = divmod(rest, size)
        if count:
            parts.append(f"{int(count)} {unit}")
    if rest or not parts:
        parts.append(f"{rest:g} s")
    return " ".join(parts)


def clock(time_of_day: str | None) -> str:
    """'08:00:00' → '08:00'; seconds stay when they are not zero."""
    if not time_of_day:
        return "?"
    return time_of_day[:5] if time_of_day[5:] in ("", ":00") else time_of_day


def ordinal(day: int) -> str:
    if day == -1:
        return "last day"
    suffix = "th" if 11 <= day % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
    return f"{day}{suffix}"


def _trigger(job: Mapping[str, Any], trigger: Any, zone: str) -> str:
    at = clock(job.get("time_of_day"))
    if trigger == "interval":
        total = sum(
            float(job.get(f"interval_{unit}") or 0) * size
            for unit, size in (("seconds", 1), ("minutes", 60), ("hours", 3600), ("days", 86400))
        )
        anchor = job.get("start_date") or job.get("created_at")
        return f"every {every(total)}" + (f" from {when(anchor, zone)}" if anchor else "")
    if trigger == "daily":
        return f"every day at {at} {zone}"
    if trigger == "weekly":
        day = job.get("day_of_week")
        name = WEEKDAYS[day] if isinstance(day, int) and 0 <= day <= 6 else f"day {day}"
        return f"every {name} at {at} {zone}"
    if trigger == "monthly":
        day = job.get("day_of_month")
        words = f"every month on the {ordinal(day) if isinstance(day, int) else day} at {at} {zone}"
        if isinstance(day, int) and day > 28:
            words += f" (a month without a {ordinal(day)} is skipped)"
        return words
    if trigger == "date":
        run = job.get("run_date")
        return f"once at {when(run, zone)}" if run else "once"
    if trigger == "cron":
        expression = str(job.get("cron_expression") or "")
        return f"cron {expression} ({cron_words(expression, zone)})"
    return f"trigger {trigger}"


# -- cron -------------------------------------------------------------------------------------


def cron_words(expression: str, zone: str) -> str:
    """'0 8 * * 1-5' → 'every weekday at 08:00 Europe/Berlin'."""
    try:
        minutes, hours, doms, months, dows = cron_fields(expression)
    except ValueError as exc:
        return f"not valid: {exc}"
    parts = expression.split()
    # Vixie cron: day-of-month and day-of-week are ORed when both are restricted.
    dom_free, dow_free = parts[2].startswith("*"), parts[4].startswith("*")
    if not dom_free and not dow_free and (len(doms) == 31 or len(dows) == 7):
        dom_free = dow_free = True
    every_day, on_days = _days(
        sorted(doms) if not dom_free else None, sorted(dows) if not dow_free else None
    )
    times = _times(sorted(minutes), sorted(hours), zone)
    if times.startswith("at "):
        words = f"{every_day} {times}"
    else:
        words = times + (f" {on_days}" if on_days else "")
    if len(months) < 12:
        words += f", in {_month_list(sorted(months))}"
    return words


def _times(minutes: list[int], hours: list[int], zone: str) -> str:
    all_hours = len(hours) == 24
    if len(minutes) == 1:
        minute = minutes[0]
        at = "on the hour" if minute == 0 else f"at minute {minute}"
        if all_hours:
            return f"every hour {at}"
        step = _step(hours, 0, 23)
        if step:
            return f"every {step} hours {at} (from {hours[0]:02d}:{minute:02d} {zone})"
        if len(hours) <= LIST_AT_MOST and len(_runs(hours)) == len(hours):
            return "at " + _and([f"{h:02d}:{minute:02d}" for h in hours]) + f" {zone}"
        spans = [
            f"at {a:02d}:{minute:02d}"
            if a == b
            else f"from {a:02d}:{minute:02d} to {b:02d}:{minute:02d}"
            for a, b in _runs(hours)
        ]
        return f"every hour {_and(spans)} {zone}"
    if len(minutes) == 60:
        head = "every minute"
    else:
        step = _step(minutes, 0, 59)
        if step:
            head = f"every {step} minutes" + (f" from minute {minutes[0]}" if minutes[0] else "")
        else:
            head = "every hour at minutes " + _ranges(minutes)
    if all_hours:
        return head
    return f"{head}, {_hour_span(hours, zone)}"


def _hour_span(hours: list[int], zone: str) -> str:
    runs = _runs(hours)
    spans = [f"{a:02d}:00–{b:02d}:59" for a, b in runs]
    return f"during {_and(spans)} {zone}"


def _days(doms: list[int] | None, dows: list[int] | None) -> tuple[str, str]:
    """('every weekday', 'on weekdays'): the days as 'every …' before a time, and 'on …'
    after a repetition."""
    if doms is None and dows is None:
        return "every day", ""
    week = _weekday_words(dows) if dows is not None else None
    month = f"the {_and([ordinal(d) for d in doms])}" if doms is not None else None
    if week is not None and month is not None:
        return (
            f"on {month} of every month and every {week[0]}",
            f"on {month} of the month and on {week[1]}",
        )
    if week is not None:
        return f"every {week[0]}", f"on {week[1]}"
    assert month is not None
    return f"on {month} of every month", f"on {month} of the month"


def _weekday_words(dows: list[int]) -> tuple[str, str]:
    monday_first = sorted((d - 1) % 7 for d in dows)
    if monday_first == [0, 1, 2, 3, 4]:
        return "weekday", "weekdays"
    if monday_first == [5, 6]:
        return "Saturday and Sunday", "weekends"
    if len(monday_first) == 7:
        return "day", "every day"
    names = [
        WEEKDAYS[a] if a == b else f"{WEEKDAYS[a]} to {WEEKDAYS[b]}" for a, b in _runs(monday_first)
    ]
    text = _and(names)
    return text, text


def _month_list(months: list[int]) -> str:
    return _and(
        [
            MONTHS[a - 1] if a == b else f"{MONTHS[a - 1]} to {MONTHS[b - 1]}"
            for a, b in _runs(months)
        ]
    )


def _step(values: list[int], low: int, high: int) -> int | None:
    """The step of a repetition that spans the field ('*/15', '5/20'), else None."""
    if len(values) < 3:
        return None
    step = values[1] - values[0]
    if any(b - a != step for a, b in pairwise(values)):
        return None
    if values[0] - low >= step or high - values[-1] >= step:
        return None
    return step


def _runs(values: Sequence[int]) -> list[tuple[int, int]]:
    """[1, 2, 3, 5] → [(1, 3), (5, 5)]."""
    runs: list[tuple[int, int]] = []
    for value in values:
        if runs and value == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], value)
        else:
            runs.append((value, value))
    return runs


def _ranges(values: Sequence[int]) -> str:
    return _and([str(a) if a == b else f"{a}–{b}" for a, b in _runs(values)])


def _and(items: Sequence[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]
