"""Where a test finds the views: ``views.db`` beside the log (``scheduler.db``), not the log's
own file. Every test that reads a view table goes through here."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from lablink.projections.follower import connect_views
from lablink.projections.reading import VIEWS_NAME, views_file


def views_db(path: Path) -> Path:
    """The views' file of a data directory, of its log (``.../scheduler.db``: views.db; any
    other name: ``<stem>.views.db``), or itself."""
    path = Path(path)
    if path.name == VIEWS_NAME or path.name.endswith(f".{VIEWS_NAME}"):
        return path
    if path.suffix == ".db":
        views = views_file(path)
        assert views is not None
        return views
    return path / VIEWS_NAME


def open_views(log_path: Path) -> sqlite3.Connection:
    """A read-only connection that sees the views of the log at ``log_path`` and, attached,
    the log itself (its ``events``): what the API reads through. A log never opened with
    ``open_store`` (no views.db) is read on its own."""
    log_path = Path(log_path)
    views = views_db(log_path)
    return connect_views(log_path, views if views.exists() else None)


def view_rows(log_path: Path, sql: str, *args: Any) -> list[dict[str, Any]]:
    """A query on the views of the log at ``log_path`` (the log attached), rows as dicts."""
    conn = open_views(log_path)
    try:
        cursor = conn.execute(sql, args)
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]
    finally:
        conn.close()
