"""``LABLINK_AUDIT``: the signed checkpoints of the log, published where the log's owner
cannot quietly edit them (docs/audit.md).

The stream refuses deletes and purges (``deny_delete``, ``deny_purge``), keeps every message
(no age or count limit) and is written at nats-server's ``sync_interval: always`` like every
stream but the events' copy. One subject per origin, ``lablink.audit.checkpoints.<origin>``;
each checkpoint carries ``Nats-Msg-Id: <origin>@<size>`` so a publish repeated after a lost
acknowledgement is stored once. Pointing LabLink at an external NATS (LABLINK_NATS_URL) whose
operator is not the log's owner is what makes the copy independent; on the private server of
`lablink serve` it still outlives an edit of ``scheduler.db``, not of the whole data dir.
"""

from __future__ import annotations

from nats.js import JetStreamContext
from nats.js.api import StorageType, StreamConfig
from nats.js.errors import NotFoundError

from lablink.bus.subjects import token

AUDIT_STREAM = "LABLINK_AUDIT"
CHECKPOINTS_PREFIX = "lablink.audit.checkpoints"


def checkpoint_subject(origin: str) -> str:
    return f"{CHECKPOINTS_PREFIX}.{token(origin.replace('/', '_'))}"


async def ensure_audit_stream(js: JetStreamContext, *, replicas: int = 1) -> None:
    try:
        await js.stream_info(AUDIT_STREAM)
    except NotFoundError:
        await js.add_stream(
            StreamConfig(
                name=AUDIT_STREAM,
                subjects=[f"{CHECKPOINTS_PREFIX}.>"],
                storage=StorageType.FILE,
                num_replicas=replicas,
                deny_delete=True,
                deny_purge=True,
                duplicate_window=600.0,
            )
        )


async def publish_checkpoint(js: JetStreamContext, origin: str, size: int, note: str) -> int:
    """Publish one signed checkpoint; its sequence in the stream."""
    ack = await js.publish(
        checkpoint_subject(origin),
        note.encode(),
        stream=AUDIT_STREAM,
        headers={"Nats-Msg-Id": f"{origin}@{size}"},
    )
    return int(ack.seq)


async def latest_checkpoint(js: JetStreamContext, origin: str) -> str | None:
    """The last checkpoint published for ``origin``, or None."""
    try:
        message = await js.get_last_msg(AUDIT_STREAM, checkpoint_subject(origin))
    except NotFoundError:
        return None
    return bytes(message.data or b"").decode()


async def published_checkpoints(js: JetStreamContext, origin: str) -> list[str]:
    """Every checkpoint published for ``origin``, oldest first."""
    subject = checkpoint_subject(origin)
    notes: list[str] = []
    sequence = 1
    while True:
        try:
            message = await js.get_msg(AUDIT_STREAM, seq=sequence, subject=subject, next=True)
        except NotFoundError:
            return notes
        notes.append(bytes(message.data or b"").decode())
        sequence = int(message.seq or sequence) + 1
