"""`lablink backup` and `lablink restore` on real SQLite files: the copy, its checksum, and
the refusals (an existing file, a non-empty directory, a checksum that does not match)."""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lablink.backup import checksum
from lablink.backup.restore import restore
from lablink.backup.snapshot import take
from lablink.backup.verify import verify
from lablink.cli import app
from lablink.errors import BackupExists, ChecksumMismatch, RestoreTargetNotEmpty
from lablink.eventstore.sqlite import LogReader
from lablink.projections.compare import first_difference, view_tables
from lablink.projections.runner import Projector
from tests.support.views import open_views


def log_rows(db: Path) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return list(LogReader(conn).read_rows(0, 1_000_000))
    finally:
        conn.close()


def test_a_backup_restored_holds_the_same_log_and_views_and_verifies(
    data_dir: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "copy.db"
    made = take(data_dir / "scheduler.db", copy)
    source = log_rows(data_dir / "scheduler.db")
    assert made.position == source[-1][0] == len(source)
    assert made.size == copy.stat().st_size
    # sha256sum's own format: the tool itself checks it, from the copy's directory.
    assert checksum.sidecar(copy).read_text() == f"{made.sha256}  copy.db\n"
    checked = subprocess.run(
        ["sha256sum", "-c", "copy.db.sha256"], cwd=tmp_path, capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # One self-contained file: no WAL to travel with it.
    assert not (tmp_path / "copy.db-wal").exists()
    assert copy.stat().st_mode & 0o777 == 0o600

    target = tmp_path / "restored" / "data"
    done = restore(copy, target)
    assert (done.position, done.sha256) == (made.position, made.sha256)
    assert log_rows(target / "scheduler.db") == source
    assert (target / "views.db").is_file()
    live, restored = open_views(data_dir / "scheduler.db"), open_views(target / "scheduler.db")
    try:
        assert first_difference(live, restored, view_tables(Projector())) is None
        assert restored.execute("SELECT COUNT(*) FROM jobs").fetchone() == (3,)
    finally:
        live.close()
        restored.close()
    report = verify(target)
    assert (report.log_position, report.views_position) == (made.position, made.position)
    assert target.stat().st_mode & 0o777 == 0o700


def test_backup_refuses_to_overwrite_a_file_unless_forced(data_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy.db"
    copy.write_text("an admin's precious file")
    with pytest.raises(BackupExists) as refused:
        take(data_dir / "scheduler.db", copy)
    assert refused.value.file == str(copy)
    assert copy.read_text() == "an admin's precious file"
    assert not checksum.sidecar(copy).exists()

    result = CliRunner().invoke(app, ["backup", str(copy), "--data-dir", str(data_dir)])
    assert result.exit_code == 1, result.output
    assert f"{copy}: the file exists; give --force" in result.output
    assert copy.read_text() == "an admin's precious file"

    forced = CliRunner().invoke(app, ["backup", str(copy), "--data-dir", str(data_dir), "--force"])
    assert forced.exit_code == 0, forced.output
    position = len(log_rows(data_dir / "scheduler.db"))
    assert f"position {position}," in forced.output
    assert log_rows(copy) == log_rows(data_dir / "scheduler.db")


def test_restore_refuses_a_non_empty_directory_naming_what_is_in_it(
    data_dir: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "copy.db"
    take(data_dir / "scheduler.db", copy)
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("keep me")
    with pytest.raises(RestoreTargetNotEmpty) as refused:
        restore(copy, occupied)
    assert refused.value.entries == ["notes.txt"]
    assert sorted(p.name for p in occupied.iterdir()) == ["notes.txt"]

    # A live data directory is refused the same way, through the command.
    result = CliRunner().invoke(app, ["restore", str(copy), "--data-dir", str(data_dir)])
    assert result.exit_code == 1, result.output
    assert f"{data_dir}: not empty" in result.output
    assert "scheduler.db" in result.output
    assert log_rows(data_dir / "scheduler.db") == log_rows(copy)


def test_restore_refuses_a_copy_whose_checksum_does_not_match(
    data_dir: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "copy.db"
    made = take(data_dir / "scheduler.db", copy)
    damaged = bytearray(copy.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    copy.write_bytes(bytes(damaged))
    target = tmp_path / "new"
    with pytest.raises(ChecksumMismatch) as refused:
        restore(copy, target)
    assert refused.value.expected == made.sha256
    assert refused.value.actual != made.sha256
    assert not target.exists()

    result = CliRunner().invoke(app, ["restore", str(copy), "--data-dir", str(target)])
    assert result.exit_code == 1, result.output
    assert f"{copy}.sha256 says {made.sha256}" in " ".join(result.output.split())
    assert not target.exists()
