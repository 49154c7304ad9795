"""`lablink serve` with notification channels, for the end-to-end tests: its data directory's
notifications.toml, a job that fails and raises an alarm, and the notification facts read
back from the log file while the server runs (or after it died)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tests.notify.conftest import SECRET
from tests.support.harness import read_rows
from tests.support.serve import Server, free_port

# The bus is not what these tests are about: off, the simulated bench runs in-process.
SETTINGS = {"LABLINK_NATS": "off", "LABLINK_AUTH": "off"}

# A capture a week long at 1 Sa/s passes the check at creation (only the scope's record
# length rules it out) and fails when it runs: a real failure, and with on_failure_alarm a
# real job_failure alarm (tests/e2e/test_e2e_serve.py).
FAILING: dict[str, Any] = {
    "name": "Week-long capture",
    "schedule_type": "acquisition",
    "equipment_id": "scope_1",
    "trigger_type": "interval",
    "interval_hours": 1,
    "parameters": {"duration": 604_800, "sample_rate": 1, "channels": [1]},
    "enabled": False,
    "on_failure_alarm": True,
}


def webhook_table(name: str, url: str, **options: Any) -> str:
    lines = [
        "[[channel]]",
        f'name = "{name}"',
        'kind = "webhook"',
        f'url = "{url}"',
        f'secret = "{SECRET}"',
    ]
    lines += [f"{key} = {json.dumps(value)}" for key, value in options.items()]
    return "\n".join(lines) + "\n"


def configure(data: Path, *tables: str) -> None:
    data.mkdir(parents=True, exist_ok=True)
    path = data / "notifications.toml"
    path.write_text("\n".join(tables))
    os.chmod(path, 0o600)


def serve(data: Path, servers: list[Server]) -> Server:
    server = Server(data, free_port(), SETTINGS)
    servers.append(server)
    server.listening()
    return server


def logged(data: Path, prefix: str) -> list[dict[str, Any]]:
    """The log's events whose type starts with ``prefix``, oldest first, payload decoded."""
    rows = read_rows(
        data / "scheduler.db",
        "SELECT position, stream_id, type, occurred_at, payload FROM events"
        " WHERE type LIKE ? ORDER BY position",
        prefix + "%",
    )
    for row in rows:
        row["payload"] = json.loads(row["payload"])
    return rows


def sent_keys(data: Path, channel: str | None = None) -> list[str]:
    """The idempotency keys of the log's notification.sent facts (of one channel)."""
    return [
        row["payload"]["idempotency_key"]
        for row in logged(data, "notification.sent")
        if channel is None or row["payload"]["channel"] == channel
    ]
