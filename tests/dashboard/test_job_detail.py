"""The job detail page, in-process through the real app: the schedule in words for every
trigger, the next runs and history counts the API gives, executions with lateness, the
measurement chart against the results API, the buttons by role (and the server refusing a
viewer anyway), actions recorded with the signed-in key's name, and 404 pages."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from lablink.instruments.execution import Outcome
from tests.dashboard.test_session import csrf, new_key, sign_in
from tests.support.harness import Harness, api_client

QUICK_START = {
    "name": "Hourly Voltage Check",
    "description": "Measure output voltage every hour",
    "schedule_type": "measurement",
    "equipment_id": "power_supply_1",
    "trigger_type": "interval",
    "interval_hours": 1,
    "parameters": {"command": "get_voltage"},
    "enabled": True,
}

# One job per trigger type of the guide, and the words its page must show.
TRIGGERS: dict[str, tuple[dict[str, Any], str]] = {
    "interval": (
        {"trigger_type": "interval", "interval_minutes": 30, "start_date": "2026-03-02T10:00:00"},
        "every 30 min from 2026-03-02 10:00 Europe/Berlin",
    ),
    "daily": ({"trigger_type": "daily", "time_of_day": "14:30:00"}, "every day at 14:30"),
    "weekly": (
        {"trigger_type": "weekly", "day_of_week": 1, "time_of_day": "09:00:00"},
        "every Tuesday at 09:00 Europe/Berlin",
    ),
    "monthly": (
        {"trigger_type": "monthly", "day_of_month": 15, "time_of_day": "12:00:00"},
        "every month on the 15th at 12:00 Europe/Berlin",
    ),
    "date": (
        {"trigger_type": "date", "run_date": "2026-12-25T10:00:00"},
        "once at 2026-12-25 10:00 Europe/Berlin",
    ),
    "cron": (
        {"trigger_type": "cron", "cron_expression": "0 9-17 * * 1-5"},
        "cron 0 9-17 * * 1-5 (every hour from 09:00 to 17:00 Europe/Berlin on weekdays)",
    ),
}


@pytest.fixture
async def web(harness: Harness) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(harness, auth=True, dashboard=True) as client:
        yield client


async def signed_in_as(harness: Harness, web: httpx.AsyncClient, role: str) -> str:
    _, secret = new_key(harness, role, f"{role}-alice")
    answer = await sign_in(web, secret, "/")
    assert answer.status_code == 303, answer.text
    return secret


async def create(web: httpx.AsyncClient, secret: str, **fields: Any) -> str:
    base = dict(QUICK_START)
    if "trigger_type" in fields:
        del base["interval_hours"]
    body = {**base, **fields}
    answer = await web.post(
        "/api/scheduler/jobs/create", json=body, headers={"Authorization": f"Bearer {secret}"}
    )
    assert answer.status_code == 200, answer.text
    job_id: str = answer.json()["job_id"]
    return job_id


async def api(web: httpx.AsyncClient, secret: str, path: str) -> Any:
    answer = await web.get(path, headers={"Authorization": f"Bearer {secret}"})
    assert answer.status_code == 200, answer.text
    return answer.json()


def text_of(html: str) -> str:
    """The page's words without tags, whitespace collapsed."""
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


def rows(html: str) -> list[tuple[str, str]]:
    """(execution id, status) of each row of the executions table, in page order."""
    table = html.split('id="executions"', 1)[1].split("</table>", 1)[0]
    return re.findall(r'data-execution-id="([^"]+)" data-status="([^"]+)"', table)


@pytest.mark.parametrize("trigger", sorted(TRIGGERS))
async def test_each_trigger_is_told_in_words_with_the_apis_next_runs(
    harness: Harness, web: httpx.AsyncClient, trigger: str
) -> None:
    secret = await signed_in_as(harness, web, "operator")
    fields, words = TRIGGERS[trigger]
    job_id = await create(web, secret, name=f"{trigger} job", **fields)

    page = await web.get(f"/jobs/{job_id}")
    assert page.status_code == 200, page.text
    assert words in text_of(page.text)
    next_runs = (await api(web, secret, f"/api/scheduler/jobs/{job_id}/next-runs"))["next_runs"]
    listed = re.findall(
        r'<li><time datetime="([^"]+)"',
        page.text.split('id="next-runs"', 1)[1].split("</ol>", 1)[0],
    )
    assert listed == next_runs
    assert len(listed) == (1 if trigger == "date" else 10)


