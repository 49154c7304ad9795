"""The user's guide's own examples, run against the real app: the guide is the product contract.

Every JSON body of `seed/scheduled-operations-guide.md` is kept below as the literal text the
guide prints, ``//`` comments and all; the comments are stripped by code, not by hand, so a
reader can compare each body with the guide line by line. Snippets that show one feature only
(a job type without a trigger, a trigger without a job type, a policy, ...) are completed into
the smallest valid job by :func:`complete`, and nothing the guide wrote is changed.

The clock is the ManualClock of tests/conftest.py: now = 2026-03-02T09:00Z, a Monday, 10:00 in
Europe/Berlin (the harness's server zone, so the default zone of every job).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from lablink.clock import ManualClock
from lablink.instruments.execution import Outcome
from tests.support.harness import Harness, api_client

Client = httpx.AsyncClient
Body = dict[str, Any]

# (title in the guide, body exactly as the guide prints it)
GUIDE_BODIES: list[tuple[str, str]] = [
    (
        "Quick Start 1. Create a Simple Scheduled Job",
        """{
  "name": "Hourly Voltage Check",
  "description": "Measure output voltage every hour",
  "schedule_type": "measurement",
  "equipment_id": "power_supply_1",
  "trigger_type": "interval",
  "interval_hours": 1,
  "parameters": {
    "command": "get_voltage"
  },
  "enabled": true
}""",
    ),
    (
        "Quick Start 2. Create a Cron-based Job",
        """{
  "name": "Nightly Equipment Test",
  "schedule_type": "equipment_test",
  "equipment_id": "oscilloscope_1",
  "trigger_type": "daily",
  "time_of_day": "03:00:00",
  "parameters": {
    "test_name": "connection"
  },
  "on_failure_alarm": true
}""",
    ),
    (
        "Job Types 1. ACQUISITION",
        """{
  "schedule_type": "acquisition",
  "equipment_id": "oscilloscope_1",
  "parameters": {
    "duration": 60,
    "sample_rate": 1000,
    "channels": [1, 2]
  }
}""",
    ),
    (
        "Job Types 2. STATE_CAPTURE",
        """{
  "schedule_type": "state_capture",
  "equipment_id": "power_supply_1"
}""",
    ),
    (
        "Job Types 3. MEASUREMENT",
        """{
  "schedule_type": "measurement",
  "equipment_id": "multimeter_1",
  "parameters": {
    "command": "get_voltage"
  }
}""",
    ),
    (
        "Job Types 4. COMMAND",
        """{
  "schedule_type": "command",
  "equipment_id": "load_1",
  "parameters": {
    "command": "set_current",
    "parameters": {"value": 2.5}
  }
}""",
    ),
    (
        "Job Types 5. EQUIPMENT_TEST",
        """{
  "schedule_type": "equipment_test",
  "equipment_id": "power_supply_1",
  "parameters": {
    "test_name": "self_test"
  }
}""",
    ),
    (
        "Trigger Types: CRON",
        """{
  "trigger_type": "cron",
  "cron_expression": "0 */6 * * *"  // Every 6 hours
}""",
    ),
    (
        "Trigger Types: INTERVAL",
        """{
  "trigger_type": "interval",
  "interval_minutes": 30  // or interval_seconds, interval_hours, interval_days
}""",
    ),
    (
        "Trigger Types: DAILY",
        """{
  "trigger_type": "daily",
  "time_of_day": "14:30:00"
}""",
    ),
    (
        "Trigger Types: WEEKLY",
        """{
  "trigger_type": "weekly",
  "day_of_week": 1,  // 0=Monday, 6=Sunday
  "time_of_day": "09:00:00"
}""",
    ),
    (
        "Trigger Types: MONTHLY",
        """{
  "trigger_type": "monthly",
  "day_of_month": 15,
  "time_of_day": "12:00:00"
}""",
    ),
    (
        "Trigger Types: DATE",
        """{
  "trigger_type": "date",
  "run_date": "2025-12-25T10:00:00"
}""",
    ),
    (
        "Advanced Features 1. Skip Policy (default)",
        """{
  "conflict_policy": "skip"  // Skip if job already running
}""",
    ),
    (
        "Advanced Features 1. Queue Policy",
        """{
  "conflict_policy": "queue"  // Wait for current execution to finish
}""",
    ),
    (
        "Advanced Features 1. Replace Policy",
        """{
  "conflict_policy": "replace"  // Allow concurrent executions (uses max_instances)
}""",
    ),
    (
        "Advanced Features 2. Equipment Profile Integration",
        """{
  "schedule_type": "acquisition",
  "equipment_id": "oscilloscope_1",
  "profile_id": "high_resolution_profile",
  "parameters": {
    "duration": 300
  }
}""",
    ),
    (
        "Advanced Features 3. Alarm Integration",
        """{
  "name": "Critical Measurement",
  "schedule_type": "measurement",
  "equipment_id": "sensor_1",
  "on_failure_alarm": true  // Create alarm if job fails
}""",
    ),
    (
        "Advanced Features 4. Execution Limits",
        """{
  "name": "One-time Daily Test",
  "trigger_type": "daily",
  "time_of_day": "09:00:00",
  "max_executions": 30,  // Stop after 30 runs
  "start_date": "2025-11-01T00:00:00",
  "end_date": "2025-12-01T00:00:00"
}""",
    ),
    (
        "Best Practices 4. Resource Management",
        """{
  "max_instances": 1,  // Prevent concurrent runs
  "misfire_grace_time": 300,  // 5 minutes grace for missed runs
  "coalesce": true  // Combine missed runs into one
}""",
    ),
    (
        "Example 1: Automated Nightly Backup",
        """{
  "name": "Nightly Equipment State Backup",
  "schedule_type": "state_capture",
  "equipment_id": "power_supply_1",
  "trigger_type": "daily",
  "time_of_day": "02:00:00",
  "on_failure_alarm": true,
  "tags": ["backup", "critical"]
}""",
    ),
    (
        "Example 2: Periodic Equipment Health Check",
        """{
  "name": "4-Hour Equipment Health Check",
  "schedule_type": "equipment_test",
  "equipment_id": "oscilloscope_1",
  "trigger_type": "interval",
  "interval_hours": 4,
  "parameters": {
    "test_name": "connection"
  },
  "conflict_policy": "skip",
  "on_failure_alarm": true
}""",
    ),
    (
        "Example 3: Scheduled Acquisition with Profile",
        """{
  "name": "Weekly High-Resolution Waveform Capture",
  "schedule_type": "acquisition",
  "equipment_id": "scope_1",
  "profile_id": "high_res_1GS",
  "trigger_type": "weekly",
  "day_of_week": 1,
  "time_of_day": "08:00:00",
  "parameters": {
    "duration": 600,
    "sample_rate": 1000000,
    "channels": [1, 2, 3, 4]
  },
  "on_failure_alarm": true,
  "tags": ["weekly-report", "high-priority"]
}""",
    ),
    (
        "Example 4: Business Hours Monitoring",
        """{
  "name": "Business Hours Load Testing",
  "schedule_type": "command",
  "equipment_id": "load_1",
  "trigger_type": "cron",
  "cron_expression": "0 9-17 * * 1-5",  // 9 AM - 5 PM, Mon-Fri
  "parameters": {
    "command": "run_load_test",
    "parameters": {"duration": 60, "current": 5.0}
  },
  "conflict_policy": "queue"
}""",
    ),
    (
        "Integration: With Alarms",
        """{
  "on_failure_alarm": true
}""",
    ),
    (
        "Integration: With Profiles",
        """{
  "profile_id": "profile_name"
}""",
    ),
    (
        "Integration: With Acquisition System",
        """{
  "schedule_type": "acquisition",
  "parameters": {
    "duration": 300,
    "format": "csv"
  }
}""",
    ),
]
GUIDE = dict(GUIDE_BODIES)

# Bodies whose dates the calendar has overtaken: refused as written, accepted once moved.
PAST_DATED = ("Trigger Types: DATE", "Advanced Features 4. Execution Limits")
# Bodies naming a profile the embedded bench ships (the guide's "With Profiles" snippet names
# a placeholder, profile_name, that no bench has).
SHIPPED_PROFILE = (
    "Advanced Features 2. Equipment Profile Integration",
    "Example 3: Scheduled Acquisition with Profile",
)
ACCEPTED_AS_WRITTEN = [title for title, _ in GUIDE_BODIES if title not in PAST_DATED]

# The first fire the guide's words promise for each body, from Monday 2026-03-02 10:00 Berlin.
NEXT_RUN = {
    "Quick Start 2. Create a Cron-based Job": "2026-03-03T03:00:00+01:00",  # daily 03:00
    "Trigger Types: CRON": "2026-03-02T12:00:00+01:00",  # 0 */6: 00, 06, 12, 18
    "Trigger Types: INTERVAL": "2026-03-02T10:30:00+01:00",  # 30 minutes after creation
    "Trigger Types: DAILY": "2026-03-02T14:30:00+01:00",  # today, still ahead
    "Trigger Types: WEEKLY": "2026-03-03T09:00:00+01:00",  # 1 = Tuesday
    "Trigger Types: MONTHLY": "2026-03-15T12:00:00+01:00",
    "Example 1: Automated Nightly Backup": "2026-03-03T02:00:00+01:00",
    "Example 2: Periodic Equipment Health Check": "2026-03-02T14:00:00+01:00",  # 4 h
    "Example 3: Scheduled Acquisition with Profile": "2026-03-03T08:00:00+01:00",  # Tuesday
    "Example 4: Business Hours Monitoring": "2026-03-02T11:00:00+01:00",  # next full hour
}
HOURLY_FILL = "2026-03-02T11:00:00+01:00"  # the interval_hours 1 trigger complete() adds

DATE_FIELDS = ("run_date", "start_date", "end_date")


def strip_comments(text: str) -> str:
    """Remove ``// ...`` to the end of each line, outside JSON strings."""
    lines = []
    for line in text.splitlines():
        in_string = escaped = False
        for index, char in enumerate(line):
            if in_string:
                if escaped:
                    escaped = False
                elif char == "\\":
                    escaped = True
                elif char == '"':
                    in_string = False
            elif char == '"':
                in_string = True
            elif line.startswith("//", index):
                line = line[:index].rstrip()
                break
        lines.append(line)
    return "\n".join(lines)


