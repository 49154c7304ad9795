"""Crashing a LabLink store on purpose, and telling whether its views came back whole.

- ``Lab`` drives a real store the way LabLink writes to it: jobs through the job service,
  profiles through the profile service, keys through ``lablink.keys``, and the facts the
  engine, the agents' presence and retention append (executions, alarms raised with the
  failure that caused them, equipment online/offline, prunes).
- ``Fuse`` wraps real projections so that a fold dies where a test says: before the n-th
  batch, or after n events folded inside a batch. It raises ``Crash``, a BaseException the
  follower does not catch: no rollback and no ``forget()`` run, the transaction is left open,
  as when the process is killed.
- ``crash`` then drops the store as the operating system would (connections closed, an open
  transaction discarded, nothing folded); ``views`` and ``rebuilt`` give what to compare.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlite_utils

from lablink.application import JobService
from lablink.clock import ManualClock
from lablink.domain.firing import alarm_id
from lablink.domain.profiles import ProfileRequest
from lablink.errors import LabLinkError
from lablink.events import (
    AlarmAcknowledged,
    AlarmCleared,
    AlarmRaised,
    AnyEvent,
    EquipmentOffline,
    EquipmentOnline,
    ExecutionError,
    ExecutionFailed,
    ExecutionRequested,
    ExecutionsPruned,
    ExecutionStarted,
    ExecutionSucceeded,
    NewEvent,
    RecordedEvent,
)
from lablink.eventstore import ANY
from lablink.eventstore.sqlite import SQLiteEventStore, connect
from lablink.ids import SequentialIds
from lablink.keys import create_key, revoke_key
from lablink.logstore import LogStore
from lablink.profile_service import ProfileService
from lablink.projections.base import Projection
from lablink.projections.runner import Projector, default_projections

START = datetime(2026, 3, 27, 12, 0, tzinfo=UTC)

TEMPLATES: list[dict[str, Any]] = [
    {"trigger_type": "interval", "interval_minutes": 30, "on_failure_alarm": True},
    {"trigger_type": "cron", "cron_expression": "*/15 * * * *", "timezone": "America/New_York"},
    {"trigger_type": "daily", "time_of_day": "02:30:00"},
    {"trigger_type": "interval", "interval_seconds": 5, "max_executions": 3},
]
EQUIPMENT = ["psu_1", "dmm_1"]


class Crash(BaseException):
    """The process died here (a BaseException: nothing on the way catches it)."""


# -- the views, and what they should be ----------------------------------------------------


Snapshot = dict[str, list[tuple[Any, ...]]]


def views(conn: sqlite3.Connection) -> Snapshot:
    """Every view table of the connection's main database, all rows and all columns,
    checkpoints and the views' fingerprint included (the log's table left out)."""
    tables = [
        name
        for (name,) in conn.execute(
            "SELECT name FROM main.sqlite_master WHERE type = 'table'"
            " AND name != 'events' AND name NOT LIKE 'sqlite_%' ORDER BY name"
        )
    ]
    return {
        table: sorted(conn.execute(f"SELECT * FROM main.{table}").fetchall(), key=repr)
        for table in tables
    }


def views_in(path: Path) -> Snapshot:
    conn = sqlite3.connect(path)
    try:
        return views(conn)
    finally:
        conn.close()


def rebuilt(log_path: Path, target: Path) -> Snapshot:
    """A fresh ``Projector().rebuild`` of the log into another file."""
    store = SQLiteEventStore(log_path)
    conn = connect(target)
    try:
        Projector().rebuild(store, conn)
        return views(conn)
    finally:
        conn.close()
        store.close()


def folded_up_to(log_path: Path, target: Path, position: int) -> Snapshot:
    """The views a fold of the log's first ``position`` events gives (one transaction)."""
    store = SQLiteEventStore(log_path)
    conn = connect(target)
    try:
        projector = Projector()
        projector.create(conn)
        projector.stored_fingerprint(conn)
        projector.remember_fingerprint(conn)
        events = [e for e in store.read_all(batch_size=10_000) if e.position <= position]
        conn.execute("BEGIN IMMEDIATE")
        projector.apply(conn, events)
        conn.execute("COMMIT")
        return views(conn)
    finally:
        conn.close()
        store.close()


