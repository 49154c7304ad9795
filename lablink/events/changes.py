"""What a change did to a record, field by field (EU GMP Annex 11: old and new values).

Updates of jobs and profiles carry, besides the whole new record, the fields that changed with
their values before and after, so that an auditor reads a change without folding the stream.
Values are JSON values (instants as ISO 8601 text, tuples as lists): a change reads back
exactly as it was written. ``None`` stands for a field that had, or was given, no value.
"""

from __future__ import annotations

from typing import Any

import msgspec


class FieldChange(msgspec.Struct, frozen=True, kw_only=True):
    field: str
    old: Any = None
    new: Any = None
