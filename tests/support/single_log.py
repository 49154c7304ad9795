"""A single-node log to import into a cluster (tests/cluster)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from lablink.events import JobPaused, JobResumed, NewEvent
from lablink.eventstore import SQLiteEventStore

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def single_node_log(path: Path, count: int) -> SQLiteEventStore:
    """A log of ``count`` events over a few streams, some appended several at once, some with
    a correlation id, one stream id that needs escaping in a subject."""
    store = SQLiteEventStore(path)
    streams = ["job_a", "job_b", "job.odd/ü"]
    n = 0
    while n < count:
        stream = streams[n % len(streams)]
        size = min(1 + n % 3, count - n)
        events = [
            NewEvent(
                event=JobPaused(job_id=stream, reason=f"r{n + i}")
                if (n + i) % 2
                else JobResumed(job_id=stream, resumed_at=T0),
                actor="alice",
                occurred_at=T0 + timedelta(seconds=n + i),
                correlation_id=f"c{n}" if n % 4 == 0 else None,
            )
            for i in range(size)
        ]
        store.append(stream, store.stream_version(stream), events)
        n += size
    return store
