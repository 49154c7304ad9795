"""Reading the views from the process that writes the log.

The views live in a file of their own (``views.db``), folded behind the log by the store's
follower; the store's own connection sees only the log. A reader in the same process (the
engine's start, the executors' profile lookups, retention's count) reads through here.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from lablink.datadir import DB_NAME, VIEWS_NAME
from lablink.eventstore.sqlite import SQLiteEventStore

__all__ = ["VIEWS_NAME", "reading_views", "views_file"]


def views_file(log_path: str | Path) -> Path | None:
    """Where the views of the log at ``log_path`` live, beside it: ``views.db`` for
    ``scheduler.db`` (the default), ``<stem>.views.db`` for a log of any other name, so two
    logs in one folder do not share (and rebuild back and forth) one views file. None for a
    log in memory, whose views share its connection."""
    if str(log_path) == ":memory:":
        return None
    path = Path(log_path)
    if path.name == DB_NAME:
        return path.parent / VIEWS_NAME
    return path.with_name(f"{path.stem}.{VIEWS_NAME}")


@contextlib.contextmanager
def reading_views(store: SQLiteEventStore) -> Iterator[sqlite3.Connection]:
    """A connection that sees the store's views (and its log), held for one reader at a time.

    A store opened by ``open_store`` reads them through its follower; a bare store (no
    follower: its views, if any, are in its own file) on its own connection, under its lock.
    """
    views = getattr(store, "views", None)
    if views is None:
        with store.lock:
            yield store.conn
        return
    with views.reading() as conn:
        yield conn
