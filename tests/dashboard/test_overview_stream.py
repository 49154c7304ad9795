"""The overview's own stream, ``/live/overview``, read by a real SSE client (httpx streaming
from uvicorn on a loopback port, over the harness's engine): a change comes as the topics and
then the rendered HTML of each card showing them, with the log position as id, resumed after
Last-Event-ID; a viewer's cards have no write controls while an operator's do (and those
forms work with the token in htmx's header alone). That the cards are rendered once per frame
and role for every screen: test_live_frames.py."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx

from lablink.dashboard import overview
from lablink.dashboard.pushed import event_of
from tests.dashboard.test_overview import MEASURE, raise_alarm
from tests.dashboard.test_session import csrf, new_key, sign_in
from tests.support.harness import Harness, api_client
from tests.support.series import served

# Generous: a slow machine makes a slow stream, never a failed test.
WAIT = 60.0


@dataclass
class Message:
    event: str
    id: str | None
    data: str


async def messages(response: httpx.Response) -> AsyncIterator[Message]:
    """The stream's messages as EventSource parses them (comments skipped)."""
    event, ident = "message", None
    data: list[str] = []
    async for line in response.aiter_lines():
        if line == "":
            if data or ident is not None:
                yield Message(event, ident, "\n".join(data))
            event, ident, data = "message", None, []
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                event = value
            elif name == "id":
                ident = value
            elif name == "data":
                data.append(value)


async def until(stream: AsyncIterator[Message], event: str) -> list[Message]:
    """The messages up to and with the first ``event``."""
    seen: list[Message] = []

    async def read() -> list[Message]:
        async for message in stream:
            seen.append(message)
            if message.event == event:
                return seen
        raise AssertionError(f"the stream ended before {event!r}: {[m.event for m in seen]}")

    try:
        return await asyncio.wait_for(read(), WAIT)
    except TimeoutError:
        raise AssertionError(f"no {event!r} within {WAIT} s: {[m.event for m in seen]}") from None


@contextlib.asynccontextmanager
async def signed_in(url: str, harness: Harness, role: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=url, timeout=WAIT) as web:
        _, secret = new_key(harness, role, f"{role}-screen")
        assert (await sign_in(web, secret)).status_code == 303
        yield web


@contextlib.asynccontextmanager
async def overview_stream(
    web: httpx.AsyncClient, last_event_id: str | None = None
) -> AsyncIterator[AsyncIterator[Message]]:
    headers = {} if last_event_id is None else {"Last-Event-ID": last_event_id}
    async with web.stream("GET", "/live/overview", headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        stream = messages(response)
        (hello,) = await until(stream, "hello")
        assert hello.id is not None
        yield stream


def job(name: str) -> dict[str, object]:
    return {**MEASURE, "name": name, "trigger_type": "interval", "interval_hours": 1}


async def test_a_change_comes_as_the_cards_html_and_resumes_after_last_event_id(
    harness: Harness,
) -> None:
    async with (
        served(harness, auth=True, dashboard=True) as url,
        signed_in(url, harness, "operator") as web,
    ):
        async with overview_stream(web) as stream:
            harness.service.create_job(job("Freshly created"), "alice")
            created = harness.store.last_position()
            got = await until(stream, event_of("timeline"))
        topics = [m for m in got if not m.event.startswith("card-")]
        cards = {m.event: m for m in got if m.event.startswith("card-")}
        assert [m.event for m in topics] == ["jobs", "schedules"]
        # The cards follow their topics, with the same id: the position they cover.
        (position,) = {m.id for m in got}
        assert position is not None
        assert int(position) >= created
        assert set(cards) == {event_of("today"), event_of("timeline")}
        timeline = cards[event_of("timeline")].data
        assert "Freshly created" in timeline
        assert 'id="timeline-title"' in timeline  # the card's inside, as its fragment is
        assert "_csrf_token" not in timeline
        fetched = await web.get("/fragments/overview/timeline")
        assert fetched.text.strip() == timeline.strip()

        # Gone while a job was created; back with the last id seen: told of it.
        harness.service.create_job(job("Made while away"), "alice")
        async with overview_stream(web, last_event_id=position) as resumed:
            again = await until(resumed, event_of("timeline"))
        assert "Made while away" in again[-1].data
        assert int(again[-1].id or 0) == harness.store.last_position()


async def test_a_viewers_cards_have_no_write_controls_an_operators_work_by_header(
    harness: Harness,
) -> None:
    async with (
        served(harness, auth=True, dashboard=True) as url,
        signed_in(url, harness, "viewer") as viewer,
        signed_in(url, harness, "operator") as operator,
        overview_stream(viewer) as viewer_stream,
        overview_stream(operator) as operator_stream,
    ):
        alarm_id = await raise_alarm(harness)
        seen_by_viewer = await until(viewer_stream, event_of("alarms"))
        operator_card = (await until(operator_stream, event_of("alarms")))[-1].data

        viewer_card = seen_by_viewer[-1].data
        assert f'data-alarm-id="{alarm_id}"' in viewer_card
        for message in seen_by_viewer:
            assert "<form" not in message.data, message.event
            assert "<button" not in message.data, message.event
            assert "Acknowledge" not in message.data, message.event
        assert f'data-alarm-id="{alarm_id}"' in operator_card
        assert f'aria-label="Acknowledge alarm {alarm_id}"' in operator_card
        assert "_csrf_token" not in operator_card

        # The pushed form has no token of its own: htmx sends the page's in its header.
        token = csrf((await operator.get("/")).text)
        answer = await operator.post(
            f"/alarms/{alarm_id}/acknowledge",
            data={"note": "seen on the wall"},
            headers={"HX-Request": "true", "x-csrftoken": token},
        )
        assert answer.status_code == 200, answer.text
        assert f"alarm {alarm_id} acknowledged" in answer.text
        refused = await operator.post(
            f"/alarms/{alarm_id}/clear", data={}, headers={"HX-Request": "true"}
        )
        assert refused.status_code == 403


async def test_the_overview_swaps_in_each_card_its_stream_sends_and_fetches_none(
    harness: Harness,
) -> None:
    async with api_client(harness, auth=False, dashboard=True) as web:
        page = (await web.get("/")).text
    assert 'sse-connect="/live/overview"' in page
    for card in overview.CARDS:
        section = re.search(rf'<section[^>]* id="{card}"[^>]*>', page)
        assert section is not None, card
        assert f'sse-swap="{event_of(card)}"' in section.group(0)
        # Fetched only when the stream was lost (dashboard.js), never on a message.
        assert 'hx-trigger="live-refresh"' in section.group(0)
    assert "sse:" not in page
