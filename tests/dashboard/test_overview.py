"""The overview, in-process through the real app over a real engine and SQLite file: the
timeline lists the fires the API's next-runs gives (paused jobs greyed, capped with "N more"),
health is grouped gravest first, acknowledging an alarm needs the operator role, and the live
stream names the right topics, resumes after Last-Event-ID without a gap and throttles."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncGenerator, AsyncIterator
from datetime import datetime, timedelta
from typing import Any, cast
from zoneinfo import ZoneInfo

import httpx
import msgspec
import pytest
from litestar import Request

from lablink.api.context import ApiContext
from lablink.dashboard import timeline
from lablink.dashboard.live import changes, folded_position, start_position
from lablink.domain.job import JobState
from lablink.domain.requests import JobRequest
from lablink.domain.validation import normalise
from lablink.events import AlarmRaised
from lablink.health import Health
from lablink.instruments.execution import Outcome
from lablink.settings import Settings
from tests.dashboard.test_session import csrf, new_key, sign_in
from tests.support.harness import Harness, api_client

MEASURE: dict[str, Any] = {
    "schedule_type": "measurement",
    "equipment_id": "multimeter_1",
    "parameters": {"command": "get_voltage"},
}
FAILING: dict[str, Any] = {
    "name": "Load test",
    "schedule_type": "command",
    "equipment_id": "load_1",
    "parameters": {"command": "run_load_test", "parameters": {"duration": 60}},
    "trigger_type": "interval",
    "interval_hours": 6,
    "on_failure_alarm": True,
}
FIRE = re.compile(r'<li class="fire( paused)?" data-job-id="([^"]+)" data-at="([^"]+)">')


def fires(html: str) -> list[tuple[str, datetime, bool]]:
    return [
        (job_id, datetime.fromisoformat(at), bool(paused))
        for paused, job_id, at in FIRE.findall(html)
    ]


@pytest.fixture
async def web(harness: Harness) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(harness, auth=True, dashboard=True) as client:
        yield client


async def admin(harness: Harness, web: httpx.AsyncClient) -> dict[str, str]:
    _, secret = new_key(harness, "admin", "alice")
    assert (await sign_in(web, secret)).status_code == 303
    return {"Authorization": f"Bearer {secret}"}


async def test_the_timeline_lists_the_next_runs_of_every_job_paused_ones_greyed(
    harness: Harness, web: httpx.AsyncClient
) -> None:
    h = harness
    jobs = {
        "every7": h.service.create_job(
            {**MEASURE, "name": "Every 7 min", "trigger_type": "interval", "interval_minutes": 7},
            "alice",
        ),
        "hourly": h.service.create_job(
            {**MEASURE, "name": "Hourly", "trigger_type": "cron", "cron_expression": "5 * * * *"},
            "alice",
        ),
        "paused": h.service.create_job(
            {**MEASURE, "name": "Paused", "trigger_type": "interval", "interval_minutes": 45},
            "alice",
        ),
        "later": h.service.create_job(
            {
                **MEASURE,
                "name": "Day after",
                "trigger_type": "date",
                "run_date": (h.clock.now() + timedelta(hours=30)).isoformat(),
            },
            "alice",
        ),
    }
    h.service.pause_job(jobs["paused"], "alice")
    api = await admin(h, web)
    now = h.clock.now()
    end = now + timeline.WINDOW

    expected: list[tuple[datetime, str, bool]] = []
    for job_id in jobs.values():
        answer = (
            await web.get(f"/api/scheduler/jobs/{job_id}/next-runs?count=1000", headers=api)
        ).json()
        paused = not answer["enabled"]
        runs = [datetime.fromisoformat(t) for t in answer["next_runs"]]
        expected += [(t, job_id, paused) for t in runs if t <= end]
    expected.sort()
    # 24 h of a 7-minute job alone is more than the timeline lists.
    assert len(expected) > timeline.CAP

    card = await web.get("/fragments/overview/timeline")
    assert card.status_code == 200
    shown = fires(card.text)
    assert [(t, j, p) for j, t, p in shown] == expected[: timeline.CAP]
    assert f"{len(expected) - timeline.CAP} more not shown" in card.text
    assert jobs["later"] not in {j for j, _, _ in shown}
    # The paused job is there, greyed and marked in words, with no active fire.
    paused_fires = [f for f in shown if f[0] == jobs["paused"]]
    assert paused_fires
    assert all(p for _, _, p in paused_fires)
    assert "paused</span>" in card.text
    assert all(not p for j, _, p in shown if j != jobs["paused"])

    # Resumed, its fires are active ones (the page the browser had refreshes on "jobs").
    h.service.resume_job(jobs["paused"], "alice")
    again = fires((await web.get("/fragments/overview/timeline")).text)
    assert any(j == jobs["paused"] and not p for j, _, p in again)


def test_the_timeline_counts_what_it_does_not_list() -> None:
    now = datetime.fromisoformat("2026-03-02T09:00:00+00:00")
    states: list[tuple[str, JobState]] = []
    triggers: list[tuple[str, dict[str, Any]]] = [
        ("interval", {"interval_seconds": 30}),
        ("cron", {"cron_expression": "* * * * *"}),
    ]
    for n, (trigger, extra) in enumerate(triggers):
        request = msgspec.convert(
            {**MEASURE, "name": f"j{n}", "trigger_type": trigger, **extra}, JobRequest
        )
        spec, anchor = normalise(request, now=now, default_timezone="UTC")
        states.append(
            (f"job_{n}", JobState(job_id=f"job_{n}", spec=spec, status="paused", anchor=anchor))
        )
    built = timeline.build([], states, now, cap=10)
    assert len(built.fires) == 10
    # 2,880 half-minutes and 1,440 minutes in 24 h, less the ten listed.
    assert built.more == 2880 + 1440 - 10
    assert not built.more_at_least
    bounded = timeline.build([], states, now, cap=10, count_budget=100)
    assert bounded.more_at_least
    assert bounded.more < 2880 + 1440 - 10


async def test_the_timeline_shows_no_fire_that_has_passed(
    harness: Harness, web: httpx.AsyncClient
) -> None:
    h = harness
    job_id = h.service.create_job(
        {**MEASURE, "name": "Half-hourly", "trigger_type": "interval", "interval_minutes": 30},
        "alice",
    )
    await admin(h, web)
    first = fires((await web.get("/fragments/overview/timeline")).text)[0][1]
    # The engine has not fired it yet (no tick): its stored next run is 10 s ago.
    h.clock.advance(first - h.clock.now() + timedelta(seconds=10))
    assert h.job(job_id)["next_run_time"] is not None
    assert datetime.fromisoformat(h.job(job_id)["next_run_time"]) == first
    card = await web.get("/fragments/overview/timeline")
    shown = [t for j, t, _ in fires(card.text) if j == job_id]
    assert first not in shown
    assert shown
    assert min(shown) == first + timedelta(minutes=30)
    assert all(t >= h.clock.now() for t in shown)
    page = await web.get("/")
    assert first.isoformat() not in page.text


def test_a_fire_passed_since_the_build_is_not_rendered() -> None:
    now = datetime.fromisoformat("2026-03-02T09:00:00+00:00")
    request = msgspec.convert(
        {**MEASURE, "name": "j", "trigger_type": "interval", "interval_seconds": 60}, JobRequest
    )
    spec, anchor = normalise(request, now=now, default_timezone="UTC")
    state = JobState(job_id="job_0", spec=spec, status="paused", anchor=anchor)
    built = timeline.build([], [("job_0", state)], now, cap=5)
    zone = ZoneInfo("UTC")
    assert len(built.shown(now)) == 5
    later = built.fires[1].at + timedelta(seconds=1)
    rendered = [f.at for hour in built.hours(zone, later) for f in hour.fires]
    assert rendered == [f.at for f in built.fires[2:]]
    assert all(at >= later for at in rendered)


async def raise_alarm(h: Harness) -> str:
    h.executor.hold = True
    job = h.service.create_job(FAILING, "alice")
    await h.at(h.clock.now() + timedelta(hours=6))
    (running,) = h.executor.held()
    h.executor.release(running, Outcome.failed("instrument_error", "-222,out of range"))
    await h.settle()
    (alarm,) = [r.event for r in h.store.read_stream(job) if isinstance(r.event, AlarmRaised)]
    return alarm.alarm_id


async def test_a_viewer_sees_no_acknowledge_button_and_its_post_is_refused(
    harness: Harness, web: httpx.AsyncClient
) -> None:
    alarm_id = await raise_alarm(harness)
    _, secret = new_key(harness, "viewer", "vic")
    assert (await sign_in(web, secret)).status_code == 303
    page = await web.get("/")
    assert page.status_code == 200
    assert f'data-alarm-id="{alarm_id}"' in page.text
    assert "Acknowledge" not in page.text
    before = harness.store.last_position()

    forged = await web.post(
        f"/alarms/{alarm_id}/acknowledge",
        data={"_csrf_token": csrf(page.text), "note": "not mine to do"},
        headers={"HX-Request": "true"},
    )
    assert forged.status_code == 403
    assert harness.store.last_position() == before  # nothing recorded
    api = await web.get(f"/api/alarms/{alarm_id}", headers={"Authorization": f"Bearer {secret}"})
    assert api.json()["alarm"]["state"] == "active"


async def test_an_operator_acknowledges_then_clears_from_the_overview(
    harness: Harness, web: httpx.AsyncClient
) -> None:
    alarm_id = await raise_alarm(harness)
    _, secret = new_key(harness, "operator", "olga")
    assert (await sign_in(web, secret)).status_code == 303
    page = await web.get("/")
    assert f'aria-label="Acknowledge alarm {alarm_id}"' in page.text
    token = csrf(page.text)

    # htmx: the refreshed card comes back.
    card = await web.post(
        f"/alarms/{alarm_id}/acknowledge",
        data={"_csrf_token": token, "note": "looking"},
        headers={"HX-Request": "true"},
    )
    assert card.status_code == 200
    assert f"alarm {alarm_id} acknowledged" in card.text
    assert "acknowledged</span> by olga" in card.text
    api = await web.get(f"/api/alarms/{alarm_id}", headers={"Authorization": f"Bearer {secret}"})
    acknowledged = api.json()["alarm"]["acknowledged"]
    assert (acknowledged["by"], acknowledged["note"]) == ("olga", "looking")

    # Twice is refused in the card (an alert), never a 500.
    again = await web.post(
        f"/alarms/{alarm_id}/acknowledge",
        data={"_csrf_token": token},
        headers={"HX-Request": "true"},
    )
    assert again.status_code == 200
    assert 'role="alert"' in again.text

    # A plain form goes back where it came from.
    cleared = await web.post(
        f"/alarms/{alarm_id}/clear", data={"_csrf_token": token, "next": "/alarms"}
    )
    assert cleared.status_code == 303
    assert cleared.headers["location"] == "/alarms"
    api = await web.get(f"/api/alarms/{alarm_id}", headers={"Authorization": f"Bearer {secret}"})
    assert api.json()["alarm"]["state"] == "cleared"

    unknown = await web.post("/alarms/alarm_nope/acknowledge", data={"_csrf_token": token})
    assert unknown.status_code == 404
    assert "alarm_nope" in unknown.text
    too_long = await web.post(
        f"/alarms/{alarm_id}/clear", data={"_csrf_token": token, "note": "x" * 2001}
    )
    assert too_long.status_code == 422
    assert "note" in too_long.text


async def test_every_card_renders_and_health_is_grouped_gravest_first(harness: Harness) -> None:
    health = Health(harness.clock)
    health.set("event_log", "ok")
    health.set("scheduler", "ok")
    for name in ("engine", "committer", "relay"):
        health.set(f"task.{name}", "ok")
    health.set("agent.multimeter_1", "ok")
    health.set("agent.load_1", "failing", "no heartbeat")
    health.set("nats", "degraded", "reconnecting")
    async with api_client(harness, auth=False, dashboard=True, health=health) as web:
        page = await web.get("/")
        assert page.status_code == 200
        for card in timeline_cards():
            assert f'id="{card}"' in page.text
            fragment = await web.get(f"/fragments/overview/{card}")
            assert fragment.status_code == 200, (card, fragment.text)
        assert (await web.get("/fragments/overview/nope")).status_code == 404
        text = (await web.get("/fragments/overview/health")).text
    names = re.findall(r"</span> <strong>([^<]+)</strong>", text)
    # Groups first by gravity: agents (failing), nats (degraded), then the ok ones.
    assert names[:3] == ["agents", "agent.load_1", "agent.multimeter_1"]
    assert names.index("nats") < names.index("event_log")
    assert "1 failing, 1 ok" in text
    assert "3 ok" in text  # the supervised tasks, closed
    assert text.count("<details open>") == 1


async def test_running_executions_show_elapsed_time_and_reported_progress(
    harness: Harness,
) -> None:
    h = harness
    h.executor.hold = True  # the gate executor reports 50 % "halfway", then waits
    job = h.service.create_job(FAILING, "alice")
    await h.at(h.clock.now() + timedelta(hours=6))
    (running,) = h.executor.held()
    h.clock.advance(timedelta(minutes=3, seconds=5))
    async with api_client(harness, auth=False, dashboard=True) as web:
        card = (await web.get("/fragments/overview/running")).text
        row = card[card.index(f'data-execution-id="{running}"') :]
        assert f'href="/jobs/{job}"' in row
        assert '<progress max="1" value="0.5"' in row
        assert "50 %" in row
        assert "halfway" in row
        assert ">3 min 5 s</span>" in row  # elapsed from started_at, by the server's clock
        assert 'href="/equipment/load_1"' in card
        h.executor.release(running)
        await h.settle()
        assert "Nothing is running." in (await web.get("/fragments/overview/running")).text


def timeline_cards() -> list[str]:
    return ["today", "health", "alarms", "running", "instruments", "failures", "timeline"]


# -- the live stream ------------------------------------------------------------------------


class Ticks:
    """The stream's monotonic clock, moved by hand; counts the readings of it (one per pass
    of the beat that wakes the stream, live.beat_for), so that a test can wait until the
    stream's beat has looked again."""

    def __init__(self) -> None:
        self.now = 0.0
        self.readings = 0

    def __call__(self) -> float:
        self.readings += 1
        return self.now

    async def passes(self, count: int) -> None:
        """Wait (polling, generous deadline) until the beat has run ``count`` more passes."""
        target = self.readings + count
        deadline = asyncio.get_running_loop().time() + 30
        while self.readings < target:
            assert asyncio.get_running_loop().time() < deadline, "the stream stopped polling"
            await asyncio.sleep(0.05)


