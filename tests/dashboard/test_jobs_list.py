"""The jobs list, in-process through the real app over a real SQLite log: search, filters,
sort and pages give what the API's list gives, and bulk pause/resume confirms first (writing
nothing), refuses a viewer, and names what it did, what already was, and what failed."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import httpx
import pytest

from lablink.dashboard.jobs_list import PAGE_SIZE, table_cards
from tests.dashboard.test_session import csrf, new_key, sign_in
from tests.support.harness import Harness, api_client

# The guide's example parameters of each job type.
PARAMETERS: dict[str, dict[str, Any]] = {
    "measurement": {"command": "get_voltage"},
    "acquisition": {"duration": 60, "sample_rate": 1000, "channels": [1, 2]},
    "state_capture": {},
    "command": {"command": "set_current", "parameters": {"value": 2.5}},
    "equipment_test": {"test_name": "self_test"},
}
TYPES = tuple(PARAMETERS)
JOBS = 120


def job_body(i: int) -> dict[str, Any]:
    """A mix of types, triggers, instruments and tags, so that each filter splits the jobs."""
    body: dict[str, Any] = {
        "name": f"Job {i:03d} {'voltage' if i % 4 == 0 else 'scan'}",
        "schedule_type": TYPES[i % len(TYPES)],
        "equipment_id": f"bench_{i % 3}",
        "parameters": PARAMETERS[TYPES[i % len(TYPES)]],
        "tags": ["nightly"] if i % 6 == 0 else ["qc", f"lot{i % 2}"],
    }
    if i % 10 == 3:
        body |= {"trigger_type": "cron", "cron_expression": f"{i % 60} 8 * * 1-5"}
    elif i % 10 == 7:
        body |= {"trigger_type": "daily", "time_of_day": "03:00:00"}
    else:
        # Many jobs share a next run, so that the order's tie-break (the id) is exercised.
        body |= {"trigger_type": "interval", "interval_minutes": 5 + i % 17}
    return body


@pytest.fixture
async def lab(harness: Harness) -> Harness:
    for i in range(JOBS):
        job_id = harness.service.create_job(job_body(i), "test")
        if i % 5 == 1:
            harness.service.pause_job(job_id, "test")
    return harness


@pytest.fixture
async def web(lab: Harness) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(lab, auth=True, dashboard=True) as client:
        yield client


def shown(page: str) -> list[str]:
    """The job ids of the table's rows, in order."""
    return re.findall(r'<tr data-job-id="([^"]+)"', page)


