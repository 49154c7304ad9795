"""The daily backup: days pass on a manual clock (the newest N kept, each copy recorded), a
copy that cannot be written (recorded, alarmed, tried again an hour later), and the loop on
the real clock under a supervisor."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from lablink.backup import checksum
from lablink.backup.restore import restore
from lablink.backup.schedule import NAME, ScheduledBackups
from lablink.backup.verify import verify
from lablink.clock import ManualClock, SystemClock
from lablink.events import AlarmRaised, BackupFailed, BackupTaken
from lablink.logstore import LogStore, open_store
from tests.backup.conftest import T0, make_data_dir
from tests.support.eventually import eventually
from tests.support.views import view_rows


@pytest.fixture
def store(tmp_path: Path) -> Iterator[LogStore]:
    make_data_dir(tmp_path / "data", jobs=1)
    opened = open_store(tmp_path / "data" / "scheduler.db")
    yield opened
    opened.close()


def copies(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_one_copy_a_day_the_newest_kept_each_recorded(store: LogStore, tmp_path: Path) -> None:
    clock = ManualClock(T0 + timedelta(days=1))
    daily = tmp_path / "backups"
    backups = ScheduledBackups(store, clock, daily, keep=3)
    assert backups.next_run(clock.now()) == clock.now()  # never taken: due at once
    taken = []
    for _ in range(5):
        made = backups.run_if_due()
        assert made is not None
        taken.append(made)
        clock.advance(timedelta(hours=23, minutes=59))
        assert backups.run_if_due() is None
        clock.advance(timedelta(minutes=1))
    names = [made.file.name for made in taken]
    assert all(NAME.fullmatch(name) for name in names)
    # Each copy holds the backups recorded before it: its name says how far.
    positions = [int(re.findall(r"-(\d+)\.db$", name)[0]) for name in names]
    assert positions == [made.position for made in taken]
    assert positions == sorted(positions)
    assert len(set(positions)) == 5
    assert copies(daily) == sorted([*names[2:], *(f"{n}.sha256" for n in names[2:])])
    for made in taken[2:]:
        assert checksum.check(made.file) == made.sha256
    recorded = [r for r in store.read_stream("backups")]
    events = [r.event for r in recorded]
    assert all(isinstance(e, BackupTaken) for e in events)
    assert [e.file for e in events] == [str(m.file) for m in taken]  # type: ignore[union-attr]
    assert [e.removed for e in events] == [[], [], [], [names[0]], [names[1]]]  # type: ignore[union-attr]
    assert [r.occurred_at for r in recorded] == [T0 + timedelta(days=d) for d in range(1, 6)]

    # A restart finds the last copy in the log: no second one the same day.
    again = ScheduledBackups(store, clock, daily, keep=3)
    assert again.next_run(clock.now()) == T0 + timedelta(days=6)

    # The newest copy restores, and the restored directory verifies.
    restored = restore(taken[-1].file, tmp_path / "restored")
    assert restored.position == taken[-1].position
    assert verify(tmp_path / "restored").views_position == taken[-1].position


def test_a_copy_that_cannot_be_written_is_recorded_with_an_alarm_and_retried_hourly(
    store: LogStore, tmp_path: Path
) -> None:
    # A directory under a regular file cannot be made, root or not.
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    clock = ManualClock(T0 + timedelta(days=1))
    backups = ScheduledBackups(store, clock, blocker / "backups", keep=3)
    with pytest.raises(OSError, match="Not a directory"):
        backups.run_if_due()
    failed_at = clock.now()
    facts = [r.event for r in store.read_stream("backups")]
    assert [type(e) for e in facts] == [BackupFailed, AlarmRaised]
    failure, alarm = facts
    assert isinstance(failure, BackupFailed)
    assert isinstance(alarm, AlarmRaised)
    assert "Not a directory" in failure.error
    assert failure.file.startswith(str(blocker / "backups" / "lablink-"))
    assert alarm.kind == "backup_failed"
    assert str(blocker / "backups") in alarm.message
    assert store.settled()
    (row,) = view_rows(store.path, "SELECT kind, state, message FROM alarms")
    assert (row["kind"], row["state"]) == ("backup_failed", "active")

    # Not again at once: an hour later.
    assert backups.next_run(clock.now()) == failed_at + timedelta(hours=1)
    clock.advance(timedelta(minutes=59))
    assert backups.run_if_due() is None
    # The directory can be made now: the copy that follows succeeds.
    blocker.unlink()
    clock.advance(timedelta(minutes=1))
    made = backups.run_if_due()
    assert made is not None
    assert made.file.parent == blocker / "backups"
    assert backups.next_run(clock.now()) == clock.now() + timedelta(days=1)


async def test_the_loop_on_the_real_clock_takes_a_due_copy(store: LogStore, tmp_path: Path) -> None:
    daily = tmp_path / "backups"
    backups = ScheduledBackups(store, SystemClock(), daily, keep=2)
    await backups.start()
    try:
        await eventually(lambda: [r.event for r in store.read_stream("backups")])
        (taken,) = [r.event for r in store.read_stream("backups")]
        assert isinstance(taken, BackupTaken)
        assert copies(daily) == sorted([Path(taken.file).name, f"{Path(taken.file).name}.sha256"])
        assert backups.iterations >= 1
    finally:
        await backups.aclose()
