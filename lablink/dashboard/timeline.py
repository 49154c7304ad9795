"""The overview's timeline: every fire of the next 24 hours across all jobs, in time order.

The fire times are the trigger functions' own (``triggers.next_fire``, as the API's next-runs
answers them): an active job starts from the next run its view stores (from now when that has
passed: an overdue run is not listed), a paused one from now (its fires are shown greyed,
marked paused, so that an operator sees what it would run). What is rendered is filtered
again with the render's clock (``Timeline.hours``): no fire that has passed is shown.

The work is bounded for a lab of 10,000 jobs. The active jobs come soonest first (the jobs
view's index on the next run) and are read only as far as the fires listed need: a job whose
next run is after the ``CAP``-th fire is never decoded. The fires are merged lazily through a
heap, and at most ``CAP`` are listed. What is not listed is counted: exactly for the jobs read
(interval triggers by a formula, the others by walking their fires up to ``COUNT_BUDGET``
steps), and as one fire each for the active jobs due in the window that were not read; the
page then says "more than N".
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from lablink.domain import triggers
from lablink.domain.job import JobState
from lablink.domain.schedule import Schedule

WINDOW = timedelta(hours=24)
CAP = 200
COUNT_BUDGET = 2_000
# next_fire answers the fires strictly after its instant: one microsecond earlier keeps a
# fire at ``now`` itself.
_INSTANT = timedelta(microseconds=1)


@dataclass(frozen=True)
class Fire:
    at: datetime
    job_id: str
    job_name: str
    timezone: str
    paused: bool


@dataclass
class Hour:
    start: datetime
    fires: list[Fire] = field(default_factory=list)


@dataclass
class Timeline:
    start: datetime
    end: datetime
    fires: list[Fire]
    # Fires in the window beyond those listed; ``more_at_least``: counting stopped there.
    more: int = 0
    more_at_least: bool = False

    def shown(self, now: datetime | None = None) -> list[Fire]:
        """The listed fires still to come at ``now`` (the render's clock): a page built a
        moment ago lists none that have passed since."""
        return self.fires if now is None else [f for f in self.fires if f.at >= now]

    def hours(self, zone: ZoneInfo, now: datetime | None = None) -> list[Hour]:
        """The listed fires still to come at ``now``, grouped by the hour they fall in (in
        ``zone``)."""
        grouped: list[Hour] = []
        for fire in self.shown(now):
            start = fire.at.astimezone(zone).replace(minute=0, second=0, microsecond=0)
            if not grouped or grouped[-1].start != start:
                grouped.append(Hour(start=start))
            grouped[-1].fires.append(fire)
        return grouped


@dataclass(order=True)
class _Next:
    # Fires at the same instant are listed by job id.
    at: datetime
    job_id: str
    job_name: str = field(compare=False)
    timezone: str = field(compare=False)
    paused: bool = field(compare=False)
    schedule: Schedule = field(compare=False)


def _first(state: JobState, schedule: Schedule, now: datetime) -> datetime | None:
    if state.status == "active":
        stored = state.next_fire_time()
        if stored is not None:
            return stored
    return triggers.next_fire(schedule, now)


def _entry(job_id: str, state: JobState, now: datetime) -> _Next | None:
    spec = state.spec
    if spec is None or state.anchor is None or state.status not in ("active", "paused"):
        return None
    schedule = Schedule.from_spec(spec, state.anchor)
    first = _first(state, schedule, now)
    if first is None:
        return None
    return _Next(first, job_id, spec.name, spec.timezone, state.status == "paused", schedule)


def build(
    active: Iterable[tuple[str, JobState]],
    paused: Iterable[tuple[str, JobState]],
    now: datetime,
    *,
    active_due: int | None = None,
    window: timedelta = WINDOW,
    cap: int = CAP,
    count_budget: int = COUNT_BUDGET,
) -> Timeline:
    """The first ``cap`` fires in the window from ``now`` of the ``active`` jobs (soonest next
    run first, all due by the window's end: ``due_by``) and the ``paused`` ones.
    ``active_due``: how many active jobs are due in all (``count_due_by``), so that those not
    read are counted too."""
    end = now + window
    heap = [e for job_id, state in paused if (e := _entry(job_id, state, now)) and e.at <= end]
    heapq.heapify(heap)
    waiting = iter(active)
    read = 0
    pending: _Next | None = None

    def admit(until: datetime | None) -> None:
        """Move to the heap the active jobs whose first fire is by ``until`` (None: one)."""
        nonlocal pending
        while pending is not None and (until is None or pending.at <= until):
            if pending.at <= end:
                heapq.heappush(heap, pending)
            until = pending.at if until is None else until
            pending = _next_pending()

    def _next_pending() -> _Next | None:
        nonlocal read
        for job_id, state in waiting:
            read += 1
            entry = _entry(job_id, state, now)
            if entry is not None:
                return entry
        return None

    pending = _next_pending()
    fires: list[Fire] = []
    while len(fires) < cap:
        admit(heap[0].at if heap else None)
        if not heap:
            break
        item = heapq.heappop(heap)
        if item.at < now:
            # An overdue job's stored next run has passed: not listed, its fires from now are.
            following = triggers.next_fire(item.schedule, now - _INSTANT)
            if following is not None and following <= end:
                item.at = following
                heapq.heappush(heap, item)
            continue
        fires.append(Fire(item.at, item.job_id, item.job_name, item.timezone, item.paused))
        following = triggers.next_fire(item.schedule, item.at)
        if following is not None and following <= end:
            item.at = following
            heapq.heappush(heap, item)
    if pending is not None and pending.at <= end:
        heap.append(pending)
        pending = None
    more, budget = 0, count_budget
    at_least = False
    for item in heap:
        more += 1
        if item.schedule.trigger_type == "interval":
            more += triggers.count_fires_between(item.schedule, item.at, end)
            continue
        if budget <= 0:
            at_least = True
            continue
        rest = triggers.fires_between(item.schedule, item.at, end, budget)
        more += len(rest)
        budget -= len(rest)
        at_least = at_least or budget <= 0
    # Active jobs due in the window that were never read: one fire each, at least.
    unread = max((active_due or 0) - read, 0)
    return Timeline(now, end, fires, more + unread, more_at_least=at_least or unread > 0)
