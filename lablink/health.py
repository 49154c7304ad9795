"""What each part of a running LabLink says about itself, for `/health`.

Every component (the scheduler loop, the event log, the relay, the NATS connection, each agent,
each supervised background task) has one entry: a state, a reason and since when it has been
in that state. A component either sets its entry when something happens (``set``) or registers
a probe that computes it when `/health` is read (``probe``): lag and free disk are cheapest
measured at read time, a task's last failure is known only when it happens.

States, in order of gravity: ``ok``; ``degraded`` (working, but behind or partly blind: the bus
lags, an agent is offline); ``failing`` (the component cannot do its job: the log cannot be
written, a loop keeps failing). `/health` answers 503 when any component is failing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal

import msgspec

from lablink.clock import Clock

State = Literal["ok", "degraded", "failing"]
GRAVITY: dict[str, int] = {"ok": 0, "degraded": 1, "failing": 2}


class Component(msgspec.Struct, kw_only=True):
    """One component's answer. ``details`` carries its figures (lag, free bytes, failures)."""

    state: State
    reason: str = ""
    since: datetime | None = None
    details: dict[str, Any] = msgspec.field(default_factory=dict)


class Reading(msgspec.Struct, frozen=True, kw_only=True):
    """What a probe returns; the registry adds ``since``."""

    state: State
    reason: str = ""
    details: dict[str, Any] = msgspec.field(default_factory=dict)


Probe = Callable[[], Reading]


def worst(states: list[str]) -> State:
    """The gravest of ``states`` (``ok`` for none)."""
    found: State = "ok"
    for state in states:
        if GRAVITY[state] > GRAVITY[found]:
            found = state  # type: ignore[assignment]
    return found


class Health:
    """The registry. Thread-safe: the engine's worker threads and the event loop both report."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._entries: dict[str, Component] = {}
        self._probes: dict[str, Probe] = {}

    def set(self, name: str, state: State, reason: str = "", **details: Any) -> None:
        """Record ``name``'s state; ``since`` moves only when the state changes."""
        with self._lock:
            self._entries[name] = self._merge(self._entries.get(name), state, reason, details)

    def probe(self, name: str, probe: Probe) -> None:
        """Compute ``name``'s state with ``probe`` whenever health is read."""
        with self._lock:
            self._probes[name] = probe

    def remove(self, name: str) -> None:
        with self._lock:
            self._entries.pop(name, None)
            self._probes.pop(name, None)

    def get(self, name: str) -> Component | None:
        return self.read().get(name)

    def read(self) -> dict[str, Component]:
        """Every component, probes run now. A probe that raises reads as failing."""
        with self._lock:
            probes = dict(self._probes)
        readings: dict[str, Reading] = {}
        for name, probe in probes.items():
            try:
                readings[name] = probe()
            except Exception as exc:  # health must answer, whatever a probe does
                readings[name] = Reading(
                    state="failing", reason=f"health probe failed: {type(exc).__name__}: {exc}"
                )
        with self._lock:
            for name, reading in readings.items():
                self._entries[name] = self._merge(
                    self._entries.get(name), reading.state, reading.reason, reading.details
                )
            return {name: self._copy(entry) for name, entry in sorted(self._entries.items())}

    def overall(self) -> State:
        return worst([c.state for c in self.read().values()])

    def _merge(
        self, old: Component | None, state: State, reason: str, details: dict[str, Any]
    ) -> Component:
        since = old.since if old is not None and old.state == state else self.clock.now()
        return Component(state=state, reason=reason, since=since, details=dict(details))

    @staticmethod
    def _copy(entry: Component) -> Component:
        return Component(
            state=entry.state, reason=entry.reason, since=entry.since, details=dict(entry.details)
        )