async def api_jobs(web: httpx.AsyncClient, key: str, **params: Any) -> list[dict[str, Any]]:
    answer = await web.get(
        "/api/scheduler/jobs",
        params={"limit": 1000, **params},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert answer.status_code == 200, answer.text
    jobs: list[dict[str, Any]] = answer.json()["jobs"]
    return jobs


def ids(jobs: list[dict[str, Any]]) -> list[str]:
    return [job["job_id"] for job in jobs]


def by_next_run(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Soonest first, the id breaking ties; jobs with no next run last, by id."""
    with_run = sorted(
        (j for j in jobs if j["next_run_time"]),
        key=lambda j: (datetime.fromisoformat(j["next_run_time"]), j["job_id"]),
    )
    without = sorted((j for j in jobs if not j["next_run_time"]), key=lambda j: j["job_id"])
    return with_run + without


@pytest.mark.slow
async def test_search_filters_sort_and_pages_agree_with_the_api(
    lab: Harness, web: httpx.AsyncClient
) -> None:
    _, key = new_key(lab, "viewer")
    await sign_in(web, key, "/jobs")
    everything = await api_jobs(web, key)
    assert len(everything) == JOBS

    # The default order: soonest next run first (paused jobs, with none, last).
    first = await web.get("/jobs")
    assert first.status_code == 200
    assert shown(first.text) == ids(by_next_run(everything))[:PAGE_SIZE]
    assert "page 1 of 3" in first.text

    # Page 2 in the API's order is what the API's offset gives.
    second = await web.get("/jobs", params={"sort": "created", "page": 2})
    assert shown(second.text) == ids(await api_jobs(web, key, limit=PAGE_SIZE, offset=PAGE_SIZE))
    last = await web.get("/jobs", params={"sort": "created", "page": 3})
    assert shown(last.text) == ids(everything)[2 * PAGE_SIZE :]
    assert "page 3 of 3" in last.text
    assert 'rel="prev" href="/jobs?sort=created&amp;page=2"' in last.text
    assert 'rel="next"' not in last.text
    # Beyond the last page: the last page, not an empty one.
    assert shown((await web.get("/jobs", params={"sort": "created", "page": 99})).text) == shown(
        last.text
    )

    by_name = await web.get("/jobs", params={"sort": "name"})
    assert shown(by_name.text) == ids(sorted(everything, key=lambda j: j["name"].lower()))[:50]

    # One box finds a name, an instrument or a tag.
    async def search(text: str, **more: str) -> list[str]:
        page = await web.get("/jobs", params={"q": text, "sort": "created", **more})
        assert page.status_code == 200, page.text
        return shown(page.text)

    assert await search("voltage") == ids(await api_jobs(web, key, search="voltage"))
    assert await search("bench_2") == ids(await api_jobs(web, key, equipment_id="bench_2"))
    assert await search("nightly") == ids(await api_jobs(web, key, tag="nightly"))
    assert await search("%") == []  # LIKE's wildcards are taken as typed
    # Filters, alone and together.
    assert await search("", type="acquisition") == ids(
        await api_jobs(web, key, schedule_type="acquisition")
    )
    assert await search("", enabled="no") == ids(await api_jobs(web, key, enabled="false"))
    cron = [j["job_id"] for j in everything if j["trigger_type"] == "cron"]
    assert cron
    assert await search("", trigger="cron") == cron
    both = await search("nightly", trigger="interval", enabled="yes")
    assert both == [
        j["job_id"]
        for j in await api_jobs(web, key, tag="nightly", enabled="true")
        if j["trigger_type"] == "interval"
    ]
    assert both

    # The fragment the live refresh asks for: the same rows, and the address bar follows.
    fragment = await web.get(
        "/fragments/jobs/table",
        params={"q": "nightly", "trigger": "interval", "enabled": "yes", "sort": "created"},
        headers={"HX-Request": "true"},
    )
    assert shown(fragment.text) == both
    assert fragment.headers["HX-Replace-Url"] == (
        "/jobs?q=nightly&trigger=interval&enabled=yes&sort=created"
    )
    # Fetched when the stream was lost or the query changed in place; else the page's stream
    # sends it, while the screen shows the query the page was opened with.
    assert 'sse-swap="card-table" data-pushed-if="jobs-query"' in fragment.text
    assert 'hx-trigger="live-refresh"' in fragment.text
    assert (
        '<input type="hidden" id="jobs-query"'
        ' value="q=nightly&amp;trigger=interval&amp;enabled=yes&amp;sort=created">'
    ) in fragment.text
    assert "<html" not in fragment.text

    # What the page's stream sends for that query: the same rows and query, drawn for every
    # screen (no screen's form token in it).
    transport = web._transport
    assert isinstance(transport, httpx.ASGITransport)
    params = {"q": "nightly", "trigger": "interval", "enabled": "yes", "sort": "created"}
    app = transport.app
    cards = table_cards(app, params, can_write=True)  # type: ignore[arg-type]
    pushed = (await cards.drawer.draw([cards.cards["table"].drawing]))[0]
    assert shown(pushed) == both
    assert (
        'id="jobs-query" value="q=nightly&amp;trigger=interval&amp;enabled=yes&amp;sort=created"'
        in pushed
    )
    assert "_csrf_token" not in pushed
    assert 'hx-post="/jobs/bulk"' in pushed
    viewer = table_cards(app, params, can_write=False)  # type: ignore[arg-type]
    drawn = (await viewer.drawer.draw([viewer.cards["table"].drawing]))[0]
    assert 'hx-post="/jobs/bulk"' not in drawn

    # A value the list does not know is named, with its field and why; never a 500.
    bad = await web.get("/jobs", params={"type": "bogus", "page": "x"})
    assert bad.status_code == 200
    # Beside the field it names (on the whole page), and once only.
    assert bad.text.count("type: &#39;bogus&#39; is not one of") == 1
    assert re.search(
        r'<select id="jobs-type" name="type" aria-invalid="true"'
        r' aria-describedby="jobs-type-error">.*?</select>\s*'
        r'<p class="field-error" id="jobs-type-error" role="alert">type: &#39;bogus&#39;',
        bad.text,
        re.S,
    )
    assert "page: &#39;x&#39; is not a page number" in bad.text
    assert shown(bad.text) == shown(first.text)  # left out, the rest of the query holds
    # A fragment (no form beside it) says it in the results.
    fragment = await web.get("/fragments/jobs/table", params={"sort": "soonest"})
    assert "sort: &#39;soonest&#39; is not one of next_run, name, created" in fragment.text

    # Screens whose queries list the same jobs but refuse different values share no drawing:
    # each is told of its own value (in the table: the page; the fields' own are beside them
    # on the page), not of the first screen's.
    bogus = table_cards(app, {"page": "x"}, can_write=True)  # type: ignore[arg-type]
    other = table_cards(app, {"page": "y"}, can_write=True)  # type: ignore[arg-type]
    assert other.kind != bogus.kind
    again = table_cards(app, {"page": "x"}, can_write=True)  # type: ignore[arg-type]
    assert again.kind == bogus.kind
    told = (await other.drawer.draw([other.cards["table"].drawing]))[0]
    assert "page: &#39;y&#39; is not a page number" in told


async def test_a_viewer_sees_no_bulk_controls_and_its_post_is_refused(
    lab: Harness, web: httpx.AsyncClient
) -> None:
    _, key = new_key(lab, "viewer")
    await sign_in(web, key, "/jobs")
    page = await web.get("/jobs")
    assert page.status_code == 200
    assert "Pause selected" not in page.text
    assert 'name="job_id"' not in page.text
    before = lab.store.last_position()
    targets = shown(page.text)[:3]
    refused = await web.post(
        "/jobs/bulk",
        data={
            "_csrf_token": csrf(page.text),
            "action": "pause",
            "job_id": targets,
            "confirmed": "yes",
        },
    )
    assert refused.status_code == 403
    assert "operator" in refused.text
    assert lab.store.last_position() == before
    assert all(lab.job(j)["status"] == "active" for j in targets)


async def test_the_confirmation_names_the_jobs_and_writes_nothing(
    lab: Harness, web: httpx.AsyncClient
) -> None:
    _, key = new_key(lab, "operator")
    await sign_in(web, key, "/jobs")
    page = await web.get("/jobs")
    assert "Pause selected" in page.text
    targets = shown(page.text)[:3]
    names = [lab.job(j)["name"] for j in targets]
    before = lab.store.last_position()
    confirm = await web.post(
        "/jobs/bulk",
        data={"_csrf_token": csrf(page.text), "action": "pause", "job_id": targets},
        headers={"HX-Request": "true"},
    )
    assert confirm.status_code == 200
    assert f"Pause 3 jobs: {', '.join(names)}?" in confirm.text
    assert 'name="confirmed" value="yes"' in confirm.text
    assert lab.store.last_position() == before
    assert all(lab.job(j)["status"] == "active" for j in targets)

    # Nothing ticked: said so, beside nothing written.
    empty = await web.post("/jobs/bulk", data={"_csrf_token": csrf(page.text), "action": "pause"})
    assert empty.status_code == 422
    assert "job_id: no job was selected" in empty.text
    odd = await web.post(
        "/jobs/bulk",
        data={"_csrf_token": csrf(page.text), "action": "delete", "job_id": targets},
    )
    assert odd.status_code == 422
    assert "action: &#39;delete&#39; is not one of pause, resume" in odd.text
    assert lab.store.last_position() == before


async def test_bulk_names_what_it_did_what_already_was_and_what_failed(
    lab: Harness, web: httpx.AsyncClient
) -> None:
    _, key = new_key(lab, "operator", "olga")
    await sign_in(web, key, "/jobs")
    page = await web.get("/jobs", params={"sort": "created"})
    active = [j for j in shown(page.text) if lab.job(j)["status"] == "active"][:2]
    paused = [j for j in shown(page.text) if lab.job(j)["status"] == "paused"][:1]
    done = await web.post(
        "/jobs/bulk",
        data={
            "_csrf_token": csrf(page.text),
            "action": "pause",
            "job_id": [*active, "job_nope", *paused],
            "confirmed": "yes",
            "back": "sort=created",
        },
        headers={"HX-Request": "true"},
    )
    assert done.status_code == 200, done.text
    text = done.text
    names = [lab.job(j)["name"] for j in (*active, *paused)]
    assert re.search(r"Paused 2 jobs: .*" + names[0] + r".*" + names[1], text), text
    assert re.search(r"Already paused, left as they were: .*" + names[2], text)
    assert "job_nope</strong> — no job has the id &#39;job_nope&#39;" in text
    # Each through the job service, as the operator: the API shows them paused.
    for job_id in active:
        answer = await web.get(
            f"/api/scheduler/jobs/{job_id}", headers={"Authorization": f"Bearer {key}"}
        )
        assert answer.json()["job"]["status"] == "paused"
        events = lab.store.read_stream(job_id)
        assert events[-1].type == "job.paused"
        assert events[-1].actor == "olga"
    # The table comes back with the answer, in the listing it was sent from.
    assert 'hx-swap-oob="outerHTML"' in text
    assert 'hx-get="/fragments/jobs/table?sort=created"' in text

    # And back: resume the two.
    resumed = await web.post(
        "/jobs/bulk",
        data={
            "_csrf_token": csrf(page.text),
            "action": "resume",
            "job_id": active,
            "confirmed": "yes",
        },
    )
    assert resumed.status_code == 200
    assert "<html" in resumed.text  # a plain form gets a whole page
    assert "Resumed 2 jobs" in resumed.text
    assert all(lab.job(j)["status"] == "active" for j in active)
