"""The agent's memory of the executions it accepted, in its own small SQLite file.

A run command can arrive twice: the scheduler retries a request whose reply it lost, or
re-sends after a restart. The ledger makes the second one a no-op, so an instrument is never
driven twice for one execution, even across an agent restart. It also keeps each outcome
until JetStream has acknowledged its report, so a result produced while NATS was away is
published when it comes back.

Captures waiting for the object store are rows of ``uploads``, written in the same
transaction as their execution's outcome: an agent killed during an upload finds the row at
its next start and uploads again under the same object name (the ``nuid`` of the attempt
under way is recorded before its first chunk, with those of earlier attempts whose chunks
are not purged yet, so that no attempt's chunks are forgotten). A row leaves when the store
has the file and, for a result that said ``pending_upload``, the agent's report of it was
acknowledged; or, when the upload cannot ever succeed (the file is gone or changed:
``lost`` says why), once the agent's report of the loss was acknowledged.

Two things wait for the disk: an accept (and a refusal), before the instrument is touched;
and an outcome, before its report goes out. The reports stream (``LABLINK_REPORTS``) is
acknowledged by nats-server before its disk has a report, so the ledger is the durable copy
of every result a scheduler may be told of: a scheduler that starts again, or that finds
NATS back after an outage, asks the agent for what it did not record (``state``). Outcomes
are written with the accepts waiting at the time, in one commit (``commit``; ``Accepts``
lets an outcome wait a little for the next accept). The rest of the bookkeeping (a report
acknowledged, an upload's progress) commits at ``synchronous=NORMAL``: it survives the
agent's process dying at once (it is in the WAL), and reaches the disk with the next durable
commit, since the WAL is written and synced in order. A power cut can lose those marks,
never an accept or an outcome that was reported.

Report numbers are counted in memory, per execution: ``(boot - 1) << 32`` plus 1, 2, 3…,
where ``boot`` counts the ledger's openings (one write per start, not one per report). A
report number is never used twice for one execution, across restarts, so JetStream's
duplicate detection (keyed by it) drops only real duplicates.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator, Sequence
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
);
CREATE TABLE IF NOT EXISTS lease_epochs (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    highest INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS boots (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    boot INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS uploads (
    execution_id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL,
    equipment_id TEXT NOT NULL,
    path TEXT NOT NULL,
    object TEXT NOT NULL,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    headers TEXT NOT NULL,
    description TEXT NOT NULL,
    nuid TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    stored_at TEXT,
    lost TEXT
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


class PendingUpload(msgspec.Struct, frozen=True, kw_only=True):
    execution_id: str
    job_id: str
    equipment_id: str
    path: str
    object: str
    size: int
    sha256: str
    headers: dict[str, list[str]]
    description: str
    # The chunks of the attempts not purged yet (the one under way last; space-separated),
    # and how many attempts were made.
    nuid: str | None = None
    attempts: int = 0
    # When the store confirmed it (ISO 8601); None while it still has to go.
    stored_at: str | None = None
    # Why the upload can never succeed (its file is gone or changed); None while it may.
    lost: str | None = None
    # Whether the execution's result was acknowledged by JetStream.
    published: bool = False


_UPLOAD_COLUMNS = (
    "u.execution_id, u.job_id, u.equipment_id, u.path, u.object, u.size, u.sha256,"
    " u.headers, u.description, u.nuid, u.attempts, u.stored_at, e.published, u.lost"
)


class Ledger:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.executescript(_SCHEMA)
        columns = {row[1] for row in self._conn.execute("PRAGMA table_info(uploads)")}
        if "lost" not in columns:  # a ledger written before losses were reported
            self._conn.execute("ALTER TABLE uploads ADD COLUMN lost TEXT")
        self.boot = self._next_boot()
        # Only this ledger writes its file: the highest epoch seen is kept in memory too.
        self._highest_epoch = self._stored_epoch()
        # Bookkeeping commits skip the disk wait; accepts switch to FULL for their commit.
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._lock = threading.Lock()
        # Report numbers given in this boot, per execution still reporting (see the module).
        self._seqs: dict[str, int] = {}
        # The numbers have a lock of their own: ``next_seq`` runs on the agent's event loop,
        # and ``_lock`` is held across a durable commit (an accept's fsync): waiting for it
        # stalled the loop (py-spy at 1,000 executions/s: 2.5 % of the loop's time there).
        self._seq_lock = threading.Lock()
        self._uploading = {row[0] for row in self._conn.execute("SELECT execution_id FROM uploads")}

    def _next_boot(self) -> int:
        """Count this opening (durably, before any report number of it is given)."""
        row = self._conn.execute("SELECT boot FROM boots WHERE id = 1").fetchone()
        if row is not None:
            boot = int(row[0]) + 1
        else:
            # A ledger from before boots were counted numbered its reports on disk, from 1:
            # its next reports start past any number it gave.
            used = self._conn.execute("SELECT COALESCE(MAX(next_seq), 0) FROM executions")
            boot = 1 if used.fetchone()[0] == 0 else 2
        self._conn.execute("INSERT OR REPLACE INTO boots (id, boot) VALUES (1, ?)", (boot,))
        return boot

    @contextlib.contextmanager
    def _durable(self) -> Iterator[None]:
        """The statements inside commit only once they are on the disk (and with them
        everything committed before)."""
        self._conn.execute("PRAGMA synchronous=FULL")
        try:
            yield
        finally:
            self._conn.execute("PRAGMA synchronous=NORMAL")

    def highest_epoch(self) -> int:
        return self._highest_epoch

    def _stored_epoch(self) -> int:
        row = self._conn.execute("SELECT highest FROM lease_epochs WHERE id = 1").fetchone()
        return 0 if row is None else int(row[0])

    def epoch_is_new(self, epoch: int) -> bool:
        """Whether ``see_epoch(epoch)`` writes (and waits for the disk): only for an epoch
        higher than any seen. Otherwise it answers from memory, without a thread."""
        return epoch > self._highest_epoch

    def see_epoch(self, epoch: int) -> int | None:
        """A command's scheduler lease epoch (cluster mode): None if it may run (it is the
        highest seen, or higher, which is then kept, durably, across restarts), else the
        higher epoch seen. 0 (a single scheduler, no lease) is always accepted."""
        if epoch == 0:
            return None
        # Answered from memory unless the epoch is new: without ``_lock``, which an accept
        # holds across its fsync (the agent's loop asks this for every command).
        highest = self._highest_epoch
        if epoch <= highest:
            return highest if epoch < highest else None
        with self._lock:
            highest = self._highest_epoch
            if epoch < highest:  # a higher one was kept meanwhile
                return highest
            if epoch > highest:
                with self._durable():
                    self._conn.execute(
                        "INSERT OR REPLACE INTO lease_epochs (id, highest) VALUES (1, ?)",
                        (epoch,),
                    )
                self._highest_epoch = epoch
            return None

    def accept(self, execution_id: str, job_id: str, equipment_id: str) -> bool:
        """Record a run command, durably; False when this execution id was seen before."""
        return self.accept_many([(execution_id, job_id, equipment_id)])[0]

    def accept_many(self, commands: Sequence[tuple[str, str, str]]) -> list[bool]:
        """Record run commands (execution id, job id, equipment id) in one durable commit,
        one disk wait for all; for each, False when its execution id was seen before."""
        return self.commit(commands, ())

    def commit(
        self,
        commands: Sequence[tuple[str, str, str]],
        outcomes: Sequence[tuple[str, Outcome]],
    ) -> list[bool]:
        """Record run commands (execution id, job id, equipment id) and outcomes (execution
        id, outcome) in one durable commit, one disk wait for all; for each command, False
        when its execution id was seen before."""
        now = datetime.now(UTC).isoformat()
        fresh: list[bool] = []
        with self._lock, self._durable(), self._transaction():
            for execution_id, job_id, equipment_id in commands:
                cursor = self._conn.execute(
                    "INSERT OR IGNORE INTO executions"
                    " (execution_id, job_id, equipment_id, accepted_at) VALUES (?, ?, ?, ?)",
                    (execution_id, job_id, equipment_id, now),
                )
                fresh.append(cursor.rowcount == 1)
            for execution_id, outcome in outcomes:
                self._finish(execution_id, outcome)
        return fresh

    def refuse(self, execution_id: str, job_id: str, equipment_id: str, outcome: Outcome) -> bool:
        """Record a run command refused without running (accepted and finished at once, so
        that a restart has nothing to settle); False when this execution id was seen before."""
        now = datetime.now(UTC).isoformat()
        with self._lock, self._durable():
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
        """The next report number of ``execution_id``: unique for it across agent restarts
        (they key JetStream's duplicate detection), with no disk write (see the module)."""
        with self._seq_lock:
            count = self._seqs.get(execution_id, 0) + 1
            self._seqs[execution_id] = count
        return ((self.boot - 1) << 32) + count

    def finish(self, execution_id: str, outcome: Outcome) -> None:
        """The outcome, durably (alone: ``Accepts.finish`` shares an accept's commit)."""
        self.commit((), [(execution_id, outcome)])

    def _finish(self, execution_id: str, outcome: Outcome) -> None:
        self._conn.execute(
            "UPDATE executions SET finished_at = ?, outcome = ? WHERE execution_id = ?",
            (
                datetime.now(UTC).isoformat(),
                msgspec.json.encode(outcome).decode(),
                execution_id,
            ),
        )

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def finish_with_upload(
        self, execution_id: str, outcome: Outcome, upload: PendingUpload
    ) -> None:
        """The outcome of a capture and its pending upload, together (one durable commit)."""
        with self._lock, self._durable(), self._transaction():
            self._uploading.add(execution_id)
            self._finish(execution_id, outcome)
            self._conn.execute(
                "INSERT OR REPLACE INTO uploads (execution_id, job_id, equipment_id, path,"
                " object, size, sha256, headers, description) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    execution_id,
                    upload.job_id,
                    upload.equipment_id,
                    upload.path,
                    upload.object,
                    upload.size,
                    upload.sha256,
                    msgspec.json.encode(upload.headers).decode(),
                    upload.description,
                ),
            )

    def finish_stored(self, execution_id: str, outcome: Outcome) -> None:
        """The upload completed before the result went out: the outcome says ``stored`` and
        no later report is needed (one durable commit)."""
        with self._lock, self._durable(), self._transaction():
            self._uploading.discard(execution_id)
            self._finish(execution_id, outcome)
            self._conn.execute("DELETE FROM uploads WHERE execution_id = ?", (execution_id,))

    def upload_nuids(self, execution_id: str) -> list[str]:
        """The chunks' nuids of the attempts not purged yet (empty before the first)."""
        with self._lock:
            row = self._conn.execute(
                "SELECT nuid FROM uploads WHERE execution_id = ?", (execution_id,)
            ).fetchone()
        return str(row[0]).split() if row and row[0] else []

    def upload_attempt(self, execution_id: str, nuids: list[str]) -> None:
        """Record the chunks' nuids not purged yet, the new attempt's last, before its first
        chunk."""
        with self._lock:
            self._conn.execute(
                "UPDATE uploads SET nuid = ?, attempts = attempts + 1 WHERE execution_id = ?",
                (" ".join(nuids), execution_id),
            )

    def upload_lost(self, execution_id: str, reason: str) -> None:
        """The upload can never succeed: the row stays until the loss is reported."""
        with self._lock:
            self._conn.execute(
                "UPDATE uploads SET lost = ? WHERE execution_id = ?", (reason, execution_id)
            )

    def upload_stored(self, execution_id: str, stored_at: datetime) -> None:
        with self._lock:
            self._conn.execute(
                "UPDATE uploads SET stored_at = ? WHERE execution_id = ?",
                (stored_at.isoformat(), execution_id),
            )

    def upload_done(self, execution_id: str) -> None:
        with self._lock:
            self._conn.execute("DELETE FROM uploads WHERE execution_id = ?", (execution_id,))
            # Its last report went: no number of it is needed again in this boot.
            self._uploading.discard(execution_id)
            with self._seq_lock:
                self._seqs.pop(execution_id, None)

    def pending_uploads(self) -> list[PendingUpload]:
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {_UPLOAD_COLUMNS} FROM uploads u"
                " JOIN executions e USING (execution_id) ORDER BY e.finished_at"
            ).fetchall()
        return [
            PendingUpload(
                execution_id=r[0],
                job_id=r[1],
                equipment_id=r[2],
                path=r[3],
                object=r[4],
                size=r[5],
                sha256=r[6],
                headers=msgspec.json.decode(r[7], type=dict[str, list[str]]),
                description=r[8],
                nuid=r[9],
                attempts=r[10],
                stored_at=r[11],
                published=bool(r[12]),
                lost=r[13],
            )
            for r in rows
        ]

    def published(self, execution_id: str) -> None:
        self.published_many([execution_id])

    def published_many(self, execution_ids: Sequence[str]) -> None:
        """The results of ``execution_ids`` were acknowledged by JetStream (one commit)."""
        with self._lock, self._transaction():
            self._conn.executemany(
                "UPDATE executions SET published = 1 WHERE execution_id = ?",
                [(execution_id,) for execution_id in execution_ids],
            )
            with self._seq_lock:
                for execution_id in execution_ids:
                    if execution_id not in self._uploading:  # its upload has a report to make
                        self._seqs.pop(execution_id, None)

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
                "SELECT execution_id, job_id, equipment_id, outcome FROM executions"
                " WHERE finished_at IS NOT NULL AND published = 0"
            ).fetchall()
        return [
            Unpublished(eid, jid, qid, msgspec.json.decode(outcome, type=Outcome))
            for eid, jid, qid, outcome in rows
        ]

    def close(self) -> None:
        with self._lock:
            self._conn.close()
