"""The issue's test: back up while 1 s jobs fire on a real `lablink serve`, restore into a
new directory, start `lablink serve` on it. Every event up to the backup's position is there,
`lablink verify` passes (beside the running source too), and the jobs fire again. The source
server also has LABLINK_BACKUP_DIR set: its daily copy is taken at start, and recorded."""

from __future__ import annotations

import re
import shutil
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from lablink.events import BackupTaken, decode_event
from lablink.eventstore.sqlite import LogReader
from tests.support.eventually import eventually_sync
from tests.support.serve import LABLINK, Server, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.nats, pytest.mark.slow]

EVERY_SECOND: dict[str, Any] = {
    "schedule_type": "measurement",
    "equipment_id": "power_supply_1",
    "trigger_type": "interval",
    "interval_seconds": 1,
    "parameters": {"command": "get_voltage"},
}


def lablink(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([LABLINK, *args], capture_output=True, text=True, timeout=120)


def log_rows(db: Path, up_to: int | None = None) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return list(LogReader(conn).read_rows(0, 10_000_000, up_to=up_to))
    finally:
        conn.close()


def completed_after(db: Path, position: int, job_ids: set[str]) -> set[str]:
    """The jobs with an execution completed past ``position``."""
    return {
        row[2]
        for row in log_rows(db)
        if row[0] > position and row[4] == "execution.completed" and row[2] in job_ids
    }


def test_backup_while_jobs_fire_restore_verify_and_fire_again(
    tmp_path: Path, servers: list[Server]
) -> None:
    source, daily = tmp_path / "source", tmp_path / "daily"
    first = Server(source, free_port(), {"LABLINK_BACKUP_DIR": str(daily)})
    servers.append(first)
    first.listening()
    key = (source / "admin.key").read_text().strip()
    auth = {"Authorization": f"Bearer {key}"}
    base = f"http://127.0.0.1:{first.port}"
    with httpx.Client(base_url=base, headers=auth, timeout=30) as client:
        job_ids = set()
        for name in ("Every second A", "Every second B"):
            created = client.post("/api/scheduler/jobs/create", json={**EVERY_SECOND, "name": name})
            assert created.status_code == 200, created.text
            job_ids.add(created.json()["job_id"])
    db = source / "scheduler.db"
    eventually_sync(lambda: completed_after(db, 0, job_ids) == job_ids)

    # The copy is taken while both jobs fire.
    copy = tmp_path / "copies" / "lablink.db"
    copy.parent.mkdir()
    backed = lablink("backup", str(copy), "--data-dir", str(source))
    assert backed.returncode == 0, backed.stderr
    (position,) = map(int, re.findall(r"position (\d+),", backed.stdout))
    # verify beside the running server: it reads only, and the views catch up to it.
    checked = lablink("verify", "--data-dir", str(source))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.startswith("ok: ")
    eventually_sync(lambda: completed_after(db, position, job_ids) == job_ids)
    # The scheduled copy of the start is recorded in the log, beside its file.
    taken = eventually_sync(lambda: [r for r in log_rows(db) if r[4] == "backup.taken"], until=bool)
    event = decode_event(taken[0][8])
    assert isinstance(event, BackupTaken)
    assert (daily / Path(event.file).name).is_file()
    first.terminate()
    assert first.proc.wait(timeout=60) == 0

    target = tmp_path / "restored"
    restored = lablink("restore", str(copy), "--data-dir", str(target))
    assert restored.returncode == 0, restored.stderr
    assert f"position {position}," in restored.stdout
    assert "checked" in restored.stdout
    # Every event up to the copy's position, as the source recorded it: nothing after.
    assert log_rows(target / "scheduler.db") == log_rows(db, up_to=position)
    verified = lablink("verify", "--data-dir", str(target))
    assert verified.returncode == 0, verified.stdout + verified.stderr

    # The admin keeps the key (its hash is in the log): the restored server accepts it.
    shutil.copy(source / "admin.key", target / "admin.key")
    second = Server(target, free_port())
    servers.append(second)
    second.listening()
    with httpx.Client(base_url=f"http://127.0.0.1:{second.port}", headers=auth, timeout=30) as c:
        jobs = c.get("/api/scheduler/jobs")
        assert jobs.status_code == 200, jobs.text
        assert {job["job_id"] for job in jobs.json()["jobs"]} == job_ids
    restored_db = target / "scheduler.db"
    eventually_sync(lambda: completed_after(restored_db, position, job_ids) == job_ids)