def guide_body(title: str) -> Body:
    body = json.loads(strip_comments(GUIDE[title]))
    assert isinstance(body, dict)
    return body


def complete(title: str, body: Body) -> Body:
    """The smallest valid job around a snippet: a name, a measurement job, an hourly trigger,
    each added only where the guide's snippet leaves it out."""
    job = dict(body)
    job.setdefault("name", f"Guide: {title}")
    job.setdefault("schedule_type", "measurement")
    job.setdefault(
        "equipment_id",
        "oscilloscope_1" if job["schedule_type"] == "acquisition" else "multimeter_1",
    )
    if "trigger_type" not in job:
        job.update(trigger_type="interval", interval_hours=1)
    return job


def two_years_later(value: str) -> str:
    moved = datetime.fromisoformat(value)
    return moved.replace(year=moved.year + 2).isoformat()


def assert_fields_as_sent(sent: Body, job: Body) -> None:
    zone = ZoneInfo(job["timezone"])
    for field, value in sent.items():
        if field in DATE_FIELDS:
            expected = datetime.fromisoformat(value)
            if expected.tzinfo is None:  # wall-clock time in the job's zone (DESIGN.md)
                expected = expected.replace(tzinfo=zone)
            assert datetime.fromisoformat(job[field]) == expected, field
        else:
            assert job[field] == value, (field, job[field], value)


