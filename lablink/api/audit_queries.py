"""The audit trail: the event log itself, filtered and paged by position.

Reads the log through its reader (``LogReader.find``) on the API's read-only connection;
payloads are shown as stored (parsed, never decoded into events), so any event the log holds
can be listed. How the filters use the log's indexes is said at ``LogReader.find``.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from lablink.eventstore.base import EventQuery, StoredRow, parse_instant
from lablink.eventstore.sqlite import LogReader

# Never shown: a key's hash is not a secret one can log in with, but has no place in a trail.
REDACTED = ("key_hash",)


def _item(row: StoredRow) -> dict[str, Any]:
    position, event_id, stream_id, version, kind, occurred_at, actor, correlation, payload = row
    data = json.loads(payload)
    if isinstance(data, dict):
        for field in REDACTED:
            data.pop(field, None)
    return {
        "position": position,
        "event_id": event_id,
        "type": kind,
        "stream_id": stream_id,
        "version": version,
        "occurred_at": parse_instant(occurred_at).isoformat(),
        "actor": actor,
        "correlation_id": correlation,
        "data": data,
    }


def list_audit(
    conn: sqlite3.Connection,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    actor: str | None = None,
    job_id: str | None = None,
    types: Sequence[str] = (),
    limit: int = 100,
    after: int | None = None,
) -> tuple[list[dict[str, Any]], int | None]:
    """Oldest first (log order). Returns the page and the cursor for the next page, if any.

    ``since`` is inclusive and ``until`` too: ``until=T`` lists exactly the events that
    ``lablink replay --until T`` folds.
    """
    rows = LogReader(conn).find(
        EventQuery(
            stream_id=job_id,
            actor=actor,
            types=tuple(types),
            since=since,
            until=until,
            after_position=after,
            limit=limit + 1,
        )
    )
    more = len(rows) > limit
    page = rows[:limit]
    cursor = int(page[-1][0]) if more and page else None
    return [_item(r) for r in page], cursor
