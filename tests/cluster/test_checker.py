"""The cluster tests' checker (``tests/support/cluster_check.py``) finds what it is there to
find: a scheduled time fired twice, a due fire neither fired nor recorded, a fire inside a
missed window, an acknowledged job missing. A record of one interval job built by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from lablink.events import encode_event
from lablink.events.executions import ExecutionCoalesced, ExecutionMissed, ExecutionRequested
from lablink.events.jobs import JobCreated, JobSpec
from lablink.eventstore.base import format_instant
from tests.support.cluster_check import Acknowledged, Row, check

T0 = datetime(2026, 12, 6, 8, 0, tzinfo=UTC)
JOB = "job_1"


def created() -> Any:
    spec = JobSpec(
        name="every second",
        schedule_type="measurement",
        equipment_id="power_supply_1",
        trigger_type="interval",
        timezone="UTC",
        timeout_seconds=30,
        interval_seconds=1,
    )
    return JobCreated(job_id=JOB, spec=spec, enabled=True, created_by="t", created_at=T0, anchor=T0)


def fired(second: int, n: int) -> Any:
    at = T0 + timedelta(seconds=second)
    return ExecutionRequested(
        job_id=JOB,
        execution_id=f"exec_{n}",
        scheduled_time=at,
        actual_time=at,
        trigger_info="scheduled",
    )


def window(kind: type[Any], first: int, last: int, n: int) -> Any:
    start, end = T0 + timedelta(seconds=first), T0 + timedelta(seconds=last)
    common: dict[str, Any] = {
        "job_id": JOB,
        "execution_id": f"exec_{n}",
        "scheduled_time": end,
        "actual_time": end,
        "window_start": start,
        "window_end": end,
        "reason": "late",
    }
    if kind is ExecutionMissed:
        return ExecutionMissed(missed_count=last - first + 1, **common)
    return ExecutionCoalesced(
        coalesced_count=last - first + 1, into_execution_id=f"exec_{n + 1}", **common
    )


def record(*events: Any) -> list[Row]:
    return [
        (
            n,
            f"id{n}",
            JOB,
            type(e).__struct_config__.tag,
            format_instant(T0),
            encode_event(e).decode(),
        )
        for n, e in enumerate(events, start=1)
    ]


UNTIL = T0 + timedelta(seconds=5)


def test_a_record_with_every_due_fire_fired_or_in_a_window_holds() -> None:
    events = [created(), fired(1, 1), fired(2, 2), window(ExecutionCoalesced, 3, 4, 3)]
    events.append(fired(5, 5))
    checked = check(record(*events), {}, Acknowledged(jobs={JOB}), UNTIL)
    assert (checked.fires, checked.accounted, checked.in_windows) == (3, 5, 2)


def test_a_scheduled_time_fired_twice_is_found() -> None:
    events = [created(), *(fired(s, s) for s in range(1, 6)), fired(3, 9)]
    with pytest.raises(AssertionError, match="decided twice"):
        check(record(*events), {}, Acknowledged(), UNTIL)


def test_a_due_fire_neither_fired_nor_recorded_is_found() -> None:
    events = [created(), fired(1, 1), fired(2, 2), fired(4, 4), fired(5, 5)]
    with pytest.raises(AssertionError, match="neither started nor recorded"):
        check(record(*events), {}, Acknowledged(), UNTIL)


def test_a_fire_inside_a_missed_window_is_found() -> None:
    events = [created(), fired(1, 1), window(ExecutionMissed, 2, 4, 2), fired(3, 3), fired(5, 5)]
    with pytest.raises(AssertionError, match="fired and recorded missed"):
        check(record(*events), {}, Acknowledged(), UNTIL)


def test_an_acknowledged_job_missing_is_found() -> None:
    events = [created(), *(fired(s, s) for s in range(1, 6))]
    with pytest.raises(AssertionError, match="acknowledged jobs not in the record"):
        check(record(*events), {}, Acknowledged(jobs={JOB, "job_lost"}), UNTIL)
