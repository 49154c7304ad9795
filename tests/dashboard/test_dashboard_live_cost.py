"""What live screens cost the server (issue 16's benchmark, BENCHMARKS.md "Dashboard"): a fire
does not make the timeline recompute, and the screens that refresh the same overview card on
the same message share one read and one rendering of it. In-process through the real app
(the overview's stream, which sends the cards itself: test_overview_stream.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from lablink.dashboard import overview
from lablink.dashboard.live import topics_of
from tests.dashboard.test_overview import raise_alarm
from tests.support.harness import Harness, api_client

SCREENS = 20
JOB = {
    "name": "Hourly Voltage Check",
    "schedule_type": "measurement",
    "equipment_id": "power_supply_1",
    "trigger_type": "interval",
    "interval_hours": 1,
    "parameters": {"command": "get_voltage"},
}


def test_a_fire_does_not_name_the_schedules_but_a_job_change_does() -> None:
    fire = {"execution.requested", "execution.started", "execution.succeeded"}
    assert "schedules" not in topics_of(fire)
    assert topics_of(fire) == ["executions", "jobs"]
    for kind in ("job.created", "job.updated", "job.paused", "job.resumed", "job.deleted"):
        assert "schedules" in topics_of({kind}), kind
    assert "schedules" in topics_of({"scheduler.clock_stepped"})


@pytest.fixture
async def web(harness: Harness) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(harness, auth=False, dashboard=True) as client:
        yield client


class Counted:
    """The real card function, counting its calls."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls = 0

    def __call__(self, context: Any) -> Any:
        self.calls += 1
        return self.inner(context)


@pytest.mark.parametrize("card", ["today", "failures", "timeline"])
async def test_screens_refreshing_a_card_on_the_same_message_share_one_read(
    harness: Harness, web: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, card: str
) -> None:
    harness.service.create_job(JOB, "alice")
    counted = Counted(overview.CARDS[card])
    monkeypatch.setitem(overview.CARDS, card, counted)
    url = f"/fragments/overview/{card}"

    answers = await asyncio.gather(*(web.get(url) for _ in range(SCREENS)))
    assert {a.status_code for a in answers} == {200}
    assert len({a.text for a in answers}) == 1
    assert counted.calls == 1

    # A new position of the log: read again, and what it shows is the new state.
    harness.service.create_job({**JOB, "name": "Nightly capture"}, "alice")
    await asyncio.gather(*(web.get(url) for _ in range(SCREENS)))
    assert counted.calls == 2

    # The clock's next second (the figures, the elapsed times, the timeline's window move on).
    harness.clock.advance(timedelta(seconds=1))
    await asyncio.gather(*(web.get(url) for _ in range(SCREENS)))
    assert counted.calls == 3


async def test_a_shared_card_shows_the_write_that_moved_the_log(
    harness: Harness, web: httpx.AsyncClient
) -> None:
    before = (await web.get("/fragments/overview/timeline")).text
    harness.service.create_job({**JOB, "name": "Freshly created"}, "alice")
    after = (await web.get("/fragments/overview/timeline")).text
    assert "Freshly created" not in before
    assert "Freshly created" in after


async def test_screens_share_one_render_of_a_card_without_a_form(
    harness: Harness, web: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from litestar.plugins.jinja import JinjaTemplateEngine

    await raise_alarm(harness)
    harness.service.create_job(JOB, "alice")
    fetched: list[str] = []
    real = JinjaTemplateEngine.get_template

    def counting(self: JinjaTemplateEngine, template_name: str) -> Any:
        fetched.append(template_name)
        return real(self, template_name)

    monkeypatch.setattr(JinjaTemplateEngine, "get_template", counting)
    answers = await asyncio.gather(
        *(web.get("/fragments/overview/failures") for _ in range(SCREENS))
    )
    assert {a.status_code for a in answers} == {200}
    assert len({a.text for a in answers}) == 1
    assert answers[0].headers["content-type"].startswith("text/html")
    assert fetched.count("fragments/overview_failures.html") == 1

    # The alarms card's forms carry no screen's own CSRF token (htmx sends it in a header):
    # shared as well, with nothing of one screen in it.
    fetched.clear()
    alarms = await asyncio.gather(*(web.get("/fragments/overview/alarms") for _ in range(3)))
    assert fetched.count("fragments/overview_alarms.html") == 1
    assert len({a.text for a in alarms}) == 1
    assert "<form" in alarms[0].text
    assert "_csrf_token" not in alarms[0].text
