"""The agent's ledger keeps its guarantees with one disk wait per batch of accepts: a command
seen once is refused ever after (across a process killed at any point), and a report number
is never given twice for one execution, across restarts, though none is written to disk."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

from lablink.equipment_agent.accepts import Accepts
from lablink.equipment_agent.ledger import Ledger
from lablink.instruments.execution import Outcome

DONE = Outcome(status="completed", result={"value": 1.0})


def test_a_command_is_accepted_once_across_reopening(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "agent.db")
    assert ledger.accept_many([("e1", "j", "psu"), ("e2", "j", "psu"), ("e1", "j", "psu")]) == [
        True,
        True,
        False,  # the same command twice in one batch: the second is the duplicate
    ]
    ledger.close()
    again = Ledger(tmp_path / "agent.db")
    assert again.accept("e1", "j", "psu") is False
    assert again.accept("e3", "j", "psu") is True
    assert {u.execution_id for u in again.unfinished()} == {"e1", "e2", "e3"}


def test_report_numbers_start_at_one_and_never_repeat_after_a_restart(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "agent.db")
    ledger.accept("e1", "j", "psu")
    first = [ledger.next_seq("e1") for _ in range(3)]
    assert first == [1, 2, 3]
    ledger.close()
    seen = set(first)
    for _ in range(3):
        ledger = Ledger(tmp_path / "agent.db")
        numbers = [ledger.next_seq("e1") for _ in range(3)]
        assert len(set(numbers)) == 3
        assert not seen & set(numbers)
        seen |= set(numbers)
        ledger.close()


def test_a_ledger_that_numbered_reports_on_disk_continues_past_them(tmp_path: Path) -> None:
    path = tmp_path / "agent.db"
    Ledger(path).close()
    # As a ledger written before report numbers were counted in memory: no boot count, and
    # the numbers it gave in its column.
    conn = sqlite3.connect(path)
    conn.execute("DROP TABLE boots")
    conn.execute(
        "INSERT INTO executions (execution_id, job_id, equipment_id, accepted_at, next_seq)"
        " VALUES ('old', 'j', 'psu', '2026-01-01T00:00:00+00:00', 7)"
    )
    conn.commit()
    conn.close()
    ledger = Ledger(path)
    assert ledger.next_seq("old") > 7
    ledger.close()


KILLED = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from lablink.equipment_agent.ledger import Ledger
    from lablink.instruments.execution import Outcome

    ledger = Ledger(Path(sys.argv[1]))
    ledger.accept("done", "j", "psu")
    ledger.next_seq("done")
    ledger.finish("done", Outcome(status="completed", result={"value": 1.0}))
    ledger.published("done")
    ledger.accept("finished_unpublished", "j", "psu")
    ledger.finish("finished_unpublished", Outcome(status="completed", result={"value": 2.0}))
    ledger.accept("running", "j", "psu")
    print(ledger.next_seq("running"), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # between accept and finish
    """
)


