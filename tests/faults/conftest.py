"""The fault battery's shared check: after every fault, the record is still whole.

``check_invariants`` asserts, on the real files a test leaves behind:

- every acknowledged write is in the log (the event ids, or the job ids, the test was told
  were written);
- positions are gap-free from 1;
- replay equals the live views: every projection rebuilt from position 0 into another file
  gives the same rows;
- published equals the log: the JetStream stream holds the log's event ids in log order
  (``Nats-Msg-Id``), none twice, none missing up to what was published;
- no execution has two starts;
- every error a failed execution (or a late result) records has one of the documented types
  (``lablink.events.ERROR_TYPES``), never a runtime exception's name.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import nats
import pytest

from lablink.bus.subjects import STREAM
from lablink.events import ERROR_TYPES
from lablink.eventstore.sqlite import SQLiteEventStore, connect
from lablink.projections.runner import Projector
from tests.support.views import open_views


def recorded_error_types(conn: sqlite3.Connection) -> set[str]:
    """The error types of every ``execution.failed`` and ``execution.late_result`` in the log."""
    return {
        row[0]
        for row in conn.execute(
            "SELECT json_extract(payload, '$.error.type') FROM events"
            " WHERE type IN ('execution.failed', 'execution.late_result')"
        )
        if row[0] is not None
    }


def _rows(conn: sqlite3.Connection, table: str) -> list[tuple[Any, ...]]:
    return list(conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2"))


async def published_ids(url: str, **connect_options: Any) -> list[str]:
    """The ``Nats-Msg-Id`` of every message in the events stream, in stream order."""
    client = await nats.connect(url, allow_reconnect=False, **connect_options)
    try:
        js = client.jetstream()
        info = await js.stream_info(STREAM)
        found: list[str] = []
        if info.state.messages:
            for seq in range(info.state.first_seq, info.state.last_seq + 1):
                message = await js.get_msg(STREAM, seq)
                found.append((message.headers or {}).get("Nats-Msg-Id", ""))
        return found
    finally:
        await client.close()


class Invariants:
    """Call it with the data's database path; see the module docstring."""

    def __init__(self, tmp_path: Path) -> None:
        self._tmp = tmp_path

    async def __call__(
        self,
        db_path: Path,
        *,
        acknowledged_events: Iterable[str] = (),
        acknowledged_jobs: Iterable[str] = (),
        nats_url: str | None = None,
        nats_options: dict[str, Any] | None = None,
        require_all_published: bool = False,
    ) -> None:
        # The views (views.db), the log attached: the live views are compared with a replay.
        conn = open_views(db_path)
        try:
            log = list(
                conn.execute("SELECT position, event_id, stream_id, type FROM events ORDER BY 1")
            )
            positions = [row[0] for row in log]
            assert positions == list(range(1, len(positions) + 1)), "positions have gaps"
            event_ids = {row[1] for row in log}
            missing = set(acknowledged_events) - event_ids
            assert not missing, f"acknowledged events missing from the log: {sorted(missing)}"
            streams = {row[2] for row in log}
            lost_jobs = set(acknowledged_jobs) - streams
            assert not lost_jobs, f"acknowledged jobs missing from the log: {sorted(lost_jobs)}"
            starts = Counter(
                row[0]
                for row in conn.execute(
                    "SELECT correlation_id FROM events WHERE type = 'execution.started'"
                )
            )
            twice = {eid: n for eid, n in starts.items() if n > 1}
            assert not twice, f"executions started more than once: {twice}"
            undocumented = recorded_error_types(conn) - set(ERROR_TYPES)
            assert not undocumented, f"undocumented error types recorded: {undocumented}"
            self._replay_equals_live(db_path, conn)
        finally:
            conn.close()
        if nats_url is not None:
            published = await published_ids(nats_url, **(nats_options or {}))
            in_log = [row[1] for row in log]
            assert len(set(published)) == len(published), "an event was published twice"
            assert published == in_log[: len(published)], "published differs from the log"
            if require_all_published:
                assert len(published) == len(in_log), (
                    f"{len(in_log) - len(published)} event(s) never published"
                )

    def _replay_equals_live(self, db_path: Path, live: sqlite3.Connection) -> None:
        store = SQLiteEventStore(db_path)
        target_path = self._tmp / f"replay-{db_path.stem}-{len(list(self._tmp.iterdir()))}.db"
        target = connect(target_path)
        try:
            projector = Projector()
            projector.rebuild(store, target)
            for projection in projector.projections:
                for table in projection.tables:
                    assert _rows(live, table) == _rows(target, table), (
                        f"replay differs from the live view in table {table}"
                    )
        finally:
            target.close()
            store.close()


@pytest.fixture
def invariants(tmp_path: Path) -> Invariants:
    folder = tmp_path / "invariants"
    folder.mkdir()
    return Invariants(folder)
