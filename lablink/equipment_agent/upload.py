"""Captures into the JetStream object store (bucket ``LABLINK_DATA``), from the agent's disk.

A finished capture is put under a name derived from its execution id
(``acquisitions/<execution_id>.csv``), so a retried upload replaces the object, never adds a
second one. The layout is the object store's own (nats-py reads it back with
``js.object_store(...).get``): chunks of 128 KiB on ``$O.LABLINK_DATA.C.<nuid>``, then the
object's description (size, chunk count, ``SHA-256=`` digest, headers) on
``$O.LABLINK_DATA.M.<name>`` with a roll-up, which is the store's confirmation. The chunks are
published here rather than through ``ObjectStore.put`` for one reason: the agent must choose
the chunks' ``nuid`` and record it in its ledger *before* the first chunk goes, so that the
chunks of an upload killed half-way (SIGKILL, power cut) are purged by the next attempt
instead of lying in the bucket for ever (the ledger keeps every attempt's nuid until its
chunks are purged, so two deaths in a row forget none). A retry finding the object already
whole in the store (same SHA-256) sends nothing again. Only one chunk is in memory at a
time.

Provenance travels as the object's headers (``Lablink-Job-Id`` ...) as well as in the file's
header block (docs/data.md, "Provenance").
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from nats.js import JetStreamContext
from nats.js.api import Header, ObjectInfo, ObjectMetaOptions
from nats.js.errors import NotFoundError
from nats.nuid import NUID

from lablink.bus.data_bucket import DATA_STREAM, chunk_subject, meta_subject
from lablink.errors import CaptureUploadError
from lablink.events.data import DATA_BUCKET

log = structlog.get_logger(tag="agent")

CHUNK_SIZE = 128 * 1024
# How long one chunk's acknowledgement may take before the attempt counts as failed.
PUBLISH_TIMEOUT_SECONDS = 5.0
_ROLLUP_SUBJECT = "sub"
_nuids = NUID()


def object_name(execution_id: str) -> str:
    return f"acquisitions/{execution_id}.csv"


def new_nuid() -> str:
    return _nuids.next().decode()


def provenance_headers(provenance: Mapping[str, Any]) -> dict[str, list[str]]:
    """``provenance`` as object headers (a NATS header map: name -> values)."""
    return {
        "Lablink-" + "-".join(part.capitalize() for part in key.split("_")): [
            value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        ]
        for key, value in provenance.items()
    }


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of the whole file, read in chunks (blocking: call it on a thread)."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


@dataclass(frozen=True)
class Uploaded:
    object: str
    size: int
    sha256: str  # hex of the whole file
    digest: str  # the store's form: SHA-256=<base64url>
    chunks: int
    nuid: str
    stored_at: datetime


def store_digest(sha256: str) -> str:
    """The store's form of a hex SHA-256: ``SHA-256=<base64url>``."""
    return "SHA-256=" + base64.urlsafe_b64encode(bytes.fromhex(sha256)).decode()


async def put_file(
    js: JetStreamContext,
    path: Path,
    *,
    execution_id: str,
    name: str,
    nuid: str,
    sha256: str,
    headers: Mapping[str, list[str]],
    description: str = "",
    stale_nuids: Sequence[str] = (),
    on_start: Callable[[list[str]], Awaitable[None]] | None = None,
    chunk_size: int = CHUNK_SIZE,
) -> Uploaded:
    """Put ``path`` as object ``name`` under chunks ``nuid``, replacing any object of that
    name. ``stale_nuids``: the chunks of earlier attempts (the ledger's), purged unless the
    object in the store is made of them; ``on_start`` is awaited after that and before the
    first chunk with the nuids still to forget (those kept, then ``nuid``): the caller records
    them there, so that no attempt's chunks are ever forgotten, even when the agent dies
    between an attempt's description and the purge of the chunks it replaced. When the store
    already holds the object with this SHA-256 (an attempt whose description landed before
    the agent died), nothing is sent again. Raises ``CaptureUploadError`` when the file is
    gone or its bytes are not the ones ``sha256`` names; anything NATS raises goes through
    (the caller retries)."""
    store = await js.object_store(DATA_BUCKET)
    try:
        existing: ObjectInfo | None = await store.get_info(name)
    except NotFoundError:
        existing = None
    current = existing.nuid if existing is not None else None
    if existing is not None and current and existing.digest == store_digest(sha256):
        # Already there, whole (its description is only published after all its chunks):
        # only the chunks of other attempts are left to go.
        for stale in stale_nuids:
            if stale != current:
                await js.purge_stream(DATA_STREAM, subject=chunk_subject(stale))
        return Uploaded(
            object=name,
            size=int(existing.size or 0),
            sha256=sha256,
            digest=store_digest(sha256),
            chunks=int(existing.chunks or 0),
            nuid=current,
            stored_at=datetime.now(UTC),
        )
    kept: list[str] = []
    for stale in stale_nuids:
        if stale == current:
            kept.append(stale)  # the object's chunks until this attempt replaces it
        elif stale != nuid:
            await js.purge_stream(DATA_STREAM, subject=chunk_subject(stale))
    if on_start is not None:
        await on_start([*kept, nuid])
    subject = chunk_subject(nuid)
    digest = hashlib.sha256()
    size = chunks = 0
    try:
        file = path.open("rb")
    except FileNotFoundError as exc:
        raise CaptureUploadError(execution_id, f"its file {path} is gone") from exc
    try:
        with file:
            buffer = bytearray(chunk_size)
            view = memoryview(buffer)
            while n := await asyncio.to_thread(file.readinto, buffer):
                payload = bytes(view[:n])
                digest.update(payload)
                await js.publish(subject, payload, timeout=PUBLISH_TIMEOUT_SECONDS)
                size += n
                chunks += 1
        if digest.hexdigest() != sha256:
            raise CaptureUploadError(
                execution_id, f"its file {path} changed since its SHA-256 {sha256} was taken"
            )
        info = ObjectInfo(
            name=name,
            bucket=DATA_BUCKET,
            nuid=nuid,
            size=size,
            chunks=chunks,
            mtime=datetime.now(UTC).isoformat(),
            digest=store_digest(sha256),
            description=description or None,
            headers=dict(headers),
            options=ObjectMetaOptions(max_chunk_size=chunk_size),
        )
        await js.publish(
            meta_subject(name),
            json.dumps(info.as_dict()).encode(),
            timeout=PUBLISH_TIMEOUT_SECONDS,
            headers={Header.ROLLUP: _ROLLUP_SUBJECT},
        )
    except Exception:
        # The chunks of a failed attempt are no object: best effort now, else the next
        # attempt purges them (their nuid is in the ledger).
        try:
            await js.purge_stream(DATA_STREAM, subject=subject)
        except Exception as exc:
            log.info("chunks of a failed upload left for the next attempt", error=str(exc))
        raise
    # The chunks this object replaced (the ledger still names them until the caller records
    # the upload: a death here leaves them to the next attempt, which purges them).
    for replaced in {*kept, *([current] if current else [])} - {nuid}:
        await js.purge_stream(DATA_STREAM, subject=chunk_subject(replaced))
    assert info.digest is not None
    return Uploaded(
        object=name,
        size=size,
        sha256=sha256,
        digest=info.digest,
        chunks=chunks,
        nuid=nuid,
        stored_at=datetime.now(UTC),
    )
