"""Reading the captures' object store (``LABLINK_DATA``) of a real nats-server, as any
nats-py client would: for tests of the agents' uploads."""

from __future__ import annotations

from typing import Any

import nats
import nats.js.errors

from lablink.events.data import DATA_BUCKET


async def fetch_object(url: str, name: str) -> tuple[bytes, Any]:
    """The object's bytes (nats-py checks them against the store's digest) and its info."""
    nc = await nats.connect(url)
    try:
        store = await nc.jetstream().object_store(DATA_BUCKET)
        found = await store.get(name)
        return bytes(found.data or b""), found.info
    finally:
        await nc.close()


async def object_names(url: str) -> list[str]:
    nc = await nats.connect(url)
    try:
        store = await nc.jetstream().object_store(DATA_BUCKET)
        try:
            return [info.name for info in await store.list()]
        except nats.js.errors.NotFoundError:
            return []
    finally:
        await nc.close()
