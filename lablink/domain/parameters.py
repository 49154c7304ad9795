"""A job's ``parameters`` against the driver table of the instrument it runs on.

The agent's own checks (``instruments/checks.py``), run when the job is saved: a
``set_voltage`` of 100 on a 30 V supply, a command the instrument does not have, or a missing
required parameter is refused then, naming the field, the value and the limit, instead of
failing at run time. Pure: the table is passed in (the job service looks it up from what the
instrument's agent described, or the simulated bench); with no table the check is pending
until the job runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from lablink.errors import FieldError
from lablink.instruments.checks import check_command, operation_command
from lablink.instruments.errors import InvalidParameter, UnknownCommand
from lablink.instruments.scpi import InstrumentModel

# Fields a job update must change for its parameters to be checked again.
CHECKED_FIELDS = frozenset({"parameters", "schedule_type", "equipment_id"})


def _reason(exc: InvalidParameter, kind: str) -> str:
    """The driver's reason, naming the limit: ``is above the maximum 30 V of the
    power_supply driver (set_voltage)``."""
    text = str(exc)
    marker = f": {exc.value!r} "
    at = text.find(marker)
    reason = text[at + len(marker) :] if at >= 0 else text
    if isinstance(exc.limit, int | float) and not isinstance(exc.limit, bool):
        reason += f" of the {kind} driver"
    context = exc.details.get("context")
    return f"{reason} ({context})" if context else reason


def _shown(value: Any) -> Any:
    """The value as the error shows it: as sent when that is short, else the start of it."""
    encoded = msgspec.json.encode(value, enc_hook=repr)
    if len(encoded) <= 200:
        return msgspec.json.decode(encoded)
    return encoded[:80].decode(errors="replace") + "…"


def parameter_problems(
    model: InstrumentModel, equipment_id: str, schedule_type: str, parameters: Mapping[str, Any]
) -> list[FieldError]:
    """What the agent would refuse first, as the job's field (``parameters.command``,
    ``parameters.parameters.value``), its value and the driver's reason; [] if nothing."""
    kind = model.kind
    try:
        command = operation_command(model, equipment_id, schedule_type, parameters)
    except InvalidParameter as exc:
        return [
            FieldError(
                field=f"parameters.{exc.parameter}",
                value=_shown(exc.value),
                reason=_reason(exc, kind),
            )
        ]
    if command is None:
        return []
    name, arguments = command
    try:
        check_command(model, equipment_id, name, arguments)
    except UnknownCommand as exc:
        return [
            FieldError(
                field="parameters.command",
                value=_shown(name),
                reason=f"is not a command of the {kind} driver of {equipment_id}; "
                f"valid: {', '.join(exc.valid)}",
            )
        ]
    except InvalidParameter as exc:
        field = "parameters.parameters"
        if exc.parameter != "parameters":
            field += f".{exc.parameter}"
        return [FieldError(field=field, value=_shown(exc.value), reason=_reason(exc, kind))]
    return []
