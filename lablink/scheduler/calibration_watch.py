"""The calibration due-date watch (``task.calibration``): a ``calibration_due`` warning alarm
``LABLINK_CALIBRATION_WARN_DAYS`` before a certificate falls due.

Each turn reads the instruments that have calibration facts from the calibration view (an
index only, as the alarm service reads the alarms view), then decides each instrument's
warning from its own stream (``CalibrationService.warn_due``): one warning per certificate
and due date, so a restart or a second turn raises nothing again. The clock is read once per
turn and the loop sleeps ``recheck`` between turns (a minute), so a certificate recorded
meanwhile is warned of within it. It runs under the runtime's supervisor: a failed turn is
logged, shown in ``/health`` and retried after a backoff.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import structlog

from lablink.calibration_service import CalibrationService
from lablink.clock import Clock
from lablink.eventstore.sqlite import SQLiteEventStore
from lablink.health import Health
from lablink.projections.calibration import calibrated_equipment
from lablink.projections.reading import reading_views
from lablink.supervision import Supervisor, Watch

log = structlog.get_logger(tag="scheduler")

ACTOR = "calibration"
TASK_NAME = "task.calibration"
RECHECK = timedelta(minutes=1)
MIN_SLEEP = timedelta(seconds=0.01)


class CalibrationWatch:
    def __init__(
        self,
        store: SQLiteEventStore,
        clock: Clock,
        service: CalibrationService,
        *,
        warn_days: float,
        recheck: timedelta = RECHECK,
    ) -> None:
        self.store = store
        self.clock = clock
        self.service = service
        self.warn_days = warn_days
        self.recheck = max(recheck, MIN_SLEEP)
        self.turns = 0  # for tests and /health
        self._stop = asyncio.Event()
        self._done = asyncio.Event()
        self._supervisor: Supervisor | None = None
        self._own_supervisor = False

    def turn(self, now: datetime | None = None) -> list[str]:
        """One pass over the instruments: the ids of the warnings raised."""
        with reading_views(self.store) as views:
            instruments = calibrated_equipment(views)
        raised: list[str] = []
        for equipment_id in instruments:
            recorded = self.service.warn_due(
                equipment_id, warn_days=self.warn_days, actor=ACTOR, at=now
            )
            for r in recorded:
                alarm_id = getattr(r.event, "alarm_id", None)
                if alarm_id is not None:
                    raised.append(alarm_id)
                    log.warning("calibration due", equipment_id=equipment_id, alarm_id=alarm_id)
        return raised

    async def start(self, supervisor: Supervisor | None = None) -> None:
        if supervisor is None:
            supervisor = Supervisor(Health(self.clock))
            self._own_supervisor = True
        self._supervisor = supervisor
        supervisor.spawn(TASK_NAME, self.run)

    async def run(self, watch: Watch) -> None:
        """The supervised body (``task.calibration``)."""
        try:
            while not (self._stop.is_set() or watch.stopping):
                self.turns += 1
                now = self.clock.now()  # the one reading of this turn
                try:
                    await asyncio.to_thread(self.turn, now)
                except Exception as exc:
                    await watch.sleep(
                        max(watch.failed(exc), MIN_SLEEP.total_seconds()), until=self._stop
                    )
                    continue
                if watch.failing_since is not None:
                    watch.ok(last_turn=now.isoformat())
                await watch.sleep(self.recheck.total_seconds(), until=self._stop)
        finally:
            self._done.set()
        while not watch.stopping:  # closed: idle until the supervisor stops
            await watch.sleep(3600)

    async def aclose(self) -> None:
        self._stop.set()
        if self._supervisor is not None:
            await self._done.wait()
            if self._own_supervisor:
                await self._supervisor.aclose()
            else:
                # Its name free again: in cluster mode a new leader's pass is spawned on
                # the same supervisor (scheduler.leadership.ServiceDuty).
                await self._supervisor.retire(TASK_NAME)
            self._supervisor = None