async def test_history_counts_and_executions_with_lateness_error_and_status(
    harness: Harness, web: httpx.AsyncClient
) -> None:
    secret = await signed_in_as(harness, web, "operator")
    job_id = await create(web, secret, enabled=False, conflict_policy="replace", max_instances=3)
    harness.executor.hold = True
    first = await harness.engine.run_now(job_id, actor="test")
    second = await harness.engine.run_now(job_id, actor="test")
    await harness.settle()
    harness.executor.release(first, Outcome.ok(value=12.5, unit="V"))
    harness.executor.fail(second, RuntimeError("instrument said no"))
    await harness.settle()
    third = await harness.engine.run_now(job_id, actor="test")
    await harness.settle()

    page = await web.get(f"/jobs/{job_id}")
    assert page.status_code == 200
    assert rows(page.text) == [(third, "running"), (second, "failed"), (first, "completed")]
    history = (await api(web, secret, f"/api/scheduler/jobs/{job_id}/history"))["history"]
    assert f'data-count="total_executions">{history["total_executions"]}<' in page.text
    assert history["total_executions"] == 3
    assert f'data-count="successful">{history["successful"]}<' in page.text
    assert 'data-count="in_progress">1<' in page.text
    words = text_of(page.text)
    assert "12.5 V" in words
    assert "instrument said no" in words
    # Run now starts at its scheduled time: lateness 0 on the manual clock.
    assert "0 ms" in words

    # A measurement captured no file: its data link answers why, as a page; another job's
    # path to the same execution finds nothing.
    no_data = await web.get(f"/jobs/{job_id}/executions/{first}/data")
    assert no_data.status_code == 404
    assert "it has no captured data" in no_data.text
    assert "Download data" not in page.text
    elsewhere = await web.get(f"/jobs/job_other/executions/{first}/data")
    assert elsewhere.status_code == 404
    assert "it has no captured data" not in elsewhere.text

    # The fragment the live stream reloads shows the same rows.
    fragment = await web.get(f"/fragments/job/{job_id}/executions")
    assert rows(fragment.text) == rows(page.text)
    harness.executor.release(third)
    await harness.settle()


async def test_an_execution_shows_when_its_instrument_began_and_is_late_by_that(
    harness: Harness, web: httpx.AsyncClient
) -> None:
    secret = await signed_in_as(harness, web, "operator")
    job_id = await create(web, secret, enabled=False)
    harness.executor.hold = True
    execution_id = await harness.engine.run_now(job_id, actor="test")
    await harness.settle()
    began = harness.clock.now() + timedelta(milliseconds=250)
    harness.executor.release(
        execution_id,
        Outcome(
            status="completed",
            result={"value": 5.0, "unit": "V"},
            instrument_started_at=began,
            instrument_ended_at=began + timedelta(milliseconds=4),
        ),
    )
    await harness.settle()

    page = await web.get(f"/jobs/{job_id}")
    assert page.status_code == 200
    assert f'datetime="{began.isoformat()}"' in page.text
    words = text_of(page.text)
    assert "on the instrument" in words
    # Late by: when the instrument began, not when the scheduler decided (0 ms here).
    assert "250 ms" in words


