"""Retention facts (stream: ``retention``). Replaying one prunes the same rows again."""

from __future__ import annotations

from datetime import datetime

from lablink.events.base import Event


class ExecutionsPruned(Event, frozen=True, kw_only=True, tag="executions.pruned"):
    """Execution rows that ended before ``cutoff`` leave the executions projection."""

    cutoff: datetime
    days: float
