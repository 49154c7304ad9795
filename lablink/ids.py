"""Identifiers for jobs and executions, injected so tests can make them predictable."""

from __future__ import annotations

import itertools
import uuid
from typing import Protocol


class IdGenerator(Protocol):
    def job_id(self) -> str: ...

    def execution_id(self) -> str: ...


class RandomIds:
    def job_id(self) -> str:
        return f"job_{uuid.uuid4().hex[:16]}"

    def execution_id(self) -> str:
        return f"exec_{uuid.uuid4().hex[:16]}"


class SequentialIds:
    def __init__(self, prefix: str = "") -> None:
        self._jobs = itertools.count(1)
        self._executions = itertools.count(1)
        self._prefix = prefix

    def job_id(self) -> str:
        return f"job_{self._prefix}{next(self._jobs):06d}"

    def execution_id(self) -> str:
        return f"exec_{self._prefix}{next(self._executions):06d}"