async def test_executions_page_older_and_a_bad_cursor_is_named(
    harness: Harness, web: httpx.AsyncClient
) -> None:
    from lablink.dashboard.job_detail import PAGE_SIZE

    secret = await signed_in_as(harness, web, "operator")
    job_id = await create(web, secret, enabled=False)
    made = []
    for _ in range(PAGE_SIZE + 2):
        made.append(await harness.engine.run_now(job_id, actor="test"))
        await harness.settle()
    newest = await web.get(f"/jobs/{job_id}")
    shown = [e for e, _ in rows(newest.text)]
    assert shown == list(reversed(made))[:PAGE_SIZE]
    older = re.search(r'href="/jobs/[^"?]+\?before=(\d+)#job-executions">Older', newest.text)
    assert older is not None
    page_two = await web.get(f"/jobs/{job_id}?before={older.group(1)}")
    assert [e for e, _ in rows(page_two.text)] == list(reversed(made))[PAGE_SIZE:]

    bad = await web.get(f"/jobs/{job_id}?before=yesterday")
    assert bad.status_code == 400
    assert "before=&#39;yesterday&#39;" in bad.text or "before='yesterday'" in bad.text
    assert "<html" in bad.text  # a page, not the API's JSON
    bad_range = await web.get(f"/fragments/job/{job_id}/chart?range=1y")
    assert bad_range.status_code == 400
    assert "must be one of 24h, 7d, 30d" in bad_range.text


async def test_the_chart_draws_the_values_the_results_api_gives(
    harness: Harness, web: httpx.AsyncClient
) -> None:
    secret = await signed_in_as(harness, web, "operator")
    job_id = await create(web, secret, enabled=False)
    harness.executor.hold = True
    values = [1.25, 3.5, -0.75]
    for value in values:
        execution_id = await harness.engine.run_now(job_id, actor="test")
        await harness.settle()
        harness.executor.release(execution_id, Outcome.ok(value=value, unit="V"))
        await harness.settle()
        harness.clock.advance(600)

    page = await web.get(f"/jobs/{job_id}")
    results = (await api(web, secret, f"/api/scheduler/jobs/{job_id}/results"))["results"]
    drawn = re.findall(
        r'<circle [^>]*data-execution-id="([^"]+)" data-time="([^"]+)" data-value="([^"]+)"',
        page.text,
    )
    assert [(e, float(v)) for e, _, v in drawn] == [
        (r["execution_id"], r["value"]) for r in results
    ]
    assert [float(v) for _, _, v in drawn] == values
    assert 'data-unit="V"' in page.text
    assert '<title id="chart-title">' in page.text
    assert "lowest -0.75, highest 3.5, last -0.75 V" in page.text
    # The range switch swaps the chart fragment; a month back still shows the three points.
    month = await web.get(f"/fragments/job/{job_id}/chart?range=30d")
    assert month.status_code == 200
    assert month.text.count("<circle ") == 3
    assert 'value="30d"' in month.text


async def test_a_job_without_measurements_says_so_and_other_types_have_no_chart(
    harness: Harness, web: httpx.AsyncClient
) -> None:
    secret = await signed_in_as(harness, web, "operator")
    measuring = await create(web, secret, enabled=False)
    page = await web.get(f"/jobs/{measuring}")
    assert 'id="chart-empty"' in page.text
    assert "No numeric measurements last 24 h" in text_of(page.text)
    commanding = await create(
        web,
        secret,
        schedule_type="command",
        equipment_id="load_1",
        parameters={"command": "set_current", "parameters": {"value": 2.5}},
    )
    assert 'id="job-chart"' not in (await web.get(f"/jobs/{commanding}")).text


async def test_a_viewer_sees_no_buttons_and_every_post_is_refused(
    harness: Harness, web: httpx.AsyncClient
) -> None:
    admin = await signed_in_as(harness, web, "admin")
    job_id = await create(web, admin)
    await web.post("/signout", data={"_csrf_token": csrf((await web.get("/")).text)})
    await signed_in_as(harness, web, "viewer")
    page = await web.get(f"/jobs/{job_id}")
    assert page.status_code == 200
    for button in (">Run now<", ">Pause<", ">Resume<", ">Delete<", ">Edit<"):
        assert button not in page.text
    assert "Read-only" in page.text
    token = csrf(page.text)
    for action in ("run", "pause", "resume", "delete"):
        refused = await web.post(f"/jobs/{job_id}/{action}", data={"_csrf_token": token})
        assert refused.status_code == 403, (action, refused.text)
    job = (await api(web, admin, f"/api/scheduler/jobs/{job_id}"))["job"]
    assert job["enabled"] is True
    assert job["execution_count"] == 0
    assert harness.executions(job_id) == []


