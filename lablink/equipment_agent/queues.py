"""What waits for each instrument's worker: the executions in line (their depth, for /health
and the equipment view), and the work that goes before them.

An instrument's worker takes its operations first come, first served (``bench``), so each
instrument has its own line and a slow one delays only its own executions. ``Lines`` tells,
per instrument, how many executions wait for it and which one is on it. ``Ahead`` is the one
way to the front of the line: a stopped execution's safe state is applied right after the
operation the worker is running, never behind every execution still waiting, so that stopping
one (a timeout on a backlogged instrument) is not held up by the backlog.

Both are used from the event loop and from the workers' threads; each holds its own lock.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from typing import Any, TypeVar

from lablink.instruments.instrument import Instrument
from lablink.instruments.protocol import QueueDepth


class Lines:
    """The executions handed to the instruments' workers and not finished there yet."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # execution id -> (its instrument, whether its operation began on the worker)
        self._phase: dict[str, tuple[str, bool]] = {}

    def wait(self, execution_id: str, equipment_id: str) -> None:
        """Queued for the instrument's worker."""
        with self._lock:
            self._phase[execution_id] = (equipment_id, False)

    def start(self, execution_id: str) -> None:
        """On the worker, as the operation begins."""
        with self._lock:
            found = self._phase.get(execution_id)
            if found is not None:
                self._phase[execution_id] = (found[0], True)

    def end(self, execution_id: str) -> None:
        """Its operation ended, or it left the line without one (stopped, the bench closed)."""
        with self._lock:
            self._phase.pop(execution_id, None)

    def waiting(self) -> frozenset[str]:
        """The executions that wait for their instrument (none of their I/O began)."""
        with self._lock:
            return frozenset(x for x, (_, began) in self._phase.items() if not began)

    def depths(self, equipment_ids: Iterable[str]) -> dict[str, QueueDepth]:
        """Each instrument's line (those of ``equipment_ids`` with nothing in it too)."""
        queued: dict[str, int] = dict.fromkeys(equipment_ids, 0)
        running: dict[str, int] = dict.fromkeys(queued, 0)
        with self._lock:
            phases = list(self._phase.values())
        for equipment_id, began in phases:
            counts = running if began else queued
            counts[equipment_id] = counts.get(equipment_id, 0) + 1
            running.setdefault(equipment_id, 0)
            queued.setdefault(equipment_id, 0)
        return {e: QueueDepth(queued=queued[e], running=running[e]) for e in sorted(queued)}


T = TypeVar("T")
_Work = tuple[Callable[[Instrument], Any], "Future[Any]"]


class Ahead:
    """Work that goes to the front of an instrument's line: whatever its worker takes next
    runs it first (``run``), before its own operation."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._work: dict[str, deque[_Work]] = {}

    def push(self, equipment_id: str, work: Callable[[Instrument], T]) -> Future[T]:
        future: Future[T] = Future()
        with self._lock:
            self._work.setdefault(equipment_id, deque()).append((work, future))
        return future

    def run(self, equipment_id: str, inst: Instrument) -> None:
        """On the instrument's worker, holding its session: everything pushed so far."""
        while True:
            with self._lock:
                line = self._work.get(equipment_id)
                if not line:
                    return
                work, future = line.popleft()
            if not future.set_running_or_notify_cancel():
                continue  # its caller gave up (the bench closed)
            try:
                future.set_result(work(inst))
            except BaseException as exc:  # the caller's to handle, as from any submit
                future.set_exception(exc)

    def cancel_all(self) -> None:
        """The bench closed: nothing will run what is still pushed."""
        with self._lock:
            pending = [future for line in self._work.values() for _, future in line]
            self._work.clear()
        for future in pending:
            future.cancel()