async def create(client: Client, body: Body) -> str:
    response = await client.post("/api/scheduler/jobs/create", json=body)
    assert response.status_code == 200, response.text
    payload = response.json()
    assert payload["success"] is True
    assert payload["job_id"].startswith("job_")
    assert isinstance(payload["message"], str)
    return str(payload["job_id"])


async def get_job(client: Client, job_id: str) -> Body:
    response = await client.get(f"/api/scheduler/jobs/{job_id}")
    assert response.status_code == 200, response.text
    assert response.json()["success"] is True
    job: Body = response.json()["job"]
    return job


async def job_count(client: Client) -> int:
    count: int = (await client.get("/api/scheduler/jobs")).json()["count"]
    return count


def test_the_bodies_are_the_guides_with_comments_stripped() -> None:
    assert len(GUIDE) == len(GUIDE_BODIES)  # no title twice
    with_comments = [title for title, text in GUIDE_BODIES if "//" in text]
    assert len(with_comments) == 10
    for title, _ in GUIDE_BODIES:
        assert "//" not in strip_comments(GUIDE[title])
    assert guide_body("Trigger Types: CRON") == {
        "trigger_type": "cron",
        "cron_expression": "0 */6 * * *",
    }
    assert guide_body("Best Practices 4. Resource Management") == {
        "max_instances": 1,
        "misfire_grace_time": 300,
        "coalesce": True,
    }
    assert strip_comments('{"a": "x // not a comment"} // a comment') == (
        '{"a": "x // not a comment"}'
    )


