"""When a schedule fires next: pure functions of a Schedule and an instant (no clock, no I/O).

Results are tz-aware UTC. Every trigger runs in ``schedule.timezone``; ``start_date`` and
``end_date`` bound every trigger type, both inclusive.

Wall-clock triggers -- daily, weekly, monthly, and cron expressions whose minute and hour fields
both name fixed values (neither starts with ``*``) -- are computed in naive local wall time and
then placed on the time line:

* a wall time that does not exist (spring forward) fires once, at the transition instant
  (Europe/Berlin 2026-03-29 02:30 -> 01:00 UTC = 03:00 CEST); several wall times inside one gap
  collapse into that single fire;
* a wall time that occurs twice (fall back) fires once, at its first occurrence (fold=0).

Cron expressions whose minute or hour field starts with ``*`` (``*/15 * * * *``,
``0 */6 * * *``) fire at every real instant whose local wall clock matches: not at all for wall
times inside a gap, twice for repeated ones. That split is Debian cron's, as cronsim implements
it; tests use cronsim as the oracle. Deliberate disagreements with cronsim 2.8:

* cronsim restarts a wall-clock expression from the naive wall time of ``after``. When ``after``
  lies in the second pass of a repeated hour it can return a fire *before* ``after``; we return
  the first fire strictly after it.
* cronsim steps the hour field in real-time hours from minute 0 of the current hour. After a
  half-hour shift (Australia/Lord_Howe) those steps land on half past, and for the rest of that
  day it misses matching instants (``8 */14 * * *`` skips 14:08 on 2026-10-04). We fire at every
  instant whose wall clock matches.
* ``a-a/s`` is the single value ``a`` (Vixie cron); cronsim reads it as ``a/s`` and croniter as
  ``*/s``.

Cron syntax: five fields of numbers, names (jan-dec, sun-sat), ``*``, ranges ``a-b`` (a <= b),
lists and ``/step``; ``a/s`` runs from ``a`` to the field's maximum. Not supported: ``L``, ``W``,
``#``, ``?``, ``H`` and ``@`` aliases. Day-of-month and day-of-week are ORed when both are
restricted (neither starts with ``*``), else ANDed (Vixie). croniter finds the next matching day
in naive wall time, looking at most 50 years ahead: a cron job with no fire in 50 years never
fires. We parse expressions ourselves because croniter reads ``5-5`` as every minute.

Interval triggers count elapsed time (DST plays no part), in integer microseconds.
"""

from __future__ import annotations

import copy
import re
from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from heapq import heappop, heappush
from itertools import islice, takewhile
from typing import Any
from zoneinfo import ZoneInfo

from croniter import CroniterBadDateError, croniter