def test_a_process_killed_between_accept_and_finish_loses_no_bookkeeping(
    tmp_path: Path,
) -> None:
    path = tmp_path / "agent.db"
    child = subprocess.run(
        [sys.executable, "-c", KILLED, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    given = int(child.stdout.strip())

    ledger = Ledger(path)
    # The bookkeeping committed without a disk wait (``published``) is there after the kill
    # too: a process dying does not lose the WAL (a power cut may; see the ledger's module).
    assert ledger.state("done") == ("finished", DONE)
    assert [u.execution_id for u in ledger.unfinished()] == ["running"]
    assert [u.execution_id for u in ledger.unpublished()] == ["finished_unpublished"]
    assert ledger.accept("running", "j", "psu") is False  # never driven twice
    assert ledger.next_seq("running") != given
    ledger.close()


async def test_accepts_arriving_together_share_a_commit_and_each_gets_its_answer(
    tmp_path: Path,
) -> None:
    ledger = Ledger(tmp_path / "agent.db")
    accepts = Accepts(ledger)
    batches: list[int] = []
    commit = ledger.commit

    def counting(
        commands: Sequence[tuple[str, str, str]], outcomes: Sequence[tuple[str, Outcome]]
    ) -> list[bool]:
        batches.append(len(commands))
        return commit(commands, outcomes)

    ledger.commit = counting  # type: ignore[method-assign]
    ids = [f"e{i}" for i in range(50)]
    answers = await asyncio.gather(*(accepts.accept(i, "j", "psu") for i in [*ids, "e0", "e1"]))
    assert answers == [True] * 50 + [False, False]
    assert sum(batches) == 52
    assert len(batches) < 52  # grouped: fewer commits than commands
    ledger.close()


async def test_a_ledger_that_cannot_write_fails_every_waiting_accept(tmp_path: Path) -> None:
    path = tmp_path / "agent.db"
    ledger = Ledger(path)
    # The same file, read-only under the ledger (as a remounted disk leaves it).
    ledger._conn.close()
    ledger._conn = sqlite3.connect(
        f"{path.as_uri()}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
    )
    accepts = Accepts(ledger)
    results = await asyncio.gather(
        *(accepts.accept(f"e{i}", "j", "psu") for i in range(5)), return_exceptions=True
    )
    assert all(isinstance(r, sqlite3.OperationalError) for r in results), results
    assert all("readonly" in str(r) for r in results)
    # Nothing half-written: the next accept of the same commands, on a writable ledger, is
    # their first.
    ledger.close()
    assert Ledger(path).accept_many([(f"e{i}", "j", "psu") for i in range(5)]) == [True] * 5


def test_the_highest_lease_epoch_holds_across_reopening_and_only_a_new_one_writes(
    tmp_path: Path,
) -> None:
    ledger = Ledger(tmp_path / "agent.db")
    assert not ledger.epoch_is_new(0)  # one scheduler, no lease: nothing to keep
    assert ledger.see_epoch(0) is None
    assert ledger.epoch_is_new(3)
    assert ledger.see_epoch(3) is None
    assert not ledger.epoch_is_new(3)
    assert ledger.see_epoch(2) == 3  # a former leader's command
    assert ledger.see_epoch(3) is None
    ledger.close()
    # Another process's view of the file: the epoch was written, not only remembered.
    with sqlite3.connect(tmp_path / "agent.db") as conn:
        assert conn.execute("SELECT highest FROM lease_epochs").fetchall() == [(3,)]
    again = Ledger(tmp_path / "agent.db")
    assert again.highest_epoch() == 3
    assert not again.epoch_is_new(3)
    assert again.see_epoch(2) == 3
    assert again.see_epoch(0) is None
    assert again.epoch_is_new(4)
    assert again.see_epoch(4) is None
    again.close()


def recorded_commits(
    ledger: Ledger,
) -> list[tuple[int, int]]:
    """(commands, outcomes) of each commit the ledger makes from now on."""
    calls: list[tuple[int, int]] = []
    commit = ledger.commit

    def counting(
        commands: Sequence[tuple[str, str, str]], outcomes: Sequence[tuple[str, Outcome]]
    ) -> list[bool]:
        calls.append((len(commands), len(outcomes)))
        return commit(commands, outcomes)

    ledger.commit = counting  # type: ignore[method-assign]
    return calls


class Ticks:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_an_outcome_waits_for_the_next_accept_and_goes_in_its_commit(
    tmp_path: Path,
) -> None:
    ledger = Ledger(tmp_path / "agent.db")
    ticks = Ticks()
    # No deadline within the test: only company ends the wait.
    accepts = Accepts(ledger, linger=3600, monotonic=ticks)
    await accepts.accept("e0", "j", "psu")
    ticks.now += 0.01  # commands 10 ms apart: busy
    await accepts.accept("e1", "j", "psu")
    commits = recorded_commits(ledger)
    finishing = asyncio.ensure_future(accepts.finish("e1", DONE))
    for _ in range(20):
        await asyncio.sleep(0)
    assert commits == []  # it waits
    assert not finishing.done()
    assert await accepts.accept("e2", "j", "psu") is True
    await asyncio.wait_for(finishing, 60)
    assert commits == [(1, 1)]  # one commit, one disk wait, for both
    assert ledger.state("e1") == ("finished", DONE)
    ledger.close()


async def test_an_outcome_with_no_accept_coming_is_written_at_its_deadline(
    tmp_path: Path,
) -> None:
    ledger = Ledger(tmp_path / "agent.db")
    accepts = Accepts(ledger, linger=0.05)  # the real clocks
    await accepts.accept("e0", "j", "psu")
    await accepts.accept("e1", "j", "psu")
    commits = recorded_commits(ledger)
    await asyncio.wait_for(accepts.finish("e1", DONE), 60)
    assert commits == [(0, 1)]
    assert ledger.state("e1") == ("finished", DONE)
    ledger.close()


async def test_an_outcome_is_written_at_once_when_commands_come_further_apart(
    tmp_path: Path,
) -> None:
    ledger = Ledger(tmp_path / "agent.db")
    ticks = Ticks()
    accepts = Accepts(ledger, linger=3600, monotonic=ticks)
    # The first command: nothing says another will come soon.
    await accepts.accept("e1", "j", "psu")
    await asyncio.wait_for(accepts.finish("e1", DONE), 60)
    ticks.now += 7200  # the next one two hours later: longer apart than the linger
    await accepts.accept("e2", "j", "psu")
    await asyncio.wait_for(accepts.finish("e2", DONE), 60)
    assert [ledger.state(e) for e in ("e1", "e2")] == [("finished", DONE)] * 2
    ledger.close()


async def test_closing_writes_the_outcomes_that_wait_at_once(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "agent.db")
    ticks = Ticks()
    accepts = Accepts(ledger, linger=3600, monotonic=ticks)
    await asyncio.gather(accepts.accept("e1", "j", "psu"), accepts.accept("e2", "j", "psu"))
    finishing = [asyncio.ensure_future(accepts.finish(e, DONE)) for e in ("e1", "e2")]
    await asyncio.sleep(0)
    await asyncio.wait_for(accepts.aclose(), 60)
    assert all(f.done() and f.exception() is None for f in finishing)
    assert [ledger.state(e) for e in ("e1", "e2")] == [("finished", DONE)] * 2
    ledger.close()


def test_an_outcome_commits_only_once_on_the_disk(tmp_path: Path) -> None:
    # Its report goes out after this returns, to a stream acknowledged before nats-server's
    # disk has it: the outcome must be synced (synchronous=FULL) by its commit.
    ledger = Ledger(tmp_path / "agent.db")
    ledger.accept("e1", "j", "psu")
    statements: list[str] = []
    ledger._conn.set_trace_callback(statements.append)
    ledger.finish("e1", DONE)
    ledger._conn.set_trace_callback(None)
    update = next(i for i, s in enumerate(statements) if s.startswith("UPDATE executions"))
    before = [s for s in statements[:update] if s.startswith("PRAGMA synchronous")]
    assert before[-1] == "PRAGMA synchronous=FULL", statements
    commit = next(i for i, s in enumerate(statements) if s == "COMMIT")
    assert update < commit
    assert "PRAGMA synchronous=NORMAL" not in statements[update:commit]
    ledger.close()
