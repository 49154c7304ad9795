"""The hash chain over the SQLite log: each event's hash, as docs/audit.md defines it, is
computed in the append's transaction; UPDATE and DELETE are refused; an older log is chained
when opened; the check names the first altered or missing position."""

from __future__ import annotations

import hashlib
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from lablink.errors import DuplicateId
from lablink.events import JobPaused, NewEvent
from lablink.eventstore import ANY, AppendRequest, SQLiteEventStore
from lablink.eventstore.chain import (
    GENESIS,
    ChainCheck,
    ChainRow,
    ChainStep,
    envelope,
    event_hash,
)
from tests.support.tamper import tamper

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def new(job_id: str, n: int = 0, *, event_id: str | None = None) -> NewEvent:
    return NewEvent(
        event=JobPaused(job_id=job_id, reason=f"r{n}"),
        actor="tester",
        occurred_at=T0 + timedelta(seconds=n),
        correlation_id=None if n % 2 else f"corr-{n}",
        event_id=event_id,
    )


def documented_hash(previous: bytes, row: tuple[Any, ...]) -> bytes:
    """docs/audit.md's definition, written out again here with the ``rfc8785`` package as
    the canonical JSON: the oracle."""
    position, *fields, payload = row[:9]
    head = rfc8785.dumps(fields)
    data = b"\x00" + position.to_bytes(8, "big") + previous + len(head).to_bytes(4, "big")
    return hashlib.sha256(data + head + payload.encode()).digest()


def stored_rows(path: Path) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(
            "SELECT position, event_id, stream_id, version, type, occurred_at, actor,"
            " correlation_id, payload, hash FROM events ORDER BY position"
        ).fetchall()
    finally:
        conn.close()


def walk(path: Path) -> tuple[int, str | None]:
    """The chain check over the file: (last good position, first break or None)."""
    check = ChainCheck()
    for row in stored_rows(path):
        broken = check.feed(row)  # type: ignore[arg-type]
        if broken is not None:
            return check.position, f"{broken.position} {broken.kind}"
    return check.position, None


