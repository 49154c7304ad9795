"""`lablink audit verify` on a replica's local copy of the cluster's record (issue 18): the
lease's messages hold positions of the record but are no events, so the copy's positions
have gaps there. A copy built through a real nats-server, lease messages interleaved with two
replicas' events and checkpoints, verifies clean; the same copy with an event row deleted or
a payload edited is a break naming the position; a single-node log with a gap still fails
even when its chain was hashed again across the gap."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lablink.audit.note import Signer
from lablink.audit.signing_key import ensure_signer
from lablink.audit.verify import LogRecord, verify_record
from lablink.bus.server import NatsServer
from lablink.cli import app
from lablink.errors import AuditFailed
from lablink.events import CheckpointSigned, JobPaused, NewEvent
from lablink.eventstore import ANY, LogReader
from lablink.eventstore.jetstream import JetStreamEventStore
from lablink.eventstore.lease import LeaseRecord
from lablink.eventstore.loop_thread import LoopThread
from lablink.eventstore.record_link import JetStreamOptions
from tests.audit.conftest import Lab
from tests.audit.test_verify import rehash
from tests.support.eventually import eventually_sync
from tests.support.nats_thread import nats_server
from tests.support.tamper import tamper

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["audit", *args])
    return result.exit_code, result.stdout, result.stderr


def paused(job_id: str, n: int) -> NewEvent:
    return NewEvent(
        event=JobPaused(job_id=job_id, reason=f"r{n}"),
        actor="tester",
        occurred_at=T0 + timedelta(seconds=n),
    )


@dataclass
class Replica:
    data_dir: Path
    store: JetStreamEventStore
    signer: Signer
    notes: list[str]

    @property
    def db(self) -> Path:
        return self.data_dir / "scheduler.db"

    def checkpoint(self) -> None:
        """What the replica's checkpointer does: sign its copy's head, record it."""
        size, head = self.store.copy.head()
        note = self.signer.sign(self.signer.name, size, head)
        signed = CheckpointSigned(origin=self.signer.name, size=size, head=head.hex(), note=note)
        self.store.append("audit", ANY, [NewEvent(event=signed, actor="audit", occurred_at=T0)])
        self.notes.append(note)

    def published(self, path: Path) -> Path:
        lines = "".join(json.dumps({"published_checkpoint": n}) + "\n" for n in self.notes)
        path.write_text(lines)
        return path


@pytest.fixture
def server(tmp_path: Path) -> Iterator[NatsServer]:
    with nats_server(tmp_path / "nats") as (_, started):
        yield started


@pytest.fixture
def loop() -> Iterator[LoopThread]:
    thread = LoopThread("lease")
    yield thread
    thread.stop()


class Replicas:
    def __init__(self, folder: Path, server: NatsServer) -> None:
        self.folder = folder
        self.options = JetStreamOptions(servers=(server.url,))
        self.opened: list[JetStreamEventStore] = []

    def open(self, name: str) -> Replica:
        data_dir = self.folder / name
        store = JetStreamEventStore(data_dir / "scheduler.db", self.options)
        self.opened.append(store)
        return Replica(data_dir, store, ensure_signer(data_dir), [])

    def close(self) -> None:
        for store in self.opened:
            store.close()


@pytest.fixture
def replicas(tmp_path: Path, server: NatsServer) -> Iterator[Replicas]:
    opened = Replicas(tmp_path, server)
    yield opened
    opened.close()


def caught_up(*replicas: Replica) -> None:
    for replica in replicas:
        eventually_sync(replica.store.copy_status, until=lambda s: s.lag == 0 and s.error is None)


def two_replicas_with_the_lease(replicas: Replicas, loop: LoopThread) -> tuple[Replica, Replica]:
    """Replica a holds the lease and renews it between the events both replicas append; each
    signs checkpoints of its copy with its own key. Both copies caught up, then closed."""
    a, b = replicas.open("a"), replicas.open("b")
    # A TTL that cannot run out during the test: every renewal is a message in the record.
    link = a.store.lease_link("a", 60.0)
    lease: LeaseRecord | None = loop.call(link.claim(None))
    for n in range(9):
        writer = a if n % 2 == 0 else b
        writer.store.append(f"job_{n % 3}", ANY, [paused(f"job_{n % 3}", n)])
        lease = loop.call(link.claim(lease))
        assert lease is not None
        if n == 4:
            a.checkpoint()
            b.checkpoint()
    loop.call(link.claim(lease))  # the record ends on a lease message
    a.checkpoint()
    caught_up(a, b)
    replicas.close()
    return a, b


def event_positions(db: Path) -> tuple[list[int], list[tuple[int, int]]]:
    conn = sqlite3.connect(db)
    try:
        reader = LogReader(conn)
        return [row[0] for row in reader.read_chain(0, 1000)], reader.passed_over(0, 1000)
    finally:
        conn.close()


def forged(db: Path, folder: Path, name: str) -> Path:
    """A copy of the data directory to tamper with (the key and origin too)."""
    target = folder / name
    target.mkdir()
    for part in db.parent.iterdir():
        if part.is_dir():
            (target / part.name).mkdir()
            for file in part.iterdir():
                (target / part.name / file.name).write_bytes(file.read_bytes())
    source, copy = sqlite3.connect(db), sqlite3.connect(target / db.name)
    source.backup(copy)
    source.close()
    copy.close()
    return target


@pytest.mark.nats
def test_a_copy_with_lease_gaps_verifies_clean_and_other_replicas_checkpoints_with_their_key(
    replicas: Replicas, loop: LoopThread, tmp_path: Path
) -> None:
    a, b = two_replicas_with_the_lease(replicas, loop)
    events, runs = event_positions(a.db)
    assert runs, "the lease left no gaps"
    assert event_positions(b.db) == (events, runs)  # the copies agree, gaps and all
    passed = sum(last - first + 1 for first, last in runs)
    assert len(events) + passed == events[-1]  # every position an event or passed over

    published = a.published(tmp_path / "published.jsonl")
    code, out, err = run(
        "verify", "--data-dir", str(a.data_dir), "--no-bus", "--checkpoints", str(published)
    )
    assert code == 0, err
    assert out.startswith(
        f"ok: {len(events)} events of {a.signer.name} (a copy of the cluster's record:"
        f" positions 1..{events[-1]}, {passed} of them passed over as no events)"
    )
    assert "2 checkpoints in the log, 2 published checkpoints" in out
    assert f"set aside (no key given): 1 of {b.signer.name}" in out

    # With b's key, its checkpoint in a's copy is checked too: the copies' chains are one.
    code, out, err = run(
        "verify",
        "--data-dir",
        str(a.data_dir),
        "--no-bus",
        "--replica-key",
        b.signer.verifier.text(),
    )
    assert code == 0, err
    assert "3 checkpoints in the log" in out
    assert "set aside" not in out
    # And b's copy verifies with b's key, a's checkpoints set aside.
    code, out, err = run("verify", "--data-dir", str(b.data_dir), "--no-bus")
    assert code == 0, err
    assert f"set aside (no key given): 2 of {a.signer.name}" in out


@pytest.mark.nats
def test_a_deleted_or_edited_event_in_a_copy_is_a_break_naming_its_position(
    replicas: Replicas, loop: LoopThread, tmp_path: Path
) -> None:
    a, _ = two_replicas_with_the_lease(replicas, loop)
    events, runs = event_positions(a.db)
    after_run = [last + 1 for _, last in runs if last + 1 in events[:-1]]
    middle = [p for p in events[1:-1] if p - 1 in events]
    assert after_run
    assert middle

    def verify(data_dir: Path) -> tuple[int, str]:
        code, _, err = run("verify", "--data-dir", str(data_dir), "--no-bus")
        return code, err

    for position in (after_run[0], middle[0]):
        data_dir = forged(a.db, tmp_path, f"deleted-{position}")
        tamper(data_dir / "scheduler.db", "DELETE FROM events WHERE position = ?", position)
        code, err = verify(data_dir)
        assert code == 1
        assert err.startswith(f"lablink: position {position}: gap: the log goes from"), err

    edited = events[len(events) // 2]
    data_dir = forged(a.db, tmp_path, "edited")
    tamper(
        data_dir / "scheduler.db",
        "UPDATE events SET payload = payload || ' ' WHERE position = ?",
        edited,
    )
    code, err = verify(data_dir)
    assert code == 1
    assert err.startswith(f"lablink: position {edited}: altered: what is stored"), err

    # The last event (a checkpoint, after lease messages) removed: without the published
    # checkpoints the run left standing before it still says an event followed.
    last = events[-1]
    assert last - 1 not in events
    data_dir = forged(a.db, tmp_path, "tail")
    tamper(data_dir / "scheduler.db", "DELETE FROM events WHERE position = ?", last)
    code, err = verify(data_dir)
    assert code == 1
    assert err.startswith(f"lablink: position {last}: truncated:"), err

    # Widening a run over a removed event does not hide it: the next link names it.
    data_dir = forged(a.db, tmp_path, "widened")
    db = data_dir / "scheduler.db"
    target = after_run[0]
    (first,) = [f for f, last_ in runs if last_ + 1 == target]
    tamper(db, "DELETE FROM events WHERE position = ?", target)
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("DROP TRIGGER passed_over_no_update")
    conn.execute("UPDATE passed_over SET last = ? WHERE first = ?", (target, first))
    conn.close()
    code, err = verify(data_dir)
    assert code == 1
    next_event = min(p for p in events if p > target)
    assert err.startswith(f"lablink: position {next_event}"), err


@pytest.mark.nats
def test_an_export_of_a_copy_verifies_with_only_the_public_key(
    replicas: Replicas, loop: LoopThread, tmp_path: Path
) -> None:
    a, _ = two_replicas_with_the_lease(replicas, loop)
    export = tmp_path / "export.jsonl"
    code, _, err = run("export", str(export), "--no-bus", "--data-dir", str(a.data_dir))
    assert code == 0, err
    auditor = tmp_path / "auditor"
    key = a.signer.verifier.text()
    code, out, err = run(
        "verify", "--export", str(export), "--pubkey", key, "--data-dir", str(auditor)
    )
    assert code == 0, err
    assert "a copy of the cluster's record" in out
    # One event's line removed from the export: named by its position.
    lines = export.read_text().splitlines()
    events = [n for n, line in enumerate(lines) if '"position"' in line]
    removed = json.loads(lines[events[len(events) // 2]])["position"]
    del lines[events[len(events) // 2]]
    export.write_text("\n".join(lines) + "\n")
    code, _, err = run(
        "verify", "--export", str(export), "--pubkey", key, "--data-dir", str(auditor)
    )
    assert code == 1
    assert err.startswith(f"lablink: position {removed}: gap"), err


@pytest.mark.nats
def test_a_copy_made_after_the_lease_messages_expired_verifies_clean(
    replicas: Replicas, loop: LoopThread
) -> None:
    """A replica that starts late never sees the lease's expired messages: the stream's
    sequence skips where the consumer's does not, and the copy passes those over too."""
    a = replicas.open("a")
    link = a.store.lease_link("a", 1.0)  # JetStream's smallest TTL
    lease = loop.call(link.claim(None))
    for n in range(3):
        a.store.append("job_a", ANY, [paused("job_a", n)])
        lease = loop.call(link.claim(lease))
        assert lease is not None
    a.store.append("job_a", ANY, [paused("job_a", 9)])
    eventually_sync(lambda: loop.call(link.read()), until=lambda live: live is None)
    late = replicas.open("late")
    assert late.store.read_rows(0, 10) == a.store.read_rows(0, 10)
    a.checkpoint()
    caught_up(late)
    replicas.close()
    conn = sqlite3.connect(late.db)
    try:
        verified = verify_record(LogRecord(conn), a.signer.verifier, a.notes)
    finally:
        conn.close()
    assert (verified.events, verified.passed_over, verified.checkpoints) == (5, 4, 1)


def test_a_single_node_log_with_a_gap_fails_even_hashed_again_across_it(lab: Lab) -> None:
    """A single-node log never skips a position: a gap is a removed event there, even when
    the chain was hashed again across it (which no checkpoint may catch yet)."""
    lab.work(2)
    tamper(lab.db, "DELETE FROM events WHERE position = 4")
    rehash(lab.db)  # positions kept: event 5's link is computed across the gap
    conn = sqlite3.connect(lab.db)
    with pytest.raises(AuditFailed) as failed:
        verify_record(LogRecord(conn), lab.signer.verifier)
    conn.close()
    assert (failed.value.position, failed.value.kind) == (4, "gap")
