"""Editing the log behind LabLink's back, as a forger with write access to the file would:
the append-only triggers dropped first (they stop mistakes, not forgers)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from lablink.eventstore.sqlite import TRIGGERS


def drop_triggers(conn: sqlite3.Connection, schema: str = "main") -> None:
    for name in TRIGGERS:
        conn.execute(f"DROP TRIGGER IF EXISTS {schema}.{name}")


def tamper(db: Path, sql: str, *args: object) -> None:
    """Run ``sql`` on the log at ``db`` with the triggers out of the way."""
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        drop_triggers(conn)
        conn.execute(sql, args)
    finally:
        conn.close()
