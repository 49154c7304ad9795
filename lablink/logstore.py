"""Opening LabLink's database: the event log plus its projections, kept in step."""

from __future__ import annotations

from pathlib import Path

import structlog

from lablink.eventstore.sqlite import SQLiteEventStore, connect
from lablink.projections.runner import CHECKPOINTS, Projector

DEFAULT_DB = Path("data") / "scheduler.db"
log = structlog.get_logger(tag="scheduler")


def open_store(
    path: str | Path = DEFAULT_DB, projector: Projector | None = None
) -> SQLiteEventStore:
    """The SQLite event store with every projection folded in the append's transaction.

    Projections that lag the log (a crash before this version had them, a new projection)
    are caught up before the store is handed out.
    """
    projector = projector or Projector()
    conn = connect(path)
    store = SQLiteEventStore(path, connection=conn, in_transaction=projector.apply)
    with store.lock:
        stored = projector.stored_fingerprint(conn)
        had_views = (
            conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (CHECKPOINTS,)
            ).fetchone()
            is not None
        )
        if (stored is None and had_views) or (
            stored is not None and stored != projector.fingerprint()
        ):
            # The views were made by another version: the log is the truth, fold it again.
            log.warning("projection tables changed: rebuilding them from the log", db=str(path))
            projector.rebuild(store, conn)
        else:
            projector.create(conn)
            if stored is None:
                projector.remember_fingerprint(conn)
            projector.catch_up(store, conn)
    return store
