"""The benchmarks' job mix: interval acquisition jobs on 25 spectrometers, created as the API
would (validated by the domain), shared by the store and relay benchmarks so both measure
the same events."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from lablink.domain.requests import parse_job_request
from lablink.domain.validation import normalise
from lablink.events import JobCreated, NewEvent
from lablink.eventstore.base import AppendRequest

BASE_TIME = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
INTERVAL_SECONDS = 300


@dataclass(frozen=True, slots=True)
class Job:
    job_id: str
    equipment_id: str
    anchor: datetime
    created: NewEvent


def make_jobs(count: int) -> list[Job]:
    """Interval acquisition jobs, validated by the domain exactly as the API would."""
    stagger = INTERVAL_SECONDS * 0.8 / count
    jobs: list[Job] = []
    for index in range(count):
        job_id = f"job_{index:016x}"
        equipment_id = f"spectrometer-{index % 25:02d}"
        created_at = BASE_TIME + timedelta(seconds=index * stagger)
        request = parse_job_request(
            {
                "name": f"Absorbance scan {index:04d}",
                "description": "Periodic acquisition on a spectrometer (benchmark job).",
                "schedule_type": "acquisition",
                "equipment_id": equipment_id,
                "trigger_type": "interval",
                "interval_minutes": INTERVAL_SECONDS / 60,
                "parameters": {
                    "duration": 1.5,
                    "channels": [1, 2, 3, 4],
                    "sample_rate_hz": 10_000,
                    "gain": "auto",
                },
                "tags": ["bench", "absorbance"],
                "timezone": "Europe/Berlin",
            }
        )
        spec, anchor = normalise(request, now=created_at, default_timezone="UTC")
        created = JobCreated(
            job_id=job_id,
            spec=spec,
            enabled=True,
            created_by="user:bench",
            created_at=created_at,
            anchor=anchor,
        )
        jobs.append(
            Job(
                job_id=job_id,
                equipment_id=equipment_id,
                anchor=anchor,
                created=NewEvent(event=created, actor="user:bench", occurred_at=created_at),
            )
        )
    return jobs


def creations(jobs: Sequence[Job]) -> list[AppendRequest]:
    return [
        AppendRequest(stream_id=job.job_id, expected_version=0, events=[job.created])
        for job in jobs
    ]
