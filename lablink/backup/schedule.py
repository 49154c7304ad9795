"""The daily backup (``LABLINK_BACKUP_DIR``): a copy of the log a day after the last one the
log records, the first as soon as the server starts with the setting, each named
``lablink-<UTC time>-<position>.db`` (with its ``.sha256``), the newest
``LABLINK_BACKUP_KEEP`` kept.

Each copy is recorded (``backup.taken``: file, position, SHA-256, size, the copies it
removed), so that a restart neither skips a day nor copies twice, and the log itself says
when the last good copy was taken. A copy that fails is recorded (``backup.failed``) with a
``backup_failed`` alarm in the same append, and tried again an hour later (not at the
supervisor's backoff: one alarm an hour at most, not one a second), until one succeeds.

Like the retention pass (lablink/scheduler/retention.py), the loop reads the clock once per
turn and hands that reading to every question it asks, sleeps at least ``MIN_SLEEP`` per
turn, and looks at the clock again at least hourly (a suspended machine, a clock set
forward). It runs under the runtime's supervisor as ``task.backup``; the copy itself runs in
a worker thread, a reader beside the scheduler's writes (lablink/backup/snapshot.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from datetime import datetime, timedelta
from pathlib import Path

import structlog

from lablink.alarm_service import AlarmService
from lablink.backup import checksum
from lablink.backup.snapshot import Backup, discard, take
from lablink.clock import Clock
from lablink.errors import BackupError
from lablink.events import AlarmRaised, BackupFailed, BackupTaken
from lablink.eventstore.sqlite import SQLiteEventStore
from lablink.handler import CommandHandler
from lablink.health import Health
from lablink.ids import random_hex
from lablink.supervision import Supervisor, Watch

log = structlog.get_logger(tag="backup")

STREAM = "backups"
ACTOR = "backup"
TASK_NAME = "task.backup"
PERIOD = timedelta(days=1)
RETRY = timedelta(hours=1)
RECHECK = timedelta(hours=1)
MIN_SLEEP = timedelta(seconds=1)
DEFAULT_KEEP = 7
# lablink-20260101T030000Z-12345.db: sorting the names sorts the copies by time.
NAME = re.compile(r"lablink-\d{8}T\d{6}Z-\d+\.db")


def file_name(at: datetime, position: int) -> str:
    return f"lablink-{at.strftime('%Y%m%dT%H%M%SZ')}-{position}.db"


class ScheduledBackups:
    def __init__(
        self,
        store: SQLiteEventStore,
        clock: Clock,
        directory: Path,
        keep: int = DEFAULT_KEEP,
        *,
        alarms: AlarmService | None = None,
        period: timedelta = PERIOD,
        retry: timedelta = RETRY,
        recheck: timedelta = RECHECK,
    ) -> None:
        self.store = store
        self.clock = clock
        self.directory = directory
        self.keep = keep
        self.alarms = alarms or AlarmService.on_store(store, clock)
        self.period = period
        self.retry = retry
        self.recheck = recheck
        self.last_taken: datetime | None = None
        self.failed_at: datetime | None = None
        self._read_log = False
        self.iterations = 0  # turns of the loop, for tests
        self._stop = asyncio.Event()
        self._done = asyncio.Event()
        self._supervisor: Supervisor | None = None
        self._own_supervisor = False

    def next_run(self, now: datetime) -> datetime:
        """When the next copy is due: a period after the last one the log records (now if
        none), and not before an hour after a failure."""
        if not self._read_log:
            self.last_taken = self._last_taken()
            self._read_log = True
        when = now if self.last_taken is None else self.last_taken + self.period
        if self.failed_at is not None:
            when = max(when, self.failed_at + self.retry)
        return when

    def due(self, now: datetime) -> bool:
        return self.next_run(now) <= now

    def _last_taken(self) -> datetime | None:
        with self.store.lock:
            recorded = self.store.read_stream(STREAM)
        taken = [r.occurred_at for r in recorded if isinstance(r.event, BackupTaken)]
        return taken[-1] if taken else None

    def run_once(self, now: datetime) -> Backup:
        """One copy at ``now``, recorded; a failure is recorded with its alarm, then raised."""
        file = self.directory / file_name(now, 0)  # named properly once the copy has begun
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            made = take(self.store.path, lambda position: self.directory / file_name(now, position))
            removed = self._prune()
        except (OSError, BackupError) as exc:
            self._failed(now, file, exc)
            raise
        CommandHandler(self.store, self.clock).record(
            STREAM,
            [
                BackupTaken(
                    file=str(made.file),
                    position=made.position,
                    sha256=made.sha256,
                    size=made.size,
                    removed=removed,
                )
            ],
            ACTOR,
            at=now,
        )
        self.last_taken, self.failed_at, self._read_log = now, None, True
        log.info(
            "backup taken",
            file=str(made.file),
            position=made.position,
            size=made.size,
            seconds=round(made.seconds, 3),
            removed=removed,
        )
        return made

    def run_if_due(self, now: datetime | None = None) -> Backup | None:
        now = now if now is not None else self.clock.now()
        return self.run_once(now) if self.due(now) else None

    def _prune(self) -> list[str]:
        """Remove all but the newest ``keep`` copies (and their checksums); their names."""
        copies = sorted(p.name for p in self.directory.iterdir() if NAME.fullmatch(p.name))
        going = copies[: max(0, len(copies) - self.keep)]
        for name in going:
            discard(self.directory / name)
            checksum.remove(self.directory / name)
        return going

    def _failed(self, now: datetime, file: Path, exc: BaseException) -> None:
        self.failed_at = now
        error = f"{type(exc).__name__}: {exc}"
        last = self.last_taken.isoformat() if self.last_taken is not None else "never"
        alarm = AlarmRaised(
            alarm_id=f"alarm_backup_failed_{random_hex(48)}",
            kind="backup_failed",
            severity="warning",
            message=(
                f"the scheduled backup into {self.directory} failed ({error}); the last good"
                f" backup was taken {last}; next try in {self.retry.total_seconds() / 60:g} min"
            ),
            error={"type": "backup_failed", "directory": str(self.directory), "error": error},
        )
        log.error("backup failed", directory=str(self.directory), error=error)
        # The log may be what fails (a full disk): then the error is only logged and shown
        # in /health, and the alarm comes with the next try that can record it.
        with contextlib.suppress(Exception):
            self.alarms.raise_alarm(
                STREAM, alarm, ACTOR, facts=[BackupFailed(file=str(file), error=error)], at=now
            )

    # -- the loop ------------------------------------------------------------------------------

    async def start(self, supervisor: Supervisor | None = None) -> None:
        """Keep taking copies under ``supervisor`` (or one of its own); the first turn is at
        once, in the loop, so a start never waits for a copy."""
        if supervisor is None:
            supervisor = Supervisor(Health(self.clock))
            self._own_supervisor = True
        self._supervisor = supervisor
        log.info("scheduled backups", directory=str(self.directory), keep=self.keep)
        supervisor.spawn(TASK_NAME, self.run)

    async def run(self, watch: Watch) -> None:
        """The supervised body (``task.backup``)."""
        try:
            while not (self._stop.is_set() or watch.stopping):
                self.iterations += 1
                now = self.clock.now()  # the one reading of this turn
                if self.due(now):
                    try:
                        made = await asyncio.to_thread(self.run_once, now)
                    except Exception as exc:  # recorded and alarmed: shown in /health
                        watch.failed(exc)
                    else:
                        watch.ok(last_backup=str(made.file), position=made.position)
                await watch.sleep(self._wait(now), until=self._stop)
        finally:
            self._done.set()
        while not watch.stopping:  # closed: idle until the supervisor stops
            await watch.sleep(3600)

    def _wait(self, now: datetime) -> float:
        """Seconds until the next copy from the same reading, within [MIN_SLEEP, recheck]."""
        wait = min(self.next_run(now) - now, self.recheck)
        return max(wait, MIN_SLEEP).total_seconds()

    async def aclose(self) -> None:
        self._stop.set()
        if self._supervisor is not None:
            await self._done.wait()
            if self._own_supervisor:
                await self._supervisor.aclose()
            self._supervisor = None
