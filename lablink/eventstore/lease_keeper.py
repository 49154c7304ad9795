"""Holding the scheduler's lease (``lease``): acquire, renew every TTL/3, and step down by the
monotonic clock before the lease can end.

The server ends a lease TTL seconds after its last renewal was stored; the keeper counts from
when it *sent* that renewal (earlier), by the monotonic clock (never the wall clock, which
may jump). A holder whose last successful renewal is older than TTL × 0.6 calls ``on_lose``
and waits for it (the engine stops firing) before it claims again from scratch: so it has
stopped while the lease it held may still be live, with 0.4 × TTL to spare for a clock
running slower than the server's or a slow stop. A renewal the server refuses (someone took
the lease over, or it expired) demotes at once.

A follower that sees the same lease message for ``OUTLIVED_TTLS`` of its TTL takes it over
(``lease``, "Take over a lease that outlived its TTL"): the servers should have expired it.

A holder paused outright (SIGSTOP, a VM frozen) does not run this code at all: that is what
the fence is for (``fence``, carried by every append the engine makes).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

import structlog

from lablink.eventstore.lease import DEFAULT_TTL, Fence, LeaseRecord

log = structlog.get_logger(tag="lease")

RENEW_FRACTION = 1 / 3
DEMOTE_FRACTION = 0.6
# A lease message seen unchanged for this many TTLs has outlived its TTL (``lease``): taken
# over. Above 1: never sooner than the servers should have expired it.
OUTLIVED_TTLS = 1.2
# How often a follower tries to take the lease, at most (seconds).
POLL = 0.25


class LeaseLink(Protocol):
    """The lease's two requests (``lease.read_lease`` and ``lease.claim`` on a connection)."""

    async def read(self) -> LeaseRecord | None: ...

    async def claim(self, after: LeaseRecord | None) -> LeaseRecord | None: ...

    async def take_over(self, stale: LeaseRecord) -> LeaseRecord | None: ...


async def _nothing(*_: object) -> None:
    return None


