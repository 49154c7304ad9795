"""What a page's parts are read from: the views over a reader connection, the clock, a job's
state, and what the process that drives the instruments knows of them now.

The API's context (``ApiContext``) is one; the dashboard's drawing process has its own
(``dashboard.drawings.DrawingContext``), with the live parts sent along with each drawing.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import Protocol
from zoneinfo import ZoneInfo

from lablink.api.calibration_views import CalibrationRules
from lablink.clock import Clock
from lablink.domain.job import JobState
from lablink.instruments.protocol import QueueDepth


class JobStates(Protocol):
    def get_state(self, job_id: str) -> JobState:
        """The job as its events fold (JobNotFound when there is none, or it was deleted)."""
        ...


class Reads(Protocol):
    @property
    def reader(self) -> sqlite3.Connection: ...

    @property
    def clock(self) -> Clock: ...

    @property
    def service(self) -> JobStates: ...

    @property
    def zone(self) -> ZoneInfo: ...

    def sightings(self) -> dict[str, tuple[datetime, bool]]: ...

    def queues(self) -> dict[str, QueueDepth]: ...

    def calibration_rules(self) -> CalibrationRules: ...
