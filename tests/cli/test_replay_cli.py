"""`lablink replay` rebuilds a log built by the tests, reports its rate, and --until works."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from lablink.application import JobService
from lablink.cli import app
from lablink.clock import ManualClock
from lablink.ids import SequentialIds
from lablink.logstore import open_store
from tests.support.views import views_db

BODY: dict[str, Any] = {
    "name": "Hourly Voltage Check",
    "schedule_type": "measurement",
    "equipment_id": "power_supply_1",
    "trigger_type": "interval",
    "interval_hours": 1,
    "parameters": {"command": "get_voltage"},
}


def jobs(path: Path) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT job_id, name, status, version FROM jobs ORDER BY 1").fetchall()
    finally:
        conn.close()


def build_log(db_path: Path, clock: ManualClock) -> list[str]:
    store = open_store(db_path)
    service = JobService(store, clock, default_timezone="UTC", ids=SequentialIds())
    first = service.create_job(BODY, actor="alice")
    clock.advance(timedelta(minutes=10))
    second = service.create_job({**BODY, "name": "Second"}, actor="alice")
    clock.advance(timedelta(minutes=10))
    service.pause_job(first, actor="bob")
    service.update_job(second, {"name": "Second, renamed"}, actor="bob")
    store.close()
    return [first, second]


def test_replay_in_place_reports_rate_and_restores_rows(db_path: Path, clock: ManualClock) -> None:
    build_log(db_path, clock)
    views = views_db(db_path)
    before = jobs(views)
    log_before = db_path.read_bytes()
    conn = sqlite3.connect(views)
    conn.execute("DELETE FROM jobs")  # damage the view; the log is intact
    conn.commit()
    conn.close()
    result = CliRunner().invoke(app, ["replay", "--db", str(db_path)])
    assert result.exit_code == 0, result.output
    assert re.search(r"replayed 4 events in [\d.]+ s \([\d,]+ events/s\)", result.output)
    assert str(views) in result.output.replace("\n", "")
    assert jobs(views) == before
    assert db_path.read_bytes() == log_before  # the log is only read


def test_replay_until_shows_the_past_in_another_file(db_path: Path, clock: ManualClock) -> None:
    start = clock.now()
    first, _ = build_log(db_path, clock)
    past = start + timedelta(minutes=5)
    output = db_path.parent / "then.db"
    result = CliRunner().invoke(
        app,
        ["replay", "--db", str(db_path), "--until", past.isoformat(), "--output", str(output)],
    )
    assert result.exit_code == 0, result.output
    assert jobs(output) == [(first, "Hourly Voltage Check", "active", 1)]
    assert len(jobs(views_db(db_path))) == 2  # the live views are untouched


def test_replay_refuses_a_bad_time_and_a_missing_database(tmp_path: Path) -> None:
    missing = CliRunner().invoke(app, ["replay", "--db", str(tmp_path / "nope.db")])
    assert missing.exit_code != 0
    assert "no database" in missing.output
    db = tmp_path / "x.db"
    open_store(db).close()
    bad = CliRunner().invoke(app, ["replay", "--db", str(db), "--until", "yesterday"])
    assert bad.exit_code != 0
    assert "ISO 8601" in bad.output


@pytest.mark.e2e
def test_console_script_is_installed(tmp_path: Path) -> None:
    lablink = Path(sys.executable).parent / "lablink"
    result = subprocess.run([str(lablink), "--help"], capture_output=True, text=True, check=False)
    assert result.returncode == 0
    assert "replay" in result.stdout
