"""The captures' bucket (``LABLINK_DATA``, a JetStream object store) on the bus: its stream
and subjects (one definition for the agents' uploads, the permissions and the reads), the
bucket's creation when the scheduler starts (``ensure_data_bucket``), and the scheduler's side
of it (``DataBucket``): reading an object chunk by chunk for a download, and deleting objects
for retention and the byte bound. The agents put the objects (``lablink.equipment_agent``)
with no right to make or change streams.

One connection, opened on first use and kept (it reconnects by itself); while NATS cannot be
reached every call fails at once with ``DataBusUnavailable`` naming the server, rather than
waiting: a download answers 503, a retention pass tries again later.

A download never holds the capture in memory: the object's chunks come through an ordered
consumer, one at a time, under JetStream's flow control (the server sends more only as the
reader takes them), and each is handed on as it comes.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass

import structlog
from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import ObjectStoreConfig, StorageType
from nats.js.errors import BucketNotFoundError, NotFoundError, ObjectNotFoundError
from nats.js.object_store import ObjectStore

from lablink.bus.connection import STREAM_ANSWER_SECONDS, asked_again, close_nats, connect_nats
from lablink.bus.options import NatsOptions, redact
from lablink.errors import DataBusUnavailable
from lablink.events import DATA_BUCKET

log = structlog.get_logger(tag="bus")

# The JetStream stream under the bucket.
DATA_STREAM = f"OBJ_{DATA_BUCKET}"
# The chunk and description subjects of a bucket's objects (nats-py's layout, kept here: it
# is not public).
CHUNKS = "$O.{bucket}.C.{nuid}"
METAS = "$O.{bucket}.M.{name}"
# How long a download waits for the next chunk before it gives up (a stalled server).
CHUNK_TIMEOUT = 30.0
CONNECT_TIMEOUT = 5.0


def chunk_subject(nuid: str, bucket: str = DATA_BUCKET) -> str:
    """Where the chunks of the object whose chunks are ``nuid`` go."""
    return CHUNKS.format(bucket=bucket, nuid=nuid)


def meta_subject(name: str, bucket: str = DATA_BUCKET) -> str:
    """Where the description of the object ``name`` goes (its name in base64url)."""
    encoded = base64.urlsafe_b64encode(name.encode()).decode()
    return METAS.format(bucket=bucket, name=encoded)


async def ensure_data_bucket(
    js: JetStreamContext, *, replicas: int = 1, within: float = STREAM_ANSWER_SECONDS
) -> None:
    """The bucket, made if missing; asked again while JetStream does not answer, as the
    streams are (a cluster's `lablink serve` once stopped at start when the first request
    timed out while the cluster was forming under load)."""

    async def ensure() -> bool:
        try:
            await js.object_store(DATA_BUCKET)
            return False
        except BucketNotFoundError:
            pass
        await js.create_object_store(
            DATA_BUCKET,
            config=ObjectStoreConfig(
                description="LabLink acquisition captures (docs/data.md)",
                storage=StorageType.FILE,
                replicas=replicas,
            ),
        )
        return True

    if await asked_again(ensure, within=within, bucket=DATA_BUCKET):
        log.info("object store bucket created", bucket=DATA_BUCKET)


@dataclass(frozen=True)
class StoredObject:
    name: str
    nuid: str
    size: int


class DataBucket:
    def __init__(
        self, options: NatsOptions, *, bucket: str = DATA_BUCKET, name: str = "lablink-data"
    ) -> None:
        self.options = options
        self.bucket = bucket
        self.name = name
        self._nc: NATS | None = None
        self._connecting = asyncio.Lock()

    @property
    def url(self) -> str:
        return redact(self.options.url)

    async def _connection(self) -> NATS:
        async with self._connecting:
            nc = self._nc
            if nc is not None and not nc.is_closed:
                if not nc.is_connected:
                    raise DataBusUnavailable(self.url, "not connected (reconnecting)")
                return nc
            try:
                # nats-py keeps trying a first connection as long as it would reconnect
                # (for ever): bounded here, so that a caller is told at once.
                self._nc = await asyncio.wait_for(
                    connect_nats(self.options, name=self.name, connect_timeout=CONNECT_TIMEOUT),
                    CONNECT_TIMEOUT,
                )
            except (TimeoutError, OSError, NatsError) as exc:
                raise DataBusUnavailable(self.url, _describe(exc)) from exc
            return self._nc

    async def _store(self) -> ObjectStore:
        nc = await self._connection()
        try:
            return await nc.jetstream().object_store(self.bucket)
        except (BucketNotFoundError, NotFoundError):
            raise
        except (TimeoutError, OSError, NatsError) as exc:
            raise DataBusUnavailable(self.url, _describe(exc)) from exc

    async def find(self, name: str) -> StoredObject | None:
        """The object ``name`` as the bucket holds it (None: no such object, or no bucket)."""
        try:
            store = await self._store()
            info = await store.get_info(name)
        except (BucketNotFoundError, NotFoundError, ObjectNotFoundError):
            return None
        except (TimeoutError, OSError, NatsError) as exc:
            raise DataBusUnavailable(self.url, _describe(exc)) from exc
        return StoredObject(name=name, nuid=info.nuid, size=int(info.size or 0))

    async def read(
        self, found: StoredObject, start: int = 0, end: int | None = None
    ) -> AsyncIterator[bytes]:
        """The bytes ``start`` to ``end`` (inclusive; None: to the last) of ``found``, chunk by
        chunk. Chunks before ``start`` are read and dropped (an object's chunks need not be
        next to each other in the stream, so there is no seeking to one)."""
        last = found.size - 1 if end is None else min(end, found.size - 1)
        if found.size == 0 or start > last:
            return
        nc = await self._connection()
        js = nc.jetstream()
        subject = chunk_subject(found.nuid, self.bucket)
        try:
            sub = await js.subscribe(subject, ordered_consumer=True)
        except (TimeoutError, OSError, NatsError) as exc:
            raise DataBusUnavailable(self.url, _describe(exc)) from exc
        offset = 0
        try:
            while offset <= last:
                try:
                    msg = await sub.next_msg(timeout=CHUNK_TIMEOUT)
                except (TimeoutError, OSError, NatsError) as exc:
                    raise DataBusUnavailable(self.url, _describe(exc)) from exc
                chunk = msg.data
                chunk_end = offset + len(chunk)
                if chunk_end > start:
                    yield chunk[max(start - offset, 0) : last + 1 - offset]
                offset = chunk_end
                if not chunk:  # an empty chunk would never end the loop
                    break
        finally:
            try:
                await sub.unsubscribe()
            except (TimeoutError, OSError, NatsError) as exc:
                log.warning("data download: unsubscribe failed", error=_describe(exc))

    async def delete(self, name: str) -> bool:
        """Delete the object ``name``; False when the bucket did not hold it (deleted before,
        or never uploaded): either way it is gone."""
        try:
            store = await self._store()
            await store.delete(name)
        except (BucketNotFoundError, NotFoundError, ObjectNotFoundError):
            return False
        except (TimeoutError, OSError, NatsError) as exc:
            raise DataBusUnavailable(self.url, _describe(exc)) from exc
        return True

    async def aclose(self) -> None:
        nc, self._nc = self._nc, None
        if nc is not None and not nc.is_closed:
            await close_nats(nc)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
