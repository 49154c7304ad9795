"""The checkpoints' way onto the bus: a connection of its own (as the scheduler's user),
opened when first needed and again after a failure, so a bus that is away only delays the
publishing (the checkpointer tries every turn)."""

from __future__ import annotations

import asyncio

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from lablink.audit.note import Verifier, open_note
from lablink.bus.audit_stream import (
    ensure_audit_stream,
    latest_checkpoint,
    publish_checkpoint,
    published_checkpoints,
)
from lablink.bus.connection import ONE_ATTEMPT, close_nats, connect_nats
from lablink.bus.options import NatsOptions
from lablink.errors import CheckpointInvalid

CONNECT_SECONDS = 5.0


class BusCheckpoints:
    def __init__(self, options: NatsOptions, *, replicas: int = 1, once: bool = False) -> None:
        self.options = options
        self.replicas = replicas
        # A command's one read: one quiet attempt, its failure reported by the command.
        self._connect = ONE_ATTEMPT if once else {}
        self._nc: NATS | None = None
        self._js: JetStreamContext | None = None

    async def _stream(self) -> JetStreamContext:
        if self._js is None:
            async with asyncio.timeout(CONNECT_SECONDS):
                nc = await connect_nats(self.options, name="lablink-audit", **self._connect)
            try:
                js = nc.jetstream()
                await ensure_audit_stream(js, replicas=self.replicas)
            except BaseException:
                await close_nats(nc)
                raise
            self._nc, self._js = nc, js
        return self._js

    async def publish(self, origin: str, size: int, note: str) -> None:
        try:
            await publish_checkpoint(await self._stream(), origin, size, note)
        except Exception:
            await self.aclose()  # a fresh connection next time
            raise

    async def published_size(self, verifier: Verifier) -> int:
        """The size of the last checkpoint published for ``verifier``'s origin (0 if none,
        or if what is there does not open with the key: it is published again)."""
        note = await latest_checkpoint(await self._stream(), verifier.name)
        if note is None:
            return 0
        try:
            return open_note(note, verifier).size
        except CheckpointInvalid:
            return 0

    async def all_published(self, origin: str) -> list[str]:
        return await published_checkpoints(await self._stream(), origin)

    async def aclose(self) -> None:
        nc, self._nc, self._js = self._nc, None, None
        if nc is not None:
            await close_nats(nc)
