"""The notifier: follows the event log from its checkpoint and delivers alarm transitions
to the configured channels, recording every attempt in the log.

The log is the outbox's record. Each attempt is appended as ``notification.sent``,
``notification.failed`` or ``notification.abandoned`` to the stream
``notification:<alarm_id>:<channel>``, at the version read (the write path,
``lablink.handler``). At the start the notifier reads the log from its checkpoint and owes
every transition routed to a channel that has no ``sent`` or ``abandoned`` yet, with the
attempts and the next retry the ``failed`` facts say: so one delivery per alarm, channel and
transition across restarts. A crash between a delivery and its record sends it once more,
with the same ``Idempotency-Key``.

The checkpoint (``notify_checkpoints``, in the log's file like the relay's) is a low-water
mark: the position before the oldest transition still owed, or the end of what was read
when nothing is. Reading from it finds every owed transition and every attempt made since.
A notifier's first start (no checkpoint yet) begins where the log stood when this process
opened it (``first_start_at``; the log's end when not given): a LabLink that gains channels
after a year of running does not send a year of alarms, and an alarm this start raised
before the notifier ran (a recovery's) is still sent.

Tasks, under the runtime's supervisor (``/health``): ``task.notify`` follows the log;
``task.notify.<channel>`` delivers, one per channel, so a dead or slow receiver holds only
its own channel. Nothing of this is on the engine's path: the notifier reads the log on its
own connection, and its appends are one small event each.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec
import structlog

from lablink.clock import Clock
from lablink.errors import DeliveryFailed
from lablink.events import (
    AlarmAcknowledged,
    AlarmCleared,
    AlarmRaised,
    AnyEvent,
    NotificationAbandoned,
    NotificationFailed,
    NotificationSent,
    decode_event,
)
from lablink.eventstore.base import parse_instant
from lablink.eventstore.sqlite import LogReader, SQLiteEventStore, connect
from lablink.handler import CommandHandler
from lablink.health import Health
from lablink.ids import random_hex
from lablink.notify.config import Channel
from lablink.notify.message import Message, idempotency_key
from lablink.notify.outbox import ChannelOutbox, Digest, Owed, Work
from lablink.notify.senders import Sender, sender_for
from lablink.projections.alarms import get_alarm_row
from lablink.projections.jobs import get_job
from lablink.projections.reading import reading_views
from lablink.projections.views import alarm_view
from lablink.settings import Settings
from lablink.supervision import Supervisor, Watch

log = structlog.get_logger(tag="notify")

ACTOR = "notifier"
SHUTDOWN_SECONDS = 5.0
TASK = "task.notify"
CHECKPOINTS = """
CREATE TABLE IF NOT EXISTS notify_checkpoints (name TEXT PRIMARY KEY, position INTEGER NOT NULL)
"""
BATCH = 1000
_TRANSITIONS: dict[type[Any], str] = {
    AlarmRaised: "raised",
    AlarmAcknowledged: "acknowledged",
    AlarmCleared: "cleared",
}


def stream_id(alarm_id: str, channel: str) -> str:
    return f"notification:{alarm_id}:{channel}"


@dataclass(frozen=True)
class Route:
    """What routing looks at: fixed by the alarm's raise."""

    kind: str
    severity: str
    equipment_id: str | None
    job_tags: tuple[str, ...]
    # A notification_abandoned alarm: the channel that gave up (never told of it again).
    gave_up: str | None

    def reaches(self, channel: Channel, transition: str) -> bool:
        routing = channel.routing
        if transition not in routing.transitions or self.gave_up == channel.name:
            return False
        if routing.severities and self.severity not in routing.severities:
            return False
        if routing.equipment and self.equipment_id not in routing.equipment:
            return False
        return not routing.job_tags or bool(set(routing.job_tags) & set(self.job_tags))


@dataclass(frozen=True)
class Transition:
    alarm_id: str
    transition: str
    position: int
    route: Route


@dataclass(frozen=True)
class Attempt:
    """A notification fact read back from the log (while rebuilding)."""

    event: NotificationSent | NotificationFailed | NotificationAbandoned
    at: datetime


def route_of(views: sqlite3.Connection, alarm_id: str) -> Route | None:
    row = get_alarm_row(views, alarm_id)
    if row is None:
        return None
    tags: tuple[str, ...] = ()
    if row["job_id"]:
        job = get_job(views, row["job_id"])
        tags = tuple(job.get("tags") or ()) if job else ()
    gave_up = None
    if row["kind"] == "notification_abandoned":
        gave_up = msgspec.json.decode(row["error"] or "{}").get("channel")
    return Route(row["kind"], row["severity"], row["equipment_id"], tags, gave_up)


