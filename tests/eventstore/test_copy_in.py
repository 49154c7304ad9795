"""``SQLiteEventStore.copy_in``: the SQLite log as the local copy of a record kept elsewhere
(the JetStream store's). Positions come from the record; versions and the chain are the
copy's own, as an append's."""

from __future__ import annotations

from pathlib import Path

import pytest

from lablink.errors import LocalCopyGap
from lablink.events import RecordedEvent
from lablink.eventstore import LogReader, SQLiteEventStore
from lablink.eventstore.chain import ChainCheck, in_order
from lablink.eventstore.sqlite import CopiedRow

PAYLOAD = '{"type":"job.paused","job_id":"job_a","reason":"r"}'


def row(position: int, stream_id: str = "job_a") -> CopiedRow:
    return (
        position,
        f"e-{position}",
        stream_id,
        "job.paused",
        "2026-01-01T00:00:00.000000Z",
        "tester",
        None,
        PAYLOAD,
    )


def test_copied_rows_are_numbered_and_chained_as_appends(tmp_path: Path) -> None:
    store = SQLiteEventStore(tmp_path / "copy.db")
    heard: list[RecordedEvent] = []
    store.subscribe(heard.extend)
    copied = store.copy_in([row(1), row(2, "job_b"), row(3)])
    assert [(e.position, e.stream_id, e.version) for e in copied] == [
        (1, "job_a", 1),
        (2, "job_b", 1),
        (3, "job_a", 2),
    ]
    assert heard == copied
    check = ChainCheck()
    assert all(check.feed(r) is None for r in LogReader(store.conn).read_chain(0, 10))
    store.close()


def test_a_redelivered_row_is_skipped_and_a_gap_refused_whole(tmp_path: Path) -> None:
    store = SQLiteEventStore(tmp_path / "copy.db")
    store.copy_in([row(1), row(2)])
    # A consumer started again from an older position delivers some rows twice.
    assert [e.position for e in store.copy_in([row(1), row(2), row(3)])] == [3]
    with pytest.raises(LocalCopyGap) as caught:
        store.copy_in([row(4), row(6)])
    assert (caught.value.expected, caught.value.position) == (5, 6)
    assert store.last_position() == 3  # row 4 was not written either
    assert store.stream_head("job_a") == (3, 3)
    assert store.stream_head("nothing") == (0, 0)
    assert store.event_ids_present(["e-1", "e-9", "e-3"]) == ["e-1", "e-3"]
    store.close()


def test_a_copy_writes_each_passed_over_run_with_the_event_after_it(tmp_path: Path) -> None:
    store = SQLiteEventStore(tmp_path / "copy.db", as_copy=True)
    reader = LogReader(store.conn)
    assert reader.is_copy()
    store.copy_in([row(2), row(3)], gaps=True)  # position 1 was a lease message
    store.copy_in([row(7)], gaps=True)  # 4..6 too
    assert reader.passed_over(0, 10) == [(1, 1), (4, 6)]
    assert reader.passed_over(1, 10) == [(4, 6)]
    # The copy's chain links event to event across the runs, and checks with them.
    check = ChainCheck()
    walk = in_order(reader.read_chain(0, 10), reader.passed_over(0, 10))
    assert all(check.step(step) is None for step in walk)
    assert check.finish() is None
    assert (check.events, check.passed, check.position) == (3, 4, 7)
    store.close()


def test_a_single_node_log_is_no_copy_and_keeps_no_runs(tmp_path: Path) -> None:
    store = SQLiteEventStore(tmp_path / "log.db")
    store.copy_in([row(1), row(2)])
    reader = LogReader(store.conn)
    assert not reader.is_copy()
    assert reader.passed_over(0, 10) == []
    store.close()
