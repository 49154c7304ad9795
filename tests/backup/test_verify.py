"""`lablink verify` on real files: it passes on a sound data directory and names the first
discrepancy of each kind it looks for, in one line, with exit code 1."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lablink.backup.verify import verify
from lablink.cli import app
from lablink.errors import VerifyFailed
from tests.support.tamper import drop_triggers


def run_verify(data_dir: Path) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["verify", "--data-dir", str(data_dir), "--wait", "1"])
    return result.exit_code, result.output


def edit(db: Path, sql: str, *args: object) -> None:
    conn = sqlite3.connect(db)
    try:
        with conn:
            drop_triggers(conn)
            conn.execute(sql, args)
    finally:
        conn.close()


def test_a_sound_data_directory_passes(data_dir: Path) -> None:
    code, output = run_verify(data_dir)
    assert code == 0, output
    assert output.startswith("ok: 9 events, positions gap-free, 3 streams")
    assert "a replay up to position 9 equals the live views (18 tables, 18 rows)" in output


def test_a_gap_in_the_positions_is_the_first_discrepancy(data_dir: Path) -> None:
    edit(data_dir / "scheduler.db", "DELETE FROM events WHERE position = 4")
    code, output = run_verify(data_dir)
    assert code == 1
    assert output.strip().splitlines() == ["lablink: log position 4: gap: the log goes from 3 to 5"]


def test_a_hole_in_a_streams_versions_is_found(data_dir: Path) -> None:
    (stream, last) = (
        sqlite3.connect(data_dir / "scheduler.db")
        .execute(
            "SELECT stream_id, MAX(version) FROM events WHERE stream_id LIKE 'job_%'"
            " GROUP BY stream_id ORDER BY MIN(position) LIMIT 1"
        )
        .fetchone()
    )
    edit(
        data_dir / "scheduler.db",
        "UPDATE events SET version = version + 2 WHERE stream_id = ? AND version = ?",
        stream,
        last,
    )
    with pytest.raises(VerifyFailed) as failed:
        verify(data_dir, wait=1)
    assert failed.value.subject == f"stream {stream}"
    assert failed.value.detail.startswith(f"version {last + 2} at position")
    assert f"follows version {last - 1} (expected {last})" in failed.value.detail


def test_an_altered_view_row_is_named_by_table_and_key(data_dir: Path) -> None:
    (job_id,) = (
        sqlite3.connect(data_dir / "views.db")
        .execute("SELECT job_id FROM jobs WHERE name = 'Job 1'")
        .fetchone()
    )
    edit(data_dir / "views.db", "UPDATE jobs SET name = 'Tampered' WHERE job_id = ?", job_id)
    code, output = run_verify(data_dir)
    assert code == 1
    assert output.strip().splitlines() == [
        f"lablink: view jobs (job_id={job_id!r}): name is 'Tampered', a replay gives 'Job 1'"
    ]


def test_a_view_row_that_a_replay_does_not_make_is_found(data_dir: Path) -> None:
    edit(data_dir / "views.db", "DELETE FROM jobs WHERE name = 'Job 2'")
    with pytest.raises(VerifyFailed) as failed:
        verify(data_dir, wait=1)
    assert failed.value.subject.startswith("view jobs (job_id=")
    assert failed.value.detail == "in a replay, not in the views"


def test_a_corrupt_log_fails_the_integrity_check(data_dir: Path) -> None:
    db = data_dir / "scheduler.db"
    # Every page past the first (the schema) overwritten: the tables' pages are garbage.
    page = 4096
    damaged = bytearray(db.read_bytes())
    assert len(damaged) > 2 * page
    damaged[page:] = bytes([0x5A]) * (len(damaged) - page)
    db.write_bytes(bytes(damaged))
    code, output = run_verify(data_dir)
    assert code == 1
    (line,) = output.strip().splitlines()
    assert line == "lablink: log integrity_check: database disk image is malformed"


def test_a_missing_log_is_named(tmp_path: Path) -> None:
    code, output = run_verify(tmp_path / "nowhere")
    assert code == 1
    assert f"{tmp_path / 'nowhere' / 'scheduler.db'}: not a usable LabLink event log" in output


def test_an_altered_payload_is_named_by_its_position(data_dir: Path) -> None:
    edit(
        data_dir / "scheduler.db",
        "UPDATE events SET payload = payload || ' ' WHERE position = 2",
    )
    code, output = run_verify(data_dir)
    assert code == 1
    (line,) = output.strip().splitlines()
    assert line.startswith("lablink: log position 2: altered: what is stored does not hash")
