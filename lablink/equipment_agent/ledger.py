"""The agent's memory of the executions it accepted, in its own small SQLite file.

A run command can arrive twice: the scheduler retries a request whose reply it lost, or
re-sends after a restart. The ledger makes the second one a no-op, so an instrument is never
driven twice for one execution, even across an agent restart. It also keeps each outcome
until JetStream has acknowledged its report, so a result produced while NATS was away is
published when it comes back.
"""

from __future__ import annotations

import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from lablink.instruments.execution import Outcome

_SCHEMA = """
CREATE TABLE IF NOT EXISTS executions (
    execution_id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL,
    equipment_id TEXT NOT NULL,
    accepted_at TEXT NOT NULL,
    finished_at TEXT,
    outcome TEXT,
    published INTEGER NOT NULL DEFAULT 0,
    next_seq INTEGER NOT NULL DEFAULT 0
)
"""


class Unfinished(msgspec.Struct, frozen=True):
    execution_id: str
    job_id: str
    equipment_id: str


class Unpublished(msgspec.Struct, frozen=True):
    execution_id: str
    job_id: str
    equipment_id: str
    outcome: Outcome
    seq: int


class Ledger:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute(_SCHEMA)
        self._lock = threading.Lock()

    def accept(self, execution_id: str, job_id: str, equipment_id: str) -> bool:
        """Record a run command; False when this execution id was seen before."""
        with self._lock:
            cursor = self._conn.execute(
                "INSERT OR IGNORE INTO executions (execution_id, job_id, equipment_id, accepted_at)"
                " VALUES (?, ?, ?, ?)",
                (execution_id, job_id, equipment_id, datetime.now(UTC).isoformat()),
            )
            return cursor.rowcount == 1

    def refuse(self, execution_id: str, job_id: str, equipment_id: str, outcome: Outcome) -> bool:
        """Record a run command refused without running (accepted and finished at once, so
        that a restart has nothing to settle); False when this execution id was seen before."""
        now = datetime.now(UTC).isoformat()
        with self._lock:
            cursor = self._conn.execute(
                "INSERT OR IGNORE INTO executions"
                " (execution_id, job_id, equipment_id, accepted_at, finished_at, outcome)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    execution_id,
                    job_id,
                    equipment_id,
                    now,
                    now,
                    msgspec.json.encode(outcome).decode(),
                ),
            )
            return cursor.rowcount == 1

    def next_seq(self, execution_id: str) -> int:
        """Report numbers per execution, unique across agent restarts (they key JetStream's
        duplicate detection)."""
        with self._lock:
            row = self._conn.execute(
                "UPDATE executions SET next_seq = next_seq + 1 WHERE execution_id = ?"
                " RETURNING next_seq",
                (execution_id,),
            ).fetchone()
            return int(row[0]) if row else 0

    def finish(self, execution_id: str, outcome: Outcome) -> None:
        with self._lock:
            self._conn.execute(
                "UPDATE executions SET finished_at = ?, outcome = ? WHERE execution_id = ?",
                (
                    datetime.now(UTC).isoformat(),
                    msgspec.json.encode(outcome).decode(),
                    execution_id,
                ),
            )

    def published(self, execution_id: str) -> None:
        with self._lock:
            self._conn.execute(
                "UPDATE executions SET published = 1 WHERE execution_id = ?", (execution_id,)
            )

    def state(self, execution_id: str) -> tuple[str, Outcome | None]:
        """("unknown" | "running" | "finished", the outcome when finished)."""
        with self._lock:
            row = self._conn.execute(
                "SELECT finished_at, outcome FROM executions WHERE execution_id = ?",
                (execution_id,),
            ).fetchone()
        if row is None:
            return "unknown", None
        if row[0] is None:
            return "running", None
        return "finished", msgspec.json.decode(row[1], type=Outcome)

    def unfinished(self) -> list[Unfinished]:
        """Executions accepted but never finished: the agent died under them."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT execution_id, job_id, equipment_id FROM executions"
                " WHERE finished_at IS NULL"
            ).fetchall()
        return [Unfinished(*row) for row in rows]

    def unpublished(self) -> list[Unpublished]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT execution_id, job_id, equipment_id, outcome, next_seq FROM executions"
                " WHERE finished_at IS NOT NULL AND published = 0"
            ).fetchall()
        return [
            Unpublished(eid, jid, qid, msgspec.json.decode(outcome, type=Outcome), seq)
            for eid, jid, qid, outcome, seq in rows
        ]

    def close(self) -> None:
        with self._lock:
            self._conn.close()
