"""The reason a person gives for a change or a deletion (EU GMP Annex 11, 21 CFR 11.10).

Pure: whether a reason is mandatory (``LABLINK_REQUIRE_REASON``) is passed in, so the guide's
examples, which give none, keep working with the defaults.
"""

from __future__ import annotations

import msgspec

from lablink.domain.validation import text_problem
from lablink.errors import InvalidRequest

MAX_REASON_LENGTH = 1000
REQUIRED_BY_SETTING = "a reason is required for every change (LABLINK_REQUIRE_REASON=1)"


def checked_reason(
    value: object, *, required: bool, field: str = "reason", missing: str = REQUIRED_BY_SETTING
) -> str | None:
    """The stripped reason, or None when none was given and none is required.

    Refuses (naming ``field``) a reason that is not text, is too long, or holds control
    characters other than newlines and tabs (or marks that reorder text); and a missing or
    blank one when required.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise InvalidRequest.one(field, value, missing)
        return None
    if not isinstance(value, str):
        raise InvalidRequest.one(field, value, "must be text")
    reason = value.strip()
    if len(reason) > MAX_REASON_LENGTH:
        raise InvalidRequest.one(
            field, f"{reason[:40]}…", f"at most {MAX_REASON_LENGTH} characters ({len(reason)})"
        )
    # Newlines and tabs may shape a reason; other control characters, and the marks that
    # reorder text (U+202E…), would make a printed trail say something else than it holds.
    if problem := text_problem(reason, multiline=True):
        raise InvalidRequest.one(field, reason, problem)
    return reason


def required_reason(value: object, missing: str) -> str:
    """A reason that is always required (a calibration override, a quarantine, a release),
    whatever LABLINK_REQUIRE_REASON says; ``missing`` says why when there is none."""
    reason = checked_reason(value, required=True, missing=missing)
    assert reason is not None  # required: a missing one raised
    return reason


class Reasoned(msgspec.Struct, frozen=True, kw_only=True):
    """A command that changes or deletes a record: the reason given, and whether one must be
    (``LABLINK_REQUIRE_REASON``, passed in like the default time zone)."""

    reason: str | None = None
    require_reason: bool = False

    def checked_reason(self, *, writes: bool) -> str | None:
        """The reason to record. Required only when the command writes something: a change
        that changes nothing needs no reason, but a malformed one is refused all the same."""
        return checked_reason(self.reason, required=self.require_reason and writes)
