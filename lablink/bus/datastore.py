"""The captures' object store on the bus: the JetStream object store bucket ``LABLINK_DATA``.

The scheduler makes the bucket when it starts (``ensure_data_bucket``); agents put captures
into it (``lablink.equipment_agent.upload``) with no right to make or change streams; the
API reads objects back.
"""

from __future__ import annotations

import structlog
from nats.js import JetStreamContext
from nats.js.api import ObjectStoreConfig, StorageType
from nats.js.errors import BucketNotFoundError

from lablink.events.data import DATA_BUCKET

log = structlog.get_logger(tag="bus")

# The JetStream stream under the bucket.
DATA_STREAM = f"OBJ_{DATA_BUCKET}"


async def ensure_data_bucket(js: JetStreamContext, *, replicas: int = 1) -> None:
    """The bucket, made if missing."""
    try:
        await js.object_store(DATA_BUCKET)
        return
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
    log.info("object store bucket created", bucket=DATA_BUCKET)
