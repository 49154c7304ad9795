"""`lablink cluster import`: a single-node log (``scheduler.db``) copied into the cluster's
record, the JetStream stream ``LABLINK_LOG``, so that its replicas start from it.

Same events, ids and order, and the same positions: the stream must be new (empty, never
written), so its sequences 1..N are the log's positions 1..N. That keeps every local copy
equal to the source, hash chain included (a link hashes its position), and with it the
signed checkpoints of the audit trail. A log whose positions have a gap is refused
(``SourceLogGap``): a stream's sequences have none. Retention never makes one (it prunes
views, never events; the log's triggers refuse a DELETE), so only a log edited by hand has.

Resumable, not all-or-nothing: an atomic batch holds at most 1,000 events, so a larger log
cannot be one. Each batch is atomic and carries ``Nats-Expected-Last-Sequence`` (the
sequence the previous batch ended at) on its first message, so the stream always holds a
prefix of the log made of whole batches, and nobody else's message can slip in between (a
replica started too early: the batch is refused, ``ImportDiverged``). An import that stopped
is continued with ``resume``, after checking that the stream's last message is the log's
event at that position (its ``Nats-Msg-Id``).

The messages are made by ``record_format.message_of_row`` from the rows as stored, so the
copy ``record_feed`` makes of them holds the very same columns.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from nats.aio.client import Client as NATS

from lablink.errors import ImportDiverged, RecordNotEmpty, SourceLogGap, StorageUnavailable
from lablink.eventstore.base import StoredRow
from lablink.eventstore.record_format import message_of_row
from lablink.eventstore.record_link import (
    MAX_BATCH,
    WRONG_LAST_SEQUENCE,
    JetStreamOptions,
    Message,
    api,
    close,
    connect,
    ensure_stream,
    message_id_at,
    publish,
)
from lablink.eventstore.sqlite import LogReader

EXPECTED_LAST_SEQUENCE = "Nats-Expected-Last-Sequence"
BATCH = 500  # events per atomic batch: well inside ADR-50's 1,000 and the server's payload limits


@dataclass(frozen=True)
class ImportReport:
    stream: str
    events: int  # in the source log
    imported: int  # by this run
    resumed_after: int  # the stream's last sequence when this run started (0: a new stream)
    last_sequence: int


Progress = Callable[[int, int], None]  # (events in the stream now, events in the log)


def open_source(path: Path) -> sqlite3.Connection:
    """The log, read-only: an import never writes the single-node log."""
    if not path.is_file():
        raise StorageUnavailable(str(path), "no such log")
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False)


def _rows(reader: LogReader, after: int, size: int) -> Iterator[list[StoredRow]]:
    while True:
        rows = reader.read_rows(after, size)
        if not rows:
            return
        yield rows
        after = rows[-1][0]


def source_extent(conn: sqlite3.Connection, path: Path) -> int:
    """How many events the log holds; refuses a log whose positions are not 1..N."""
    reader = LogReader(conn)
    count, highest = reader.extent()
    if count != highest:
        gap = reader.first_gap(highest)
        if gap is not None:
            raise SourceLogGap(str(path), *gap)
    return count


async def _stream_state(nc: NATS, stream: str, within: float) -> tuple[int, int]:
    info = await api(nc, f"$JS.API.STREAM.INFO.{stream}", None, within)
    state = info["state"]
    return int(state["messages"]), int(state["last_seq"])


async def import_log(
    source: Path,
    options: JetStreamOptions,
    *,
    resume: bool = False,
    batch: int = BATCH,
    within: float = 10.0,
    progress: Progress | None = None,
) -> ImportReport:
    """Copy the log at ``source`` into ``options.stream`` (made if missing, with
    ``options.replicas``)."""
    if not 1 <= batch <= MAX_BATCH:
        raise ValueError(f"a batch holds 1 to {MAX_BATCH} events, not {batch}")
    conn = open_source(source)
    try:
        reader = LogReader(conn)
        try:
            total = await asyncio.to_thread(source_extent, conn, source)
        except sqlite3.Error as exc:  # not a LabLink log, or not readable
            raise StorageUnavailable(str(source), f"cannot read it as a log: {exc}") from exc
        nc = await connect(options, name="lablink-cluster-import", within=within)
        try:
            loop = asyncio.get_running_loop()
            await ensure_stream(nc, options, deadline=loop.time() + 3 * within)
            messages, last = await _stream_state(nc, options.stream, within)
            if last and not resume:
                raise RecordNotEmpty(options.stream, messages, last)
            if last:
                await _check_prefix(nc, options.stream, reader, last, total, within)
            start = last
            if progress is not None:
                progress(last, total)
            for rows in _rows(reader, last, batch):
                last = await _record(nc, options.stream, rows, last, within)
                if progress is not None:
                    progress(last, total)
            return ImportReport(options.stream, total, last - start, start, last)
        finally:
            await close(nc)
    finally:
        conn.close()


async def _check_prefix(
    nc: NATS, stream: str, reader: LogReader, last: int, total: int, within: float
) -> None:
    """Resuming: the stream must hold the log's first ``last`` events (its last one checked
    by id; the batches before it were recorded under the same expectations)."""
    if last > total:
        raise ImportDiverged(stream, last, f"the stream holds more than the log's {total} events")
    (row,) = reader.read_rows(last - 1, 1)
    found = await message_id_at(nc, stream, last, within)
    if found != row[1]:
        raise ImportDiverged(
            stream, last, f"holds event {found!r}, the log's event there is {row[1]!r}"
        )


async def _record(nc: NATS, stream: str, rows: list[StoredRow], last: int, within: float) -> int:
    """One atomic batch after sequence ``last``; the stream's new last sequence."""
    if rows[0][0] != last + 1:
        raise ImportDiverged(stream, last + 1, f"the log's next event is at {rows[0][0]}")
    messages: list[Message] = [message_of_row(row) for row in rows]
    ack = await publish(nc, messages, {EXPECTED_LAST_SEQUENCE: str(last)}, within)
    if ack.error_code == WRONG_LAST_SEQUENCE:
        raise ImportDiverged(stream, last + 1, "another writer appended to the stream meanwhile")
    if not ack.ok:
        raise ImportDiverged(
            stream, last + 1, f"refused: {ack.description} (err_code {ack.error_code})"
        )
    if ack.seq != last + len(rows) or ack.duplicate:
        raise ImportDiverged(
            stream,
            last + 1,
            f"{len(rows)} events acknowledged at {ack.seq} (duplicate: {ack.duplicate})",
        )
    return ack.seq