async def test_run_pause_resume_delete_are_recorded_with_the_signed_in_name(
    harness: Harness, web: httpx.AsyncClient
) -> None:
    secret = await signed_in_as(harness, web, "operator")
    job_id = await create(web, secret)
    page = await web.get(f"/jobs/{job_id}")
    for button in (">Run now<", ">Pause<", ">Edit<", ">Delete<"):
        assert button in page.text
    assert ">Resume<" not in page.text
    token = csrf(page.text)

    # htmx: the actions card comes back with what happened, and the page's parts reload.
    ran = await web.post(
        f"/jobs/{job_id}/run", data={"_csrf_token": token}, headers={"HX-Request": "true"}
    )
    assert ran.status_code == 200
    assert ran.headers["HX-Trigger"] == "job-changed"
    (execution,) = harness.executions(job_id)
    assert execution["trigger_info"] == "manual"
    assert f"Started: execution {execution['execution_id']}" in ran.text

    # The live stream's jobs message reloads the card only when its buttons would change:
    # a run does not (204 keeps the focus and the notice), a pause does.
    shown = re.search(r'id="actions-shown" name="shown" value="([^"]+)"', ran.text)
    assert shown is not None
    same = await web.get(f"/fragments/job/{job_id}/actions", params={"shown": shown.group(1)})
    assert same.status_code == 204

    paused = await web.post(f"/jobs/{job_id}/pause", data={"_csrf_token": token})
    changed = await web.get(f"/fragments/job/{job_id}/actions", params={"shown": shown.group(1)})
    assert changed.status_code == 200
    assert ">Resume<" in changed.text
    assert paused.status_code == 303
    assert paused.headers["location"] == f"/jobs/{job_id}"
    page = await web.get(f"/jobs/{job_id}")
    assert ">Resume<" in page.text
    assert ">Pause<" not in page.text
    assert "(if resumed now" in page.text

    resumed = await web.post(
        f"/jobs/{job_id}/resume", data={"_csrf_token": token}, headers={"HX-Request": "true"}
    )
    assert ">Pause<" in resumed.text
    # Run now while a run is going is refused by the skip policy, with the reason in the
    # card (htmx) or the page (plain form): not a 500, not the API's JSON.
    harness.executor.hold = True
    await web.post(f"/jobs/{job_id}/run", data={"_csrf_token": token})
    await harness.settle()
    again = await web.post(
        f"/jobs/{job_id}/run", data={"_csrf_token": token}, headers={"HX-Request": "true"}
    )
    assert again.status_code == 200
    assert 'role="alert"' in again.text
    assert "is still running (conflict_policy skip)" in again.text
    plain_again = await web.post(f"/jobs/{job_id}/run", data={"_csrf_token": token})
    assert plain_again.status_code == 409
    assert 'id="job-problem"' in plain_again.text
    for held in harness.executor.held():
        harness.executor.release(held)
    await harness.settle()

    deleted = await web.post(f"/jobs/{job_id}/delete", data={"_csrf_token": token})
    assert deleted.status_code == 303
    assert deleted.headers["location"] == "/jobs"
    trail = harness.store.read_stream(job_id)
    actors = {r.type: r.actor for r in trail}
    for kind in ("job.paused", "job.resumed", "job.deleted"):
        assert actors[kind] == "operator-alice", (kind, actors)
    (pending,) = [
        r
        for r in trail
        if r.type == "execution.pending"
        and getattr(r.event, "execution_id", None) == execution["execution_id"]
    ]
    assert pending.actor == "operator-alice"
    gone = await web.get(f"/jobs/{job_id}")
    assert gone.status_code == 404
    assert "no job" in gone.text


async def test_an_unknown_job_is_a_404_page_and_its_posts_too(
    harness: Harness, web: httpx.AsyncClient
) -> None:
    await signed_in_as(harness, web, "operator")
    page = await web.get("/jobs/job_nope")
    assert page.status_code == 404
    assert "<html" in page.text
    assert "job_nope" in page.text
    token = csrf(page.text)
    ran = await web.post("/jobs/job_nope/run", data={"_csrf_token": token})
    assert ran.status_code == 404
    assert "<html" in ran.text
    data = await web.get("/jobs/job_nope/executions/exec_nope/data")
    assert data.status_code == 404
    assert "<html" in data.text
