"""The calibration interlock on the fire path: may a run due now go to its instrument?

The engine decides a fire from the job's events; whether the instrument may be used comes
from the instrument's own calibration stream (``calibration:<id>``), never from a view.
Each instrument's aggregate is folded from its stream the first time a fire asks, kept in
memory, and forgotten when a commit touches that stream (the store calls ``_committed``
after every commit, in the committing thread), so the fire path reads the log only after a
calibration fact, not once per fire. The time of the decision is the engine's clock, passed
in: ``block(equipment_id, now)``.

The first blocked run on an instrument raises one ``calibration_blocked`` alarm in the
instrument's stream (``raise_alarm``); later blocked runs raise none while the aggregate
says that alarm stands (see ``domain.calibration``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime
from typing import Protocol, runtime_checkable
from zoneinfo import ZoneInfo

from lablink.calibration_service import calibration_repository
from lablink.domain.calibration import Block, CalibrationState, assess_state, stream_id
from lablink.domain.calibration_decisions import decide_block_alarm
from lablink.events import ExecutionBlocked, RecordedEvent
from lablink.eventstore.base import EventStore
from lablink.handler import GroupCommitHandler, Tracker

_PREFIX = stream_id("")


@runtime_checkable
class Committing(Protocol):
    """A store that tells listeners of its commits (both stores do)."""

    def subscribe(self, listener: Callable[[list[RecordedEvent]], None]) -> Callable[[], None]: ...


class CalibrationGate:
    def __init__(
        self,
        store: EventStore,
        *,
        zone: ZoneInfo,
        require: bool = False,
        warn_days: float = 14.0,
    ) -> None:
        self.zone = zone
        self.require = require
        self.warn_days = warn_days
        self.repository = calibration_repository(store)
        self._states: dict[str, CalibrationState] = {}
        # Bumped by every commit to an instrument's stream: a fold read before it is not kept.
        self._generations: dict[str, int] = {}
        self._lock = threading.Lock()
        self._unsubscribe = (
            store.subscribe(self._committed) if isinstance(store, Committing) else None
        )
        self.loads = 0  # folds read from the log, for tests

    def _committed(self, events: list[RecordedEvent]) -> None:
        touched = {r.stream_id[len(_PREFIX) :] for r in events if r.stream_id.startswith(_PREFIX)}
        if not touched:
            return
        with self._lock:
            for equipment_id in touched:
                self._generations[equipment_id] = self._generations.get(equipment_id, 0) + 1
                self._states.pop(equipment_id, None)

    def state(self, equipment_id: str) -> CalibrationState:
        """The instrument's calibration aggregate as the log has it."""
        with self._lock:
            state = self._states.get(equipment_id)
            generation = self._generations.get(equipment_id, 0)
        if state is not None:
            return state
        state = self.repository.load(equipment_id).state
        self.loads += 1
        with self._lock:
            if (
                self._unsubscribe is not None
                and self._generations.get(equipment_id, 0) == generation
            ):
                self._states[equipment_id] = state
        return state

    def block(self, equipment_id: str, now: datetime) -> Block | None:
        """Why runs on the instrument may not be dispatched at ``now``; None: they may."""
        return assess_state(
            self.state(equipment_id),
            now=now,
            zone=self.zone,
            warn_days=self.warn_days,
            require=self.require,
        ).block

    async def raise_alarm(
        self,
        writer: GroupCommitHandler,
        blocked: ExecutionBlocked,
        *,
        job_name: str,
        actor: str,
        tracker: Tracker | None = None,
    ) -> list[RecordedEvent]:
        """The ``calibration_blocked`` alarm for a blocked run, unless one already stands for
        this instrument (then nothing is read or written)."""
        equipment_id = blocked.equipment_id
        if self.state(equipment_id).block_alarm:
            return []
        block = Block(
            equipment_id=equipment_id,
            cause=blocked.cause,
            reason=blocked.reason,
            certificate=blocked.certificate,
            due=blocked.due,
        )
        handled = await writer.handle(
            self.repository,
            equipment_id,
            lambda state, _: decide_block_alarm(
                state,
                block,
                job_id=blocked.job_id,
                job_name=job_name,
                execution_id=blocked.execution_id,
                at=blocked.scheduled_time,
            ),
            actor,
            tracker=tracker,
        )
        return handled.recorded

    def close(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