def test_each_event_stores_the_documented_hash(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    store = SQLiteEventStore(path)
    store.append("job_a", 0, [new("job_a", 1), new("job_a", 2)])
    store.append_batch(
        [
            AppendRequest(stream_id="job_b", expected_version=0, events=[new("job_b", 3)]),
            AppendRequest(stream_id="job_a", expected_version=2, events=[new("job_a", 4)]),
        ]
    )
    store.close()
    previous = GENESIS
    rows = stored_rows(path)
    assert [row[0] for row in rows] == [1, 2, 3, 4]
    for row in rows:
        previous = documented_hash(previous, row)
        assert row[9] == previous
    assert SQLiteEventStore(path).head() == (4, previous)


def test_update_and_delete_of_events_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    SQLiteEventStore(path).append("job_a", 0, [new("job_a", 1)])
    conn = sqlite3.connect(path, isolation_level=None)
    with pytest.raises(sqlite3.IntegrityError, match="append-only: an event is never updated"):
        conn.execute("UPDATE events SET actor = 'someone else'")
    with pytest.raises(sqlite3.IntegrityError, match="append-only: an event is never deleted"):
        conn.execute("DELETE FROM events")
    assert conn.execute("SELECT actor FROM events").fetchall() == [("tester",)]
    conn.close()


def test_a_failed_append_leaves_the_chain_where_it_was(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    store = SQLiteEventStore(path)
    store.append("job_a", 0, [new("job_a", 1, event_id="dup")])
    with pytest.raises(DuplicateId):
        store.append("job_b", 0, [new("job_b", 2), new("job_b", 3, event_id="dup")])
    store.append("job_b", 0, [new("job_b", 4)])
    store.close()
    assert walk(path) == (2, None)


def test_two_writers_on_one_file_keep_one_chain(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    first, second = SQLiteEventStore(path), SQLiteEventStore(path)
    for n in range(6):
        (first if n % 2 else second).append(f"job_{n}", 0, [new(f"job_{n}", n)])
    first.close()
    second.close()
    assert walk(path) == (6, None)


def test_a_log_from_before_the_chain_is_chained_when_opened(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    SQLiteEventStore(path).append("job_a", 0, [new("job_a", n) for n in range(1, 4)])
    # The table as it was before the chain: no hash column, no triggers.
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("DROP TRIGGER events_no_update")
    conn.execute("DROP TRIGGER events_no_delete")
    conn.execute("ALTER TABLE events DROP COLUMN hash")
    conn.close()
    store = SQLiteEventStore(path)
    store.append("job_a", 3, [new("job_a", 4)])
    store.close()
    assert walk(path) == (4, None)
    conn = sqlite3.connect(path)
    triggers = conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall()
    conn.close()
    assert sorted(triggers) == [("events_no_delete",), ("events_no_update",)]


def test_an_altered_payload_and_a_gap_are_named(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    SQLiteEventStore(path).append("job_a", 0, [new("job_a", n) for n in range(1, 6)])
    original = stored_rows(path)
    tamper(path, "UPDATE events SET payload = replace(payload, 'r3', 'r9') WHERE position = 3")
    assert walk(path) == (2, "3 altered")
    tamper(path, "UPDATE events SET payload = ? WHERE position = 3", original[2][8])
    assert walk(path) == (5, None)
    tamper(path, "DELETE FROM events WHERE position = 4")
    assert walk(path) == (3, "4 gap")


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.lists(st.tuples(st.sampled_from("abc"), st.integers(0, 3), st.booleans()), max_size=4),
        max_size=8,
    )
)
def test_any_sequence_of_appends_and_conflicts_verifies_clean(
    tmp_path_factory: pytest.TempPathFactory,
    batches: list[list[tuple[str, int, bool]]],
) -> None:
    path = tmp_path_factory.mktemp("chain") / "events.db"
    store = SQLiteEventStore(path)
    appended = 0
    for n, batch in enumerate(batches):
        requests = [
            AppendRequest(
                stream_id=f"job_{stream}",
                expected_version=ANY if anywhere else store.stream_version(f"job_{stream}"),
                events=[new(f"job_{stream}", n * 10 + k) for k in range(count)],
            )
            for stream, count, anywhere in batch
        ]
        outcomes = store.append_batch(requests)
        appended += sum(len(o) for o in outcomes if isinstance(o, list))
    store.close()
    assert walk(path) == (appended, None)


@given(
    st.tuples(
        st.text(),
        st.text(),
        # RFC 8785 numbers are IEEE doubles: integers exact up to 2**53 - 1, its whole
        # domain (a stream would need 9e15 events to leave it).
        st.integers(1, 2**53 - 1),
        st.text(),
        st.text(),
        st.text(),
        st.none() | st.text(),
    )
)
def test_the_envelope_is_rfc8785_canonical_json(
    fields: tuple[str, str, int, str, str, str, str | None],
) -> None:
    assert envelope(*fields) == rfc8785.dumps(list(fields))


# -- a copy's passed-over positions (cluster mode) ----------------------------------------


def chained(positions: list[int]) -> list[ChainRow]:
    """Rows at ``positions`` hashed as a copy links them: event to event, across gaps."""
    rows: list[ChainRow] = []
    previous = GENESIS
    for position in positions:
        fields = (position, f"e-{position}", "job_a", len(rows) + 1, "job.paused")
        row = (*fields, "2026-01-01T00:00:00.000000Z", "t", None, "{}")
        previous = event_hash(previous, *row)
        rows.append((*row, previous))
    return rows


def first_break(steps: list[ChainStep]) -> str | None:
    check = ChainCheck()
    for step in steps:
        broken = check.step(step)
        if broken is not None:
            return f"{broken.position} {broken.kind}"
    broken = check.finish()
    return None if broken is None else f"{broken.position} {broken.kind}"


def test_a_gap_is_accepted_only_where_a_passed_over_run_stands() -> None:
    a, b, c, d = chained([1, 2, 5, 6])
    assert first_break([a, b, (3, 4), c, d]) is None
    assert first_break([a, b, c, d]) == "3 gap"  # a single-node log: no run, a break
    assert first_break([a, b, (4, 4), c, d]) == "3 gap"  # the run does not cover 3
    assert first_break([a, b, (2, 4), c, d]) == "2 altered"  # a run over an event


def test_an_event_removed_next_to_a_run_is_a_break_however_the_runs_are_written() -> None:
    a, b, _, d = chained([1, 2, 5, 6])
    assert first_break([a, b, (3, 4), d]) == "5 gap"
    # Widening the run over the removed event: the next link still names it.
    assert first_break([a, b, (3, 5), d]) == "6 altered"
    # The last event removed: its run stands at the end with no event after it.
    assert first_break([a, b, (3, 4)]) == "5 truncated"


def test_a_large_group_commit_numbers_versions_and_links_every_event(tmp_path: Path) -> None:
    """A thousand streams in one append: each request checked against its stream's version
    (a second request on a stream against the first's), numbered and chained event by
    event."""
    path = tmp_path / "events.db"
    store = SQLiteEventStore(path)
    store.append("s0", 0, [new("s0", 0)])
    streams = 1_007
    outcomes = store.append_batch(
        [
            AppendRequest(
                stream_id=f"s{i}",
                expected_version=1 if i == 0 else 0,
                events=[new(f"s{i}", 1), new(f"s{i}", 2)],
            )
            for i in range(streams)
        ]
        + [AppendRequest(stream_id="s3", expected_version=2, events=[new("s3", 3)])]
    )
    assert all(isinstance(outcome, list) for outcome in outcomes)
    assert store.last_position() == 1 + 2 * streams + 1
    assert store.stream_version("s0") == 3
    assert store.stream_version("s3") == 3  # the batch's second request saw the first's
    assert store.stream_version(f"s{streams - 1}") == 2
    assert walk(path) == (2 + 2 * streams, None)
    store.close()


def test_an_event_id_twice_in_one_group_commit_is_refused_whole(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    store = SQLiteEventStore(path)
    store.append("job_a", 0, [new("job_a", 1)])
    with pytest.raises(DuplicateId) as raised:
        store.append_batch(
            [
                AppendRequest(
                    stream_id="job_b",
                    expected_version=0,
                    events=[new("job_b", 2, event_id="twice")],
                ),
                AppendRequest(
                    stream_id="job_c",
                    expected_version=0,
                    events=[new("job_c", 3, event_id="twice")],
                ),
            ]
        )
    assert raised.value.object_id == "twice"
    assert store.last_position() == 1
    assert walk(path) == (1, None)
    store.close()