@pytest.mark.parametrize("title", ACCEPTED_AS_WRITTEN)
async def test_guide_body_is_accepted_and_read_back_as_sent(client: Client, title: str) -> None:
    body = complete(title, guide_body(title))
    job_id = await create(client, body)
    job = await get_job(client, job_id)
    assert job["job_id"] == job_id
    assert_fields_as_sent(body, job)
    assert job["enabled"] is True
    assert job["status"] == "active"
    assert job["next_run_time"] == NEXT_RUN.get(title, HOURLY_FILL)
    assert job["version"] == 1
    assert job["created_by"] == "local"
    listed = (await client.get("/api/scheduler/jobs")).json()
    assert [j["job_id"] for j in listed["jobs"]] == [job_id]


async def test_guide_defaults_are_the_documented_ones(client: Client) -> None:
    """A body that names none of them gets the guide's defaults (skip policy, one instance,
    300 s grace, coalesce on, no alarm) - DESIGN.md's list of job fields."""
    title = "Job Types 2. STATE_CAPTURE"
    job = await get_job(client, await create(client, complete(title, guide_body(title))))
    assert job["conflict_policy"] == "skip"
    assert job["max_instances"] == 1
    assert job["misfire_grace_time"] == 300
    assert job["coalesce"] is True
    assert job["on_failure_alarm"] is False
    assert job["parameters"] == {}
    assert job["tags"] == []
    assert job["timezone"] == "Europe/Berlin"


@pytest.mark.parametrize(
    ("field", "next_run"),
    [
        ("interval_seconds", "2026-03-02T10:00:30+01:00"),
        ("interval_minutes", "2026-03-02T10:30:00+01:00"),
        ("interval_hours", "2026-03-03T16:00:00+01:00"),
        # Elapsed time, across the 29 March DST change: 09:00Z + 30 days = 11:00 CEST.
        ("interval_days", "2026-04-01T11:00:00+02:00"),
    ],
)
async def test_interval_alternatives_named_in_the_guides_comment(
    client: Client, field: str, next_run: str
) -> None:
    """'interval_minutes: 30  // or interval_seconds, interval_hours, interval_days'."""
    title = "Trigger Types: INTERVAL"
    body = guide_body(title)
    body[field] = body.pop("interval_minutes")
    sent = complete(title, body)
    job = await get_job(client, await create(client, sent))
    assert_fields_as_sent(sent, job)
    assert job["next_run_time"] == next_run


