"""The audit trail: the event log itself, filtered and paged by position.

Reads the log through its reader (``LogReader.find``) on the API's read-only connection;
payloads are shown as stored (parsed, never decoded into events), so any event the log holds
can be listed. How the filters use the log's indexes is said at ``LogReader.find``.

Each entry also says, read from its payload, why it happened (``reason``) and which fields it
changed from what to what (``changes``); and, for an entry that recorded a job, a profile or
an API key, whether a later event of its stream changed or deleted that record (``amended``,
``amended_at_position``): what 21 CFR 11.10 calls discerning altered records.
"""

from __future__ import annotations

import json
import sqlite3
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

from lablink.events import RECORD_KEY, RECORDING_TYPES
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
        "reason": _reason(data),
        "changes": _changes(data),
        "amended": False,
        "amended_at_position": None,
        "data": data,
    }


def _reason(data: Any) -> str | None:
    """The event's own ``reason``: for a change a person made, the reason they gave; for the
    engine's facts (a skipped or missed run, a completed job), its stated cause."""
    reason = data.get("reason") if isinstance(data, dict) else None
    return reason if isinstance(reason, str) and reason else None


def _changes(data: Any) -> list[dict[str, Any]]:
    """The fields the event changed, old and new (updates recorded before reasons have none).
    Read from the payload as stored: whatever shape it has, the trail still lists it."""
    changes = data.get("changes") if isinstance(data, dict) else None
    if not isinstance(changes, list):
        return []
    return [
        {"field": c["field"], "old": c.get("old"), "new": c.get("new")}
        for c in changes
        if isinstance(c, dict) and isinstance(c.get("field"), str)
    ]


def mark_amended(conn: sqlite3.Connection, items: list[dict[str, Any]]) -> None:
    """Set ``amended`` and ``amended_at_position`` on each entry that recorded a job, a
    profile or a key: the position of the first later event of its stream that changed or
    deleted it (an update, a pause, a resume, a deletion, a revocation)."""
    recording = [item for item in items if item["type"] in RECORDING_TYPES]
    if not recording:
        return
    streams = sorted({item["stream_id"] for item in recording})
    after = min(item["position"] for item in recording)
    later: dict[tuple[str, str | None], list[int]] = defaultdict(list)
    for stream_id, position, record in LogReader(conn).amendments(streams, after):
        later[stream_id, record].append(position)
    for item in recording:
        data = item["data"]
        record = data.get(RECORD_KEY) if isinstance(data, dict) else None
        positions = later.get((item["stream_id"], record if isinstance(record, str) else None), [])
        index = bisect_right(positions, item["position"])
        if index < len(positions):
            item["amended"] = True
            item["amended_at_position"] = positions[index]


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
    items = [_item(r) for r in page]
    mark_amended(conn, items)
    return items, cursor


def iter_audit(
    conn: sqlite3.Connection,
    *,
    chunk: int,
    limit: int | None = None,
    after: int | None = None,
    **filters: Any,
) -> Iterator[list[dict[str, Any]]]:
    """The entries ``list_audit`` pages through, ``chunk`` at a time, from ``after`` to the
    end of the log (or ``limit`` entries): what an export streams."""
    left = limit
    while left is None or left > 0:
        size = chunk if left is None else min(chunk, left)
        items, cursor = list_audit(conn, limit=size, after=after, **filters)
        if items:
            yield items
        if cursor is None:
            return
        after = cursor
        if left is not None:
            left -= len(items)
