"""The engine of a replica in cluster mode: running only while this replica holds the
scheduler lease (``eventstore.lease_keeper``).

On gaining the lease a new engine is made and started with the same recovery as a restart
(``recovery_lists`` over this replica's views, caught up with the record first): the runs a
former leader left unfinished are interrupted, and the fires that fell due during the
failover are decided by each job's misfire and coalesce rules, as after downtime. Every
append that engine makes carries the lease's fence (``JetStreamEventStore.fenced``). On
losing the lease the engine is closed before the keeper claims again; its running
executions are not waited for (their ends could not be recorded: the fence refuses them) and
are left for the next leader to interrupt.

Other duties of the leader only (``Duty``: the relay that publishes the log to the bus, the
service that runs the run-nows other replicas forward) are told ``lead()`` once the engine
has started and ``follow()`` before it closes: a duty that fails says so in the log and does
not keep this replica from leading or from stepping down.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

import structlog

from lablink.eventstore.lease import LeaseRecord
from lablink.eventstore.lease_keeper import LeaseKeeper
from lablink.scheduler.engine import Engine

log = structlog.get_logger(tag="scheduler")

TASK_NAME = "task.lease"


class Closable(Protocol):
    async def aclose(self) -> None: ...


class Duty(Protocol):
    """Work only the lease holder does, besides firing."""

    async def lead(self) -> None: ...

    async def follow(self) -> None: ...


class Leadership:
    def __init__(
        self,
        keeper: LeaseKeeper,
        start_engine: Callable[[LeaseRecord], Awaitable[Engine]],
        *,
        on_engine: Callable[[Engine | None], None] | None = None,
        duties: Sequence[Duty] = (),
    ) -> None:
        self.keeper = keeper
        self.duties = list(duties)
        self.start_engine = start_engine
        self.on_engine = on_engine or (lambda engine: None)
        self.engine: Engine | None = None
        keeper.on_gain = self._gained
        keeper.on_lose = self._lost

    async def add_duty(self, duty: Duty) -> None:
        """A duty made after the keeper started (the notifier, made late in the start): led
        at once when this replica leads already."""
        self.duties.append(duty)
        if self.engine is not None:
            await duty.lead()

    async def _gained(self, lease: LeaseRecord) -> None:
        log.info("leading: starting the engine", epoch=lease.epoch, replica=lease.replica)
        self.engine = await self.start_engine(lease)
        self.on_engine(self.engine)
        for duty in self.duties:
            try:
                await duty.lead()
            except Exception as exc:  # the engine fires all the same
                log.error("a leader's duty failed to start", duty=repr(duty), error=repr(exc))

    async def _lost(self, why: str) -> None:
        for duty in self.duties:
            try:
                # Bounded, as the engine's close below.
                await asyncio.wait_for(duty.follow(), self.keeper.ttl)
            except Exception as exc:
                log.error("a leader's duty failed to stop", duty=repr(duty), error=repr(exc))
        engine, self.engine = self.engine, None
        if engine is None:
            return
        log.warning("following: closing the engine", why=why)
        try:
            # Bounded: the lease may still be live for 0.4 × TTL, and a close that hangs on
            # a refused write must not keep this replica from following.
            await asyncio.wait_for(engine.aclose(grace_seconds=0.0), self.keeper.ttl)
        except Exception as exc:  # a replica that failed to close its engine still steps down
            log.error("closing the engine failed", error=repr(exc))
        self.on_engine(None)

    def status(self) -> dict[str, object]:
        return {**self.keeper.status(), "engine": self.engine is not None}


class ServiceDuty:
    """A service only the leader runs, made fresh on each gain (``start``) and closed on
    each loss: the notifier, whose state is the log (what was owed, what was sent), so a
    new leader's owes exactly what the former one had not recorded as sent."""

    def __init__(self, name: str, start: Callable[[], Awaitable[Closable | None]]) -> None:
        self.name = name
        self.start = start
        self.running: Closable | None = None

    def __repr__(self) -> str:
        return f"ServiceDuty({self.name!r})"

    async def lead(self) -> None:
        if self.running is None:
            self.running = await self.start()

    async def follow(self) -> None:
        running, self.running = self.running, None
        if running is not None:
            await running.aclose()
