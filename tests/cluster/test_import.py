"""`lablink cluster import`'s copying: a single-node log into a real nats-server's record, then
a JetStream store's local copy of it compared with the source, row by row and link by link."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import pytest

from lablink.bus.server import NatsServer
from lablink.cluster.importer import import_log
from lablink.errors import ImportDiverged, RecordNotEmpty, SourceLogGap
from lablink.eventstore import SQLiteEventStore
from lablink.eventstore.jetstream import JetStreamEventStore
from lablink.eventstore.record_link import JetStreamOptions
from tests.support.fold_logs import FINALS, FireLog, rebuilt
from tests.support.nats_thread import nats_server
from tests.support.single_log import single_node_log


@pytest.fixture
def server(tmp_path: Path) -> Iterator[NatsServer]:
    with nats_server(tmp_path / "nats") as (_, started):
        yield started


def options_of(server: NatsServer) -> JetStreamOptions:
    return JetStreamOptions(servers=(server.url,))


def assert_copy_equals(source: SQLiteEventStore, options: JetStreamOptions, copy: Path) -> None:
    store = JetStreamEventStore(copy, options)
    try:
        count = source.last_position()
        assert store.copy.read_rows(0, count + 10) == source.read_rows(0, count + 10)
        # The chain too: every link hashes its position, so equal heads mean equal chains.
        assert store.copy.head() == source.head()
    finally:
        store.close()


@pytest.mark.nats
def test_the_copy_of_the_imported_record_equals_the_log(server: NatsServer, tmp_path: Path) -> None:
    source = single_node_log(tmp_path / "scheduler.db", 1203)
    seen: list[tuple[int, int]] = []
    report = asyncio.run(
        import_log(
            tmp_path / "scheduler.db",
            options_of(server),
            batch=500,
            progress=lambda done, total: seen.append((done, total)),
        )
    )
    assert (report.events, report.imported, report.last_sequence) == (1203, 1203, 1203)
    assert seen == [(0, 1203), (500, 1203), (1000, 1203), (1203, 1203)]
    assert_copy_equals(source, options_of(server), tmp_path / "copy.db")
    source.close()


@pytest.mark.nats
def test_a_stream_that_holds_messages_is_refused(server: NatsServer, tmp_path: Path) -> None:
    single_node_log(tmp_path / "scheduler.db", 5).close()
    asyncio.run(import_log(tmp_path / "scheduler.db", options_of(server)))
    with pytest.raises(RecordNotEmpty) as refused:
        asyncio.run(import_log(tmp_path / "scheduler.db", options_of(server)))
    assert refused.value.messages == 5
    assert "stream LABLINK_LOG is not empty: it holds 5 messages" in str(refused.value)


@pytest.mark.nats
def test_an_import_that_stopped_is_resumed_to_an_equal_copy(
    server: NatsServer, tmp_path: Path
) -> None:
    source = single_node_log(tmp_path / "scheduler.db", 250)

    def stop_after_two_batches(done: int, total: int) -> None:
        if done >= 200:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        asyncio.run(
            import_log(
                tmp_path / "scheduler.db",
                options_of(server),
                batch=100,
                progress=stop_after_two_batches,
            )
        )
    with pytest.raises(RecordNotEmpty):
        asyncio.run(import_log(tmp_path / "scheduler.db", options_of(server)))
    report = asyncio.run(import_log(tmp_path / "scheduler.db", options_of(server), resume=True))
    assert (report.resumed_after, report.imported, report.last_sequence) == (200, 50, 250)
    assert_copy_equals(source, options_of(server), tmp_path / "copy.db")
    source.close()


@pytest.mark.nats
def test_resuming_into_another_logs_stream_is_refused(server: NatsServer, tmp_path: Path) -> None:
    single_node_log(tmp_path / "one.db", 10).close()
    single_node_log(tmp_path / "two.db", 20).close()
    asyncio.run(import_log(tmp_path / "one.db", options_of(server)))
    with pytest.raises(ImportDiverged, match="at sequence 10: holds event"):
        asyncio.run(import_log(tmp_path / "two.db", options_of(server), resume=True))


@pytest.mark.nats
def test_a_writer_that_slips_in_stops_the_import(server: NatsServer, tmp_path: Path) -> None:
    single_node_log(tmp_path / "scheduler.db", 30).close()

    async def write_meanwhile(done: int, total: int) -> None:
        nc = await nats.connect(server.url)
        await nc.jetstream().publish("lablink.log.job_x.job.paused", b"{}")
        await nc.close()

    def progress(done: int, total: int) -> None:
        if done == 10:
            # The callback runs on the import's loop and cannot await: another loop does.
            thread = threading.Thread(target=asyncio.run, args=(write_meanwhile(done, total),))
            thread.start()
            thread.join()

    with pytest.raises(ImportDiverged, match="another writer appended"):
        asyncio.run(
            import_log(tmp_path / "scheduler.db", options_of(server), batch=10, progress=progress)
        )


def test_a_log_with_a_gap_is_refused_before_connecting(tmp_path: Path) -> None:
    single_node_log(tmp_path / "scheduler.db", 6).close()
    conn = sqlite3.connect(tmp_path / "scheduler.db")
    conn.execute("DROP TRIGGER events_no_delete")
    conn.execute("DELETE FROM events WHERE position IN (3, 4)")
    conn.commit()
    conn.close()
    unreachable = JetStreamOptions(servers=("nats://127.0.0.1:1",))
    with pytest.raises(SourceLogGap) as refused:
        asyncio.run(import_log(tmp_path / "scheduler.db", unreachable))
    assert (refused.value.expected, refused.value.position) == (3, 5)


@pytest.mark.nats
def test_a_log_of_jobs_and_fires_folds_the_same_views_from_the_copy(
    server: NatsServer, tmp_path: Path
) -> None:
    """A log as the single node writes it (jobs through the real service, fires and their
    outcomes as the engine records them, odd names and parameters), imported: the views
    rebuilt from a replica's copy equal those rebuilt from the source."""
    source = SQLiteEventStore(tmp_path / "scheduler.db")
    steps: list[tuple[Any, ...]] = [("create", t % 3, t % 5, t % 3) for t in range(6)]
    for n in range(60):
        job = n % 6
        steps += [
            ("fire", job, ("scheduled", "manual", "catch_up")[n % 3], FINALS[n % 5]),
            ("advance", 3600),
        ]
    steps += [("pause", 1), ("update", 2, "name"), ("delete", 3), ("skip", 4), ("miss", 5, 60)]
    FireLog(source).run(steps)
    asyncio.run(import_log(tmp_path / "scheduler.db", options_of(server)))
    assert_copy_equals(source, options_of(server), tmp_path / "copy.db")
    replica = JetStreamEventStore(tmp_path / "copy.db", options_of(server))
    try:
        from_copy = rebuilt(replica.copy, tmp_path / "views-copy.db")
    finally:
        replica.close()
    from_source = rebuilt(source, tmp_path / "views-source.db")
    assert from_copy == from_source
    assert len(from_source["executions"]) >= 60
    source.close()
