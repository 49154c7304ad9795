"""The audit trail: the event log itself, filtered and paged by position.

Reads the ``events`` table on the API's read-only connection; payloads are shown as stored
(parsed, never decoded into events), so any event the log holds can be listed. Index use: a
``job_id`` filter walks the stream's index (``UNIQUE (stream_id, version)``) in version order;
without one, a page walks the log by its primary key from the cursor on and stops as soon as
it is full (the log has no index on actor, type or time: a rare actor or type costs a scan
of the log past the cursor, read-only and without decoding payloads).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from lablink.eventstore.base import format_instant, parse_instant

# Never shown: a key's hash is not a secret one can log in with, but has no place in a trail.
REDACTED = ("key_hash",)


def type_clause(types: Sequence[str]) -> tuple[str, list[str]]:
    """``type`` filters: a full type (``job.paused``) or a family prefix (``job.``)."""
    parts: list[str] = []
    args: list[str] = []
    for value in types:
        if value.endswith("."):
            # GLOB is case-sensitive like '='; the caller lets through only prefixes of
            # known types, which hold no GLOB wildcard.
            parts.append("type GLOB ?")
            args.append(value + "*")
        else:
            parts.append("type = ?")
            args.append(value)
    return "(" + " OR ".join(parts) + ")", args


def _item(row: tuple[Any, ...]) -> dict[str, Any]:
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
    where: list[str] = []
    args: list[Any] = []
    if job_id is not None:
        where.append("stream_id = ?")
        args.append(job_id)
    if actor is not None:
        where.append("actor = ?")
        args.append(actor)
    if types:
        clause, type_args = type_clause(types)
        where.append(clause)
        args += type_args
    if since is not None:
        where.append("occurred_at >= ?")
        args.append(format_instant(since))
    if until is not None:
        where.append("occurred_at <= ?")
        args.append(format_instant(until))
    if after is not None:
        where.append("position > ?")
        args.append(after)
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    # Within one stream, version order is position order: ordering by it walks the stream's
    # index as it is, where ordering by position would sort the whole stream for each page.
    order = "version" if job_id is not None else "position"
    rows = conn.execute(
        "SELECT position, event_id, stream_id, version, type, occurred_at, actor,"
        f" correlation_id, payload FROM events{clause} ORDER BY {order} LIMIT ?",
        [*args, limit + 1],
    ).fetchall()
    more = len(rows) > limit
    page = rows[:limit]
    cursor = int(page[-1][0]) if more and page else None
    return [_item(r) for r in page], cursor
