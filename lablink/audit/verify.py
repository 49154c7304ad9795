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

A replica's local copy of the cluster's record (docs/cluster.md) has positions that were no
events (the lease's messages). The copy writes down each run of them (``passed_over``), and
the walk accepts a gap only where such a run stands exactly in it, with the next event's
link computed across it; a run with no event after it is ``truncated``. The record holds
every replica's checkpoints, each signed by its own key: on a copy, those of an origin
whose key was not given are set aside (counted, not trusted); on a single-node log every
checkpoint must be the key's.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Protocol

import msgspec

from lablink.audit.note import Checkpoint, Verifier, open_note
from lablink.errors import AuditFailed, CheckpointInvalid
from lablink.events import CheckpointSigned, decode_event
from lablink.eventstore.chain import ChainCheck, ChainRow, PassedOver, in_order
from lablink.eventstore.sqlite import LogReader

EXPORT_FORMAT = "lablink-audit-export"
# Version 2 added a copy's passed-over runs (lines ``{"passed_over": [first, last]}`` among
# the events, in position order, and ``"copy": true`` in the header); a version 1 export
# reads as before.
EXPORT_VERSION = 2
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

    def is_copy(self) -> bool:
        """A local copy of the cluster's record, whose gaps may be passed-over runs."""
        ...

    def passed_over(self) -> Iterator[PassedOver]:
        """A copy's runs of positions that were no events of the record, in order."""
        ...


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

    def is_copy(self) -> bool:
        return self.reader.is_copy()

    def passed_over(self) -> Iterator[PassedOver]:
        position = 0
        while runs := self.reader.passed_over(position, BATCH):
            yield from runs
            position = runs[-1][0]


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

    def is_copy(self) -> bool:
        return self.header.get("copy") is True

    def passed_over(self) -> Iterator[PassedOver]:
        with self.path.open(encoding="utf-8") as handle:
            handle.readline()
            for number, line in enumerate(handle, start=2):
                if '"passed_over"' not in line:
                    continue
                item = json.loads(line)
                try:
                    first, last = (int(p) for p in item["passed_over"])
                except (KeyError, TypeError, ValueError):
                    raise AuditFailed(
                        None, "not an export", f"line {number}: a passed-over run is two positions"
                    ) from None
                yield first, last

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
    checkpoints: int  # recorded in the log, checked
    published: int  # published ones checked
    latest: Checkpoint | None  # the largest checkpoint checked
    seconds: float
    positions: int = 0  # the last position walked
    passed_over: int = 0  # a copy's positions that were no events of the record
    set_aside: Mapping[str, int] | None = None  # a copy's checkpoints of other origins

    def summary(self) -> str:
        copy = self.set_aside is not None
        if self.latest is None:
            latest = "; no checkpoint yet"
        elif copy:  # a copy's checkpoint signs positions, some of them no events
            latest = f"; the latest checkpoint covers positions 1..{self.latest.size}"
        else:
            latest = f"; the latest checkpoint covers {self.latest.size} events"
        published = (
            f", {self.published} published checkpoints"
            if self.published
            else ", no published checkpoints given"
        )
        what = f"{self.events} events of {self.origin}"
        if copy:
            what += (
                f" (a copy of the cluster's record: positions 1..{self.positions},"
                f" {self.passed_over} of them passed over as no events)"
            )
        aside = ""
        if self.set_aside:
            origins = ", ".join(f"{n} of {o}" for o, n in sorted(self.set_aside.items()))
            aside = f"; other replicas' checkpoints set aside (no key given): {origins}"
        return (
            f"ok: {what}, hash chain intact (head {self.head.hex()[:16]}…),"
            f" {self.checkpoints} checkpoints in the log{published}, all signed by the key"
            f" and extended by the log{latest}{aside} [{self.seconds:.1f} s]"
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


def _origin_of(note: str) -> str:
    """The origin a note names (its first line), before any signature is checked."""
    return note.split("\n", 1)[0]


def verify_record(
    record: Record,
    verifier: Verifier,
    published: Sequence[str] = (),
    *,
    replicas: Sequence[Verifier] = (),
) -> Verified:
    """Check ``record`` against ``verifier``'s key and the ``published`` checkpoints;
    ``AuditFailed`` names the first problem. ``replicas``: the keys of other replicas, whose
    checkpoints a copy of the cluster's record holds too."""
    started = time.monotonic()
    # The same note from two copies (an export's and a saved file's) is one checkpoint.
    published = list(dict.fromkeys(published))
    copy = record.is_copy()
    keys = {verifier.name: verifier}
    for other in replicas:
        keys.setdefault(other.name, other)
    recorded: list[tuple[int, Checkpoint]] = []
    set_aside: dict[str, int] = {}
    for position, note in record.checkpoints():
        key = keys.get(_origin_of(note))
        if key is None and copy:
            # Another replica's, signed by its own key: without that key it proves nothing
            # here, and the chain covers its event like any other.
            origin = _origin_of(note)
            set_aside[origin] = set_aside.get(origin, 0) + 1
            continue
        where = f"the checkpoint at position {position}"
        recorded.append((position, _opened(note, key or verifier, where, position)))
    outside = [
        _opened(note, verifier, f"published checkpoint {n} (of {len(published)})", None)
        for n, note in enumerate(published, start=1)
    ]
    chain = ChainCheck()
    for _, checkpoint in recorded:
        chain.want(checkpoint.size)
    for checkpoint in outside:
        chain.want(checkpoint.size)
    runs = record.passed_over() if copy else iter(())
    for step in in_order(record.rows(), runs):
        broken = chain.step(step)
        if broken is not None:
            raise AuditFailed(broken.position, broken.kind, broken.detail)
    broken = chain.finish()
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
        events=chain.events,
        head=chain.head,
        origin=verifier.name,
        checkpoints=len(recorded),
        published=len(outside),
        latest=max(checked, key=lambda c: c.size) if checked else None,
        seconds=time.monotonic() - started,
        positions=chain.position,
        passed_over=chain.passed,
        set_aside=set_aside if copy else None,
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
    copy = reader.is_copy()
    header: dict[str, Any] = {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "origin": origin,
        # For reading only: an auditor verifies with the key they got from the lab.
        "verifier_key": verifier_key,
        "exported_at": (now or datetime.now(UTC)).isoformat(),
        "events": last,
    }
    if copy:
        header["copy"] = True
    out.write(json.dumps(header) + "\n")
    record = LogRecord(conn)
    runs = record.passed_over() if copy else iter(())
    count = 0
    for step in in_order(record.rows(), runs):
        if step[0] > last:
            break  # appended (or copied) since the export began
        if len(step) == 2:
            out.write(json.dumps({"passed_over": list(step)}) + "\n")
            continue
        item = dict(zip(_COLUMNS, step[:9], strict=True))
        item["hash"] = step[9].hex() if step[9] is not None else None
        out.write(json.dumps(item, ensure_ascii=False) + "\n")
        count += 1
    for note in published:
        out.write(json.dumps({"published_checkpoint": note}) + "\n")
    return count