def context_of(h: Harness) -> ApiContext:
    settings = Settings(data_dir=h.path.parent, timezone=h.tz, auth=False)
    return ApiContext(
        settings=settings,
        clock=h.clock,
        store=h.store,
        service=h.service,
        engine=h.engine,
        auth_enabled=False,
    )


def stream_of(context: ApiContext, after: int, ticks: Ticks) -> AsyncGenerator[Any, None]:
    return cast("AsyncGenerator[Any, None]", changes(context, after, clock=ticks))


def reconnecting(last_event_id: str) -> Request[Any, Any, Any]:
    """A request as a browser's EventSource sends it when it reconnects."""
    scope: Any = {"type": "http", "headers": [(b"last-event-id", last_event_id.encode())]}
    return Request(scope)


async def batch(stream: AsyncIterator[Any]) -> list[tuple[str, str]]:
    """The messages of one pass, up to the tick that closes it: (event, id)."""
    found: list[tuple[str, str]] = []
    while True:
        message = await asyncio.wait_for(anext(stream), 30)
        if message.event == "tick":
            return found
        found.append((message.event, message.id))


async def test_the_stream_names_topics_throttles_and_resumes_after_last_event_id(
    harness: Harness,
) -> None:
    h = harness
    context = context_of(h)
    try:
        ticks = Ticks()
        start = folded_position(context)
        stream = stream_of(context, start, ticks)
        hello = await asyncio.wait_for(anext(stream), 30)
        assert (hello.event, hello.id) == ("hello", str(start))

        # Events keep coming while the stream polls, within one throttle period: nothing is
        # sent until the period is over, then one message per topic, at the last position.
        sent: list[tuple[str, str]] = []

        async def listen() -> None:
            async for message in stream:
                if message.event == "tick":
                    return
                sent.append((message.event, message.id))

        listener = asyncio.create_task(listen())
        for n in range(5):
            for m in range(4):
                h.service.create_job(
                    {
                        **MEASURE,
                        "name": f"j{n}-{m}",
                        "trigger_type": "interval",
                        "interval_hours": 1,
                        "enabled": False,
                    },
                    "alice",
                )
            await ticks.passes(2)
        h.executor.hold = True
        job = h.service.create_job(FAILING, "alice")
        await h.at(h.clock.now() + timedelta(hours=6))
        await ticks.passes(2)
        assert sent == []  # throttled: the clock has not moved on
        first = folded_position(context)
        assert first - start > 20
        ticks.now = 31.0  # past the throttle period, and the tick that closes the pass
        await asyncio.wait_for(listener, 30)
        assert sent == [("executions", str(first)), ("jobs", str(first)), ("schedules", str(first))]

        # Disconnected here; meanwhile the run fails and raises an alarm.
        (running,) = h.executor.held()
        h.executor.release(running, Outcome.failed("instrument_error", "-222,out of range"))
        await h.settle()
        assert any(isinstance(r.event, AlarmRaised) for r in h.store.read_stream(job))
        await stream.aclose()
        last = folded_position(context)
        assert last > first

        # The browser comes back with the last id it saw: told of everything after it.
        assert start_position(reconnecting(str(first)), context) == first
        assert start_position(reconnecting("999999"), context) == last  # never ahead of the views
        resumed_ticks = Ticks()
        resumed = stream_of(context, first, resumed_ticks)
        assert (await asyncio.wait_for(anext(resumed), 30)).id == str(first)
        resumed_ticks.now = 31.0
        assert await batch(resumed) == [
            ("alarms", str(last)),
            ("executions", str(last)),
            ("jobs", str(last)),
        ]
        await resumed.aclose()
    finally:
        context.close()