class Notifier:
    def __init__(
        self,
        store: SQLiteEventStore,
        channels: list[Channel],
        clock: Clock,
        *,
        base_url: str,
        senders: dict[str, Sender] | None = None,
        poll_seconds: float = 1.0,
        views_wait: float = 5.0,
        name: str = "notifier",
        first_start_at: int | None = None,
    ) -> None:
        self.store = store
        self.channels = channels
        self.clock = clock
        self.base_url = base_url
        self.poll_seconds = poll_seconds
        self.views_wait = views_wait
        self.name = name
        self.outboxes = {c.name: ChannelOutbox(c) for c in channels}
        self.senders = senders if senders is not None else {c.name: sender_for(c) for c in channels}
        self.handler = CommandHandler(store, clock)
        self.path: Path = store.path
        self._conn = connect(self.path)
        self._conn.execute(CHECKPOINTS)
        self._reader = LogReader(self._conn)
        stored = self._stored_checkpoint()
        if stored is None:
            stored = self._reader.last_position() if first_start_at is None else first_start_at
            self._write_checkpoint(stored)
        self.position = self.saved = stored
        self.ready = asyncio.Event()  # the log read up to its end at the start
        self._follow_wake = asyncio.Event()
        self._wakes = {c.name: asyncio.Event() for c in channels}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._supervisor: Supervisor | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self, health: Health) -> Notifier:
        """Follow the log and deliver, under a supervisor of its own that reports to
        ``health`` (the runtime's: ``/health``), as the relay's does: closing stops the
        tasks before the connection and the clients they use."""
        self._loop = asyncio.get_running_loop()
        supervisor = self._supervisor = Supervisor(health)
        self._unsubscribe = self.store.subscribe(lambda _: self.wake())
        supervisor.spawn(TASK, self._follow)
        for channel in self.channels:
            outbox, sender = self.outboxes[channel.name], self.senders[channel.name]

            async def work(watch: Watch, o: ChannelOutbox = outbox, s: Sender = sender) -> None:
                await self._work(watch, o, s)

            supervisor.spawn(f"{TASK}.{channel.name}", work)
        log.info("notifier started", channels=[c.name for c in self.channels])
        return self

    async def aclose(self) -> None:
        """Stop the tasks (an attempt under way is given up to the next start, which sends
        it again), then save the checkpoint."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._supervisor is not None:
            await self._supervisor.aclose(grace_seconds=SHUTDOWN_SECONDS)
        for sender in self.senders.values():
            await sender.aclose()
        with contextlib.suppress(sqlite3.Error):
            self._write_checkpoint(self._low_water())
        self._conn.close()

    def wake(self) -> None:
        """Look at the log and the channels now (a commit, a test that moved its clock)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return

        def set_all() -> None:
            self._follow_wake.set()
            for event in self._wakes.values():
                event.set()

        loop.call_soon_threadsafe(set_all)

    # -- following the log ----------------------------------------------------------------------

    async def _follow(self, watch: Watch) -> None:
        while not watch.stopping:
            self._follow_wake.clear()
            read = await self.catch_up()
            if not read and not self.ready.is_set():
                # The log read to its end: what is owed is known, the channels may send.
                self.ready.set()
                for event in self._wakes.values():
                    event.set()
            low = self._low_water()
            if low != self.saved:
                await asyncio.to_thread(self._write_checkpoint, low)
            owed = sum(len(o.owed) for o in self.outboxes.values())
            watch.ok(f"read to {self.position}", position=self.position, owed=owed)
            if read:
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_seconds):
                    await self._follow_wake.wait()

    async def catch_up(self) -> int:
        """Read what the log holds past the notifier's position (up to a batch) and apply it;
        the number of events read."""
        after = self.position
        last, facts = await asyncio.to_thread(self._read, after)
        live = self.ready.is_set()
        for fact in facts:
            if isinstance(fact, Transition):
                for channel in self.channels:
                    if fact.route.reaches(channel, fact.transition):
                        self.outboxes[channel.name].owe(
                            fact.alarm_id, fact.transition, fact.position
                        )
            elif not live:
                # Live, the channel's worker has already applied its own attempts.
                self._apply_attempt(fact)
        if last:
            self.position = last
            for event in self._wakes.values():
                event.set()
        return last - after if last else 0

    def _read(self, after: int) -> tuple[int, list[Transition | Attempt]]:
        """In a thread: the facts of the next batch past ``after`` and the last position read
        (0: nothing new). The views (what routing looks at) are awaited up to each raise."""
        rows = self._reader.read_rows(after, BATCH)
        facts: list[Transition | Attempt] = []
        for row in rows:
            kind = row[4]
            if not kind.startswith(("alarm.", "notification.")):
                continue
            event = decode_event(row[8])
            match event:
                case NotificationSent() | NotificationFailed() | NotificationAbandoned():
                    facts.append(Attempt(event, parse_instant(row[5])))
                case AlarmRaised() | AlarmAcknowledged() | AlarmCleared():
                    route = self._route(event.alarm_id, row[0])
                    if route is not None:
                        transition = _TRANSITIONS[type(event)]
                        facts.append(Transition(event.alarm_id, transition, row[0], route))
        return (rows[-1][0] if rows else 0), facts

    def _route(self, alarm_id: str, position: int) -> Route | None:
        self._await_views(position)
        with reading_views(self.store) as views:
            route = route_of(views, alarm_id)
        if route is None:
            log.warning("alarm not in the alarms view: not notified", alarm_id=alarm_id)
        return route

    def _await_views(self, position: int) -> None:
        views = getattr(self.store, "views", None)
        if views is not None and not views.wait_for(position, self.views_wait):
            # The supervisor retries the batch: nothing was applied.
            raise views.behind(position)

    def _apply_attempt(self, fact: Attempt) -> None:
        event = fact.event
        outbox = self.outboxes.get(event.channel)
        if outbox is None:  # a channel no longer configured
            return
        ids = event.alarm_ids or [event.alarm_id]
        if isinstance(event, NotificationFailed):
            outbox.failed_before(
                ids, event.transition, event.attempt, fact.at, event.retry_at, event.error
            )
        else:
            outbox.settled(ids, event.transition)

    # -- checkpoint -----------------------------------------------------------------------------

    def _stored_checkpoint(self) -> int | None:
        row = self._conn.execute(
            "SELECT position FROM notify_checkpoints WHERE name = ?", (self.name,)
        ).fetchone()
        return int(row[0]) if row else None

    def _write_checkpoint(self, position: int) -> None:
        self._conn.execute(
            "INSERT INTO notify_checkpoints (name, position) VALUES (?, ?)"
            " ON CONFLICT(name) DO UPDATE SET position = excluded.position",
            (self.name, position),
        )
        self.saved = position

    def _low_water(self) -> int:
        lows = [o.low_water() for o in self.outboxes.values()]
        return min([low for low in lows if low is not None], default=self.position)

    # -- delivering -----------------------------------------------------------------------------

    async def _work(self, watch: Watch, outbox: ChannelOutbox, sender: Sender) -> None:
        wake = self._wakes[outbox.channel.name]
        while not self.ready.is_set():
            if await watch.sleep(self.poll_seconds):
                return
        while not watch.stopping:
            wake.clear()
            now = self.clock.now()
            for work in outbox.plan(now):
                await self._deliver(watch, outbox, sender, work)
            failing = any(o.last_error for o in outbox.owed.values())
            if failing or any(d.last_error for d in outbox.digests):
                watch.degraded("deliveries failing", owed=len(outbox.owed))
            else:
                watch.ok("delivering", owed=len(outbox.owed))
            self._follow_wake.set()  # the low-water mark may have moved
            due = outbox.next_due(self.clock.now())
            wait = self.poll_seconds
            if due is not None:
                wait = min(wait, max((due - self.clock.now()).total_seconds(), 0.0))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await wake.wait()

    async def _deliver(
        self, watch: Watch, outbox: ChannelOutbox, sender: Sender, work: Work
    ) -> None:
        channel = outbox.channel.name
        items = work.items if isinstance(work, Digest) else [work]
        digest = isinstance(work, Digest)
        key = idempotency_key(work.alarm_id, channel, work.transition, digest)
        alarms = await asyncio.to_thread(self._documents, items)
        message = Message(channel, work.transition, alarms, key, digest, self._base(outbox))
        attempt = work.attempts + 1
        ids = [i.alarm_id for i in items] if digest else []
        try:
            detail = await sender.send(message)
        except DeliveryFailed as exc:
            retry = outbox.failed(work, self.clock.now(), exc.reason)
            log.warning(
                "notification failed",
                channel=channel,
                alarm_id=work.alarm_id,
                transition=work.transition,
                attempt=attempt,
                error=exc.reason,
                retry_at=retry.retry_at.isoformat() if retry.retry_at else None,
            )
            if retry.retry_at is not None:
                await self._record(
                    work.alarm_id,
                    channel,
                    [
                        NotificationFailed(
                            alarm_id=work.alarm_id,
                            channel=channel,
                            transition=work.transition,  # type: ignore[arg-type]
                            attempt=attempt,
                            error=exc.reason,
                            retry_at=retry.retry_at,
                            alarm_ids=ids,
                        )
                    ],
                )
                return
            await self._record(
                work.alarm_id, channel, self._abandon(outbox, work, items, retry.first_attempt_at)
            )
            outbox.delivered(work)
            return
        await self._record(
            work.alarm_id,
            channel,
            [
                NotificationSent(
                    alarm_id=work.alarm_id,
                    channel=channel,
                    transition=work.transition,  # type: ignore[arg-type]
                    attempt=attempt,
                    idempotency_key=key,
                    alarm_ids=ids,
                    detail=detail,
                )
            ],
        )
        outbox.delivered(work)
        log.info(
            "notification sent",
            channel=channel,
            alarm_id=work.alarm_id,
            transition=work.transition,
            attempt=attempt,
            alarms=len(items),
        )

    def _abandon(
        self, outbox: ChannelOutbox, work: Work, items: list[Owed], first: datetime
    ) -> list[AnyEvent]:
        """The give-up, and the alarm it raises: unless what was given up on were
        notification_abandoned alarms themselves (two dead channels must not raise alarms
        about each other for ever)."""
        channel = outbox.channel.name
        ids = [i.alarm_id for i in items]
        events: list[AnyEvent] = [
            NotificationAbandoned(
                alarm_id=work.alarm_id,
                channel=channel,
                transition=work.transition,  # type: ignore[arg-type]
                attempts=work.attempts,
                first_attempt_at=first,
                error=work.last_error,
                alarm_ids=ids if isinstance(work, Digest) else [],
            )
        ]
        log.error(
            "notification abandoned",
            channel=channel,
            alarm_ids=ids,
            attempts=work.attempts,
            error=work.last_error,
        )
        if all(i.alarm_id.startswith(ABANDONED_PREFIX) for i in items):
            return events
        hours = outbox.channel.give_up_after / 3600
        events.append(
            AlarmRaised(
                alarm_id=f"{ABANDONED_PREFIX}{random_hex(48)}",
                kind="notification_abandoned",
                severity="warning",
                message=(
                    f"channel {channel!r} gave up notifying {len(ids)} alarm(s)"
                    f" ({work.transition}) after {work.attempts} attempt(s) over {hours:g} h:"
                    f" {work.last_error}"
                ),
                error={
                    "type": "notification_abandoned",
                    "channel": channel,
                    "transition": work.transition,
                    "alarm_ids": ids[:100],
                    "attempts": work.attempts,
                    "first_attempt_at": first.isoformat(),
                    "last_error": work.last_error,
                },
            )
        )
        return events

    async def _record(self, alarm_id: str, channel: str, events: list[AnyEvent]) -> None:
        stream = stream_id(alarm_id, channel)

        def append() -> None:
            # At the version read: a second notifier on the same log would conflict here
            # rather than record a delivery twice.
            version = self.store.stream_version(stream)
            self.handler.record(stream, events, ACTOR, expected_version=version)

        await asyncio.to_thread(append)

    def _documents(self, items: list[Owed]) -> list[dict[str, Any]]:
        """In a thread: the alarms as the API shows them."""
        self._await_views(max(i.position for i in items))
        documents = []
        with reading_views(self.store) as views:
            for item in items:
                row = get_alarm_row(views, item.alarm_id)
                if row is not None:
                    documents.append(alarm_view(row))
        return documents

    def _base(self, outbox: ChannelOutbox) -> str:
        return outbox.channel.dashboard_url or self.base_url


ABANDONED_PREFIX = "alarm_notify_"


def base_url(settings: Settings) -> str:
    """The dashboard's address in links: LABLINK_PUBLIC_URL, else the bound host and port."""
    scheme = "https" if getattr(settings, "tls_cert", None) else "http"
    return settings.public_url or f"{scheme}://{settings.host}:{settings.port}/"


async def start_notifier(
    settings: Settings,
    store: SQLiteEventStore,
    clock: Clock,
    health: Health,
    channels: list[Channel],
    *,
    first_start_at: int | None = None,
) -> Notifier | None:
    """The runtime's notifier (None when no channel is configured); ``first_start_at``: the
    log's position when the runtime opened it (where a first start begins)."""
    if not channels:
        log.info("notifications off: no channel configured")
        return None
    notifier = Notifier(
        store, channels, clock, base_url=base_url(settings), first_start_at=first_start_at
    )
    return await notifier.start(health)
