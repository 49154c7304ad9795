"""Group commit over the real SQLite store: shared transactions, per-request outcomes."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from lablink.errors import DuplicateId, StreamVersionConflict
from lablink.events import JobPaused, NewEvent
from lablink.eventstore import SQLiteEventStore
from lablink.eventstore.group_commit import GroupCommitter

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def new(job_id: str, event_id: str | None = None) -> NewEvent:
    return NewEvent(event=JobPaused(job_id=job_id), actor="t", occurred_at=T0, event_id=event_id)


async def test_concurrent_appends_share_transactions(tmp_path: Path) -> None:
    store = SQLiteEventStore(tmp_path / "events.db")
    async with GroupCommitter(store) as committer:
        results = await asyncio.gather(
            *(committer.append(f"job_{n}", 0, [new(f"job_{n}")]) for n in range(500))
        )
    assert len({r[0].position for r in results}) == 500
    assert store.last_position() == 500
    # 500 requests arrived together: far fewer transactions than requests.
    assert committer.batches < 50
    store.close()


async def test_conflicts_and_failures_go_to_their_own_caller(tmp_path: Path) -> None:
    store = SQLiteEventStore(tmp_path / "events.db")
    store.append("job_a", 0, [new("job_a", event_id="taken")])
    async with GroupCommitter(store) as committer:
        outcomes = await asyncio.gather(
            committer.append("job_b", 0, [new("job_b")]),
            committer.append("job_a", 0, [new("job_a")]),  # stale
            committer.append("job_c", 0, [new("job_c", event_id="taken")]),  # duplicate id
            committer.append("job_d", 0, [new("job_d")]),
            return_exceptions=True,
        )
    assert isinstance(outcomes[1], StreamVersionConflict)
    assert isinstance(outcomes[2], DuplicateId)
    assert not isinstance(outcomes[0], BaseException)
    assert not isinstance(outcomes[3], BaseException)
    assert store.stream_version("job_b") == store.stream_version("job_d") == 1
    assert store.stream_version("job_c") == 0
    store.close()


async def test_close_writes_what_was_queued_and_refuses_more(tmp_path: Path) -> None:
    store = SQLiteEventStore(tmp_path / "events.db")
    committer = GroupCommitter(store)
    await committer.__aenter__()
    # gather starts the appends first (FIFO), so they are queued when aclose() runs.
    await asyncio.gather(
        *(committer.append(f"s{n}", 0, [new(f"s{n}")]) for n in range(20)), committer.aclose()
    )
    assert store.last_position() == 20
    with pytest.raises(RuntimeError):
        await committer.append("late", 0, [new("late")])
    store.close()
