"""Opening LabLink's database: the event log plus its projections, kept in step."""

from __future__ import annotations

from pathlib import Path

from lablink.eventstore.sqlite import SQLiteEventStore, connect
from lablink.projections.runner import Projector

DEFAULT_DB = Path("data") / "scheduler.db"


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
    projector.create(conn)
    with store.lock:
        projector.catch_up(store, conn)
    return store