from lablink.domain.schedule import Schedule

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
_FIELDS = (
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day-of-month", 1, 31),
    ("month", 1, 12),
    ("day-of-week", 0, 7),
)
_FIELD_LIST = "minute hour day-of-month month day-of-week"
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_NAMES = {3: {n: i for i, n in enumerate(_MONTHS, 1)}, 4: {n: i for i, n in enumerate(_WEEKDAYS)}}
_ITEM = re.compile(r"(\*|[0-9a-z]+(?:-[0-9a-z]+)?)(?:/([0-9]+))?", re.ASCII | re.IGNORECASE)
_DAYS_IN_MONTH = (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


@dataclass(frozen=True, slots=True)
class _Cron:
    wall_clock: bool  # minute and hour both fixed: DST handled like daily/weekly/monthly
    day_minutes: tuple[int, ...]  # sorted minutes of the day (hour * 60 + minute) that match
    finder: Any  # croniter over the normalised expression; copied before use, never mutated
    never: str | None  # why the expression can never fire, if it cannot


def _number(text: str, index: int) -> int:
    name, low, high = _FIELDS[index]
    value = int(text) if text.isdigit() else _NAMES.get(index, {}).get(text.lower())
    if value is None or not low <= value <= high:
        raise ValueError(f"invalid value {text!r} in {name} field (allowed {low}-{high})")
    return value


def _parse_field(text: str, index: int) -> frozenset[int]:
    name, low, high = _FIELDS[index]
    values: set[int] = set()
    for item in text.split(","):
        match = _ITEM.fullmatch(item)
        if match is None:
            raise ValueError(f"invalid value {item!r} in {name} field")
        base, step_text = match.groups()
        step = int(step_text) if step_text else 1
        if step == 0:
            raise ValueError(f"invalid step {item!r} in {name} field (step must be >= 1)")
        if base == "*":
            start, end = low, high
        else:
            first, _, last = base.partition("-")
            start = _number(first, index)
            end = _number(last, index) if last else (high if step_text else start)
            if end < start:
                raise ValueError(f"invalid range {item!r} in {name} field (start after end)")
        values.update(range(start, end + 1, step))
    return frozenset(values)


def _render(values: frozenset[int], low: int, high: int) -> str:
    if values >= frozenset(range(low, high + 1)):
        return "*"
    return ",".join(str(v) for v in sorted(values))


@lru_cache(maxsize=4096)
def _compile(expression: str) -> _Cron:
    parts = expression.split()
    if len(parts) != 5:
        raise ValueError(f"expected 5 fields ({_FIELD_LIST}), got {len(parts)}")
    minutes, hours, doms, months, dows = (_parse_field(p, i) for i, p in enumerate(parts))
    dows = frozenset(d % 7 for d in dows)
    day_and = parts[2].startswith("*") or parts[4].startswith("*")
    dom_text, dow_text = _render(doms, 1, 31), _render(dows, 0, 6)
    if not day_and and "*" in (dom_text, dow_text):
        dom_text = dow_text = "*"  # OR with an unrestricted side: every day
    never = None
    if day_and and min(doms) > max(_DAYS_IN_MONTH[m] for m in months):
        month_list = ", ".join(str(m) for m in sorted(months))
        never = f"never fires: no month in {{{month_list}}} has day {min(doms)}"
    normalised = " ".join(
        (_render(minutes, 0, 59), _render(hours, 0, 23), dom_text, _render(months, 1, 12), dow_text)
    )
    return _Cron(
        wall_clock=not parts[0].startswith("*") and not parts[1].startswith("*"),
        day_minutes=tuple(sorted(h * 60 + m for h in hours for m in minutes)),
        finder=croniter(normalised, datetime(2000, 1, 1), day_or=not day_and),
        never=never,
    )


def cron_fields(expression: str) -> tuple[frozenset[int], ...]:
    """The values each of the five fields matches (day-of-week 0-6, Sunday 0), as the
    scheduler reads them: what a description in words must agree with. ValueError if invalid."""
    parts = expression.split()
    if len(parts) != 5:
        raise ValueError(f"expected 5 fields ({_FIELD_LIST}), got {len(parts)}")
    fields = [_parse_field(p, i) for i, p in enumerate(parts)]
    fields[4] = frozenset(d % 7 for d in fields[4])
    return tuple(fields)


def cron_problem(expression: str) -> str | None:
    """None if `expression` is a valid 5-field cron expression that fires at least once; else a
    human-readable reason."""
    try:
        return _compile(expression).never
    except ValueError as error:
        return str(error)


@lru_cache(maxsize=1024)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def _wall(instant: datetime, zone: ZoneInfo) -> datetime:
    return instant.astimezone(zone).replace(tzinfo=None)


def _both_passes(wall: datetime, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """The UTC instants of `wall` read with fold=0 and fold=1: equal for an ordinary wall time,
    first < second when it occurs twice, first > second when it does not exist (a gap)."""
    first = wall.replace(tzinfo=zone).astimezone(UTC)
    return first, wall.replace(tzinfo=zone, fold=1).astimezone(UTC)


def _transition(before: datetime, after: datetime, zone: ZoneInfo) -> datetime:
    """The first instant in (before, after] with after's UTC offset; zone transitions fall on
    whole seconds, so a binary search over seconds finds it exactly."""
    offset = after.astimezone(zone).utcoffset()
    base = before.replace(microsecond=0)
    low, high = 0, (after - base) // timedelta(seconds=1) + 1
    while high - low > 1:
        mid = (low + high) // 2
        if (base + timedelta(seconds=mid)).astimezone(zone).utcoffset() == offset:
            high = mid
        else:
            low = mid
    return base + timedelta(seconds=high)


def _first_passes(walls: Iterator[datetime], zone: ZoneInfo, after: datetime) -> Iterator[datetime]:
    """Wall-clock rule: a repeated wall time fires at its first pass, a missing one at the end
    of the gap. Walls ascend, so their instants never decrease; drop repeats and those <= after
    (after may lie in a repeat's second pass)."""
    last = after
    for wall in walls:
        first, second = _both_passes(wall, zone)
        instant = first if first <= second else _transition(second, first, zone)
        if instant > last:
            yield instant
            last = instant


def _every_pass(walls: Iterator[datetime], zone: ZoneInfo, after: datetime) -> Iterator[datetime]:
    """Elapsed-time rule: every real instant whose wall clock matches. A repeat's second pass
    can come after later first passes, so hold it until no later wall can precede it."""
    pending: list[datetime] = []
    for wall in walls:
        first, second = _both_passes(wall, zone)
        if first > second:
            continue  # the wall time does not exist
        if second != first and second > after:
            heappush(pending, second)
        while pending and pending[0] < first:
            yield heappop(pending)
        if first > after:
            yield first
    while pending:
        yield heappop(pending)


def _cron_walls(cron: _Cron, start: datetime) -> Iterator[datetime]:
    """Matching naive wall times > start, ascending. croniter finds each matching day; the
    times within a day are every hour x minute combination, listed without it."""
    finder = copy.copy(cron.finder)
    cursor = start
    while True:
        try:
            found: datetime = finder.get_next(datetime, start_time=cursor)
        except CroniterBadDateError:
            return
        midnight = found.replace(hour=0, minute=0)
        index = bisect_left(cron.day_minutes, found.hour * 60 + found.minute)
        for minute in cron.day_minutes[index:]:
            yield midnight + timedelta(minutes=minute)
        cursor = midnight + timedelta(hours=23, minutes=59)


def _calendar_walls(schedule: Schedule, start: datetime) -> Iterator[datetime]:
    """Daily / weekly / monthly wall times > start, ascending."""
    if schedule.time_of_day is None:
        raise ValueError(f"a {schedule.trigger_type} schedule needs time_of_day")
    at = schedule.time_of_day.replace(tzinfo=None)
    day = start.date()
    if schedule.trigger_type == "monthly":
        wanted = schedule.day_of_month
        if wanted is None or not (wanted == -1 or 1 <= wanted <= 31):
            raise ValueError(f"monthly day_of_month must be 1..31 or -1, got {wanted}")
        year, month = day.year, day.month
        while True:
            last = (date(year + month // 12, month % 12 + 1, 1) - timedelta(days=1)).day
            if wanted <= last:
                wall = datetime.combine(date(year, month, last if wanted == -1 else wanted), at)
                if wall > start:
                    yield wall
            year, month = year + month // 12, month % 12 + 1
    step = timedelta(days=1)
    if schedule.trigger_type == "weekly":
        if schedule.day_of_week is None or not 0 <= schedule.day_of_week <= 6:
            raise ValueError(f"weekly day_of_week must be 0..6, got {schedule.day_of_week}")
        day += timedelta(days=(schedule.day_of_week - day.weekday()) % 7)
        step = timedelta(days=7)
    while True:
        wall = datetime.combine(day, at)
        if wall > start:
            yield wall
        day += step


def _micros(instant: datetime) -> int:
    return (instant - _EPOCH) // _US


def _interval_terms(schedule: Schedule) -> tuple[int, int, int]:
    """(anchor in microseconds since the epoch, interval in microseconds, smallest n)."""
    if schedule.interval is None or schedule.interval < 1:
        raise ValueError(f"interval must be >= 1 second, got {schedule.interval}")
    return (
        _micros(schedule.anchor),
        round(schedule.interval * 1e6),
        0 if schedule.anchor_fires else 1,
    )


def _interval_range(schedule: Schedule, after: datetime, until: datetime | None) -> range:
    """The n with anchor + n * interval in (after, until] and inside start/end."""
    anchor, step, smallest = _interval_terms(schedule)
    low = max(smallest, (_micros(after) - anchor) // step + 1)
    if schedule.start_date is not None:
        low = max(low, -((anchor - _micros(schedule.start_date)) // step))  # ceiling division
    ends = [t for t in (until, schedule.end_date) if t is not None]
    if not ends:
        return range(low, low + 2**62)
    return range(low, max(low, (_micros(min(ends)) - anchor) // step + 1))


def _utc(instant: datetime) -> datetime:
    if instant.tzinfo is None:
        raise ValueError(f"{instant} must be timezone-aware")
    return instant.astimezone(UTC)  # == across zones is always False for ambiguous wall times


def _fires(schedule: Schedule, after: datetime) -> Iterator[datetime]:
    """Every fire strictly after `after`, ascending, inside start/end."""
    after = _utc(after)
    kind = schedule.trigger_type
    if kind == "interval":
        anchor, step, _ = _interval_terms(schedule)
        for n in _interval_range(schedule, after, None):
            yield _EPOCH + timedelta(microseconds=anchor + n * step)
        return
    end = schedule.end_date
    if end is not None and end <= after:
        return  # finished jobs are common; skip the search
    if schedule.start_date is not None and schedule.start_date > after:
        after = schedule.start_date - _US  # a fire exactly at start_date counts
    if kind == "date":
        if schedule.run_date is None:
            raise ValueError("a date schedule needs run_date")
        if after < schedule.run_date and (end is None or schedule.run_date <= end):
            yield schedule.run_date.astimezone(UTC)
        return
    zone = _zone(schedule.timezone)
    start = _wall(after, zone)
    if kind == "cron":
        if schedule.cron_expression is None:
            raise ValueError("a cron schedule needs cron_expression")
        cron = _compile(schedule.cron_expression)
        if cron.never is not None:
            return
        if cron.wall_clock:
            fires = _first_passes(_cron_walls(cron, start), zone, after)
        else:
            first, second = _both_passes(start, zone)
            if first < second and after == first:  # first pass: the second is still to come
                start -= second - first
            fires = _every_pass(_cron_walls(cron, start), zone, after)
    else:
        fires = _first_passes(_calendar_walls(schedule, start), zone, after)
    yield from fires if end is None else takewhile(lambda t: t <= end, fires)


def next_fire(schedule: Schedule, after: datetime) -> datetime | None:
    """First fire time strictly after `after` (tz-aware, any zone), as tz-aware UTC; None if the
    schedule never fires again (date ran, end_date passed, ...)."""
    return next(_fires(schedule, after), None)


def next_fires(schedule: Schedule, after: datetime, count: int) -> list[datetime]:
    """The next `count` fire times strictly after `after` (fewer if the schedule ends)."""
    return list(islice(_fires(schedule, after), max(count, 0)))


def fires_between(
    schedule: Schedule, after: datetime, until: datetime, limit: int
) -> list[datetime]:
    """Fire times t with after < t <= until, at most `limit` of them (the earliest ones)."""
    end = _utc(until)
    return list(islice(takewhile(lambda t: t <= end, _fires(schedule, after)), max(limit, 0)))


def count_fires_between(schedule: Schedule, after: datetime, until: datetime) -> int:
    """How many fires in (after, until]; O(1) for interval triggers."""
    end = _utc(until)
    if schedule.trigger_type == "interval":
        return len(_interval_range(schedule, _utc(after), end))
    return sum(1 for _ in takewhile(lambda t: t <= end, _fires(schedule, after)))