class LeaseKeeper:
    def __init__(
        self,
        link: LeaseLink,
        *,
        replica: str,
        ttl: float = DEFAULT_TTL,
        monotonic: Callable[[], float] = time.monotonic,
        on_gain: Callable[[LeaseRecord], Awaitable[None]] = _nothing,
        on_lose: Callable[[str], Awaitable[None]] = _nothing,
        poll: float | None = None,
    ) -> None:
        self.link = link
        self.replica = replica
        self.ttl = ttl
        self.monotonic = monotonic
        self.on_gain = on_gain
        self.on_lose = on_lose
        # A follower tries to take over this often: a lease that ended is taken within it
        # (a refused claim and a read: two small requests, nothing written).
        self.poll = poll if poll is not None else min(POLL, ttl / 5)
        self.held: LeaseRecord | None = None
        self.renewed_at: float | None = None  # monotonic: when the last good claim was sent
        self.seen: LeaseRecord | None = None  # the live lease as last read (another's)
        # The epoch of the last lease held, kept after losing it: what this replica's
        # commands carry (a former leader's are then refused by agents that saw a higher).
        self.last_epoch = 0
        self.gained = 0  # leases acquired, for tests and /health
        self.lost = 0
        self.taken_over = 0  # leases acquired over a message that outlived its TTL
        # The lease message a follower keeps seeing, and since when (monotonic).
        self._unchanged: tuple[int, float] | None = None

    # -- what others ask -------------------------------------------------------------------

    @property
    def holding(self) -> bool:
        return self.held is not None and not self._too_old()

    def fence(self) -> Fence | None:
        """The expectation for a fenced append: None unless the lease is held and fresh."""
        held = self.held
        if held is None or self._too_old():
            return None
        return Fence(replica=self.replica, epoch=held.epoch, seq=held.seq)

    def renewal_age(self) -> float | None:
        return None if self.renewed_at is None else self.monotonic() - self.renewed_at

    def status(self) -> dict[str, object]:
        """For /health: holder or follower, the epoch, the last renewal's age."""
        held = self.held
        age = self.renewal_age()
        if held is not None:
            return {
                "role": "holder",
                "replica": self.replica,
                "epoch": held.epoch,
                "renewal_age_seconds": None if age is None else round(age, 3),
                "ttl_seconds": self.ttl,
            }
        seen = self.seen
        return {
            "role": "follower",
            "replica": self.replica,
            "holder": None if seen is None else seen.replica,
            "epoch": None if seen is None else seen.epoch,
            "ttl_seconds": self.ttl,
        }

    def nudge(self) -> None:
        """Decide now (in the keeper's loop): e.g. an append refused with ``LeaseLost``."""
        nudged = getattr(self, "_nudged", None)
        if nudged is not None:
            nudged.set()

    # -- the loop ----------------------------------------------------------------------------

    def _too_old(self) -> bool:
        renewed = self.renewed_at
        return renewed is None or self.monotonic() - renewed > self.ttl * DEMOTE_FRACTION

    async def run(self) -> None:
        """Step until cancelled (then step down, if holding). ``nudge`` cuts a wait short."""
        self._nudged = asyncio.Event()
        try:
            while True:
                try:
                    delay = await self.step()
                except Exception as exc:
                    # A keeper that ended would leave this replica a follower for good, and
                    # the cluster without a leader once the others die: log, and go on.
                    log.exception("lease keeper step failed", replica=self.replica, error=repr(exc))
                    if self.held is not None:
                        await self._demote(f"the keeper's step failed: {exc!r}")
                    delay = self.poll
                # asyncio.timeout, not wait_for, here and below: on 3.11 wait_for drops a
                # cancellation that lands as what it waits for arrives, and a keeper told to
                # stop went on renewing its lease.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._nudged.wait()
                self._nudged.clear()
        finally:
            if self.held is not None:
                await self._demote("keeper stopped")

    async def step(self) -> float:
        """One decision; the seconds until the next."""
        if self.held is not None:
            return await self._as_holder(self.held)
        return await self._as_follower()

    async def _as_holder(
        self, held: LeaseRecord, starting: asyncio.Future[None] | None = None
    ) -> float:
        """Renew when due; demote when too old or refused (calling off ``starting`` first:
        the engine must not come up after its lease was given up)."""
        assert self.renewed_at is not None
        demote_at = self.renewed_at + self.ttl * DEMOTE_FRACTION
        sent = self.monotonic()
        if sent > demote_at:
            await self._call_off(starting)
            await self._demote(f"no renewal for {sent - self.renewed_at:.2f} s")
            return 0.0
        if sent - self.renewed_at >= self.ttl * RENEW_FRACTION:
            try:
                # Never wait for an answer past the moment to stop firing.
                async with asyncio.timeout(demote_at - sent):
                    renewed = await self.link.claim(held)
            except Exception as exc:  # the server out of reach: try again until demote_at
                log.warning("lease renewal failed", replica=self.replica, error=repr(exc))
                return max(0.0, min(self.poll / 4, demote_at - self.monotonic()))
            if renewed is None:
                await self._call_off(starting)
                await self._demote("renewal refused: the lease was taken over or expired")
                return 0.0
            self.held, self.renewed_at = renewed, sent
        renew_at = self.renewed_at + self.ttl * RENEW_FRACTION
        return max(0.0, renew_at - self.monotonic())

    async def _as_follower(self) -> float:
        sent = self.monotonic()
        try:
            async with asyncio.timeout(max(self.poll, 1.0)):
                got = await self.link.claim(None)
        except Exception as exc:
            log.warning("lease claim failed", replica=self.replica, error=repr(exc))
            return self.poll
        if got is None:
            # For /health, and to notice a lease message that outlives its TTL.
            with contextlib.suppress(Exception):
                async with asyncio.timeout(max(self.poll, 1.0)):
                    self.seen = await self.link.read()
            # Counted from when the message was read (stored before that), not from ``sent``.
            taken, sent = await self._over_outlived(self.monotonic())
            if taken is None:
                return self.poll
            got = taken
        self._unchanged = None
        self.held, self.renewed_at, self.seen = got, sent, None
        self.last_epoch = got.epoch
        self.gained += 1
        log.info("lease acquired", replica=self.replica, epoch=got.epoch)
        return await self._start_leading(got)

    async def _over_outlived(self, read_at: float) -> tuple[LeaseRecord | None, float]:
        """Take over the lease message seen unchanged for ``OUTLIVED_TTLS`` of its TTL (see
        ``lease``), first read at or before ``read_at``: the new lease and when its claim was
        sent; None while it has not been seen that long, or when refused."""
        seen = self.seen
        if seen is None:
            self._unchanged = None
            return None, read_at
        if self._unchanged is None or self._unchanged[0] != seen.seq:
            self._unchanged = (seen.seq, read_at)
            return None, read_at
        unchanged_for = read_at - self._unchanged[1]
        if unchanged_for < OUTLIVED_TTLS * max(self.ttl, seen.ttl_seconds):
            return None, read_at
        log.warning(
            "lease message outlived its TTL: taking it over",
            replica=self.replica,
            holder=seen.replica,
            epoch=seen.epoch,
            seq=seen.seq,
            unchanged_seconds=round(unchanged_for, 2),
            ttl_seconds=seen.ttl_seconds,
        )
        sent = self.monotonic()  # the new lease's age counts from here, as a claim's does
        try:
            async with asyncio.timeout(max(self.poll, 1.0)):
                got = await self.link.take_over(seen)
        except Exception as exc:
            log.warning("lease take-over failed", replica=self.replica, error=repr(exc))
            return None, sent
        if got is not None:
            self.taken_over += 1
        return got, sent

    async def _start_leading(self, got: LeaseRecord) -> float:
        """``on_gain`` (the engine's start: catch-up, recovery of every job) while renewing:
        a start longer than 0.6 × TTL (1,000 jobs) must not cost the lease it starts on."""
        gain = asyncio.ensure_future(self.on_gain(got))
        while not gain.done():
            held = self.held
            delay = 0.0 if held is None else await self._as_holder(held, starting=gain)
            if self.held is None:  # demoted meanwhile: the start is called off
                gain.cancel()
                with contextlib.suppress(BaseException):
                    await gain
                return 0.0
            await asyncio.wait({gain}, timeout=delay)
        exc = gain.exception()
        if exc is not None:
            # Could not start leading (e.g. the copy could not catch up): not a leader. The
            # lease is left to expire (a TTL), then any replica, this one too, may take it.
            log.error(
                "could not start leading", replica=self.replica, error=repr(exc), exc_info=exc
            )
            await self._demote(f"could not start leading: {exc!r}")
            return self.ttl
        if self.renewed_at is None:
            return 0.0
        return max(0.0, self.renewed_at + self.ttl * RENEW_FRACTION - self.monotonic())

    @staticmethod
    async def _call_off(starting: asyncio.Future[None] | None) -> None:
        if starting is None or starting.done():
            return
        starting.cancel()
        with contextlib.suppress(BaseException):
            await starting

    async def _demote(self, why: str) -> None:
        held = self.held
        self.held = None
        self.renewed_at = None
        self.lost += 1
        log.warning(
            "lease lost: stepping down",
            replica=self.replica,
            epoch=None if held is None else held.epoch,
            why=why,
        )
        try:
            await self.on_lose(why)
        except Exception as exc:  # stepping down must not fail: this replica follows anyway
            log.exception("stepping down failed", replica=self.replica, error=repr(exc))
