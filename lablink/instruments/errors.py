"""What can go wrong between a job and an instrument, as one small hierarchy.

Every error names the instrument (``equipment_id``) and carries an ``error_type`` (the
``ExecutionError.type`` an executor reports), an optional instrument ``code`` and JSON-ready
``details``, so an executor turns any of them into a failed outcome without parsing messages.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

from lablink.errors import LabLinkError


class EquipmentError(LabLinkError):
    """Base of every error raised while driving an instrument."""

    error_type: ClassVar[str] = "equipment_error"

    def __init__(
        self,
        equipment_id: str,
        message: str,
        *,
        code: int | None = None,
        details: dict[str, Any] | None = None,
        result: dict[str, Any] | None = None,
    ) -> None:
        self.equipment_id = equipment_id
        self.code = code
        self.details: dict[str, Any] = {"equipment_id": equipment_id, **(details or {})}
        # What the operation established before failing (e.g. a diagnostic's findings).
        self.result: dict[str, Any] = dict(result or {})
        super().__init__(message)


class EquipmentOffline(EquipmentError, ConnectionError):
    error_type = "equipment_offline"

    def __init__(self, equipment_id: str, reason: str = "") -> None:
        message = f"equipment {equipment_id!r} is not connected"
        super().__init__(
            equipment_id,
            f"{message}: {reason}" if reason else message,
            details={"reason": reason} if reason else None,
        )


class UnknownCommand(EquipmentError, LookupError):
    error_type = "unknown_command"

    def __init__(self, equipment_id: str, kind: str, command: str, valid: Iterable[str]) -> None:
        self.command = command
        self.valid = sorted(valid)
        super().__init__(
            equipment_id,
            f"unknown command {command!r} for {equipment_id} ({kind}); "
            f"valid commands: {', '.join(self.valid)}",
            details={"command": command, "kind": kind, "valid_commands": self.valid},
        )


class InvalidParameter(EquipmentError, ValueError):
    """A job parameter the driver refused before sending anything to the instrument."""

    error_type = "invalid_parameter"

    def __init__(
        self,
        equipment_id: str,
        parameter: str,
        value: Any,
        reason: str,
        *,
        limit: Any = None,
        context: str = "",
    ) -> None:
        self.parameter = parameter
        self.value = value
        self.limit = limit
        where = f" of {context}" if context else ""
        details: dict[str, Any] = {"parameter": parameter, "value": _jsonable(value)}
        if limit is not None:
            details["limit"] = _jsonable(limit)
        if context:
            details["context"] = context
        super().__init__(
            equipment_id,
            f"invalid parameter {parameter!r}{where} on {equipment_id}: {value!r} {reason}",
            details=details,
        )


class InstrumentError(EquipmentError, RuntimeError):
    """The instrument itself reported an error (a non-zero SYST:ERR? entry)."""

    error_type = "instrument_error"

    def __init__(
        self,
        equipment_id: str,
        code: int,
        text: str,
        *,
        command: str,
        more: Iterable[tuple[int, str]] = (),
    ) -> None:
        self.text = text
        self.command = command
        others = [{"code": c, "message": m} for c, m in more]
        details: dict[str, Any] = {"command": command, "instrument_message": text}
        if others:
            details["further_errors"] = others
        super().__init__(
            equipment_id,
            f"{equipment_id} reported error {code} {text!r} after {command!r}",
            code=code,
            details=details,
        )


class CommunicationError(EquipmentError, OSError):
    """The instrument did not answer, or answered something the driver cannot read."""

    error_type = "communication_error"

    def __init__(self, equipment_id: str, command: str, reason: str) -> None:
        self.command = command
        super().__init__(
            equipment_id,
            f"{equipment_id} failed on {command!r}: {reason}",
            details={"command": command, "reason": reason},
        )


class EquipmentTestFailed(EquipmentError):
    """A diagnostic ran to the end and the instrument did not pass it."""

    error_type = "equipment_test_failed"


class ProfileError(EquipmentError):
    """A profile's settings could not be applied, so the operation did not run."""

    error_type = "profile_error"


class CaptureRefused(EquipmentError):
    """An acquisition that would not fit: the space free in the agent's data folder, or the
    documented maximum size of one capture. Refused before the instrument is armed."""

    error_type = "capture_refused"

    def __init__(self, equipment_id: str, message: str, *, details: dict[str, Any]) -> None:
        super().__init__(equipment_id, message, details=details)


class OperationStopped(EquipmentError):
    """The execution was stopped (timeout or cancel) before the operation finished."""

    error_type = "stopped"

    def __init__(self, equipment_id: str) -> None:
        super().__init__(equipment_id, f"operation on {equipment_id} was stopped")


def _jsonable(value: Any) -> Any:
    """Details travel as JSON: keep what JSON can say, describe the rest."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return repr(value)
