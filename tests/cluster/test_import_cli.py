"""`lablink cluster import`'s refusals and interruptions, without a server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from lablink.cli import app
from lablink.datadir import DataDirLock
from tests.support.single_log import single_node_log

NOWHERE = {"LABLINK_NATS_URL": "nats://127.0.0.1:1"}


def test_a_data_directory_in_use_is_refused(tmp_path: Path) -> None:
    single_node_log(tmp_path / "scheduler.db", 3).close()
    held = DataDirLock(tmp_path).acquire()
    try:
        result = CliRunner().invoke(
            app, ["cluster", "import", "--data-dir", str(tmp_path)], env=NOWHERE
        )
    finally:
        held.release()
    assert result.exit_code == 2
    assert "stop `lablink serve` on it before importing" in result.output


def test_no_servers_is_a_usage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LABLINK_NATS_URL", raising=False)
    result = CliRunner().invoke(app, ["cluster", "import", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "LABLINK_NATS_URL" in result.output


def test_ctrl_c_says_how_to_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    single_node_log(tmp_path / "scheduler.db", 3).close()

    async def stopped(*args: Any, progress: Any, **kwargs: Any) -> None:
        progress(500, 1200)
        raise KeyboardInterrupt

    monkeypatch.setattr("lablink.cluster.commands.import_log", stopped)
    result = CliRunner().invoke(
        app, ["cluster", "import", "--data-dir", str(tmp_path)], env=NOWHERE
    )
    assert result.exit_code == 130
    assert "holds the log's first 500 events" in result.output
    assert f"--data-dir {tmp_path} --resume" in " ".join(result.output.split())
    # The lock was let go: a second import may start.
    DataDirLock(tmp_path).acquire().release()


def test_a_file_that_is_not_a_log_is_named(tmp_path: Path) -> None:
    (tmp_path / "scheduler.db").write_bytes(b"not a database at all, just some bytes" * 100)
    result = CliRunner().invoke(
        app, ["cluster", "import", "--data-dir", str(tmp_path)], env=NOWHERE
    )
    assert result.exit_code == 1
    assert "cannot read it as a log" in result.output
    assert "scheduler.db" in result.output


def test_a_missing_log_is_named(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["cluster", "import", "--data-dir", str(tmp_path)], env=NOWHERE
    )
    assert result.exit_code == 1
    assert "no such log" in result.output
