"""The audit trail as a printable CSV: ``GET /api/audit?format=csv`` and the dashboard's
``/audit.csv`` (the same filters as the JSON pages, the whole range streamed).

One row per event, and one per changed field when an update changed several (the event's
own columns repeated), so that a spreadsheet can sort and filter by field: ``position``,
``occurred_at``, ``actor``, ``type``, ``stream_id``, ``reason``, ``field``, ``old``, ``new``,
``amended`` (the record this row's event made was changed or deleted later) and
``amended_at_position`` (where first). ``old`` and ``new`` are text as it was, other values
as JSON (``null``: none; ``5.0``; ``{"a": 1}``).
"""

from __future__ import annotations

import csv
import io
import sqlite3
from collections.abc import AsyncIterator, Iterator
from typing import Any

import msgspec

from lablink.api.audit_queries import iter_audit
from lablink.api.csv_answers import CSV_MEDIA_TYPE, CsvStream

COLUMNS = (
    "position",
    "occurred_at",
    "actor",
    "type",
    "stream_id",
    "reason",
    "field",
    "old",
    "new",
    "amended",
    "amended_at_position",
)
# Entries read per query while the file streams.
CHUNK = 1000
FILE_NAME = "lablink-audit.csv"
# A cell starting with one of these is a formula to a spreadsheet: text a person typed (a
# reason, a job's name) is shown with a leading ' instead of being run (OWASP, "CSV
# injection"). The JSON answer keeps every value exactly as recorded.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _text(value: str) -> str:
    return f"'{value}" if value.startswith(_FORMULA_STARTS) else value


def _value(value: Any) -> str:
    if isinstance(value, str):
        return _text(value)
    return msgspec.json.encode(value).decode()


def csv_rows(item: dict[str, Any]) -> Iterator[list[str]]:
    """The rows of one audit entry (as ``list_audit`` gives it)."""
    event = [
        str(item["position"]),
        item["occurred_at"],
        _text(item["actor"]),
        item["type"],
        _text(item["stream_id"]),
        _text(item["reason"] or ""),
    ]
    amended = [
        "true" if item["amended"] else "false",
        "" if item["amended_at_position"] is None else str(item["amended_at_position"]),
    ]
    if not item["changes"]:
        yield [*event, "", "", "", *amended]
    for change in item["changes"]:
        yield [*event, change["field"], _value(change["old"]), _value(change["new"]), *amended]


def audit_csv(
    conn: sqlite3.Connection, *, after: int | None, limit: int | None = None, **filters: Any
) -> CsvStream:
    """The filtered trail from just past ``after`` to the end of the log (or its first
    ``limit`` events), as a CSV stream; ``filters`` as ``list_audit`` takes them (checked by
    the caller: nothing here refuses)."""

    async def lines() -> AsyncIterator[bytes]:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\r\n")
        writer.writerow(COLUMNS)
        for items in iter_audit(conn, chunk=CHUNK, limit=limit, after=after, **filters):
            for item in items:
                writer.writerows(csv_rows(item))
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
        if buffer.tell():
            yield buffer.getvalue().encode()

    headers = {"Content-Disposition": f'attachment; filename="{FILE_NAME}"'}
    return CsvStream(lines(), media_type=CSV_MEDIA_TYPE, headers=headers)