def crash(store: LogStore) -> None:
    """Drop the store as a killed process leaves it: nothing folded, the views' open
    transaction (if a fold died in one) discarded by SQLite, no goodbye to the follower.

    Only for a follower without a thread of its own (``background=False``, or held)."""
    follower = store.views
    assert follower._thread is None, "stop a background follower with a real kill"
    follower.conn.close()
    store.conn.close()


# -- a fold that dies where it is told -----------------------------------------------------


class Fuse:
    """Where the next fold dies: before its ``batches``-th batch (0: the first), or after
    ``events`` events folded by the projections (counted across all of them)."""

    def __init__(self) -> None:
        self.batches: int | None = None
        self.events: int | None = None

    def arm(self, *, batches: int | None = None, events: int | None = None) -> None:
        self.batches, self.events = batches, events

    @property
    def armed(self) -> bool:
        return self.batches is not None or self.events is not None

    def blow(self) -> None:
        self.batches = self.events = None
        raise Crash()


class Fused:
    """A real projection, folding through the fuse."""

    def __init__(self, inner: Projection, fuse: Fuse, *, first: bool) -> None:
        self.inner = inner
        self.fuse = fuse
        self.first = first
        self.name = inner.name
        self.tables = inner.tables

    def create(self, db: sqlite_utils.Database) -> None:
        self.inner.create(db)

    def forget(self) -> None:
        self.inner.forget()

    def apply(self, conn: sqlite3.Connection, events: Sequence[RecordedEvent]) -> None:
        fuse = self.fuse
        if self.first and fuse.batches is not None:
            if fuse.batches == 0:
                fuse.blow()
            fuse.batches -= 1
        if fuse.events is not None and fuse.events < len(events):
            if fuse.events:
                self.inner.apply(conn, events[: fuse.events])
            fuse.blow()
        if fuse.events is not None:
            fuse.events -= len(events)
        self.inner.apply(conn, events)


def fused_projector(fuse: Fuse) -> Projector:
    return Projector([Fused(p, fuse, first=i == 0) for i, p in enumerate(default_projections())])


# -- commands --------------------------------------------------------------------------------


