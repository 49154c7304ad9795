"""One write path: only the command handler (and the store itself) appends to the log.

Read from the syntax tree, not grepped: a call ``x.append_batch(...)``, a call ``x.append(...)``
with more than one argument (a list's append takes one, the store's and the group committer's
take a stream, a version and events), and any reference to a store's or committer's
``append``/``append_batch``/``submit`` (``write = store.append`` would hide the call).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from lablink.clock import ManualClock
from lablink.errors import JobVersionConflict, RecordingFailed, StreamVersionConflict
from lablink.events import AnyEvent, JobPaused
from lablink.eventstore import EventStore, MemoryEventStore, SQLiteEventStore
from lablink.eventstore.group_commit import GroupCommitter
from lablink.handler import CommandHandler, GroupCommitHandler
from lablink.repository import Repository

PACKAGE = Path(__file__).resolve().parents[1] / "lablink"
# The handler is the write path; the event store package is the log and its group committer.
# The store itself: the event stores, and the log store that is one (in cluster mode its
# appends go to the record it is the local copy of).
ALLOWED = ("handler.py", "eventstore/", "logstore.py")
WRITES = {"append", "append_batch", "submit"}
WRITERS = ("store", "committer")


def appends(source: str) -> list[tuple[int, str]]:
    """(line, code) of every append to a store or committer in ``source``, by line."""
    found: dict[int, str] = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            name = node.func.attr
            if name == "append_batch" or (name == "append" and len(node.args + node.keywords) > 1):
                found.setdefault(node.lineno, ast.unparse(node))
        elif (
            isinstance(node, ast.Attribute)
            and node.attr in WRITES
            and any(writer in ast.unparse(node.value).lower() for writer in WRITERS)
        ):
            found.setdefault(node.lineno, ast.unparse(node))
    return sorted(found.items())


def offenders(package: Path) -> list[str]:
    """Every append outside the handler and the store, as ``path:line: code``."""
    result: list[str] = []
    for path in sorted(package.rglob("*.py")):
        relative = path.relative_to(package).as_posix()
        if relative.startswith(ALLOWED):
            continue
        for line, code in appends(path.read_text(encoding="utf-8")):
            result.append(f"lablink/{relative}:{line}: {code}")
    return result


def test_nothing_but_the_handler_appends() -> None:
    assert offenders(PACKAGE) == []


def test_the_scan_sees_each_way_of_appending() -> None:
    source = """
store.append("job_1", 0, events)
self.store.append(stream, version, stamp(events, actor, now))
log.append_batch([request])
await self.committer.append(stream_id, ANY, events)
await committer.submit(request)
write = store.append
events.append(event)
self._pending.append((request, future))
"""
    assert [line for line, _ in appends(source)] == [2, 3, 4, 5, 6, 7]


def test_the_scan_reads_the_package() -> None:
    # A scan that found no files would pass the first test whatever the code did.
    assert len(list(PACKAGE.rglob("*.py"))) > 50
    assert (PACKAGE / "handler.py").exists()
    assert appends((PACKAGE / "handler.py").read_text(encoding="utf-8"))


# -- the handler's steps, over both stores and through the group committer -------------------

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def counter(store: EventStore) -> Repository[int]:
    """An aggregate that is the number of its events."""
    return Repository(store, initial=lambda _: 0, fold=lambda count, _: count + 1)


def pause(job_id: str) -> list[AnyEvent]:
    return [JobPaused(job_id=job_id)]


@pytest.fixture(params=["sqlite", "memory"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EventStore]:
    store: EventStore = (
        SQLiteEventStore(tmp_path / "events.db")
        if request.param == "sqlite"
        else MemoryEventStore()
    )
    yield store
    store.close()


def test_a_stale_version_reloads_and_decides_again(any_store: EventStore) -> None:
    handler = CommandHandler(any_store, ManualClock(T0))
    seen: list[int] = []

    def decide(count: int, at: datetime) -> list[AnyEvent]:
        seen.append(count)
        if len(seen) == 1:  # someone else writes between our load and our append
            handler.record("s", pause("s"), "other")
        return pause("s")

    handled = handler.handle(counter(any_store), "s", decide, "me")
    assert seen == [0, 1]
    assert (handled.before, handled.version, handled.state) == (1, 1, 2)
    assert [r.actor for r in any_store.read_stream("s")] == ["other", "me"]


def test_a_pinned_version_is_told_not_retried(any_store: EventStore) -> None:
    handler = CommandHandler(any_store, ManualClock(T0))
    handler.record("s", pause("s"), "other")

    def stale(expected: int, actual: int) -> Exception:
        return JobVersionConflict("s", expected, actual)

    with pytest.raises(JobVersionConflict) as told:
        handler.handle(
            counter(any_store), "s", lambda n, at: pause("s"), "me", expected_version=0, stale=stale
        )
    assert (told.value.expected, told.value.actual) == (0, 1)
    assert any_store.stream_version("s") == 1


def test_retries_run_out_with_a_version_conflict(any_store: EventStore) -> None:
    handler = CommandHandler(any_store, ManualClock(T0), retries=3)
    attempts: list[int] = []

    def decide(count: int, at: datetime) -> list[AnyEvent]:
        attempts.append(count)
        handler.record("s", pause("s"), "other")  # always one step ahead
        return pause("s")

    with pytest.raises(StreamVersionConflict) as lost:
        handler.handle(counter(any_store), "s", decide, "me")
    assert attempts == [0, 1, 2]
    assert (lost.value.stream_id, lost.value.expected) == ("s", 2)
    assert {r.actor for r in any_store.read_stream("s")} == {"other"}


async def test_the_group_commit_variant_takes_the_same_steps(tmp_path: Path) -> None:
    store = SQLiteEventStore(tmp_path / "events.db")
    clock = ManualClock(T0)
    outcomes: list[str] = []

    class Tracker:
        def written(self) -> None:
            outcomes.append("written")

        def failed(self, stream_id: str, error: BaseException) -> None:
            outcomes.append(f"failed {stream_id}")

    async with GroupCommitter(store) as committer:
        writer = GroupCommitHandler(committer, clock, retries=5)
        seen: list[int] = []

        def decide(count: int, at: datetime) -> list[AnyEvent]:
            seen.append(count)
            if len(seen) == 1:
                CommandHandler(store, clock).record("s", pause("s"), "other")
            return pause("s")

        handled = await writer.handle(counter(store), "s", decide, "me", tracker=Tracker())
        assert seen == [0, 1]
        assert handled.state == 2
        assert outcomes == ["written", "written"]  # the conflict, then the append
    # A log that refuses the write: RecordingFailed, and the tracker is told.
    with pytest.raises(RecordingFailed):
        await writer.handle(counter(store), "s", lambda n, at: pause("s"), "me", tracker=Tracker())
    assert outcomes[-1] == "failed s"
    assert store.stream_version("s") == 2
    store.close()
