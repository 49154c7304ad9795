"""The seam between the engine and whatever drives instruments.

The engine hands each execution to an Executor and records what comes back. The in-process
executor drives pyvisa-sim instruments directly; the NATS executor sends the same request to
an equipment agent. Both return the same outcome shape.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, Literal, Protocol

import msgspec

from lablink.events import ExecutionError, JobSpec


class ExecutionRequest(msgspec.Struct, frozen=True, kw_only=True):
    execution_id: str
    job_id: str
    job_name: str
    spec: JobSpec
    scheduled_time: datetime
    trigger_info: str


class ExecutionOutcome(msgspec.Struct, frozen=True, kw_only=True):
    status: Literal["completed", "failed"]
    result: dict[str, Any] = msgspec.field(default_factory=dict)
    error: ExecutionError | None = None

    @classmethod
    def ok(cls, **result: Any) -> ExecutionOutcome:
        return cls(status="completed", result=result)

    @classmethod
    def failed(
        cls, type: str, message: str, *, code: int | None = None, **details: Any
    ) -> ExecutionOutcome:
        return cls(
            status="failed",
            error=ExecutionError(type=type, message=message, code=code, details=details),
        )


# Called by an executor while it works: progress in [0, 1], a message, optional data.
ProgressReport = Callable[[float, str, dict[str, Any]], Awaitable[None]]


class Executor(Protocol):
    async def execute(
        self, request: ExecutionRequest, progress: ProgressReport
    ) -> ExecutionOutcome:
        """Run the operation. Errors the instrument or the parameters cause come back as a
        failed outcome whose error type is one of ``lablink.events.ERROR_TYPES``; an
        exception escaping here is recorded as a failed execution too (``executor_error``)."""
        ...

    async def recover(
        self, request: ExecutionRequest, progress: ProgressReport
    ) -> Awaitable[ExecutionOutcome] | None:
        """After a scheduler restart, for an execution the previous process left running:
        None at once when nothing knows of it (the engine records it interrupted), else an
        awaitable of its outcome (an agent still runs it, or has reported how it ended)."""
        ...

    async def stop(self, execution_id: str) -> None:
        """Stop a running execution (timeout or cancel) and put its instrument in its safe
        state. Called after the engine has cancelled the execute() task."""
        ...

    def describe_equipment(self, equipment_id: str) -> dict[str, Any]:
        """What this executor knows of an instrument (kind, identity, agent…), for the alarm
        a failure raises; empty when it knows nothing."""
        ...

    async def aclose(self) -> None: ...


class NoOpExecutor:
    """Completes every execution at once; for benchmarks of the engine alone."""

    async def execute(
        self, request: ExecutionRequest, progress: ProgressReport
    ) -> ExecutionOutcome:
        return ExecutionOutcome(status="completed")

    async def recover(
        self, request: ExecutionRequest, progress: ProgressReport
    ) -> Awaitable[ExecutionOutcome] | None:
        return None

    async def stop(self, execution_id: str) -> None:
        return None

    def describe_equipment(self, equipment_id: str) -> dict[str, Any]:
        return {}

    async def aclose(self) -> None:
        return None
