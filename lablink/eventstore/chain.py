"""The hash chain over the log: each event's hash covers its position, the previous event's
hash and everything stored about it, so an edited, removed or reordered event breaks every
hash after it (docs/audit.md).

``hash(n) = SHA-256(0x00 ‖ position as 8 bytes big-endian ‖ hash(n-1) ‖ record(n))``, with
``hash(0)`` 32 zero bytes. ``record`` is the event's stored columns in a fixed order, each
as it is stored (UTF-8), prefixed by its length as 4 bytes big-endian: event id, stream id,
version (decimal), type, occurred_at, actor, correlation id, payload. A correlation id that
is NULL is the single byte 0xFF where the length would be (no string has that length), so
NULL and "" differ. The payload is the JSON text exactly as stored (msgspec's encoding of
the event): the chain covers the bytes on disk, so verifying never depends on re-encoding.

The leading byte separates the two things hashed: 0x00 an event, 0x01 a signed checkpoint's
body (``lablink.audit``), so that one can never be passed off as the other.

Pure: hashlib only. The store computes each hash in the append's transaction; `lablink
verify` and `lablink audit verify` recompute them (``ChainCheck``).
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

GENESIS = bytes(32)
EVENT_PREFIX = b"\x00"
_NULL = b"\xff\xff\xff\xff"
_LENGTH = struct.Struct(">I")
_POSITION = struct.Struct(">Q")

# What a row of the log holds, as the chain reads it: position, event id, stream id, version,
# type, occurred_at, actor, correlation id, payload, hash.
ChainRow = tuple[int, str, str, int, str, str, str, str | None, str, bytes | None]


def _field(value: str | None) -> bytes:
    if value is None:
        return _NULL
    data = value.encode()
    return _LENGTH.pack(len(data)) + data


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
    payload: str,
) -> bytes:
    """The hash of one stored event, chained to ``previous``."""
    digest = hashlib.sha256(EVENT_PREFIX)
    digest.update(_POSITION.pack(position))
    digest.update(previous)
    for value in (event_id, stream_id, str(version), type_, occurred_at, actor):
        digest.update(_field(value))
    digest.update(_field(correlation_id))
    digest.update(_field(payload))
    return digest.digest()


def row_hash(previous: bytes, row: ChainRow) -> bytes:
    """``event_hash`` of a row as the chain reads it (its stored hash ignored)."""
    return event_hash(previous, *row[:9])


@dataclass(frozen=True)
class ChainBreak:
    """The first place where the log and its chain disagree."""

    position: int
    kind: str  # "gap", "altered", "unhashed"
    detail: str


class ChainCheck:
    """Walks the log in position order, recomputing each hash; ``feed`` returns the first
    break (and the walk should stop there: everything after it is unanchored)."""

    def __init__(self) -> None:
        self.position = 0
        self.head = GENESIS
        # Each position's hash as walked, for checking checkpoints against (sizes only).
        self.heads: dict[int, bytes] = {}
        self._wanted: set[int] = set()

    def want(self, size: int) -> None:
        """Keep the head at ``size`` (a checkpoint's), so ``head_at`` can answer for it."""
        self._wanted.add(size)
        if size == self.position:
            self.heads[size] = self.head

    def head_at(self, size: int) -> bytes | None:
        if size == 0:
            return GENESIS
        if size == self.position:
            return self.head
        return self.heads.get(size)

    def feed(self, row: ChainRow) -> ChainBreak | None:
        position, stored = row[0], row[9]
        expected = self.position + 1
        if position != expected:
            return ChainBreak(
                expected, "gap", f"missing: the log goes from {self.position} to {position}"
            )
        computed = row_hash(self.head, row)
        if stored is None:
            return ChainBreak(position, "unhashed", "the event has no hash")
        if stored != computed:
            return ChainBreak(
                position,
                "altered",
                "altered: what is stored does not hash to its recorded hash"
                f" ({computed.hex()[:16]}… against {stored.hex()[:16]}…)",
            )
        self.position, self.head = position, computed
        if position in self._wanted:
            self.heads[position] = computed
        return None
