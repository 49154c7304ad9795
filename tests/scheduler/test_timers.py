"""The timer queue: re-planning replaces a job's timer; dead entries do not pile up."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from lablink.scheduler.timers import TimerQueue

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def test_replanned_and_unplanned_fires_are_dropped() -> None:
    timers = TimerQueue()
    timers.plan_fire("job_a", T0 + timedelta(minutes=5))
    timers.plan_fire("job_a", T0 + timedelta(minutes=1))
    timers.plan_fire("job_b", T0 + timedelta(minutes=2))
    timers.plan_fire("job_b", None)
    assert timers.next_due() == T0 + timedelta(minutes=1)
    due = timers.pop_due(T0 + timedelta(minutes=10))
    assert [(t.job_id, t.when) for t in due] == [("job_a", T0 + timedelta(minutes=1))]
    assert len(timers) == 0


def test_ended_executions_timeouts_are_compacted_away() -> None:
    timers = TimerQueue()
    for n in range(5000):
        timers.add_timeout("job_a", f"exec_{n}", T0 + timedelta(seconds=n))
        timers.cancel_timeout(f"exec_{n}")
    assert len(timers._heap) < 2100
    timers.add_timeout("job_a", "exec_live", T0)
    assert [t.execution_id for t in timers.pop_due(T0 + timedelta(days=1))] == ["exec_live"]
