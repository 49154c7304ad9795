"""`lablink audit verify` and `lablink audit export`: is the record what was signed?

The record is read from a data directory's log or from an export (JSON lines: a header,
one line per event with its stored columns and hash, then the checkpoints published to
``LABLINK_AUDIT`` at export time). Verification needs only the public key (a verifier key,
lablink/audit/note.py) and, to catch a dropped tail, the published checkpoints, which the
auditor should fetch from the bus themselves (`lablink audit checkpoints`) rather than trust
the export's copy. In order, stopping at the first problem:

1. every checkpoint recorded in the log, and every published one, is a note signed by the
   key (``bad signature`` otherwise: forged, another key, malformed);
2. the chain: positions 1, 2, 3… without a ``gap``, and each stored hash recomputed from the
   event's stored columns and the previous hash (``altered`` otherwise);
3. each checkpoint's head is the chain's hash at its size (``rewritten`` otherwise: history
   changed and re-hashed), and no published checkpoint covers more events than the log has
   (``truncated``: the tail was dropped).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Protocol

import msgspec

from lablink.audit.note import Checkpoint, Verifier, open_note
from lablink.errors import AuditFailed, CheckpointInvalid
from lablink.events import CheckpointSigned, decode_event
from lablink.eventstore.chain import ChainCheck, ChainRow
from lablink.eventstore.sqlite import LogReader

EXPORT_FORMAT = "lablink-audit-export"
EXPORT_VERSION = 1
CHECKPOINT_TYPE = "audit.checkpoint"
BATCH = 10_000
_COLUMNS = (
    "position",
    "event_id",
    "stream_id",
    "version",
    "type",
    "occurred_at",
    "actor",
    "correlation_id",
    "payload",
)


class Record(Protocol):
    """Where the events come from: a log file or an export."""

    def checkpoints(self) -> list[tuple[int, str]]:
        """(position, signed note) of every checkpoint event, in position order."""
        ...

    def rows(self) -> Iterator[ChainRow]: ...


class LogRecord:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.reader = LogReader(conn)
        self.conn = conn

    def checkpoints(self) -> list[tuple[int, str]]:
        rows = self.reader.payloads_of_type(CHECKPOINT_TYPE)
        return [(position, _note_of(position, payload)) for position, payload in rows]

    def rows(self) -> Iterator[ChainRow]:
        position = 0
        while rows := self.reader.read_chain(position, BATCH):
            yield from rows
            position = rows[-1][0]


class ExportRecord:
    """An export file, read twice (the checkpoints first, then the chain)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.header: dict[str, Any] = {}
        self.published: list[str] = []
        with path.open(encoding="utf-8") as handle:
            first = handle.readline()
            try:
                self.header = json.loads(first)
            except json.JSONDecodeError as exc:
                raise AuditFailed(None, "not an export", f"{path}: line 1 is not JSON") from exc
            if not isinstance(self.header, dict) or self.header.get("format") != EXPORT_FORMAT:
                raise AuditFailed(None, "not an export", f"{path}: no {EXPORT_FORMAT} header")
            for line in handle:
                item = json.loads(line)
                if "published_checkpoint" in item:
                    self.published.append(str(item["published_checkpoint"]))

    def _events(self) -> Iterator[dict[str, Any]]:
        with self.path.open(encoding="utf-8") as handle:
            handle.readline()
            for number, line in enumerate(handle, start=2):
                try:
                    item = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise AuditFailed(None, "not an export", f"line {number} is not JSON") from exc
                if "position" in item:
                    yield item

    def checkpoints(self) -> list[tuple[int, str]]:
        return [
            (int(e["position"]), _note_of(int(e["position"]), e["payload"]))
            for e in self._events()
            if e.get("type") == CHECKPOINT_TYPE
        ]

    def rows(self) -> Iterator[ChainRow]:
        for e in self._events():
            stored = e.get("hash")
            yield (
                int(e["position"]),
                str(e["event_id"]),
                str(e["stream_id"]),
                int(e["version"]),
                str(e["type"]),
                str(e["occurred_at"]),
                str(e["actor"]),
                e.get("correlation_id"),
                str(e["payload"]),
                bytes.fromhex(stored) if isinstance(stored, str) else None,
            )


def _note_of(position: int, payload: str) -> str:
    try:
        event = decode_event(payload)
    except msgspec.DecodeError as exc:
        raise AuditFailed(position, "altered", f"an unreadable checkpoint: {exc}") from exc
    if not isinstance(event, CheckpointSigned):
        raise AuditFailed(position, "altered", "typed audit.checkpoint, holds another event")
    return event.note


