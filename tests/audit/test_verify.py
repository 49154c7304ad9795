"""`lablink audit verify` on real files: a sound record passes; an altered payload, a
dropped tail, a forged checkpoint and a re-hashed history are each named, with the first bad
position, and exit 1; an export verifies on a fresh directory with only the public key."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from lablink.application import JobService
from lablink.audit.checkpoints import Checkpointer
from lablink.audit.note import Signer
from lablink.audit.signing_key import ensure_signer
from lablink.audit.verify import LogRecord, verify_record
from lablink.cli import app
from lablink.clock import ManualClock
from lablink.errors import AuditFailed, LabLinkError
from lablink.events import CheckpointSigned
from lablink.eventstore.chain import GENESIS, row_hash
from lablink.eventstore.sqlite import SQLiteEventStore
from lablink.handler import CommandHandler
from lablink.logstore import open_store
from tests.audit.conftest import JOB, T0, Lab
from tests.support.tamper import drop_triggers, tamper


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["audit", *args])
    return result.exit_code, result.stdout, result.stderr


def notes_in(store: SQLiteEventStore) -> list[str]:
    recorded = store.read_stream("audit")
    return [r.event.note for r in recorded if isinstance(r.event, CheckpointSigned)]


def published_file(lab: Lab, path: Path) -> Path:
    """The published checkpoints as `lablink audit checkpoints --out` saves them: here, the
    notes the checkpointer recorded (the bus's copy is tested in test_published.py)."""
    notes = [
        r.event.note
        for r in lab.store.read_stream("audit")
        if isinstance(r.event, CheckpointSigned)
    ]
    path.write_text("".join(json.dumps({"published_checkpoint": n}) + "\n" for n in notes))
    return path


def signed_lab(lab: Lab) -> None:
    """Three jobs' events, a checkpoint, two jobs more, a checkpoint: 17 events."""
    lab.work(3)
    lab.checkpoints.checkpoint(lab.clock.now())
    lab.work(2)
    lab.checkpoints.checkpoint(lab.clock.now())


def verify_dir(lab: Lab, *extra: str) -> tuple[int, str, str]:
    return run("verify", "--data-dir", str(lab.data_dir), "--no-bus", *extra)


def test_a_sound_record_verifies(lab: Lab, tmp_path: Path) -> None:
    signed_lab(lab)
    code, out, err = verify_dir(lab, "--checkpoints", str(published_file(lab, tmp_path / "p")))
    assert code == 0, err
    assert out.startswith(f"ok: 17 events of {lab.signer.name}, hash chain intact")
    assert "2 checkpoints in the log, 2 published checkpoints" in out
    assert "the latest checkpoint covers 16 events" in out


def test_one_altered_byte_is_named_by_its_position(lab: Lab) -> None:
    signed_lab(lab)
    tamper(
        lab.db, "UPDATE events SET payload = replace(payload, 'Job 1', 'Job 7') WHERE position = 4"
    )
    code, _, err = verify_dir(lab)
    assert code == 1
    assert err.startswith("lablink: position 4: altered: what is stored does not hash")


def test_a_dropped_tail_fails_against_the_published_checkpoint(lab: Lab, tmp_path: Path) -> None:
    signed_lab(lab)
    published = published_file(lab, tmp_path / "published.jsonl")
    # The last 10 events gone, the second checkpoint among them: the log alone is consistent.
    tamper(lab.db, "DELETE FROM events WHERE position > 7")
    assert verify_dir(lab)[0] == 0
    code, _, err = verify_dir(lab, "--checkpoints", str(published))
    assert code == 1
    assert err.strip() == (
        "lablink: position 8: truncated: a published checkpoint covers 16 events; the log ends"
        " at 7: positions 8..16 are gone"
    )


def test_a_checkpoint_signed_by_another_key_fails(lab: Lab) -> None:
    signed_lab(lab)
    forger = Signer(lab.signer.name, Ed25519PrivateKey.generate())
    size, head = lab.store.head()
    forged = CheckpointSigned(
        origin=forger.name, size=size, head=head.hex(), note=forger.sign(forger.name, size, head)
    )
    CommandHandler(lab.store, lab.clock).record("audit", [forged], "mallory")
    code, _, err = verify_dir(lab)
    assert code == 1
    assert err.startswith(
        f"lablink: position 18: bad signature: the checkpoint at position 18: signature: not"
        f" signed by {lab.signer.name} ({lab.signer.verifier.key_id.hex()})"
    )


def rehash(db: Path) -> None:
    """What a forger with the file but not the key does after editing: hash it all again."""
    conn = sqlite3.connect(db, isolation_level=None)
    drop_triggers(conn)
    rows = conn.execute(
        "SELECT position, event_id, stream_id, version, type, occurred_at, actor,"
        " correlation_id, payload, hash FROM events ORDER BY position"
    ).fetchall()
    previous = GENESIS
    for row in rows:
        previous = row_hash(previous, row)
        conn.execute("UPDATE events SET hash = ? WHERE position = ?", (previous, row[0]))
    conn.close()


def test_a_rewritten_and_rehashed_history_fails_at_the_checkpoint(lab: Lab) -> None:
    signed_lab(lab)
    tamper(lab.db, "UPDATE events SET actor = 'carol' WHERE position = 5")
    rehash(lab.db)
    code, _, err = verify_dir(lab)
    assert code == 1
    assert err.startswith("lablink: position 9: rewritten: the checkpoint at position 10 signed")
    assert "history up to position 9 was changed and hashed again" in err


def test_an_export_verifies_on_a_fresh_directory_with_only_the_public_key(
    lab: Lab, tmp_path: Path
) -> None:
    signed_lab(lab)
    export = tmp_path / "export.jsonl"
    code, _, err = run("export", str(export), "--no-bus", "--data-dir", str(lab.data_dir))
    assert code == 0, err
    assert f"17 events and 0 published checkpoints of {lab.signer.name}" in err
    code, pubkey, _ = run("pubkey", "--data-dir", str(lab.data_dir))
    assert code == 0
    auditor = tmp_path / "auditor"
    auditor.mkdir()
    (auditor / "lablink.pub").write_text(pubkey)
    published = published_file(lab, auditor / "published.jsonl")
    code, out, err = run(
        "verify",
        "--export",
        str(export),
        "--pubkey",
        str(auditor / "lablink.pub"),
        "--checkpoints",
        str(published),
        "--data-dir",
        str(auditor / "empty"),
    )
    assert code == 0, err
    assert out.startswith(f"ok: 17 events of {lab.signer.name}")
    # The same export, one payload changed in the file: named by position.
    lines = export.read_text().splitlines()
    item = json.loads(lines[5])
    item["payload"] = item["payload"] + " "
    lines[5] = json.dumps(item)
    export.write_text("\n".join(lines) + "\n")
    code, _, err = run(
        "verify", "--export", str(export), "--pubkey", pubkey.strip(), "--data-dir", str(auditor)
    )
    assert code == 1
    assert err.startswith(f"lablink: position {item['position']}: altered")


def test_verify_without_a_key_says_how_to_get_one(tmp_path: Path) -> None:
    code, _, err = run("verify", "--no-bus", "--data-dir", str(tmp_path / "nowhere"))
    assert code == 2
    assert "no checkpoint signing key" in err


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.sampled_from(["create", "pause", "resume", "checkpoint", "later"]), max_size=30))
def test_any_sequence_of_commands_with_checkpoints_anywhere_verifies_clean(
    tmp_path_factory: pytest.TempPathFactory, steps: list[str]
) -> None:
    data_dir = tmp_path_factory.mktemp("prop")
    clock = ManualClock(T0)
    store = open_store(data_dir / "scheduler.db")
    signer = ensure_signer(data_dir)
    checkpoints = Checkpointer(store, clock, signer, every_events=3)
    service = JobService(store, clock)
    jobs: list[str] = []
    try:
        for step in steps:
            if step == "create" or not jobs:
                jobs.append(service.create_job({**JOB, "name": f"J{len(jobs)}"}, actor="a"))
            elif step == "pause":
                with contextlib.suppress(LabLinkError):  # already paused
                    service.pause_job(jobs[-1], actor="a")
            elif step == "resume":
                with contextlib.suppress(LabLinkError):  # not paused
                    service.resume_job(jobs[-1], actor="a")
            elif step == "checkpoint":
                checkpoints.checkpoint(clock.now())
            else:
                clock.advance(timedelta(minutes=7))
        notes = [
            r.event.note
            for r in store.read_stream("audit")
            if isinstance(r.event, CheckpointSigned)
        ]
        verified = verify_record(LogRecord(store.conn), signer.verifier, notes)
        assert verified.events == store.last_position()
        assert verified.checkpoints == len(notes)
    finally:
        store.close()


def test_verify_record_raises_the_named_failure(lab: Lab) -> None:
    signed_lab(lab)
    tamper(lab.db, "DELETE FROM events WHERE position = 3")
    with pytest.raises(AuditFailed) as failed:
        verify_record(LogRecord(sqlite3.connect(lab.db)), lab.signer.verifier)
    assert (failed.value.position, failed.value.kind) == (3, "gap")
