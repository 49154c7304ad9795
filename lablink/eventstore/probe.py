"""The event log's health: can it be written, and how much room is left.

Measured when `/health` is read: the last append's outcome (the store keeps it), whether the
database file can be written now, the free space on the disk under the data directory, and the
database's size.

- ``failing``: the last append failed (disk full, read-only, I/O error) and none has
  succeeded since, or the database file cannot be written at all;
- ``degraded``: writes work but the disk is nearly full (under ``min_free_bytes`` or
  ``min_free_ratio`` of it free): appends will start failing soon;
- ``ok`` otherwise.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from lablink.errors import StorageFull
from lablink.eventstore.sqlite import SQLiteEventStore
from lablink.health import Reading

MIN_FREE_BYTES = 1 << 30  # 1 GiB
MIN_FREE_RATIO = 0.05


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _mib(n: int) -> str:
    return f"{n / (1 << 20):,.0f} MiB"


class EventLogProbe:
    def __init__(
        self,
        store: SQLiteEventStore,
        data_dir: Path | None = None,
        *,
        min_free_bytes: int = MIN_FREE_BYTES,
        min_free_ratio: float = MIN_FREE_RATIO,
    ) -> None:
        self.store = store
        self.data_dir = data_dir if data_dir is not None else store.path.parent
        self.min_free_bytes = min_free_bytes
        self.min_free_ratio = min_free_ratio

    def __call__(self) -> Reading:
        db = self.store.path
        status = self.store.write_status
        usage = shutil.disk_usage(self.data_dir)
        free_ratio = usage.free / usage.total if usage.total else 0.0
        # os.access, unlike the mode bits, sees a read-only mount and an immutable file
        # even for root.
        writable = os.access(db, os.W_OK) and os.access(self.data_dir, os.W_OK)
        details: dict[str, Any] = {
            "path": str(db),
            "writable": writable and status.error is None,
            "free_bytes": usage.free,
            "total_bytes": usage.total,
            "free_ratio": round(free_ratio, 4),
            "database_bytes": _size(db),
            "wal_bytes": _size(db.with_name(db.name + "-wal")),
            "last_append_ok_at": status.last_ok_at,
        }
        if status.error is not None:
            error = status.error
            details.update(
                last_error=str(error),
                failed_since=status.failed_since,
                failed_appends=status.consecutive_failures,
            )
            cause = "disk full" if isinstance(error, StorageFull) else error.reason
            return Reading(
                state="failing",
                reason=f"the event log cannot be written ({cause}): {error.cause}",
                details=details,
            )
        if not writable:
            return Reading(
                state="failing",
                reason=f"the event log cannot be written (read-only): {db}",
                details=details,
            )
        if usage.free < self.min_free_bytes or free_ratio < self.min_free_ratio:
            return Reading(
                state="degraded",
                reason=(
                    f"low disk space under {self.data_dir}: {_mib(usage.free)} free"
                    f" ({free_ratio:.1%})"
                ),
                details=details,
            )
        return Reading(state="ok", details=details)
