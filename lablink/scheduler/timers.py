"""Pending fires and timeouts in one priority queue: the engine never scans all jobs.

A timer is taken at its ``key``: its own time, or, for a fire the engine may decide ahead
(``plan_fire(..., lead=…)``), that much before it; ``when`` is always the time it is for."""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

NO_LEAD = timedelta(0)


@dataclass(order=True, frozen=True, slots=True)
class Timer:
    key: datetime
    seq: int
    kind: Literal["fire", "timeout"] = field(compare=False)
    job_id: str = field(compare=False)
    when: datetime = field(compare=False)
    execution_id: str | None = field(compare=False, default=None)


class TimerQueue:
    """A heap of timers. A job's fire timer is replaced by planning it again; the old entry
    stays in the heap and is dropped when it surfaces (cheaper than removing it)."""

    def __init__(self) -> None:
        self._heap: list[Timer] = []
        self._seq = itertools.count()
        self._planned: dict[str, Timer] = {}  # a job's live fire timer
        # execution id -> when it times out; a timer in the heap is live only at that instant
        self._timeouts: dict[str, tuple[str, datetime]] = {}

    def __len__(self) -> int:
        return len(self._planned)

    def plan_fire(self, job_id: str, when: datetime | None, lead: timedelta = NO_LEAD) -> None:
        """The job's next fire is at ``when`` (None: it has none), taken ``lead`` before it."""
        if when is None:
            self._planned.pop(job_id, None)
            return
        key = when - lead
        planned = self._planned.get(job_id)
        if planned is not None and planned.when == when and planned.key == key:
            return
        timer = Timer(key, next(self._seq), "fire", job_id, when)
        self._planned[job_id] = timer
        heapq.heappush(self._heap, timer)

    def planned(self, job_id: str) -> datetime | None:
        timer = self._planned.get(job_id)
        return timer.when if timer is not None else None

    def planned_jobs(self) -> list[str]:
        return list(self._planned)

    def add_timeout(self, job_id: str, execution_id: str, when: datetime) -> None:
        self._timeouts[execution_id] = (job_id, when)
        heapq.heappush(
            self._heap, Timer(when, next(self._seq), "timeout", job_id, when, execution_id)
        )

    def timeout(self, execution_id: str) -> datetime | None:
        entry = self._timeouts.get(execution_id)
        return entry[1] if entry is not None else None

    def shift_timeouts(self, delta: timedelta) -> None:
        """Move every timeout by ``delta``: a timeout measures elapsed time, so when the wall
        clock is set it moves with it (a clock set an hour forward times nothing out)."""
        for execution_id, (job_id, when) in list(self._timeouts.items()):
            self.add_timeout(job_id, execution_id, when + delta)

    def cancel_timeout(self, execution_id: str) -> None:
        self._timeouts.pop(execution_id, None)
        live = len(self._planned) + len(self._timeouts)
        if len(self._heap) > 2 * live + 1024:
            # Dead entries (ended executions, re-planned jobs) would otherwise pile up.
            self._heap = [timer for timer in self._heap if self._live(timer)]
            heapq.heapify(self._heap)

    def _live(self, timer: Timer) -> bool:
        if timer.kind == "fire":
            return self._planned.get(timer.job_id) is timer
        entry = self._timeouts.get(timer.execution_id or "")
        return entry is not None and entry[1] == timer.when

    def next_due(self) -> datetime | None:
        """When the next live timer is to be taken (its key)."""
        while self._heap:
            top = self._heap[0]
            if not self._live(top):
                heapq.heappop(self._heap)
                continue
            return top.key
        return None

    def pop_due(self, now: datetime) -> list[Timer]:
        """Every live timer to be taken at ``now``; fire timers leave the plan as they are
        taken."""
        due: list[Timer] = []
        while self._heap and self._heap[0].key <= now:
            timer = heapq.heappop(self._heap)
            if not self._live(timer):
                continue
            if timer.kind == "fire":
                del self._planned[timer.job_id]
            else:
                self._timeouts.pop(timer.execution_id or "", None)
            due.append(timer)
        return due