@dataclass(frozen=True)
class Verified:
    events: int
    head: bytes
    origin: str
    checkpoints: int  # recorded in the log
    published: int  # published ones checked
    latest: Checkpoint | None  # the largest checkpoint checked
    seconds: float

    def summary(self) -> str:
        latest = (
            f"; the latest checkpoint covers {self.latest.size} events"
            if self.latest is not None
            else "; no checkpoint yet"
        )
        published = (
            f", {self.published} published checkpoints"
            if self.published
            else ", no published checkpoints given"
        )
        return (
            f"ok: {self.events} events of {self.origin}, hash chain intact (head"
            f" {self.head.hex()[:16]}…), {self.checkpoints} checkpoints in the log{published},"
            f" all signed by the key and extended by the log{latest} [{self.seconds:.1f} s]"
        )


def _opened(note: str, verifier: Verifier, where: str, position: int | None) -> Checkpoint:
    try:
        checkpoint = open_note(note, verifier)
    except CheckpointInvalid as exc:
        raise AuditFailed(position, "bad signature", f"{where}: {exc}") from exc
    if checkpoint.origin != verifier.name:
        raise AuditFailed(
            position,
            "bad signature",
            f"{where}: a checkpoint of {checkpoint.origin}, not of {verifier.name}",
        )
    return checkpoint


def verify_record(record: Record, verifier: Verifier, published: Sequence[str] = ()) -> Verified:
    """Check ``record`` against ``verifier``'s key and the ``published`` checkpoints;
    ``AuditFailed`` names the first problem."""
    started = time.monotonic()
    # The same note from two copies (an export's and a saved file's) is one checkpoint.
    published = list(dict.fromkeys(published))
    recorded = [
        (position, _opened(note, verifier, f"the checkpoint at position {position}", position))
        for position, note in record.checkpoints()
    ]
    outside = [
        _opened(note, verifier, f"published checkpoint {n} (of {len(published)})", None)
        for n, note in enumerate(published, start=1)
    ]
    chain = ChainCheck()
    for _, checkpoint in recorded:
        chain.want(checkpoint.size)
    for checkpoint in outside:
        chain.want(checkpoint.size)
    for row in record.rows():
        broken = chain.feed(row)
        if broken is not None:
            raise AuditFailed(broken.position, broken.kind, broken.detail)
    for position, checkpoint in recorded:
        if checkpoint.size >= position:
            raise AuditFailed(
                position, "rewritten", f"its checkpoint covers {checkpoint.size} events, itself too"
            )
        _same_head(chain, checkpoint, f"the checkpoint at position {position}")
    beyond = max((c.size for c in outside if c.size > chain.position), default=None)
    if beyond is not None:
        raise AuditFailed(
            chain.position + 1,
            "truncated",
            f"a published checkpoint covers {beyond} events; the log ends at"
            f" {chain.position}: positions {chain.position + 1}..{beyond} are gone",
        )
    for checkpoint in sorted(outside, key=lambda c: c.size):
        _same_head(chain, checkpoint, "a published checkpoint")
    checked = [c for _, c in recorded] + outside
    return Verified(
        events=chain.position,
        head=chain.head,
        origin=verifier.name,
        checkpoints=len(recorded),
        published=len(outside),
        latest=max(checked, key=lambda c: c.size) if checked else None,
        seconds=time.monotonic() - started,
    )


def _same_head(chain: ChainCheck, checkpoint: Checkpoint, what: str) -> None:
    head = chain.head_at(checkpoint.size)
    if head != checkpoint.head:
        shown = head.hex()[:16] + "…" if head is not None else "nothing"
        raise AuditFailed(
            checkpoint.size,
            "rewritten",
            f"{what} signed head {checkpoint.head.hex()[:16]}… for the first"
            f" {checkpoint.size} events; the log hashes to {shown} there: history up to"
            f" position {checkpoint.size} was changed and hashed again",
        )


# -- export ------------------------------------------------------------------------------------


def export_record(
    conn: sqlite3.Connection,
    out: IO[str],
    *,
    origin: str,
    verifier_key: str,
    published: Iterable[str] = (),
    now: datetime | None = None,
) -> int:
    """Write the log on ``conn`` as an export to ``out``; the number of events."""
    reader = LogReader(conn)
    last = reader.last_position()
    header = {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "origin": origin,
        # For reading only: an auditor verifies with the key they got from the lab.
        "verifier_key": verifier_key,
        "exported_at": (now or datetime.now(UTC)).isoformat(),
        "events": last,
    }
    out.write(json.dumps(header) + "\n")
    count, position = 0, 0
    while (rows := reader.read_chain(position, BATCH)) and position < last:
        for row in rows:
            if row[0] > last:
                break
            item = dict(zip(_COLUMNS, row[:9], strict=True))
            item["hash"] = row[9].hex() if row[9] is not None else None
            out.write(json.dumps(item, ensure_ascii=False) + "\n")
            count += 1
        position = rows[-1][0]
    for note in published:
        out.write(json.dumps({"published_checkpoint": note}) + "\n")
    return count
