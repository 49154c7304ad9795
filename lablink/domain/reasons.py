"""The reason a person gives for a change or a deletion (EU GMP Annex 11, 21 CFR 11.10).

Pure: whether a reason is mandatory (``LABLINK_REQUIRE_REASON``) is passed in, so the guide's
examples, which give none, keep working with the defaults.
"""

from __future__ import annotations

from lablink.errors import InvalidRequest

MAX_REASON_LENGTH = 1000


def checked_reason(value: object, *, required: bool, field: str = "reason") -> str | None:
    """The stripped reason, or None when none was given and none is required.

    Refuses (naming ``field``) a reason that is not text, is too long, or holds control
    characters other than newlines and tabs; and a missing or blank one when required.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise InvalidRequest.one(
                field, value, "a reason is required for every change (LABLINK_REQUIRE_REASON=1)"
            )
        return None
    if not isinstance(value, str):
        raise InvalidRequest.one(field, value, "must be text")
    reason = value.strip()
    if len(reason) > MAX_REASON_LENGTH:
        raise InvalidRequest.one(
            field, f"{reason[:40]}…", f"at most {MAX_REASON_LENGTH} characters ({len(reason)})"
        )
    if any(ord(c) < 32 and c not in "\n\t" for c in reason):
        raise InvalidRequest.one(field, reason, "must not hold control characters")
    return reason