@pytest.mark.parametrize(
    ("expression", "next_run"),
    [
        ("0 * * * *", "2026-03-02T11:00:00+01:00"),  # Every hour
        ("0 0 * * *", "2026-03-03T00:00:00+01:00"),  # Daily at midnight
        ("*/15 * * * *", "2026-03-02T10:15:00+01:00"),  # Every 15 minutes
        ("0 9-17 * * 1-5", "2026-03-02T11:00:00+01:00"),  # 9 AM to 5 PM on weekdays
    ],
)
async def test_common_cron_patterns(client: Client, expression: str, next_run: str) -> None:
    """The guide's list of "Common cron patterns", each as the CRON snippet's expression."""
    title = "Trigger Types: CRON"
    sent = complete(title, {**guide_body(title), "cron_expression": expression})
    job = await get_job(client, await create(client, sent))
    assert job["cron_expression"] == expression
    assert job["next_run_time"] == next_run


async def test_weekdays_only_cron_skips_the_weekend(client: Client) -> None:
    """Example 4, '9 AM - 5 PM, Mon-Fri': Friday 17:00 is followed by Monday 09:00."""
    title = "Example 4: Business Hours Monitoring"
    job_id = await create(client, complete(title, guide_body(title)))
    runs = (
        await client.get(f"/api/scheduler/jobs/{job_id}/next-runs", params={"count": 50})
    ).json()["next_runs"]
    assert runs[0] == "2026-03-02T11:00:00+01:00"
    assert len(runs) == 50
    friday_last = runs.index("2026-03-06T17:00:00+01:00")
    assert runs[friday_last + 1] == "2026-03-09T09:00:00+01:00"
    assert all(datetime.fromisoformat(r).weekday() < 5 for r in runs)
    assert all(9 <= datetime.fromisoformat(r).hour <= 17 for r in runs)


async def test_date_example_refused_while_its_date_is_past_then_accepted(client: Client) -> None:
    """The guide's DATE example (2025-12-25T10:00:00) lies before "now" (2026-03-02): a
    one-time job that can never run is refused with the field and the value; two years on it
    is accepted and runs at that wall-clock time in the job's zone."""
    title = "Trigger Types: DATE"
    body = complete(title, guide_body(title))
    refused = await client.post("/api/scheduler/jobs/create", json=body)
    assert refused.status_code == 422, refused.text
    problem = refused.json()
    assert problem["success"] is False
    assert [(e["field"], e["value"]) for e in problem["errors"]] == [
        ("run_date", "2025-12-25T10:00:00")
    ]
    assert "past" in problem["errors"][0]["reason"]
    assert await job_count(client) == 0

    moved = {**body, "run_date": two_years_later(body["run_date"])}
    assert moved["run_date"] == "2027-12-25T10:00:00"
    job = await get_job(client, await create(client, moved))
    assert_fields_as_sent(moved, job)
    assert job["next_run_time"] == "2027-12-25T10:00:00+01:00"


async def test_execution_limits_example_refused_while_its_window_is_past_then_accepted(
    client: Client,
) -> None:
    """Execution Limits: start 2025-11-01, end 2025-12-01 - a window already over."""
    title = "Advanced Features 4. Execution Limits"
    body = complete(title, guide_body(title))
    refused = await client.post("/api/scheduler/jobs/create", json=body)
    assert refused.status_code == 422, refused.text
    errors = refused.json()["errors"]
    assert ("end_date", "2025-12-01T00:00:00") in [(e["field"], e["value"]) for e in errors]
    assert all(e["field"] in ("start_date", "end_date") for e in errors), errors
    assert all(e["reason"] for e in errors)
    assert await job_count(client) == 0

    moved = {
        **body,
        "start_date": two_years_later(body["start_date"]),
        "end_date": two_years_later(body["end_date"]),
    }
    job = await get_job(client, await create(client, moved))
    assert_fields_as_sent(moved, job)
    assert job["max_executions"] == 30
    assert job["next_run_time"] == "2027-11-01T09:00:00+01:00"
    runs = (
        await client.get(f"/api/scheduler/jobs/{job['job_id']}/next-runs", params={"count": 40})
    ).json()["next_runs"]
    # Daily at 09:00 from 1 to 30 November; 1 December 09:00 is past end_date 00:00.
    assert len(runs) == 30
    assert runs[-1] == "2027-11-30T09:00:00+01:00"


