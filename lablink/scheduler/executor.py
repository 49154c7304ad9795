"""The seam between the engine and whatever drives instruments.

The engine hands each execution to an Executor and records what comes back. The in-process
executor (``lablink.equipment_agent.inprocess``) drives a bench directly; the NATS executor
(``lablink.scheduler.agents``) sends the same request to an equipment agent. Both take an
``ExecutionRequest`` and return an ``Outcome``, the execution contract of
``lablink.instruments.execution``.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, Protocol

from lablink.instruments.execution import (
    ExecutionRequest,
    InstrumentTimes,
    Outcome,
    ProgressReport,
)


class Executor(Protocol):
    # Whether ``execute`` may be called before the request's scheduled time (a fire decided
    # ahead, ``Engine.fire_lead``): the executor, or the agent it sends to, starts the
    # operation at that time. The engine holds a request for one that does not until then.
    holds_until_due: bool

    async def execute(self, request: ExecutionRequest, progress: ProgressReport) -> Outcome:
        """Run the operation. Errors the instrument or the parameters cause come back as a
        failed outcome whose error type is one of ``lablink.events.ERROR_TYPES``; an
        exception escaping here is recorded as a failed execution too (``executor_error``)."""
        ...

    async def recover(
        self, request: ExecutionRequest, progress: ProgressReport
    ) -> Awaitable[Outcome] | None:
        """After a scheduler restart, for an execution the previous process left running:
        None at once when nothing knows of it (the engine records it interrupted), else an
        awaitable of its outcome (an agent still runs it, or has reported how it ended)."""
        ...

    async def stop(self, execution_id: str) -> None:
        """Stop a running execution (timeout or cancel) and put its instrument in its safe
        state. Called after the engine has cancelled the execute() task."""
        ...

    async def recorded(self, execution_id: str) -> None:
        """The execution's end is on the engine's record (durably): an executor that holds
        on to the report of its outcome until then may let go of it (the agents' executor
        acknowledges it in JetStream)."""
        ...

    def describe_equipment(self, equipment_id: str) -> dict[str, Any]:
        """What this executor knows of an instrument (kind, identity, agent…), for the alarm
        a failure raises; empty when it knows nothing."""
        ...

    def instrument_times(self, execution_id: str) -> InstrumentTimes:
        """When a running execution's operation began (and ended) on its instrument, as far
        as this executor knows now: the record of a run that ends without its result (timed
        out) shows them. Empty for one that never reached its instrument."""
        ...

    async def aclose(self) -> None: ...


class NoOpExecutor:
    """Completes every execution at once; for benchmarks of the engine alone."""

    holds_until_due = False

    async def execute(self, request: ExecutionRequest, progress: ProgressReport) -> Outcome:
        return Outcome(status="completed")

    async def recover(
        self, request: ExecutionRequest, progress: ProgressReport
    ) -> Awaitable[Outcome] | None:
        return None

    async def stop(self, execution_id: str) -> None:
        return None

    async def recorded(self, execution_id: str) -> None:
        return None

    def describe_equipment(self, equipment_id: str) -> dict[str, Any]:
        return {}

    def instrument_times(self, execution_id: str) -> InstrumentTimes:
        return InstrumentTimes()

    async def aclose(self) -> None:
        return None
