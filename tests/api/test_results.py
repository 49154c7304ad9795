"""GET /api/scheduler/jobs/{job_id}/results: a job's series from the results view, as JSON
pages or one CSV stream, through the real app over a real engine and SQLite file."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from lablink.clock import ManualClock
from lablink.keys import create_key
from tests.support.harness import Harness, api_client
from tests.support.series import (
    MEASUREMENT,
    STATE_CAPTURE,
    ScriptedExecutor,
    captured,
    fire,
    measured,
    voltage,
)

URL = "/api/scheduler/jobs/{}/results"


@pytest.fixture
async def measuring(tmp_path: Path, clock: ManualClock) -> AsyncIterator[Harness]:
    h = Harness(tmp_path / "data" / "scheduler.db", clock)
    h.executor = ScriptedExecutor(measured)
    await h.start()
    yield h
    await h.close()


def parsed(response: httpx.Response) -> list[dict[str, str]]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    return list(csv.DictReader(io.StringIO(response.text)))


async def test_a_hundred_fires_come_back_as_csv_equal_to_the_recorded_values(
    measuring: Harness,
) -> None:
    h = measuring
    job = h.service.create_job(MEASUREMENT, "alice")
    h.engine.plan(job)
    times = await fire(h, job, 100)
    async with api_client(h, auth=False) as client:
        response = await client.get(URL.format(job), params={"format": "csv"})
    rows = parsed(response)
    assert list(rows[0]) == [
        "scheduled_time",
        "started_at",
        "status",
        "value",
        "unit",
        "completed_at",
        "execution_id",
    ]
    assert [float(r["value"]) for r in rows] == [voltage(n) for n in range(100)]
    assert [r["scheduled_time"] for r in rows] == times
    assert {(r["status"], r["unit"]) for r in rows} == {("completed", "V")}
    assert "attachment" in response.headers["content-disposition"]


async def test_pages_by_cursor_return_every_point_once_in_order(measuring: Harness) -> None:
    h = measuring
    job = h.service.create_job(MEASUREMENT, "alice")
    h.engine.plan(job)
    times = await fire(h, job, 30)
    seen: list[dict[str, Any]] = []
    async with api_client(h, auth=False) as client:
        cursor = None
        pages = 0
        while True:
            params: dict[str, Any] = {"limit": 7}
            if cursor is not None:
                params["cursor"] = cursor
            answer = (await client.get(URL.format(job), params=params)).json()
            assert answer["success"] is True
            assert answer["count"] == len(answer["results"]) <= 7
            seen += answer["results"]
            pages += 1
            cursor = answer["next_cursor"]
            if cursor is None:
                break
        # The CSV pages the same way: limit, then the cursor from X-Next-Cursor.
        first = await client.get(URL.format(job), params={"format": "csv", "limit": 25})
        rest = await client.get(
            URL.format(job),
            params={"format": "csv", "cursor": first.headers["x-next-cursor"]},
        )
        assert "x-next-cursor" not in rest.headers
    assert pages == 5
    assert [p["scheduled_time"] for p in seen] == times
    assert [p["value"] for p in seen] == [voltage(n) for n in range(30)]
    assert seen[0]["unit"] == "V"
    assert seen[0]["kind"] == "measurement"
    assert seen[0]["late"] is False
    assert len({p["execution_id"] for p in seen}) == 30
    csv_times = [r["scheduled_time"] for r in parsed(first) + parsed(rest)]
    assert csv_times == times


async def test_since_and_until_bound_the_scheduled_time(measuring: Harness) -> None:
    h = measuring
    job = h.service.create_job(MEASUREMENT, "alice")
    h.engine.plan(job)
    times = await fire(h, job, 24)
    since = datetime.fromisoformat(times[5]).isoformat()
    until = datetime.fromisoformat(times[9]).isoformat()
    async with api_client(h, auth=False) as client:
        json_page = (
            await client.get(URL.format(job), params={"since": since, "until": until})
        ).json()
        csv_page = parsed(
            await client.get(
                URL.format(job), params={"since": since, "until": until, "format": "csv"}
            )
        )
        empty = parsed(
            await client.get(
                URL.format(job),
                params={"since": "2030-01-01T00:00:00Z", "format": "csv"},
            )
        )
    assert [p["scheduled_time"] for p in json_page["results"]] == times[5:9]
    assert [r["scheduled_time"] for r in csv_page] == times[5:9]
    assert empty == []


async def test_a_state_captures_fields_are_csv_columns(tmp_path: Path, clock: ManualClock) -> None:
    h = Harness(tmp_path / "data" / "scheduler.db", clock)
    h.executor = ScriptedExecutor(captured)
    await h.start()
    try:
        job = h.service.create_job(STATE_CAPTURE, "alice")
        h.engine.plan(job)
        await fire(h, job, 4)
        async with api_client(h, auth=False) as client:
            rows = parsed(await client.get(URL.format(job), params={"format": "csv"}))
            answer = (await client.get(URL.format(job))).json()
    finally:
        await h.close()
    assert list(rows[0]) == [
        "scheduled_time",
        "started_at",
        "status",
        "measurements.voltage [V]",
        "measurements.current [A]",
        "settings.voltage [V]",
        "settings.output",
        "completed_at",
        "execution_id",
    ]
    assert [float(r["measurements.voltage [V]"]) for r in rows] == [voltage(n) for n in range(4)]
    assert [r["settings.output"] for r in rows] == ["true", "false", "true", "false"]
    assert answer["results"][1]["fields"]["measurements.current"] == {"value": 0.001, "unit": "A"}


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"since": "yesterday"}, "since"),
        ({"until": "2026-03-02T10:00:00"}, "until"),
        ({"since": "2026-03-02T10:00:00Z", "until": "2026-03-02T09:00:00Z"}, "until"),
        ({"limit": 0}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"limit": 5000}, "limit"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"cursor": "WzEsMl0"}, "cursor"),  # [1,2]: JSON, not a cursor's shape
        ({"format": "xlsx"}, "format"),
        # No UTC instant: converting it would overflow (was a 500).
        ({"until": "9999-12-31T23:59:59-23:59"}, "until"),
        ({"since": "0001-01-01T00:00:00+14:00"}, "since"),
    ],
)
async def test_bad_parameters_are_400_naming_field_and_value(
    measuring: Harness, params: dict[str, Any], field: str
) -> None:
    job = measuring.service.create_job(MEASUREMENT, "alice")
    async with api_client(measuring, auth=False) as client:
        response = await client.get(URL.format(job), params=params)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["success"] is False
    assert field in body["detail"]
    assert any(field in str(e.get("field", "")) or field in str(e) for e in body["errors"])


async def test_an_unknown_job_is_404_naming_it(measuring: Harness) -> None:
    async with api_client(measuring, auth=False) as client:
        for fmt in ("json", "csv"):
            response = await client.get(URL.format("job_nope"), params={"format": fmt})
            assert response.status_code == 404
            assert "job_nope" in response.json()["detail"]


async def test_a_viewer_key_reads_results_and_no_key_is_refused(measuring: Harness) -> None:
    h = measuring
    job = h.service.create_job(MEASUREMENT, "alice")
    h.engine.plan(job)
    await fire(h, job, 2)
    _, secret = create_key(h.store, name="sheet", role="viewer", actor="t", now=h.clock.now())
    async with api_client(h, auth=True) as client:
        assert (await client.get(URL.format(job))).status_code == 401
        viewer = {"X-API-Key": secret}
        answer = await client.get(URL.format(job), params={"format": "csv"}, headers=viewer)
    assert len(parsed(answer)) == 2


@pytest.mark.slow
async def test_schemathesis_finds_no_server_error_in_results(
    client: httpx.AsyncClient, harness: Harness
) -> None:
    """The suite's schemathesis run (tests/api/test_api_fuzz.py), on this operation alone:
    its answers, JSON and CSV, fit the OpenAPI document, and nothing is a 5xx."""
    import asyncio

    import schemathesis

    from tests.api.test_api_fuzz import Findings, fuzz_operation, operations, seed, send

    document = (await client.get("/schema/openapi.json")).json()
    schema = schemathesis.openapi.from_dict(document, config=schemathesis.Config())
    loop = asyncio.get_running_loop()

    def call(kwargs: dict[str, Any]) -> httpx.Response:
        return asyncio.run_coroutine_threadsafe(send(client, kwargs), loop).result(timeout=60)

    findings = Findings()
    seeds = await seed(client, document)
    await harness.settle()
    (operation,) = [o for o in operations(schema) if o.path.endswith("/results")]
    await asyncio.to_thread(fuzz_operation, operation, seeds, call, findings)
    assert sum(sum(s.values()) for s in findings.statuses.values()) > 50
    assert not findings.examples, "\n\n" + findings.report()
