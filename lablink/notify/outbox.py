"""What one channel still owes, and what it sends next: retries, give-up, storms.

No I/O here: the notifier tells an outbox what the log says (an alarm transition routed to
the channel, an attempt that failed, a delivery or a give-up) and asks it what to send now;
the clock's time is passed in.

Storms. A channel sends at most ``storm_threshold`` messages within a minute. Past that, the
transitions that come due wait for the channel's next digest: one message listing them all,
sent once the minute of the first messages is over, then at most one a minute while alarms
keep coming too fast. A minute without a digest ends the storm.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from lablink.notify.config import Channel

MINUTE = timedelta(minutes=1)


@dataclass
class Owed:
    """One alarm transition the channel has not delivered nor given up on."""

    alarm_id: str
    transition: str
    position: int  # of the transition's fact in the log
    attempts: int = 0
    first_attempt_at: datetime | None = None
    due: datetime | None = None  # None: as soon as possible
    last_error: str = ""
    in_digest: bool = False


@dataclass
class Digest:
    """Several owed transitions, sent (and retried) as one message."""

    transition: str
    items: list[Owed]
    attempts: int = 0
    first_attempt_at: datetime | None = None
    due: datetime | None = None
    last_error: str = ""

    @property
    def alarm_id(self) -> str:
        return self.items[0].alarm_id

    @property
    def alarm_ids(self) -> list[str]:
        return [item.alarm_id for item in self.items]


Work = Owed | Digest


@dataclass
class Retry:
    """What a failed attempt leads to: another at ``retry_at``, or giving up."""

    attempts: int
    first_attempt_at: datetime
    retry_at: datetime | None  # None: give up


@dataclass
class ChannelOutbox:
    channel: Channel
    owed: dict[tuple[str, str], Owed] = field(default_factory=dict)
    digests: list[Digest] = field(default_factory=list)
    waiting: dict[str, list[Owed]] = field(default_factory=dict)  # transition -> next digest
    recent: collections.deque[datetime] = field(default_factory=collections.deque)
    last_digest: datetime | None = None

    # -- what the log says ----------------------------------------------------------------------

    def owe(self, alarm_id: str, transition: str, position: int) -> None:
        self.owed.setdefault((alarm_id, transition), Owed(alarm_id, transition, position))

    def failed_before(
        self,
        alarm_ids: list[str],
        transition: str,
        attempt: int,
        at: datetime,
        retry_at: datetime | None,
        error: str,
    ) -> None:
        """A failed attempt found in the log while rebuilding."""
        for alarm_id in alarm_ids:
            item = self.owed.get((alarm_id, transition))
            if item is None:
                continue
            item.attempts = max(item.attempts, attempt)
            if item.first_attempt_at is None or at < item.first_attempt_at:
                item.first_attempt_at = at
            item.due = retry_at
            item.last_error = error

    def settled(self, alarm_ids: list[str], transition: str) -> None:
        """Delivered or given up on."""
        for alarm_id in alarm_ids:
            self.owed.pop((alarm_id, transition), None)

    # -- what to send ---------------------------------------------------------------------------

    def storm(self, now: datetime) -> bool:
        while self.recent and self.recent[0] <= now - MINUTE:
            self.recent.popleft()
        if self.last_digest is not None and now - self.last_digest < MINUTE:
            return True
        return len(self.recent) >= self.channel.storm_threshold

    def _digest_due(self) -> datetime | None:
        """When the next digest may go: the minute of the messages before it over, and a
        minute since the last digest (None: now)."""
        due = [self.recent[0] + MINUTE] if self.recent else []
        if self.last_digest is not None:
            due.append(self.last_digest + MINUTE)
        return max(due) if due else None

    def plan(self, now: datetime) -> list[Work]:
        """What to send now, in log order; transitions past the storm threshold go into the
        next digest instead."""
        ready = sorted(
            (o for o in self.owed.values() if not o.in_digest and (o.due is None or o.due <= now)),
            key=lambda o: o.position,
        )
        work: list[Work] = []
        for item in ready:
            if self.storm(now):
                item.in_digest = True
                self.waiting.setdefault(item.transition, []).append(item)
            else:
                self.recent.append(now)
                work.append(item)
        digest_at = self._digest_due()
        if self.waiting and (digest_at is None or digest_at <= now):
            for transition, items in self.waiting.items():
                self.digests.append(Digest(transition, items))
            self.waiting = {}
            self.last_digest = now
            self.recent.append(now)
        work += [d for d in self.digests if d.due is None or d.due <= now]
        return work

    def next_due(self, now: datetime) -> datetime | None:
        """When ``plan`` next has something to send (None: nothing owed)."""
        times = [o.due or now for o in self.owed.values() if not o.in_digest]
        times += [d.due or now for d in self.digests]
        if self.waiting:
            times.append(self._digest_due() or now)
        return min(times) if times else None

    # -- what an attempt did --------------------------------------------------------------------

    def delivered(self, work: Work) -> None:
        if isinstance(work, Digest):
            self.digests.remove(work)
            for item in work.items:
                self.owed.pop((item.alarm_id, item.transition), None)
        else:
            self.owed.pop((work.alarm_id, work.transition), None)

    def failed(self, work: Work, now: datetime, error: str) -> Retry:
        """Count a failed attempt; when the next would come after the give-up age, give up
        (the caller records it, then calls ``delivered`` to drop the work)."""
        work.attempts += 1
        work.last_error = error
        if work.first_attempt_at is None:
            work.first_attempt_at = now
        channel = self.channel
        delay = min(channel.retry_initial * 2 ** (work.attempts - 1), channel.retry_max)
        retry_at = now + timedelta(seconds=delay)
        if retry_at - work.first_attempt_at > timedelta(seconds=channel.give_up_after):
            return Retry(work.attempts, work.first_attempt_at, None)
        work.due = retry_at
        return Retry(work.attempts, work.first_attempt_at, retry_at)

    def low_water(self) -> int | None:
        """The log position just before the oldest transition still owed (None: none)."""
        if not self.owed:
            return None
        return min(o.position for o in self.owed.values()) - 1
