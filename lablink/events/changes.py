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


# The facts that record what a person made (a job, a profile, an API key) and the facts that
# later change or delete it, by type. The audit trail marks an entry of the first kind
# ``amended`` when one of the second follows it in its stream (lablink/api/audit_queries.py);
# the log keeps a partial index of the second kind (lablink/eventstore/sqlite.py).
RECORDING_TYPES: tuple[str, ...] = (
    "job.created",
    "job.updated",
    "profile.created",
    "profile.updated",
    "apikey.created",
    "equipment.calibrated",
    "equipment.calibration_corrected",
)
AMENDING_TYPES: tuple[str, ...] = (
    "job.updated",
    "job.paused",
    "job.resumed",
    "job.deleted",
    "profile.updated",
    "profile.deleted",
    "apikey.revoked",
    "equipment.calibration_corrected",
    "equipment.calibration_withdrawn",
)
# An instrument's certificates share its calibration stream: there a later fact amends only
# the record of its own certificate (the payload's ``certificate``).
RECORD_KEY = "certificate"