class Lab:
    """Drives a real store through LabLink's services and the facts its engine appends.

    A step is a tuple: (kind, index, option); ``index`` picks among what exists. A refused
    command writes nothing and is part of the property too."""

    KINDS = (
        "create",
        "update",
        "pause",
        "resume",
        "delete",
        "run",
        "finish",
        "ack",
        "clear",
        "profile",
        "unprofile",
        "key",
        "revoke",
        "online",
        "offline",
        "advance",
        "prune",
    )

    def __init__(self, store: SQLiteEventStore, *, prefix: str = "") -> None:
        self.store = store
        self.clock = ManualClock(START)
        # A prefix keeps the ids of a second Lab on the same log (a restarted writer) apart.
        self.prefix = prefix
        self.jobs = JobService(
            store, self.clock, default_timezone="Europe/Berlin", ids=SequentialIds(prefix)
        )
        self.profiles = ProfileService(store, self.clock)
        self.job_ids: list[str] = []
        self.running: dict[str, str] = {}  # execution id -> job id
        self.alarms: list[str] = []
        self.keys: list[str] = []
        self.executions = 0

    def fact(self, stream_id: str, *events: AnyEvent, actor: str = "scheduler") -> None:
        now = self.clock.now()
        self.store.append(
            stream_id,
            ANY,
            [NewEvent(event=e, actor=actor, occurred_at=now) for e in events],
        )

    def step(self, kind: str, index: int, option: int) -> None:
        try:
            self._step(kind, index, option)
        except LabLinkError:
            if kind == "create":
                raise  # every template is valid: a refusal here is a bug

    def _step(self, kind: str, index: int, option: int) -> None:
        now = self.clock.now()
        if kind == "create":
            body = {
                "name": f"job {len(self.job_ids)}",
                "schedule_type": "measurement",
                "equipment_id": EQUIPMENT[option % len(EQUIPMENT)],
                "parameters": {"command": "get_voltage"},
                **TEMPLATES[index % len(TEMPLATES)],
            }
            self.job_ids.append(self.jobs.create_job(body, actor="alice"))
        elif kind == "advance":
            self.clock.advance(1 + index * 997)
        elif kind == "prune":
            days = index % 3
            self.fact(
                "retention",
                ExecutionsPruned(cutoff=now - timedelta(days=days), days=days),
                actor="retention",
            )
        elif kind in ("profile", "unprofile"):
            profile_id = f"profile_{index % 3}"
            if kind == "unprofile":
                self.profiles.delete(profile_id, actor="bob")
            else:
                request = ProfileRequest(
                    name=profile_id,
                    equipment_type="power_supply",
                    description=f"option {option}",
                    tags=[f"t{option % 2}"],
                )
                self.profiles.save(profile_id, request, actor="bob")
        elif kind == "key":
            key_id, _ = create_key(
                self.store, name=f"key {len(self.keys)}", role="operator", actor="admin", now=now
            )
            self.keys.append(key_id)
        elif kind == "revoke" and self.keys:
            revoke_key(self.store, self.keys[index % len(self.keys)], actor="admin", now=now)
        elif kind in ("online", "offline"):
            equipment_id = EQUIPMENT[index % len(EQUIPMENT)]
            event: AnyEvent = (
                EquipmentOnline(
                    equipment_id=equipment_id, kind="power_supply", identity="x", agent_id="a1"
                )
                if kind == "online"
                else EquipmentOffline(equipment_id=equipment_id, reason="heartbeat lost")
            )
            self.fact(f"equipment:{equipment_id}", event, actor="agent")
        elif kind in ("ack", "clear") and self.alarms:
            alarm = self.alarms[index % len(self.alarms)]
            self.fact(
                f"alarm:{alarm}",
                AlarmAcknowledged(alarm_id=alarm, by="carol")
                if kind == "ack"
                else AlarmCleared(alarm_id=alarm, by="carol"),
                actor="carol",
            )
        elif kind == "finish" and self.running:
            execution_id = sorted(self.running)[index % len(self.running)]
            self._end(self.running.pop(execution_id), execution_id, failed=option % 2 == 1)
        elif self.job_ids:
            self._job_step(kind, self.job_ids[index % len(self.job_ids)], option)

    def _job_step(self, kind: str, job_id: str, option: int) -> None:
        now = self.clock.now()
        if kind == "update":
            changes: list[dict[str, Any]] = [
                {"name": f"renamed {now.isoformat()}"},
                {"enabled": False},
            ]
            self.jobs.update_job(job_id, changes[option % 2], actor="bob")
        elif kind == "pause":
            self.jobs.pause_job(job_id, actor="bob")
        elif kind == "resume":
            self.jobs.resume_job(job_id, actor="bob")
        elif kind == "delete":
            self.jobs.delete_job(job_id, actor="bob")
        elif kind == "run":
            self.executions += 1
            execution_id = f"exec_{self.prefix}{self.executions}"
            self.fact(
                job_id,
                ExecutionRequested(
                    job_id=job_id,
                    execution_id=execution_id,
                    scheduled_time=now,
                    actual_time=now,
                    trigger_info=("scheduled", "manual", "catch_up")[option % 3],
                ),
                ExecutionStarted(job_id=job_id, execution_id=execution_id, started_at=now),
            )
            self.running[execution_id] = job_id

    def _end(self, job_id: str, execution_id: str, *, failed: bool) -> None:
        """The agent's result; a failure raises its alarm in the same append (the engine's
        rule: never one without the other)."""
        now = self.clock.now()
        common: dict[str, Any] = {
            "job_id": job_id,
            "execution_id": execution_id,
            "completed_at": now,
            "started_at": now,
        }
        if not failed:
            # Read by the results view: a value, a reading, a capture's summary.
            result = {
                "value": 1.5,
                "unit": "V",
                "measurements": {"current": {"value": 0.1, "unit": "A"}},
                "data": {"object": f"{execution_id}.csv", "size": 1, "status": "stored"},
            }
            self.fact(job_id, ExecutionSucceeded(**common, result=result))
            return
        alarm = alarm_id(execution_id)
        self.fact(
            job_id,
            ExecutionFailed(**common, error=ExecutionError(type="refused", message="boom")),
            AlarmRaised(
                alarm_id=alarm,
                kind="job_failure",
                severity="warning",
                message="boom",
                equipment_id="psu_1",
                job_id=job_id,
                execution_id=execution_id,
                execution_time=now,
            ),
        )
        self.alarms.append(alarm)