@pytest.mark.parametrize(
    ("title", "as_sent"),
    [
        ("Trigger Types: DATE", "run_date='2025-12-25T10:00:00'"),
        ("Advanced Features 4. Execution Limits", "end_date='2025-12-01T00:00:00'"),
    ],
)
async def test_refusal_sentence_shows_the_date_as_sent(
    client: Client, title: str, as_sent: str
) -> None:
    """``detail`` is the one sentence a person reads: it must quote the value as the client
    wrote it, not Python's ``datetime.datetime(2025, 12, 25, 10, 0)``."""
    refused = await client.post(
        "/api/scheduler/jobs/create", json=complete(title, guide_body(title))
    )
    assert refused.status_code == 422
    detail = refused.json()["detail"]
    assert "datetime.datetime(" not in detail, detail
    assert as_sent in detail, detail


@pytest.fixture
async def checked_client(tmp_path: Path, clock: ManualClock) -> AsyncIterator[Client]:
    """The app as `lablink serve` runs it: the shipped profiles loaded, profile_id checked,
    and job parameters checked against the simulated bench's drivers."""
    harness = await Harness(
        tmp_path / "data" / "scheduler.db", clock, profiles=True, instruments=True
    ).start()
    try:
        async with api_client(harness, auth=False) as test_client:
            yield test_client
    finally:
        await harness.close()


@pytest.mark.parametrize("title", SHIPPED_PROFILE)
async def test_profile_bodies_run_as_written_with_the_profile_check_on(
    checked_client: Client, title: str
) -> None:
    """The bench ships the oscilloscope profiles the guide's examples name, so they are
    accepted as written with the check on (the profile exists, and is for the oscilloscope
    kind the job's instrument is)."""
    body = complete(title, guide_body(title))
    job = await get_job(checked_client, await create(checked_client, body))
    assert job["profile_id"] == guide_body(title)["profile_id"]
    profile = (await checked_client.get(f"/api/profiles/{job['profile_id']}")).json()["profile"]
    assert profile["equipment_type"] == "oscilloscope"


async def test_the_placeholder_profile_name_is_a_422_naming_it(checked_client: Client) -> None:
    """The guide's "With Profiles" snippet names a placeholder, ``profile_name``: no such
    profile exists, so the answer is a 422 naming the field and the value, and nothing is
    created."""
    title = "Integration: With Profiles"
    response = await checked_client.post(
        "/api/scheduler/jobs/create", json=complete(title, guide_body(title))
    )
    assert response.status_code == 422, response.text
    (error,) = response.json()["errors"]
    assert error["field"] == "profile_id"
    assert error["value"] == "profile_name"
    assert "no such profile" in error["reason"]
    assert "profile_id='profile_name'" in response.json()["detail"]
    assert await job_count(checked_client) == 0


async def test_every_guide_body_passes_the_parameter_check(checked_client: Client) -> None:
    """Every job the guide shows runs on the simulated bench as written: its parameters pass
    the check against the instrument's driver (the placeholder profile aside)."""
    bodies = [t for t, _ in GUIDE_BODIES if t != "Integration: With Profiles"]
    for title in bodies:
        body = complete(title, guide_body(title))
        for field in DATE_FIELDS:
            if title in PAST_DATED and field in body:
                body[field] = two_years_later(body[field])
        job = await get_job(checked_client, await create(checked_client, body))
        assert job["parameters_check"] == "passed", title
    assert await job_count(checked_client) == len(bodies)


async def create_every_guide_body(client: Client) -> dict[str, str]:
    """Every body, the two past-dated ones moved two years on. Returns title -> job id."""
    created: dict[str, str] = {}
    for title, _ in GUIDE_BODIES:
        body = complete(title, guide_body(title))
        for field in DATE_FIELDS:
            if title in PAST_DATED and field in body:
                body[field] = two_years_later(body[field])
        created[title] = await create(client, body)
    return created


