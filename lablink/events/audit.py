"""Facts about the audit record itself (stream: ``audit``).

Every N events or T minutes, and when the server stops, LabLink signs the log's hash chain
head and records the signed checkpoint here (lablink/audit/checkpoints.py); the same note is
published to the ``LABLINK_AUDIT`` stream, which refuses deletes and purges, so a dropped
tail or a rewritten history shows against a copy the log's owner cannot quietly edit.
"""

from __future__ import annotations

from lablink.events.base import Event


class CheckpointSigned(Event, frozen=True, kw_only=True, tag="audit.checkpoint"):
    origin: str
    # The events covered: positions 1..size; the chain's hash at ``size`` (hex).
    size: int
    head: str
    # The C2SP signed note, as published (lablink/audit/note.py).
    note: str
