"""The checker of issue 18, run over the final record after each cluster test.

- No ``(job, scheduled_time)`` decided twice: a scheduled time is fired (``execution.pending``
  of a schedule or a catch-up), queued, skipped or blocked at most once.
- Every due fire is accounted for: each fire time of each job's schedule, from its creation
  to ``until``, is either decided as above or lies in the window of an ``execution.missed``
  or ``execution.coalesced`` record (which carries its reason); no decided time lies in a
  missed window.
- Every acknowledged API write is present: the job ids and execution ids the test was
  answered 200 for.
- Each replica's copy is the record (the same events at the same positions, as far as the
  copy goes) and its views equal a rebuild from it, up to the position they folded; and
  `lablink verify` passes on its data directory.

The record is read from the stream itself, not from a copy. Jobs that were paused, updated,
deleted or completed are checked up to that change only.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import nats
from nats.js.api import DeliverPolicy

from lablink.backup.verify import verify
from lablink.datadir import DB_NAME, VIEWS_NAME
from lablink.domain.schedule import Schedule
from lablink.domain.triggers import fires_between
from lablink.events import decode_event
from lablink.events.executions import (
    ExecutionBlocked,
    ExecutionCoalesced,
    ExecutionMissed,
    ExecutionQueued,
    ExecutionRequested,
    ExecutionSkipped,
    ExecutionStarted,
)
from lablink.events.jobs import JobCompleted, JobCreated, JobDeleted, JobPaused, JobUpdated
from lablink.eventstore.record_format import SUBJECTS, is_lease, row_of
from lablink.eventstore.record_link import RECORD_STREAM
from lablink.eventstore.sqlite import LogReader
from lablink.projections.compare import first_difference, view_tables
from lablink.projections.runner import Projector

# (position, event id, stream id, type, occurred at, payload)
Row = tuple[int, str, str, str, str, str]


@dataclass
class Acknowledged:
    """What the API answered 200 for during a test."""

    jobs: set[str] = field(default_factory=set)
    executions: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class Checked:
    events: int
    fires: int  # scheduled times decided (fired, queued, skipped, blocked)
    accounted: int  # due fire times found decided or in a missed/coalesced window
    in_windows: int  # of those, the ones a missed/coalesced record covers
    copies: dict[str, int]  # replica -> events its copy holds

    def __str__(self) -> str:
        return (
            f"{self.events} events, {self.fires} fires decided, {self.accounted} due fires"
            f" accounted for ({self.in_windows} in missed/coalesced windows), copies {self.copies}"
        )


def read_record(url: str, user: str, password: str, timeout: float = 60.0) -> list[Row]:
    """Every event of the record stream, in stream order (lease messages passed over)."""
    return asyncio.run(_read_record(url, user, password, timeout))


async def _read_record(url: str, user: str, password: str, wait: float) -> list[Row]:
    nc = await nats.connect(servers=url.split(","), user=user, password=password)
    try:
        js = nc.jetstream()
        last = (await js.stream_info(RECORD_STREAM)).state.last_seq
        rows: list[Row] = []
        if last == 0:
            return rows
        sub = await js.subscribe(
            SUBJECTS, stream=RECORD_STREAM, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL
        )
        try:
            while True:
                msg = await sub.next_msg(timeout=wait)
                sequence = msg.metadata.sequence.stream
                if not is_lease(msg.subject):
                    position, event_id, stream_id, type_, at, _, _, payload = row_of(
                        sequence, msg.subject, msg.headers, msg.data
                    )
                    rows.append((position, event_id, stream_id, type_, at, payload))
                if sequence >= last:
                    return rows
        finally:
            await sub.unsubscribe()
    finally:
        await nc.close()


def check(
    record: list[Row],
    copies: dict[str, Path],
    acknowledged: Acknowledged,
    until: datetime,
    *,
    complete: Iterable[str] = (),
) -> Checked:
    """Raise AssertionError naming the first thing wrong. ``copies``: replica -> its data
    directory (stopped). ``complete``: the replicas whose copies must hold the whole record
    (those stopped after catching up)."""
    events = [
        (datetime.fromisoformat(at), decode_event(payload)) for _, _, _, _, at, payload in record
    ]
    fires, accounted, in_windows = _check_fires(events, until)
    ids = {row[1] for row in record}
    job_ids = {e.job_id for _, e in events if isinstance(e, JobCreated)}
    execution_ids = {
        getattr(e, "execution_id", None) for _, e in events if isinstance(e, ExecutionRequested)
    }
    lost_jobs = acknowledged.jobs - job_ids
    assert not lost_jobs, f"acknowledged jobs not in the record: {sorted(lost_jobs)}"
    lost_runs = acknowledged.executions - execution_ids
    assert not lost_runs, f"acknowledged runs not in the record: {sorted(lost_runs)}"
    assert len(ids) == len(record), "an event id is in the record twice"
    held = {}
    for replica, data_dir in copies.items():
        held[replica] = _check_copy(replica, data_dir, record)
        if replica in complete:
            assert held[replica] == len(record), (
                f"replica {replica}'s copy holds {held[replica]} of {len(record)} events"
            )
    return Checked(
        events=len(record), fires=fires, accounted=accounted, in_windows=in_windows, copies=held
    )


@dataclass
class _Job:
    schedule: Schedule
    since: datetime
    until: datetime
    decided: Counter[datetime] = field(default_factory=Counter)
    missed: list[tuple[datetime, datetime]] = field(default_factory=list)
    coalesced: list[tuple[datetime, datetime]] = field(default_factory=list)


def _check_fires(events: list[tuple[datetime, Any]], until: datetime) -> tuple[int, int, int]:
    jobs: dict[str, _Job] = {}
    started: Counter[str] = Counter()
    for at, event in events:
        if isinstance(event, JobCreated):
            schedule = Schedule.from_spec(event.spec, event.anchor)
            jobs[event.job_id] = _Job(schedule, event.created_at, until)
        elif isinstance(event, JobUpdated | JobPaused | JobDeleted | JobCompleted):
            job = jobs.get(event.job_id)
            if job is not None:
                job.until = min(job.until, at)
        elif isinstance(event, ExecutionRequested):
            if event.trigger_info != "manual":
                jobs[event.job_id].decided[event.scheduled_time] += 1
        elif isinstance(event, ExecutionQueued | ExecutionSkipped | ExecutionBlocked):
            if event.trigger_info != "manual" and not getattr(event, "queued", False):
                jobs[event.job_id].decided[event.scheduled_time] += 1
        elif isinstance(event, ExecutionMissed):
            jobs[event.job_id].missed.append((event.window_start, event.window_end))
        elif isinstance(event, ExecutionCoalesced):
            jobs[event.job_id].coalesced.append((event.window_start, event.window_end))
        elif isinstance(event, ExecutionStarted):
            started[event.execution_id] += 1
    twice = [execution for execution, n in started.items() if n > 1]
    assert not twice, f"executions started twice: {twice}"
    fires = accounted = in_windows = 0
    for job_id, job in jobs.items():
        doubled = sorted(t for t, n in job.decided.items() if n > 1)
        assert not doubled, f"job {job_id}: scheduled times decided twice: {doubled}"
        fires += sum(job.decided.values())
        for t in job.decided:
            for start, end in job.missed:
                assert not start <= t <= end, (
                    f"job {job_id}: {t} was fired and recorded missed ({start}..{end})"
                )
        due = fires_between(job.schedule, job.since, job.until, 1_000_000)
        for t in due:
            if t in job.decided:
                accounted += 1
            elif any(start <= t <= end for start, end in job.missed + job.coalesced):
                accounted += 1
                in_windows += 1
            else:
                raise AssertionError(
                    f"job {job_id}: the fire due at {t} was neither started nor recorded"
                    f" missed/coalesced/skipped (fired: {len(job.decided)},"
                    f" windows: missed {job.missed}, coalesced {job.coalesced})"
                )
    return fires, accounted, in_windows


def _check_copy(replica: str, data_dir: Path, record: list[Row]) -> int:
    """The copy equals the record as far as it goes; its views equal a replay of it."""
    log = sqlite3.connect(f"file:{data_dir / DB_NAME}?mode=ro", uri=True)
    try:
        copied = log.execute(
            "SELECT position, event_id, stream_id, type, occurred_at, payload FROM events"
            " ORDER BY position"
        ).fetchall()
        for mine, theirs in zip(copied, record, strict=False):
            assert tuple(mine) == theirs, (
                f"replica {replica}'s copy differs from the record at position {mine[0]}:"
                f" {mine[:4]} against {theirs[:4]}"
            )
        assert len(copied) <= len(record), (
            f"replica {replica}'s copy holds {len(copied)} events, the record {len(record)}"
        )
        _check_views(replica, data_dir, log)
    finally:
        log.close()
    # `lablink verify` passes on the copy: its positions' gaps are the lease's passed-over
    # runs, its chain is whole, its views equal a replay.
    verify(data_dir, wait=0)
    return len(copied)


def _check_views(replica: str, data_dir: Path, log: sqlite3.Connection) -> None:
    projector = Projector()
    live = sqlite3.connect(f"file:{data_dir / VIEWS_NAME}?mode=ro", uri=True)
    try:
        assert projector.stored_fingerprint(live) == projector.fingerprint()
        folded = min(projector.checkpoints(live).values(), default=0)
        replayed = sqlite3.connect(":memory:")
        try:
            projector.create(replayed)
            projector.fold_log(LogReader(log), replayed, folded)
            difference = first_difference(replayed, live, view_tables(projector))
        finally:
            replayed.close()
        assert difference is None, f"replica {replica}'s views, at position {folded}: {difference}"
    finally:
        live.close()


def due_margin(now: datetime, seconds: float = 5.0) -> datetime:
    """The end of the window the checker holds fires to: a little before ``now``, as the
    last fires before the replicas stopped may still have been on their way."""
    return now - timedelta(seconds=seconds)