async def test_guide_get_examples_after_creating_every_body(
    client: Client, harness: Harness
) -> None:
    created = await create_every_guide_body(client)
    ids = set(created.values())
    paused = created["Job Types 3. MEASUREMENT"]
    assert (await client.post(f"/api/scheduler/jobs/{paused}/pause")).status_code == 200

    # GET /api/scheduler/jobs?enabled=true  (Monitoring Dashboard 1. Active Jobs)
    active = (await client.get("/api/scheduler/jobs", params={"enabled": "true"})).json()
    assert active["success"] is True
    assert active["count"] == len(active["jobs"]) == len(ids) - 1
    assert {j["job_id"] for j in active["jobs"]} == ids - {paused}
    assert all(j["enabled"] is True for j in active["jobs"])
    disabled = (await client.get("/api/scheduler/jobs", params={"enabled": "false"})).json()
    assert [j["job_id"] for j in disabled["jobs"]] == [paused]

    # Run three jobs now: one completes, one fails, one is still running.
    done_job = created["Quick Start 1. Create a Simple Scheduled Job"]
    failing_job = created["Example 2: Periodic Equipment Health Check"]
    busy_job = created["Example 4: Business Hours Monitoring"]
    done = (await client.post(f"/api/scheduler/jobs/{done_job}/run")).json()["execution_id"]
    await harness.settle()
    harness.executor.hold = True
    failing = (await client.post(f"/api/scheduler/jobs/{failing_job}/run")).json()["execution_id"]
    busy = (await client.post(f"/api/scheduler/jobs/{busy_job}/run")).json()["execution_id"]
    await harness.settle()
    harness.executor.release(
        failing, Outcome.failed("communication_error", "no answer to *IDN?", code=-113)
    )
    await harness.settle()

    # GET /api/scheduler/executions?job_id={job_id}&limit=100
    listed = (
        await client.get("/api/scheduler/executions", params={"job_id": done_job, "limit": 100})
    ).json()
    assert listed["success"] is True
    assert listed["count"] == 1
    (execution,) = listed["executions"]
    assert execution["execution_id"] == done
    assert execution["job_id"] == done_job
    assert execution["status"] == "completed"
    assert execution["trigger_info"] == "manual"
    single = (await client.get(f"/api/scheduler/executions/{done}")).json()
    assert single == {"success": True, "execution": execution}

    # GET /api/scheduler/executions (filter by status)  (Monitoring Dashboard 4. Recent Failures)
    failures = (await client.get("/api/scheduler/executions", params={"status": "failed"})).json()
    assert [e["execution_id"] for e in failures["executions"]] == [failing]
    assert failures["executions"][0]["error"]["type"] == "communication_error"
    assert failures["executions"][0]["error"]["message"] == "no answer to *IDN?"
    running_only = (
        await client.get("/api/scheduler/executions", params={"status": "running"})
    ).json()
    assert [e["execution_id"] for e in running_only["executions"]] == [busy]

    # GET /api/scheduler/jobs/{job_id}/history
    history = (await client.get(f"/api/scheduler/jobs/{failing_job}/history")).json()
    assert history["success"] is True
    record = history["history"]
    for key in (
        "job_id",
        "job_name",
        "total_executions",
        "successful",
        "failed",
        "cancelled",
        "average_duration",
        "last_execution",
        "last_status",
        "next_run",
    ):
        assert key in record, key
    assert record["job_id"] == failing_job
    assert record["job_name"] == "4-Hour Equipment Health Check"
    assert (record["total_executions"], record["successful"], record["failed"]) == (1, 0, 1)
    assert record["cancelled"] == 0
    assert record["last_status"] == "failed"
    assert record["last_execution"] is not None
    assert record["next_run"] == NEXT_RUN["Example 2: Periodic Equipment Health Check"]
    ok_history = (await client.get(f"/api/scheduler/jobs/{done_job}/history")).json()["history"]
    assert (ok_history["successful"], ok_history["last_status"]) == (1, "completed")
    assert ok_history["average_duration"] is not None

    # GET /api/scheduler/running  (Monitoring Dashboard 2. Running Jobs)
    running = (await client.get("/api/scheduler/running")).json()
    assert running == {"success": True, "count": 1, "running_jobs": [busy_job]}

    # GET /api/scheduler/statistics  (Monitoring Dashboard 3. Today's Stats)
    stats_body = (await client.get("/api/scheduler/statistics")).json()
    assert stats_body["success"] is True
    stats = stats_body["statistics"]
    assert stats["total_jobs"] == len(ids)
    assert stats["active_jobs"] == len(ids) - 1
    assert stats["disabled_jobs"] == 1
    assert stats["running_executions"] == 1
    assert stats["total_executions_today"] == 3
    assert stats["successful_today"] == 1
    assert stats["failed_today"] == 1
    jobs = (await client.get("/api/scheduler/jobs")).json()["jobs"]
    by_type: dict[str, int] = {}
    for job in jobs:
        by_type[job["schedule_type"]] = by_type.get(job["schedule_type"], 0) + 1
    assert stats["by_type"] == by_type
    upcoming = stats["upcoming_jobs"]
    assert len(upcoming) == 10  # "Upcoming jobs (next 10)"; more than 10 are scheduled
    assert all(set(u) == {"job_id", "job_name", "next_run"} for u in upcoming)
    fires = [datetime.fromisoformat(u["next_run"]) for u in upcoming]
    assert fires == sorted(fires)
    scheduled = sorted(
        datetime.fromisoformat(j["next_run_time"]) for j in jobs if j["next_run_time"]
    )
    assert fires == scheduled[:10]
    names = {j["job_id"]: j["name"] for j in jobs}
    assert all(u["job_name"] == names[u["job_id"]] for u in upcoming)
    assert paused not in {u["job_id"] for u in upcoming}

    harness.executor.release(busy)
    await harness.settle()
    assert (await client.get("/api/scheduler/running")).json()["count"] == 0


