"""Run-now, as the API and the dashboard ask for it: one small seam, so that the controllers
do not know whether the engine that runs it is this process's or another replica's.

On one node (and on the replica holding the scheduler lease) a run-now is the engine's own
``run_now``. In cluster mode a follower's engine never starts, so its run-now is forwarded
to the lease holder (``lablink.cluster.forwarding.ClusterRunner``); both answer the same
execution id, or raise the same errors (``JobNotFound``, ``ExecutionRefused``,
``CalibrationBlocked``, a ``StorageError``), and the forwarding one ``NoSchedulerLeader``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from lablink.scheduler.engine import Engine


class Runner(Protocol):
    async def run_now(self, job_id: str, actor: str | None = None) -> str:
        """Run ``job_id`` now on behalf of ``actor``; the new execution's id, once this
        process's views show it (read-your-writes)."""
        ...


class EngineRunner:
    """This process's engine: ``engine`` is asked each time (the API's context holds the
    current one)."""

    def __init__(self, engine: Callable[[], Engine]) -> None:
        self.engine = engine

    async def run_now(self, job_id: str, actor: str | None = None) -> str:
        return await self.engine().run_now(job_id, actor=actor)
