"""The event store contract, run over the SQLite store, its in-memory twin and the JetStream
store (a real nats-server on loopback; its reads come from its local copy) alike."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from lablink.errors import DuplicateId, StreamVersionConflict
from lablink.events import JobPaused, JobResumed, NewEvent
from lablink.eventstore import (
    ANY,
    AppendRequest,
    EventQuery,
    EventReader,
    EventStore,
    LogReader,
    MemoryEventStore,
    SQLiteEventStore,
    connect,
)
from lablink.eventstore.jetstream import JetStreamEventStore
from lablink.eventstore.record_link import JetStreamOptions
from tests.support.nats_thread import nats_server

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def new(job_id: str, n: int = 0, *, event_id: str | None = None) -> NewEvent:
    return NewEvent(
        event=JobPaused(job_id=job_id, reason=f"r{n}"),
        actor="tester",
        occurred_at=T0 + timedelta(seconds=n),
        event_id=event_id,
    )


StoreFactory = Callable[[], EventStore]


@pytest.fixture(params=["sqlite", "memory", pytest.param("jetstream", marks=pytest.mark.nats)])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """Each call opens the same log again: the SQLite file, or (JetStream) the same stream
    with a local copy of its own; the memory store has one log per instance."""
    opened: list[EventStore] = []
    servers: list[str] = []  # the nats-server's URL, once started (by the first jetstream call)
    with contextlib.ExitStack() as stack:

        def factory() -> EventStore:
            store: EventStore
            if request.param == "sqlite":
                store = SQLiteEventStore(tmp_path / "events.db")
            elif request.param == "jetstream":
                if not servers:
                    _, server = stack.enter_context(nats_server(tmp_path / "nats"))
                    servers.append(server.url)
                options = JetStreamOptions(servers=(servers[0],))
                store = JetStreamEventStore(tmp_path / f"copy-{len(opened)}.db", options)
            else:
                store = MemoryEventStore()
            opened.append(store)
            return store

        yield factory
        for store in opened:
            store.close()


def test_append_assigns_versions_and_positions(make_store: StoreFactory) -> None:
    store = make_store()
    first = store.append("job_a", 0, [new("job_a", 1), new("job_a", 2)])
    second = store.append("job_b", 0, [new("job_b", 3)])
    third = store.append("job_a", 2, [new("job_a", 4)])
    assert [(r.stream_id, r.version, r.position) for r in first + second + third] == [
        ("job_a", 1, 1),
        ("job_a", 2, 2),
        ("job_b", 1, 3),
        ("job_a", 3, 4),
    ]
    assert store.stream_version("job_a") == 3
    assert store.stream_version("nothing") == 0
    assert store.last_position() == 4


def test_stale_expected_version_raises_and_writes_nothing(make_store: StoreFactory) -> None:
    store = make_store()
    store.append("job_a", 0, [new("job_a", 1)])
    with pytest.raises(StreamVersionConflict) as caught:
        store.append("job_a", 0, [new("job_a", 2), new("job_a", 3)])
    assert (caught.value.stream_id, caught.value.expected, caught.value.actual) == ("job_a", 0, 1)
    assert store.last_position() == 1
    assert [r.event for r in store.read_stream("job_a")] == [new("job_a", 1).event]


def test_expected_version_ahead_of_stream_is_a_conflict(make_store: StoreFactory) -> None:
    store = make_store()
    with pytest.raises(StreamVersionConflict):
        store.append("job_a", 3, [new("job_a", 1)])
    assert store.last_position() == 0


def test_any_skips_the_check(make_store: StoreFactory) -> None:
    store = make_store()
    store.append("retention", ANY, [new("x", 1)])
    recorded = store.append("retention", ANY, [new("x", 2)])
    assert recorded[0].version == 2


def test_read_stream_after_version(make_store: StoreFactory) -> None:
    store = make_store()
    store.append("job_a", 0, [new("job_a", n) for n in range(5)])
    assert [r.version for r in store.read_stream("job_a", after_version=3)] == [4, 5]


def test_read_all_in_position_order_from_a_position(make_store: StoreFactory) -> None:
    store = make_store()
    for n in range(7):
        stream = f"job_{n % 3}"
        store.append(stream, store.stream_version(stream), [new(stream, n)])
    everything = list(store.read_all(batch_size=2))
    assert [r.position for r in everything] == list(range(1, 8))
    assert [r.position for r in store.read_all(after_position=4, batch_size=2)] == [5, 6, 7]


def test_read_all_until_bounds_occurred_at(make_store: StoreFactory) -> None:
    store = make_store()
    store.append("job_a", 0, [new("job_a", n) for n in range(10)])
    until = T0 + timedelta(seconds=4)
    assert [r.version for r in store.read_all(until=until)] == [1, 2, 3, 4, 5]


def test_envelope_round_trips(make_store: StoreFactory) -> None:
    store = make_store()
    when = datetime(2026, 5, 1, 12, 30, 15, 123456, tzinfo=UTC)
    event = JobResumed(job_id="job_a", resumed_at=when)
    written = store.append(
        "job_a",
        0,
        [
            NewEvent(
                event=event,
                actor="key:alice",
                occurred_at=when,
                correlation_id="exec_1",
                event_id="e-1",
            )
        ],
    )
    (read,) = store.read_stream("job_a")
    assert read == written[0]
    assert (read.event_id, read.actor, read.correlation_id, read.occurred_at) == (
        "e-1",
        "key:alice",
        "exec_1",
        when,
    )
    assert read.occurred_at.tzinfo is not None
    assert read.type == "job.resumed"


def test_duplicate_event_id_refused_whole(make_store: StoreFactory) -> None:
    store = make_store()
    store.append("job_a", 0, [new("job_a", 1, event_id="same")])
    with pytest.raises(DuplicateId):
        store.append("job_b", 0, [new("job_b", 2), new("job_b", 3, event_id="same")])
    assert store.last_position() == 1
    assert store.stream_version("job_b") == 0


def test_group_commit_checks_each_request(make_store: StoreFactory) -> None:
    store = make_store()
    store.append("job_a", 0, [new("job_a", 0)])
    outcomes = store.append_batch(
        [
            AppendRequest(stream_id="job_b", expected_version=0, events=[new("job_b", 1)]),
            AppendRequest(stream_id="job_a", expected_version=0, events=[new("job_a", 2)]),
            AppendRequest(stream_id="job_b", expected_version=1, events=[new("job_b", 3)]),
            AppendRequest(stream_id="job_b", expected_version=1, events=[new("job_b", 4)]),
        ]
    )
    assert not isinstance(outcomes[0], StreamVersionConflict)
    assert isinstance(outcomes[1], StreamVersionConflict)
    assert outcomes[1].actual == 1
    assert not isinstance(outcomes[2], StreamVersionConflict)
    # The second request on job_b inside the batch sees the first one's version.
    assert isinstance(outcomes[3], StreamVersionConflict)
    assert outcomes[3].actual == 2
    assert [r.version for r in store.read_stream("job_b")] == [1, 2]
    assert store.stream_version("job_a") == 1
    assert store.last_position() == 3


def test_group_commit_numbers_appends_at_any_before_a_checked_one(
    make_store: StoreFactory,
) -> None:
    store = make_store()
    outcomes = store.append_batch(
        [
            AppendRequest(stream_id="job_a", expected_version=ANY, events=[new("job_a", 1)]),
            AppendRequest(stream_id="job_a", expected_version=ANY, events=[new("job_a", 2)]),
            AppendRequest(stream_id="job_a", expected_version=2, events=[new("job_a", 3)]),
            AppendRequest(stream_id="job_b", expected_version=0, events=[]),
        ]
    )
    assert [[r.version for r in o] for o in outcomes if isinstance(o, list)] == [[1], [2], [3], []]
    assert store.stream_version("job_a") == 3


# The SQLite file's own tests (pragmas, reopen, two connections, another connection's reads)
# poke at one file; the JetStream store's twins of them (its copy's schema and pragmas, two
# instances on one stream, reads agreeing with the SQLite store's) are in test_jetstream.py.


def test_sqlite_log_survives_reopen_and_is_readable_json(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    store = SQLiteEventStore(path)
    store.append("job_a", 0, [new("job_a", 1)])
    store.close()
    reopened = SQLiteEventStore(path)
    assert reopened.stream_version("job_a") == 1
    reopened.close()
    raw = sqlite3.connect(path)
    journal, payload = (
        raw.execute("PRAGMA journal_mode").fetchone()[0],
        raw.execute("SELECT payload FROM events").fetchone()[0],
    )
    raw.close()
    assert journal == "wal"
    assert payload == '{"type":"job.paused","job_id":"job_a","reason":"r1"}'


def test_sqlite_durability_pragmas(tmp_path: Path) -> None:
    store = SQLiteEventStore(tmp_path / "events.db")
    assert store.conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert store.conn.execute("PRAGMA busy_timeout").fetchone()[0] >= 5000
    store.close()


def test_two_connections_one_writer_wins(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    first, second = SQLiteEventStore(path), SQLiteEventStore(path)
    first.append("job_a", 0, [new("job_a", 1)])
    with pytest.raises(StreamVersionConflict):
        second.append("job_a", 0, [new("job_a", 2)])
    assert second.stream_version("job_a") == 1
    first.close()
    second.close()


# -- the reads others need: by position, by stream, by time (audit), until (replay) ----------


def _mixed(store: EventStore) -> None:
    """Ten events over three streams, two actors and two type families, a second apart."""
    for n in range(10):
        stream = f"job_{n % 3}"
        event = (
            JobPaused(job_id=stream, reason=f"r{n}")
            if n % 2
            else JobResumed(job_id=stream, resumed_at=T0 + timedelta(seconds=n))
        )
        store.append(
            stream,
            store.stream_version(stream),
            [
                NewEvent(
                    event=event,
                    actor="key:alice" if n < 5 else "scheduler",
                    occurred_at=T0 + timedelta(seconds=n),
                    correlation_id=f"c{n}" if n % 4 == 0 else None,
                    event_id=f"e-{n}",
                )
            ],
        )


def test_read_rows_are_the_stored_columns_in_position_order(make_store: StoreFactory) -> None:
    store = make_store()
    _mixed(store)
    rows = store.read_rows(0, 3)
    assert rows[0] == (
        1,
        "e-0",
        "job_0",
        1,
        "job.resumed",
        "2026-01-01T00:00:00.000000Z",
        "key:alice",
        "c0",
        '{"type":"job.resumed","job_id":"job_0","resumed_at":"2026-01-01T00:00:00Z","reason":null}',
    )
    assert [r[0] for r in rows] == [1, 2, 3]
    assert [r[0] for r in store.read_rows(7, 100)] == [8, 9, 10]
    assert [r[0] for r in store.read_rows(2, 100, up_to=5)] == [3, 4, 5]
    assert [r[0] for r in store.read_rows(0, 100, until=T0 + timedelta(seconds=3))] == [
        1,
        2,
        3,
        4,
    ]
    assert [r[0] for r in store.read_rows(0, 2, up_to=9, until=T0 + timedelta(seconds=8))] == [
        1,
        2,
    ]
    assert store.read_rows(10, 100) == []
    # The same events as read_all gives, payloads as the log holds them.
    assert [r[1] for r in store.read_rows(0, 100)] == [e.event_id for e in store.read_all()]


def test_find_filters_by_stream_actor_type_and_time(make_store: StoreFactory) -> None:
    store = make_store()
    _mixed(store)

    def positions(**filters: object) -> list[int]:
        return [r[0] for r in store.find(EventQuery(**filters))]  # type: ignore[arg-type]

    assert positions() == list(range(1, 11))
    assert positions(stream_id="job_1") == [2, 5, 8]
    assert positions(actor="scheduler") == [6, 7, 8, 9, 10]
    assert positions(types=("job.paused",)) == [2, 4, 6, 8, 10]
    assert positions(types=("job.",)) == list(range(1, 11))
    assert positions(types=("job.paused", "job.resumed")) == list(range(1, 11))
    assert positions(types=("alarm.",)) == []
    # since and until are both inclusive: until=T lists what `replay --until T` folds.
    assert positions(since=T0 + timedelta(seconds=2), until=T0 + timedelta(seconds=4)) == [
        3,
        4,
        5,
    ]
    assert positions(after_position=7) == [8, 9, 10]
    assert positions(limit=2) == [1, 2]
    assert positions(stream_id="job_0", types=("job.resumed",)) == [1, 7]
    assert positions(stream_id="job_0", actor="key:alice", types=("job.resumed",)) == [1]
    assert positions(stream_id="job_0", after_position=4, limit=1) == [7]
    assert store.find(EventQuery(stream_id="job_2"))[0][1] == "e-2"


def test_reads_agree_between_the_stores(tmp_path: Path) -> None:
    sqlite_store, memory = SQLiteEventStore(tmp_path / "events.db"), MemoryEventStore()
    for store in (sqlite_store, memory):
        _mixed(store)
    for query in (
        EventQuery(),
        EventQuery(stream_id="job_1", types=("job.",)),
        EventQuery(actor="scheduler", since=T0 + timedelta(seconds=7), limit=5),
    ):
        assert sqlite_store.find(query) == memory.find(query)
    assert sqlite_store.read_rows(0, 100) == memory.read_rows(0, 100)
    sqlite_store.close()


def test_log_reader_reads_through_another_connection(tmp_path: Path) -> None:
    store = SQLiteEventStore(tmp_path / "events.db")
    _mixed(store)
    conn = connect(tmp_path / "events.db")
    conn.execute("PRAGMA query_only = ON")
    reader: EventReader = LogReader(conn)
    assert reader.read_rows(0, 100) == store.read_rows(0, 100)
    assert reader.find(EventQuery(stream_id="job_1")) == store.find(EventQuery(stream_id="job_1"))
    assert reader.read_stream("job_2") == store.read_stream("job_2")
    assert list(reader.read_all(batch_size=3)) == list(store.read_all())
    assert (reader.last_position(), reader.stream_version("job_0")) == (10, 4)
    conn.close()
    store.close()