@pytest.mark.parametrize("enable", ["resume", "put"])
async def test_best_practice_testing_before_deploying(
    client: Client, harness: Harness, enable: str
) -> None:
    """Best Practices 5: create with enabled false, "Run Job Now", verify, enable."""
    title = "Quick Start 1. Create a Simple Scheduled Job"
    job_id = await create(client, {**guide_body(title), "enabled": False})  # 1.
    job = await get_job(client, job_id)
    assert (job["enabled"], job["next_run_time"]) == (False, None)

    run = await client.post(f"/api/scheduler/jobs/{job_id}/run")  # 2.
    assert run.status_code == 200, run.text
    assert run.json()["success"] is True
    execution_id = run.json()["execution_id"]
    await harness.settle()

    execution = (await client.get(f"/api/scheduler/executions/{execution_id}")).json()  # 3.
    assert execution["execution"]["status"] == "completed"
    assert execution["execution"]["trigger_info"] == "manual"
    assert execution["execution"]["result"] == {"value": 1.0, "unit": "V"}
    job = await get_job(client, job_id)
    assert job["next_run_time"] is None  # the test run moved no schedule
    assert job["execution_count"] == 0  # and counts toward no max_executions

    if enable == "resume":  # 4.
        enabled = await client.post(f"/api/scheduler/jobs/{job_id}/resume")
        assert enabled.json() == {"success": True, "message": f"job {job_id} resumed"}
    else:
        enabled = await client.put(f"/api/scheduler/jobs/{job_id}", json={"enabled": True})
        assert enabled.json()["success"] is True
    assert enabled.status_code == 200, enabled.text
    job = await get_job(client, job_id)
    assert job["enabled"] is True
    assert job["status"] == "active"
    assert job["next_run_time"] == "2026-03-02T11:00:00+01:00"  # one interval from now
