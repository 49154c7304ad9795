"""Editing the log behind LabLink's back, as a forger with write access to the file would:
the append-only triggers bypassed first (they stop mistakes, not forgers), by recreating the
events table without them (or, for a quick edit, by dropping them)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from lablink.eventstore.sqlite import TRIGGERS


def drop_triggers(conn: sqlite3.Connection, schema: str = "main") -> None:
    for name in TRIGGERS:
        conn.execute(f"DROP TRIGGER IF EXISTS {schema}.{name}")


def recreate_events(conn: sqlite3.Connection) -> None:
    """The events table copied into a new one of the same definition, the old one dropped
    (and its triggers with it): every row and hash as it was, nothing refusing an edit."""
    (definition,) = conn.execute(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'events'"
    ).fetchone()
    conn.execute("BEGIN IMMEDIATE")
    conn.execute(definition.replace("events", "events_forged", 1))
    conn.execute("INSERT INTO events_forged SELECT * FROM events")
    conn.execute("DROP TABLE events")
    conn.execute("ALTER TABLE events_forged RENAME TO events")
    conn.execute("COMMIT")


def tamper(db: Path, sql: str, *args: object) -> None:
    """Run ``sql`` on the log at ``db`` with the triggers out of the way: the table is
    recreated without them first."""
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        recreate_events(conn)
        conn.execute(sql, args)
    finally:
        conn.close()
