"""The errors LabLink raises, as one hierarchy.

Each subclasses the nearest builtin, carries the offending id as a field and builds its own
message, so the API layer can map them to HTTP answers without parsing strings.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec


class LabLinkError(Exception):
    """Base of every error LabLink raises on purpose."""


class FieldError(msgspec.Struct, frozen=True, kw_only=True):
    """One reason a field of a request was refused."""

    field: str
    value: Any
    reason: str

    def describe(self) -> str:
        return f"{self.field}={self.value!r}: {self.reason}"


class InvalidRequest(LabLinkError, ValueError):
    """A command or request body was refused; nothing was written."""

    def __init__(self, errors: Sequence[FieldError]) -> None:
        if not errors:
            raise ValueError("InvalidRequest needs at least one FieldError")
        self.errors = tuple(errors)
        super().__init__("; ".join(e.describe() for e in self.errors))

    @classmethod
    def one(cls, field: str, value: Any, reason: str) -> InvalidRequest:
        return cls([FieldError(field=field, value=value, reason=reason)])


class NotFound(LabLinkError, LookupError):
    kind = "object"

    def __init__(self, object_id: str) -> None:
        self.object_id = object_id
        super().__init__(f"{self.kind} {object_id!r} not found")


class JobNotFound(NotFound):
    kind = "job"


class ExecutionNotFound(NotFound):
    kind = "execution"


class EquipmentNotFound(NotFound):
    kind = "equipment"


class AlarmNotFound(NotFound):
    kind = "alarm"


class ProfileNotFound(NotFound):
    kind = "profile"


class Conflict(LabLinkError):
    """The request is well-formed but clashes with the current state."""


class StreamVersionConflict(Conflict):
    """An append named a version of its stream that is no longer current; nothing was written."""

    def __init__(self, stream_id: str, expected: int, actual: int) -> None:
        self.stream_id = stream_id
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"stream {stream_id!r} is at version {actual}, the append expected {expected}"
        )


class JobVersionConflict(Conflict):
    """A client updated a job from a stale copy."""

    def __init__(self, job_id: str, expected: int, actual: int) -> None:
        self.job_id = job_id
        self.expected = expected
        self.actual = actual
        super().__init__(f"job {job_id!r} is at version {actual}, the request names {expected}")


class JobStateConflict(Conflict):
    """The job's state does not allow the command (e.g. editing a deleted job)."""

    def __init__(self, job_id: str, reason: str) -> None:
        self.job_id = job_id
        self.reason = reason
        super().__init__(f"job {job_id!r}: {reason}")


class AlarmStateConflict(Conflict):
    """The alarm's state does not allow the command (acknowledging a cleared alarm)."""

    def __init__(self, alarm_id: str, state: str, reason: str) -> None:
        self.alarm_id = alarm_id
        self.state = state
        self.reason = reason
        super().__init__(f"alarm {alarm_id!r} is {state}: {reason}")


class ExecutionRefused(Conflict):
    """Run-now refused by the job's conflict policy; names the execution(s) in the way."""

    def __init__(self, job_id: str, blocking: tuple[str, ...], reason: str) -> None:
        self.job_id = job_id
        self.blocking = blocking
        self.reason = reason
        super().__init__(f"job {job_id!r}: {reason}")


class DuplicateId(Conflict):
    field = "id"

    def __init__(self, object_id: str) -> None:
        self.object_id = object_id
        super().__init__(f"{object_id!r} already exists")


class ProfileExists(DuplicateId):
    field = "profile_id"

    def __init__(self, profile_id: str) -> None:
        self.object_id = profile_id
        Conflict.__init__(self, f"profile {profile_id!r} already exists")


class ProfileVersionConflict(Conflict):
    """A client updated a profile from a stale copy."""

    def __init__(self, profile_id: str, expected: int, actual: int) -> None:
        self.profile_id = profile_id
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"profile {profile_id!r} is at version {actual}, the request names {expected}"
        )
