"""What the controllers need, handed to them through Litestar's dependency injection."""

from __future__ import annotations

import copy
import sqlite3
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from lablink.alarm_service import AlarmService
from lablink.api.calibration_views import CalibrationRules
from lablink.api.probes import api_probes
from lablink.application import JobService
from lablink.bus.data_bucket import DataBucket
from lablink.bus.probes import relay_summary
from lablink.bus.relay import Relay
from lablink.calibration_service import CalibrationService, known_equipment
from lablink.clock import Clock
from lablink.equipment_agent.config import ConfigError, load_config
from lablink.equipment_agent.inprocess import InProcessExecutor
from lablink.eventstore.sqlite import SQLiteEventStore
from lablink.health import Health
from lablink.instruments.protocol import QueueDepth
from lablink.projections.alarms import raised_position
from lablink.projections.follower import Follower, ViewsBehind, connect_views
from lablink.scheduler.agents import AgentExecutor
from lablink.scheduler.engine import Engine
from lablink.scheduler.runner import EngineRunner, Runner
from lablink.settings import Settings


class WriteUnseen(ViewsBehind):
    """A write was recorded, but the views could not show it within the wait. Its 503 says
    so: sent again, a create would make a second job."""


@dataclass
class ApiContext:
    settings: Settings
    clock: Clock
    store: SQLiteEventStore
    service: JobService
    engine: Engine
    auth_enabled: bool = True
    relay: Relay | None = None
    # What the runtime's components say of themselves; None: the API alone (tests).
    health: Health | None = None
    # The captures' bucket (downloads); None: no bus (LABLINK_NATS=off, or the API alone).
    data: DataBucket | None = None
    # Run-now (the API's and the dashboard's): this process's engine unless given (cluster
    # mode: forwarded to the lease holder when this replica is a follower).
    runner: Runner | None = None

    statistics_cache: tuple[Any, Any] | None = None

    def __post_init__(self) -> None:
        if self.runner is None:
            self.runner = EngineRunner(lambda: self.engine)
        # The follower that folds the views (None: the store folds none of its own).
        self.views: Follower | None = getattr(self.store, "views", None)
        # The views' file (views.db), or None: they are in the log's (a store without a
        # follower, or the layout before views.db).
        self.views_path: Path | None = self.views.views_path if self.views is not None else None
        # Reads use their own connection: in WAL mode they never wait for a commit. It sees
        # the views, and the log attached read-only (the audit's reads of the events).
        self.reader: sqlite3.Connection = self.connect_reader()
        self.alarms = AlarmService(self.store, self.clock, self._locate_alarm)
        # What the API answers for itself in /health when the runtime's registry lacks it.
        self.probes: Health = api_probes(self)
        # Set when the server starts to stop: endless responses (live streams) end.
        self.closing = False
        self.known_equipment = known_equipment(self.store, self._configured_instruments())

    async def run_now(self, job_id: str, actor: str | None) -> str:
        """Run now through ``runner``: the execution id (read-your-writes as any write)."""
        assert self.runner is not None
        return await self.runner.run_now(job_id, actor=actor)

    def _configured_instruments(self) -> list[str]:
        """The instruments of serve's lab.toml (LABLINK_AGENT_CONFIG): known to the API
        before their agent first reports them (serve refused to start on a bad file)."""
        path = self.settings.agent_config
        if path is None:
            return []
        try:
            return [i.id for i in load_config(path).instruments]
        except ConfigError:
            return []

    def calibration_rules(self) -> CalibrationRules:
        """What a calibration status is worked out with now: the clock, the server's zone
        and the settings."""
        settings = self.settings
        return CalibrationRules(
            now=self.clock.now(),
            zone=self.zone,
            warn_days=settings.calibration_warn_days,
            require=settings.require_calibration,
        )

    def calibrations(self) -> CalibrationService:
        """The calibration commands, with the alarms they clear."""
        return CalibrationService(
            self.store,
            self.clock,
            zone=self.zone,
            require_reason=self.settings.require_reason,
            known=self.known_equipment,
            alarms=self.alarms,
        )

    async def caught_up(self) -> None:
        """Wait until the views show everything committed so far (a write that reads its own
        result back): 503 naming the lag if they do not within ``views_wait``."""
        if self.views is not None:
            try:
                await self.views.caught_up(self.settings.views_wait)
            except ViewsBehind as exc:
                raise WriteUnseen(exc.position, exc.folded, exc.lag_seconds) from exc

    def _locate_alarm(self, alarm_id: str) -> int | None:
        # The alarm write path runs on a worker thread: a connection of its own. The raise
        # may be newer than the views: wait for them (bounded) before looking it up.
        if self.views is not None and not self.views.settled(self.settings.views_wait):
            raise self.views.behind(self.views.head)
        conn = self.connect_reader()
        try:
            return raised_position(conn, alarm_id)
        finally:
            conn.close()

    def connect_reader(self) -> sqlite3.Connection:
        """A read-only connection that sees the views and the log."""
        return connect_views(self.settings.db_path, self.views_path)

    @property
    def side_file(self) -> Path:
        """Where operational side tables go (when each key was last used): beside the views,
        never in the log's file, whose write lock the fire path needs."""
        return self.views_path if self.views_path is not None else self.settings.db_path

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.settings.timezone)

    def nats_health(self) -> dict[str, Any]:
        if self.relay is None:
            return {"status": "off", "connected": False, "url": None}
        return relay_summary(self.relay.status)

    def sightings(self) -> dict[str, tuple[datetime, bool]]:
        """Last heartbeat seen per instrument (and whether its agent is online), when the
        engine drives agents over NATS."""
        executor = self.engine.executor
        if not isinstance(executor, AgentExecutor):
            return {}
        return {eid: (s.at, s.online) for eid, s in executor.sightings.items()}

    def queues(self) -> dict[str, QueueDepth]:
        """Each instrument's queue now, from whoever drives it: the agents' presences (online
        instruments), or the in-process bench's own lines. Live: the log does not have it."""
        executor = self.engine.executor
        if isinstance(executor, AgentExecutor | InProcessExecutor):
            return executor.queue_depths()
        return {}

    def agents_health(self) -> dict[str, Any]:
        executor = self.engine.executor
        queues = {
            eid: {"queued": q.queued, "running": q.running} for eid, q in self.queues().items()
        }
        if not isinstance(executor, AgentExecutor):
            return {"status": "in-process", "executor": self.settings.executor, "queues": queues}
        sightings = executor.sightings
        online = sorted(eid for eid, s in sightings.items() if s.online)
        offline = sorted(eid for eid, s in sightings.items() if not s.online)
        return {
            "status": "ok" if online and not offline else ("degraded" if online else "none"),
            "executor": "agents",
            "online": online,
            "offline": offline,
            "queues": queues,
        }

    def reading(self, conn: sqlite3.Connection) -> ApiContext:
        """This context with ``conn`` as its reader: for reads on a worker thread (a
        connection is used by the thread that opened it), sharing everything else."""
        found = copy.copy(self)
        found.reader = conn
        return found

    def close_streams(self) -> None:
        self.closing = True

    def close(self) -> None:
        self.reader.close()
