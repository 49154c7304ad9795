"""The counters and histograms that are folds of the event log.

Nothing is added to the fire path: the engine records its facts as it always did, and this
fold reads them back from the log when Prometheus scrapes (``catch_up``), in bounded pages
on a connection of its own. A process starts counting at the log's head: counters count since
the process started, as any Prometheus counter does (``rate()`` handles the reset), so a
start never reads a long log.

What each fact gives:

- ``execution.pending`` / ``execution.queued`` of a scheduled or catch-up fire:
  ``lablink_fire_lateness_seconds`` observes ``actual_time - scheduled_time`` (when the engine
  decided the fire, and so recorded and sent it, against when it was due). A manual run has
  no schedule to be late for.
- an ending (``execution.completed|failed|timed_out|cancelled|interrupted``):
  ``lablink_executions_total{status}`` and, when it ran (``started_at`` is on the fact),
  ``lablink_execution_duration_seconds`` observes ``completed_at - started_at``.
- ``execution.skipped|missed|coalesced``: ``lablink_executions_total{status}`` by one record,
  and ``lablink_misfires_total{reason}`` by the fires it stands for (``missed_count``,
  ``coalesced_count``, 1 for a skip). ``reason`` is the kind (``missed``, ``coalesced``,
  ``skipped``): the facts' own ``reason`` is a sentence naming times and executions, not a
  bounded label.
- ``execution.blocked`` (a run not dispatched: calibration, quarantine):
  ``lablink_executions_total{status="blocked"}``; not a misfire, the fire was on time.
- ``notification.sent|failed|abandoned``: ``lablink_notifications_total{channel,outcome}``.

``schedule_type`` is the job's, from the job facts this fold has seen, else the jobs view;
``unknown`` for a job neither knows (deleted before the scrape read its execution).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

from lablink.events import (
    ENDED_STATUS,
    RECORDED_ENDED_STATUS,
    SCHEDULE_TYPES,
    ExecutionBlocked,
    ExecutionCancelled,
    ExecutionCoalesced,
    ExecutionFailed,
    ExecutionInterrupted,
    ExecutionMissed,
    ExecutionQueued,
    ExecutionRequested,
    ExecutionSkipped,
    ExecutionSucceeded,
    ExecutionTimedOut,
    JobCreated,
    JobUpdated,
    NotificationAbandoned,
    NotificationFailed,
    NotificationSent,
    RecordedEvent,
)
from lablink.eventstore.sqlite import LogReader, event_of
from lablink.projections.jobs import schedule_types

# Lateness is the scheduler's timer accuracy: milliseconds when healthy, up to the misfire
# grace time (seconds to minutes) for a catch-up.
LATENESS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
# An execution is a SCPI query (milliseconds) up to a long acquisition (an hour).
DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600)
UNKNOWN = "unknown"
MISFIRE_REASONS = ("missed", "coalesced", "skipped")
NOTIFICATION_OUTCOMES: dict[type[Any], str] = {
    NotificationSent: "sent",
    NotificationFailed: "failed",
    NotificationAbandoned: "abandoned",
}
# Decoded and looked at; any other type is passed by on its ``type`` column alone.
FOLDED_TYPES = (
    "execution.pending",
    "execution.queued",
    *(f"execution.{status}" for status in ENDED_STATUS.values()),
    *(f"execution.{status}" for status in RECORDED_ENDED_STATUS.values()),
    "job.created",
    "job.updated",
    *(f"notification.{outcome}" for outcome in NOTIFICATION_OUTCOMES.values()),
)
_FOLDED = frozenset(FOLDED_TYPES)
# Column 4 of a stored row is its type (see ``eventstore.sqlite._COLUMNS``).
_TYPE = 4
PAGE = 2000


class LogCounters:
    """The log's counters in ``registry``, and how far into the log they have counted."""

    def __init__(self, registry: CollectorRegistry, position: int) -> None:
        self.position = position
        self.folded = 0
        # Filled from job facts as they pass, and from the jobs view on a miss.
        self._types: dict[str, str] = {}
        self.lateness = Histogram(
            "lablink_fire_lateness_seconds",
            "How late a scheduled fire was decided and sent: actual_time - scheduled_time of"
            " its execution.pending/queued fact.",
            buckets=LATENESS_BUCKETS,
            registry=registry,
        )
        self.executions = Counter(
            "lablink_executions_total",
            "Executions that reached a final status, by status and the job's schedule type.",
            ["status", "schedule_type"],
            registry=registry,
        )
        self.duration = Histogram(
            "lablink_execution_duration_seconds",
            "How long an execution ran: completed_at - started_at of its ending fact.",
            ["schedule_type"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.misfires = Counter(
            "lablink_misfires_total",
            "Fires that did not run on time: missed, coalesced into a later run, or skipped"
            " by the conflict policy.",
            ["reason"],
            registry=registry,
        )
        self.notifications = Counter(
            "lablink_notifications_total",
            "Alarm notification attempts by channel and outcome (sent, failed, abandoned).",
            ["channel", "outcome"],
            registry=registry,
        )
        # Bounded label sets are shown from the start, at 0, so that a dashboard's queries
        # find a series before the first event.
        for reason in MISFIRE_REASONS:
            self.misfires.labels(reason=reason)
        for schedule_type in SCHEDULE_TYPES:
            self.duration.labels(schedule_type=schedule_type)

    def catch_up(self, conn: sqlite3.Connection, *, up_to: int | None = None) -> int:
        """Fold everything past ``position`` (up to ``up_to``, else the head as it is now),
        a page at a time; the number of events read."""
        reader = LogReader(conn)
        head = reader.last_position() if up_to is None else up_to
        read = 0
        while self.position < head:
            rows = reader.read_rows(self.position, PAGE, up_to=head)
            if not rows:
                break
            wanted = [event_of(row) for row in rows if row[_TYPE] in _FOLDED]
            self._fold(conn, wanted)
            self.position = rows[-1][0]
            read += len(rows)
        self.folded += read
        return read

    def _fold(self, conn: sqlite3.Connection, events: Iterable[RecordedEvent]) -> None:
        batch = list(events)
        self._learn_types(conn, batch)
        for recorded in batch:
            match recorded.event:
                case ExecutionRequested() | ExecutionQueued() as opened:
                    if opened.trigger_info != "manual":
                        late = (opened.actual_time - opened.scheduled_time).total_seconds()
                        self.lateness.observe(max(0.0, late))
                case (
                    ExecutionSucceeded()
                    | ExecutionFailed()
                    | ExecutionTimedOut()
                    | ExecutionCancelled()
                    | ExecutionInterrupted()
                ) as ended:
                    schedule_type = self._types.get(ended.job_id, UNKNOWN)
                    status = ENDED_STATUS[type(ended)]
                    self.executions.labels(status=status, schedule_type=schedule_type).inc()
                    if ended.started_at is not None:
                        took = (ended.completed_at - ended.started_at).total_seconds()
                        self.duration.labels(schedule_type=schedule_type).observe(max(0.0, took))
                case ExecutionSkipped() | ExecutionMissed() | ExecutionCoalesced() as misfire:
                    schedule_type = self._types.get(misfire.job_id, UNKNOWN)
                    status = RECORDED_ENDED_STATUS[type(misfire)]
                    self.executions.labels(status=status, schedule_type=schedule_type).inc()
                    self.misfires.labels(reason=status).inc(_fires(misfire))
                case ExecutionBlocked() as blocked:
                    schedule_type = self._types.get(blocked.job_id, UNKNOWN)
                    self.executions.labels(status="blocked", schedule_type=schedule_type).inc()
                case NotificationSent() | NotificationFailed() | NotificationAbandoned() as sent:
                    outcome = NOTIFICATION_OUTCOMES[type(sent)]
                    self.notifications.labels(channel=sent.channel, outcome=outcome).inc()
                case _:
                    pass

    def _learn_types(self, conn: sqlite3.Connection, batch: list[RecordedEvent]) -> None:
        """Know the schedule type of every job the batch's executions belong to."""
        missing: set[str] = set()
        for recorded in batch:
            event = recorded.event
            if isinstance(event, JobCreated | JobUpdated):
                self._types[event.job_id] = event.spec.schedule_type
            else:
                job_id = getattr(event, "job_id", None)
                if job_id is not None and job_id not in self._types:
                    missing.add(job_id)
        if missing:
            self._types.update(schedule_types(conn, sorted(missing)))


def _fires(event: ExecutionSkipped | ExecutionMissed | ExecutionCoalesced) -> int:
    """How many fires a misfire record stands for."""
    match event:
        case ExecutionMissed():
            return event.missed_count
        case ExecutionCoalesced():
            return event.coalesced_count
        case _:
            return 1
