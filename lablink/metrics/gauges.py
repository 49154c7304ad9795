"""The gauges: read when Prometheus scrapes, never kept up to date in between.

Two kinds of source, read in two places:

- what lives in memory and is read on the event loop (the health registry's probes may look
  at asyncio tasks; the agents' sightings and the relay's status change there): taken as a
  ``Snapshot`` by the scrape before it leaves the loop;
- the views (jobs by state, running executions, the soonest next fire, alarms not cleared,
  instruments as their agents last reported them): read by ``collect`` itself, on the scrape's
  worker thread and connection, through the views' own query functions.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from lablink.events.alarms import Severity
from lablink.eventstore.base import parse_instant
from lablink.eventstore.sqlite import LogReader
from lablink.health import GRAVITY
from lablink.projections.alarms import unresolved_by_severity
from lablink.projections.equipment import list_equipment_rows
from lablink.projections.jobs import next_to_fire
from lablink.projections.statistics import job_counts, running_count

JOB_STATES = ("active", "paused", "completed")
SEVERITIES: tuple[Severity, ...] = ("info", "warning", "critical")


@dataclass(frozen=True)
class Snapshot:
    """What the scrape read on the event loop."""

    # Component name -> its state (ok, degraded, failing), as /health reports it.
    components: Mapping[str, str] = field(default_factory=dict)
    # Equipment id -> (last heartbeat, its agent online), when the engine drives agents.
    sightings: Mapping[str, tuple[datetime, bool]] = field(default_factory=dict)
    # None: no relay (LABLINK_NATS=off).
    relay_lag_events: int | None = None
    relay_lag_seconds: float | None = None
    # None: the store folds its views in the committing thread (none lag).
    projection_lag_events: int | None = None


class StateCollector(Collector):
    """The gauges of one scrape: ``prepare`` hands it the snapshot and the connection, then
    the registry's ``collect`` reads the views."""

    def __init__(self) -> None:
        self._snapshot = Snapshot()
        self._conn: sqlite3.Connection | None = None

    def prepare(self, snapshot: Snapshot, conn: sqlite3.Connection) -> None:
        self._snapshot = snapshot
        self._conn = conn

    def collect(self) -> Iterator[Metric]:
        snapshot, conn = self._snapshot, self._conn
        yield from self._views(conn)
        yield from _log_and_lags(conn, snapshot)
        yield from _agents(conn, snapshot)
        yield from _components(snapshot)

    def _views(self, conn: sqlite3.Connection | None) -> Iterator[Metric]:
        jobs = _gauge("lablink_jobs", "Jobs by state (active, paused, completed).", ["state"])
        running = _gauge("lablink_running_executions", "Executions running now.")
        soonest = _gauge(
            "lablink_next_fire_timestamp_seconds",
            "When the soonest next fire of any active job is due (Unix time); no sample"
            " when no active job has a next fire.",
        )
        alarms = _gauge(
            "lablink_alarms_active",
            "Alarms not cleared (active or acknowledged), by severity.",
            ["severity"],
        )
        if conn is not None:
            counts = job_counts(conn)
            for state in JOB_STATES:
                jobs.add_metric([state], counts.get(f"status:{state}", 0))
            running.add_metric([], running_count(conn))
            upcoming = next_to_fire(conn, 1)
            if upcoming:
                soonest.add_metric([], parse_instant(upcoming[0][2]).timestamp())
            unresolved = unresolved_by_severity(conn)
            for severity in SEVERITIES:
                alarms.add_metric([severity], unresolved.get(severity, 0))
        yield from (jobs, running, soonest, alarms)


def _log_and_lags(conn: sqlite3.Connection | None, snapshot: Snapshot) -> Iterator[Metric]:
    position = _gauge("lablink_event_log_position", "The log's last position (its head).")
    if conn is not None:
        position.add_metric([], LogReader(conn).last_position())
    relay_events = _gauge(
        "lablink_relay_lag_events",
        "Events committed to the log and not yet published to NATS; no sample without NATS.",
    )
    relay_seconds = _gauge(
        "lablink_relay_lag_seconds",
        "How long the oldest unpublished event has waited; no sample without NATS.",
    )
    if snapshot.relay_lag_events is not None:
        relay_events.add_metric([], snapshot.relay_lag_events)
    if snapshot.relay_lag_seconds is not None:
        relay_seconds.add_metric([], snapshot.relay_lag_seconds)
    projection = _gauge(
        "lablink_projection_lag_events", "Events committed to the log and not yet in the views."
    )
    projection.add_metric([], snapshot.projection_lag_events or 0)
    yield from (position, relay_events, relay_seconds, projection)


def _agents(conn: sqlite3.Connection | None, snapshot: Snapshot) -> Iterator[Metric]:
    """Per instrument: the engine's sightings (each heartbeat) where it drives agents, else
    the equipment view (the agents' last online/offline reports)."""
    up = _gauge(
        "lablink_agent_up", "1 when the instrument's agent is online, else 0.", ["equipment"]
    )
    seen = _gauge(
        "lablink_agent_last_seen_timestamp_seconds",
        "When the instrument's agent was last heard from (Unix time).",
        ["equipment"],
    )
    found: dict[str, tuple[datetime | None, bool]] = {}
    if conn is not None:
        for row in list_equipment_rows(conn):
            last = row.get("last_seen")
            found[row["equipment_id"]] = (
                parse_instant(last) if last else None,
                row.get("status") == "online",
            )
    found.update(snapshot.sightings)
    for equipment_id, (at, online) in sorted(found.items()):
        up.add_metric([equipment_id], 1 if online else 0)
        if at is not None:
            seen.add_metric([equipment_id], at.timestamp())
    yield from (up, seen)


def _components(snapshot: Snapshot) -> Iterator[Metric]:
    up = _gauge(
        "lablink_component_up",
        "1 unless the /health component is failing (ok and degraded are up).",
        ["component"],
    )
    state = _gauge(
        "lablink_component_state",
        "The /health component's state: 1 on its current state's series, 0 on the others.",
        ["component", "state"],
    )
    for name, current in sorted(snapshot.components.items()):
        up.add_metric([name], 0 if current == "failing" else 1)
        for each in GRAVITY:
            state.add_metric([name, each], 1 if each == current else 0)
    yield from (up, state)


def _gauge(name: str, documentation: str, labels: list[str] | None = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, labels=labels or [])
