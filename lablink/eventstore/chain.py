"""The hash chain over the log: each event's hash covers its position, the previous event's
hash and everything stored about it, so an edited, removed or reordered event breaks every
hash after it (docs/audit.md).

``hash(n) = SHA-256(0x00 ‖ position ‖ hash(n-1) ‖ len(E) ‖ E ‖ payload)``, with ``hash(0)``
32 zero bytes, the position 8 bytes and len(E) 4 bytes, big-endian. ``E`` is the envelope:
the RFC 8785 canonical JSON of the array ``[event_id, stream_id, version, type,
occurred_at, actor, correlation_id]`` (null for no correlation id), as UTF-8. ``payload`` is
the payload column's UTF-8 bytes exactly as stored (msgspec's encoding of the event): the
chain covers what is on disk, so verifying never depends on encoding the event again.

The leading byte separates the two things hashed: 0x00 an event, 0x01 a signed checkpoint's
body (``lablink.audit``), so that one can never be passed off as the other.

Each link hashes the previous *event's* hash, not the previous position's: a local copy of
the cluster's record (whose positions are stream sequences, some of them the lease's
messages, no events) links its events across those positions. The positions stay in the
hashes, so the extent of every such gap is fixed by the link after it: an event removed
from inside one breaks that link like any other. What the chain cannot tell by itself is
that a gap was no event of the record; the copy says so for each run of positions it
passed over (``PassedOver``), and ``ChainCheck`` accepts a gap only where it is said, and
never one that an event should follow but does not (``finish``).

Pure: hashlib only. The store computes each hash in the append's transaction; `lablink
verify` and `lablink audit verify` recompute them (``ChainCheck``).
"""

from __future__ import annotations

import heapq
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from hashlib import sha256

import msgspec

GENESIS = bytes(32)
EVENT_PREFIX = b"\x00"
EVENT_BYTE = EVENT_PREFIX[0]
# 0x00 and the position (8 bytes), the envelope's length (4 bytes): big-endian, packed at once.
_PREFIX_AND_POSITION = struct.Struct(">BQ")
_LENGTH = struct.Struct(">I")
_ENVELOPE = msgspec.json.Encoder()

# What a row of the log holds, as the chain reads it: position, event id, stream id, version,
# type, occurred_at, actor, correlation id, payload, hash.
ChainRow = tuple[int, str, str, int, str, str, str, str | None, str, bytes | None]
# A run of positions a copy of the record passed over, no events there: first, last.
PassedOver = tuple[int, int]


def envelope(
    event_id: str,
    stream_id: str,
    version: int,
    type_: str,
    occurred_at: str,
    actor: str,
    correlation_id: str | None,
) -> bytes:
    """The stored columns around the payload as one canonical JSON array (RFC 8785: msgspec's
    compact encoding of strings, small integers and null is exactly JCS's; a test holds it
    to the ``rfc8785`` package)."""
    return _ENVELOPE.encode(
        (event_id, stream_id, version, type_, occurred_at, actor, correlation_id)
    )


def event_hash(
    previous: bytes,
    position: int,
    event_id: str,
    stream_id: str,
    version: int,
    type_: str,
    occurred_at: str,
    actor: str,
    correlation_id: str | None,
    payload: str | bytes,
) -> bytes:
    """The hash of one stored event, chained to ``previous``. ``payload`` may be given as
    its UTF-8 bytes (the store has them already). This runs once per appended event, inside
    the write lock: one encode of the envelope, one join, one SHA-256."""
    head = envelope(event_id, stream_id, version, type_, occurred_at, actor, correlation_id)
    return sha256(
        b"".join(
            (
                _PREFIX_AND_POSITION.pack(EVENT_BYTE, position),
                previous,
                _LENGTH.pack(len(head)),
                head,
                payload.encode() if isinstance(payload, str) else payload,
            )
        )
    ).digest()


def row_hash(previous: bytes, row: ChainRow) -> bytes:
    """``event_hash`` of a row as the chain reads it (its stored hash ignored)."""
    return event_hash(previous, *row[:9])


@dataclass(frozen=True)
class ChainBreak:
    """The first place where the log and its chain disagree."""

    position: int
    kind: str  # "gap", "altered", "unhashed", "truncated"
    detail: str


ChainStep = ChainRow | PassedOver


def in_order(rows: Iterable[ChainRow], runs: Iterable[PassedOver]) -> Iterator[ChainStep]:
    """A log's rows and its passed-over runs (each in position order) as one walk."""
    steps: Iterator[ChainStep] = heapq.merge(rows, runs, key=lambda step: step[0])
    return steps


class ChainCheck:
    """Walks the log in position order, recomputing each hash; ``feed`` returns the first
    break (and the walk should stop there: everything after it is unanchored). A copy's
    passed-over runs are given in their place with ``pass_over`` (or both with ``step``),
    and ``finish`` checks the end."""

    def __init__(self) -> None:
        self.position = 0  # the last position walked, event or passed over
        self.head = GENESIS
        self.events = 0
        self.passed = 0  # positions passed over (a copy's: no events of the record)
        self.last_event = 0
        # Each position's hash as walked, for checking checkpoints against (sizes only).
        self.heads: dict[int, bytes] = {}
        self._wanted: set[int] = set()

    def want(self, size: int) -> None:
        """Keep the head at ``size`` (a checkpoint's), so ``head_at`` can answer for it."""
        self._wanted.add(size)
        if size == self.last_event:
            self.heads[size] = self.head

    def head_at(self, size: int) -> bytes | None:
        """The chain's hash at position ``size``: at an event, never inside a passed-over
        run (a checkpoint signs the head at the log's last event)."""
        if size == 0:
            return GENESIS
        if size == self.last_event:
            return self.head
        return self.heads.get(size)

    def step(self, step: ChainStep) -> ChainBreak | None:
        if len(step) == 2:
            return self.pass_over(step[0], step[1])
        return self.feed(step)

    def pass_over(self, first: int, last: int) -> ChainBreak | None:
        """Positions ``first``..``last``, said to be no events: they must follow the walk
        without a gap or an overlap, and the next event's link (``feed``) must then be
        computed across them."""
        expected = self.position + 1
        if first < expected:
            return ChainBreak(
                first,
                "altered",
                f"positions {first}..{last} are said to be passed over, but position {first}"
                " was walked already (an event or another run)",
            )
        if first > expected:
            return ChainBreak(
                expected,
                "gap",
                f"the log goes from {self.position} to {first}, which starts a passed-over run",
            )
        self.position = last
        self.passed += last - first + 1
        return None

    def feed(self, row: ChainRow) -> ChainBreak | None:
        position, stored = row[0], row[9]
        expected = self.position + 1
        if position != expected:
            return ChainBreak(expected, "gap", f"the log goes from {self.position} to {position}")
        computed = row_hash(self.head, row)
        if stored is None:
            return ChainBreak(position, "unhashed", "the event has no hash")
        if stored != computed:
            return ChainBreak(
                position,
                "altered",
                "what is stored does not hash to its recorded hash"
                f" ({computed.hex()[:16]}… against {stored.hex()[:16]}…)",
            )
        self.position, self.head, self.last_event = position, computed, position
        self.events += 1
        if position in self._wanted:
            self.heads[position] = computed
        return None

    def finish(self) -> ChainBreak | None:
        """After the last step: a copy writes a passed-over run together with the event
        after it, so a run at the end means that event was removed."""
        if self.position == self.last_event:
            return None
        return ChainBreak(
            self.position + 1,
            "truncated",
            f"positions {self.last_event + 1}..{self.position} are passed over and no event"
            f" follows them: the event at {self.position + 1} is gone",
        )
