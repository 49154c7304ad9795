"""A dashboard write whose result the views cannot show within the wait (issue 16): the write
was recorded, so the browser is told so on an HTML page or card, never the API's JSON 503
(it is not an error, and sending it again would repeat it) and never a 500.

The views fold in the follower's own thread, as under `lablink serve`; the jobs view's fold is
held at a gate (tests/api/test_views_consistency.py's ``Gated``), so they are really behind.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from lablink.clock import ManualClock
from lablink.dashboard.requests import LAGGING
from lablink.projections.runner import Projector, default_projections
from tests.api.test_views_consistency import JOB, Gated, behind_log, raise_alarms
from tests.dashboard.test_session import csrf, new_key, sign_in
from tests.support.forms import Page
from tests.support.harness import Harness, api_client


@dataclass
class Lagging:
    harness: Harness
    web: httpx.AsyncClient
    gated: Gated
    token: str

    @asynccontextmanager
    async def behind(self) -> AsyncIterator[None]:
        """The jobs view folds nothing until the block ends; then it catches up."""
        self.gated.gate.clear()
        try:
            yield
        finally:
            self.gated.gate.set()
            await behind_log(self.harness)

    def head(self) -> int:
        return self.harness.store.last_position()


@pytest.fixture
async def lagging(tmp_path: Path, clock: ManualClock) -> AsyncIterator[Lagging]:
    projections = default_projections()
    gated = Gated(projections[0])
    assert gated.name == "jobs"
    h = Harness(
        tmp_path / "data" / "scheduler.db",
        clock,
        background=True,
        projector=Projector([gated, *projections[1:]]),
    )
    await h.start()
    try:
        async with api_client(h, auth=True, dashboard=True, views_wait=0.3) as web:
            _, secret = new_key(h, "operator", "op-alice")
            assert (await sign_in(web, secret)).status_code == 303
            await behind_log(h)
            page = await web.get("/jobs")
            assert page.status_code == 200, page.text
            yield Lagging(h, web, gated, csrf(page.text))
    finally:
        gated.gate.set()
        await h.close()


def told_recorded(answer: httpx.Response) -> None:
    assert answer.status_code == 200, (answer.status_code, answer.text[:500])
    assert answer.headers["content-type"].startswith("text/html"), answer.headers
    assert LAGGING.replace("—", "&mdash;") in answer.text or LAGGING in answer.text, answer.text


async def a_job(lag: Lagging) -> str:
    job_id = lag.harness.service.create_job(JOB, actor="test")
    await behind_log(lag.harness)
    return job_id


@pytest.mark.parametrize("htmx", [False, True])
@pytest.mark.parametrize("action", ["pause", "run", "delete"])
async def test_a_job_action_the_views_cannot_show_yet_is_told_recorded_in_html(
    lagging: Lagging, action: str, htmx: bool
) -> None:
    job_id = await a_job(lagging)
    headers = {"HX-Request": "true"} if htmx else {}
    before = lagging.head()
    async with lagging.behind():
        answer = await lagging.web.post(
            f"/jobs/{job_id}/{action}", data={"_csrf_token": lagging.token}, headers=headers
        )
        told_recorded(answer)
    assert lagging.head() > before  # the write was recorded, once


async def test_a_form_save_the_views_cannot_show_yet_is_told_recorded_in_html(
    lagging: Lagging,
) -> None:
    job_id = await a_job(lagging)
    edit = await lagging.web.get(f"/jobs/{job_id}/edit")
    assert edit.status_code == 200, edit.text
    form = dict(Page.of(edit.text).forms["job-form"])
    before = lagging.head()
    async with lagging.behind():
        saved = await lagging.web.post(
            f"/jobs/{job_id}/edit", data={**form, "name": "Renamed while behind"}
        )
        told_recorded(saved)
    assert lagging.head() == before + 1
    created = form | {"name": "Made while behind"}
    created.pop("version", None)
    created.pop("job_id", None)
    async with lagging.behind():
        made = await lagging.web.post("/jobs/new", data=created)
        told_recorded(made)
    assert lagging.head() > before + 1


@pytest.mark.parametrize("htmx", [False, True])
async def test_a_bulk_pause_the_views_cannot_show_yet_is_told_recorded_in_html(
    lagging: Lagging, htmx: bool
) -> None:
    job_id = await a_job(lagging)
    headers = {"HX-Request": "true"} if htmx else {}
    before = lagging.head()
    async with lagging.behind():
        answer = await lagging.web.post(
            "/jobs/bulk",
            data={
                "_csrf_token": lagging.token,
                "action": "pause",
                "job_id": [job_id],
                "confirmed": "yes",
            },
            headers=headers,
        )
        told_recorded(answer)
    assert lagging.head() > before


@pytest.mark.parametrize("htmx", [False, True])
async def test_an_alarm_acknowledged_while_the_views_lag_is_told_recorded_in_html(
    lagging: Lagging, htmx: bool
) -> None:
    (alarm_id,) = await raise_alarms(lagging.harness, 1)
    await behind_log(lagging.harness)
    headers = {"HX-Request": "true"} if htmx else {}
    before = lagging.head()
    async with lagging.behind():
        # The alarms view still folds: only the acknowledgement's job event waits?
        answer = await lagging.web.post(
            f"/alarms/{alarm_id}/acknowledge",
            data={"_csrf_token": lagging.token, "note": "seen", "next": "/alarms"},
            headers=headers,
        )
        told_recorded(answer)
    assert lagging.head() > before


_: Callable[..., Any] | None = None
