"""Facts about the scheduled backups of the event log (stream: ``backups``).

A scheduled backup (``LABLINK_BACKUP_DIR``, lablink/backup) records what it wrote, so that
the log itself says when the last good copy was taken and how far it reaches; a failed one
records why, beside a ``backup_failed`` alarm. `lablink backup` run by hand records nothing
(it reads the log only).
"""

from __future__ import annotations

import msgspec

from lablink.events.base import Event


class BackupTaken(Event, frozen=True, kw_only=True, tag="backup.taken"):
    # The copy's path as the server wrote it, and the last log position it holds.
    file: str
    position: int
    sha256: str
    size: int
    # Copies removed to keep the newest LABLINK_BACKUP_KEEP (their file names).
    removed: list[str] = msgspec.field(default_factory=list)


class BackupFailed(Event, frozen=True, kw_only=True, tag="backup.failed"):
    file: str
    error: str
