"""Facts about an execution's captured data (acquisitions): where its bytes are.

They live in the job's stream, like every execution fact, and carry the execution id as
correlation id. The capture itself is described by the finished execution's result, under
``result["data"]`` (the agent writes it; docs/data.md shows it):

- ``bucket`` (``LABLINK_DATA``), ``object`` (the object's name in that JetStream object
  store), ``file_name`` (what a download is called), ``size`` (bytes), ``sha256`` (hex of the
  whole file), ``rows``, ``columns`` (``[{"name": ..., "unit": ...}]``), ``sample_rate`` (the
  rate actually used, Sa/s), ``provenance`` (a dict: who and what produced the file);
- ``status``: ``stored`` (the object store confirmed the upload before the result was sent)
  or ``pending_upload`` (the agent keeps the file and retries; ``ExecutionDataStored`` follows,
  or ``ExecutionDataRemoved`` with reason ``lost`` when the file went or changed), or ``none``
  (the capture never reached the upload: ``lost`` says why).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from lablink.events.base import Event

DATA_BUCKET = "LABLINK_DATA"
DataStatus = Literal["none", "pending_upload", "stored", "removed"]
# ``lost``: the upload could never succeed (the agent's file went, or changed after its
# SHA-256 was taken): there never was an object.
DataRemovalReason = Literal["retention", "bound", "lost"]


class ExecutionDataStored(Event, frozen=True, kw_only=True, tag="execution.data_stored"):
    """An upload that was pending when the execution ended has been confirmed by the store."""

    job_id: str
    execution_id: str
    object: str
    size: int
    sha256: str
    stored_at: datetime
    agent_id: str = ""


class ExecutionDataRemoved(Event, frozen=True, kw_only=True, tag="execution.data_removed"):
    """An execution's object left the bucket: the retention pass pruned its execution, or the
    bucket's byte bound (``LABLINK_DATA_MAX_BYTES``) made room for newer captures; or (reason
    ``lost``) a pending upload can never be made, its agent says why in ``detail``."""

    job_id: str
    execution_id: str
    object: str
    size: int
    removed_at: datetime
    reason: DataRemovalReason
    detail: str = ""
