"""Group commit over the real SQLite store: shared transactions, per-request outcomes."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from lablink.errors import DuplicateId, StreamVersionConflict
from lablink.events import JobPaused, NewEvent
from lablink.eventstore import AppendRequest, SQLiteEventStore
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


def request(job_id: str) -> AppendRequest:
    return AppendRequest(stream_id=job_id, expected_version=0, events=[new(job_id)])


async def test_a_lingering_request_shares_the_next_request_s_commit(tmp_path: Path) -> None:
    store = SQLiteEventStore(tmp_path / "events.db")
    async with GroupCommitter(store) as committer:
        # An hour's linger: nothing on a slow machine can make it run out during the test.
        lingering = asyncio.create_task(committer.submit_all([request("end")], linger=3600))
        await asyncio.sleep(0.2)  # time enough for a write that was not held back
        assert store.last_position() == 0
        await committer.append("fire", 0, [new("fire")])
        async with asyncio.timeout(60):
            outcomes = await lingering
    assert not isinstance(outcomes[0], BaseException)
    assert store.stream_version("end") == store.stream_version("fire") == 1
    assert committer.batches == 1  # one transaction, one fsync, for both
    store.close()


async def test_a_lingering_request_alone_is_written_when_its_linger_ends(tmp_path: Path) -> None:
    store = SQLiteEventStore(tmp_path / "events.db")
    async with GroupCommitter(store) as committer:
        async with asyncio.timeout(60):
            outcomes = await committer.submit_all([request("end")], linger=0.05)
    assert not isinstance(outcomes[0], BaseException)
    assert store.stream_version("end") == 1
    assert committer.batches == 1
    store.close()


async def test_hurry_and_close_write_lingering_requests_at_once(tmp_path: Path) -> None:
    store = SQLiteEventStore(tmp_path / "events.db")
    committer = GroupCommitter(store)
    await committer.__aenter__()
    first = asyncio.create_task(committer.submit_all([request("a")], linger=3600))
    await asyncio.sleep(0.2)
    assert store.last_position() == 0
    committer.hurry()
    async with asyncio.timeout(60):
        await first
    assert store.stream_version("a") == 1
    second = asyncio.create_task(committer.submit_all([request("b")], linger=3600))
    await asyncio.sleep(0.2)
    assert store.stream_version("b") == 0  # hurry held for what waited then, not for ever
    async with asyncio.timeout(60):
        await committer.aclose()
        await second
    assert store.stream_version("b") == 1
    store.close()
