"""The equipment, alarms and audit pages, in-process through the real app over a real engine
and SQLite file: each page shows what the API answers, filters and pages as the API does, a
bad filter is shown beside its field (never a 500), and a viewer is offered no alarm action."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import timedelta
from html.parser import HTMLParser
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from lablink.dashboard import alarms_page, audit_page
from lablink.events import EquipmentOnline, NewEvent
from lablink.eventstore import ANY
from lablink.instruments.execution import Outcome
from tests.dashboard.test_session import csrf, new_key, sign_in
from tests.support.harness import Harness, api_client

JOB: dict[str, Any] = {
    "name": "Rail check",
    "schedule_type": "command",
    "equipment_id": "psu_1",
    "parameters": {"command": "measure_voltage", "parameters": {}},
    "trigger_type": "interval",
    "interval_minutes": 10,
}


class Marked(HTMLParser):
    """Every value of one attribute in a page, in document order."""

    def __init__(self, attribute: str) -> None:
        super().__init__()
        self.attribute = attribute
        self.values: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name == self.attribute and value is not None:
                self.values.append(value)


def marked(page: str, attribute: str) -> list[str]:
    parser = Marked(attribute)
    parser.feed(page)
    return parser.values


def online(h: Harness, equipment_id: str, identity: str, resource: str) -> None:
    h.store.append(
        f"equipment:{equipment_id}",
        ANY,
        [
            NewEvent(
                event=EquipmentOnline(
                    equipment_id=equipment_id,
                    kind="power_supply",
                    identity=identity,
                    agent_id="bench-pc",
                    resource=resource,
                ),
                actor="agents",
                occurred_at=h.clock.now(),
            )
        ],
    )


@pytest.fixture
async def web(harness: Harness) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(harness, auth=True, dashboard=True) as client:
        yield client


async def as_role(harness: Harness, web: httpx.AsyncClient, role: str) -> dict[str, str]:
    """Sign ``web`` in with a new key of ``role``; the same key's API headers."""
    _, secret = new_key(harness, role, f"{role}-person")
    assert (await sign_in(web, secret)).status_code == 303
    return {"Authorization": f"Bearer {secret}"}


async def test_the_equipment_pages_show_what_the_api_answers(
    harness: Harness, web: httpx.AsyncClient
) -> None:
    h = harness
    online(h, "psu_1", "Keysight Technologies,E36312A,MY5900123,2.1.0", "TCPIP::10.0.0.7::INSTR")
    online(h, "dmm_2", "Keithley,DMM6500,0455,1.7.12b", "USB0::0x05E6::0x6500::INSTR")
    rail = h.service.create_job(JOB, "alice")
    other = h.service.create_job({**JOB, "name": "Meter", "equipment_id": "dmm_2"}, "alice")
    h.executor.hold = True
    await h.at(h.clock.now() + timedelta(minutes=10))
    by_job = {r.job_id: r.execution_id for r in h.executor.requests}
    h.executor.release(by_job[other])
    await h.settle()
    api = await as_role(h, web, "viewer")

    listed = (await web.get("/api/equipment", headers=api)).json()["equipment"]
    page = await web.get("/equipment")
    assert page.status_code == 200, page.text
    assert marked(page.text, "data-equipment") == [e["equipment_id"] for e in listed]
    assert "MY5900123" in page.text
    assert "DMM6500" in page.text
    assert 'aria-current="page"' in page.text
    assert ">Equipment</a>" in page.text

    one = (await web.get("/api/equipment/psu_1", headers=api)).json()["equipment"]
    detail = await web.get("/equipment/psu_1")
    assert detail.status_code == 200, detail.text
    for shown in ("Keysight Technologies", "E36312A", "MY5900123", "2.1.0", "bench-pc"):
        assert shown in detail.text
    assert "TCPIP::10.0.0.7::INSTR" in detail.text
    assert f'<time datetime="{one["since"]}">' in detail.text
    # The job running now, the jobs that use it (only its own), its executions.
    (running,) = one["running"]
    assert running["execution_id"] == by_job[rail]
    assert f"<code>{by_job[rail]}</code>" in detail.text
    jobs = (await web.get("/api/scheduler/jobs?equipment_id=psu_1", headers=api)).json()
    assert marked(detail.text, "data-job") == [j["job_id"] for j in jobs["jobs"]] == [rail]
    runs = (await web.get(f"/api/scheduler/executions?job_id={rail}", headers=api)).json()
    assert marked(detail.text, "data-execution") == [e["execution_id"] for e in runs["executions"]]
    assert by_job[other] not in detail.text

    # The live part refreshes from its fragment: the same rows.
    fragment = await web.get("/fragments/equipment/psu_1/detail", headers={"HX-Request": "true"})
    assert marked(fragment.text, "data-execution") == marked(detail.text, "data-execution")
    # The page's own stream sends the part anew (sse-swap); it fetches itself when that was lost.
    assert 'sse-connect="/live/equipment/psu_1"' in detail.text
    assert 'sse-swap="card-detail" hx-trigger="live-refresh"' in detail.text


async def test_an_unknown_instrument_is_a_404_page(
    harness: Harness, web: httpx.AsyncClient
) -> None:
    await as_role(harness, web, "viewer")
    page = await web.get("/equipment/no_such_thing")
    assert page.status_code == 404
    assert page.headers["content-type"].startswith("text/html")
    assert "no instrument &#39;no_such_thing&#39;" in page.text


async def failing_alarms(h: Harness) -> tuple[str, str]:
    """Two failed executions with alarms: one on psu_1, one on dmm_2. Their job ids."""
    h.executor.hold = True
    psu = h.service.create_job({**JOB, "on_failure_alarm": True}, "alice")
    dmm = h.service.create_job(
        {**JOB, "name": "Meter", "equipment_id": "dmm_2", "on_failure_alarm": True}, "alice"
    )
    await h.at(h.clock.now() + timedelta(minutes=10))
    for execution_id in h.executor.held():
        h.executor.release(
            execution_id, Outcome.failed("instrument_error", "-222,Data out of range")
        )
    await h.settle()
    return psu, dmm


async def test_the_alarms_page_lists_filters_and_offers_the_actions(
    harness: Harness, web: httpx.AsyncClient
) -> None:
    h = harness
    psu, _dmm = await failing_alarms(h)
    api = await as_role(h, web, "operator")
    everything = (await web.get("/api/alarms", headers=api)).json()["alarms"]
    assert len(everything) == 2

    page = await web.get("/alarms")
    assert page.status_code == 200, page.text
    assert marked(page.text, "data-alarm") == [a["alarm_id"] for a in everything]
    assert '<span class="status status-critical"><span aria-hidden="true">✖</span> critical' in (
        page.text
    )
    assert "-222,Data out of range" in page.text
    for alarm in everything:
        assert f'action="/alarms/{alarm["alarm_id"]}/acknowledge"' in page.text
        assert f'formaction="/alarms/{alarm["alarm_id"]}/clear"' in page.text
    assert page.text.count(">Acknowledge</button>") == 2

    # Filters: the same answers as the API's.
    for query in ("equipment_id=dmm_2", f"job_id={psu}", "severity=critical", "state=cleared"):
        answer = (await web.get(f"/api/alarms?{query}", headers=api)).json()["alarms"]
        shown = await web.get(f"/alarms?{query}")
        assert shown.status_code == 200
        assert marked(shown.text, "data-alarm") == [a["alarm_id"] for a in answer], query
    assert "No alarm matches these filters" in (await web.get("/alarms?state=cleared")).text

    # Acknowledged through the API: the page says by whom, with the note, and offers clear.
    first = everything[0]["alarm_id"]
    acked = await web.post(
        f"/api/alarms/{first}/acknowledge", json={"note": "rail swapped"}, headers=api
    )
    assert acked.status_code == 200, acked.text
    after = await web.get("/alarms?state=acknowledged")
    assert marked(after.text, "data-alarm") == [first]
    assert "acknowledged by <strong>operator-person</strong>" in after.text
    assert "<q>rail swapped</q>" in after.text
    assert ">Acknowledge</button>" not in after.text
    assert ">Clear</button>" in after.text


async def test_a_bad_alarm_filter_is_shown_beside_its_field(
    harness: Harness, web: httpx.AsyncClient
) -> None:
    await as_role(harness, web, "viewer")
    page = await web.get("/alarms?severity=loud&cursor=abc")
    assert page.status_code == 400
    assert page.headers["content-type"].startswith("text/html")
    assert 'id="e-severity"' in page.text
    assert "&#39;loud&#39; must be one of info, warning, critical" in page.text
    fragment = await web.get("/fragments/alarms/list?state=gone", headers={"HX-Request": "true"})
    assert fragment.status_code == 400
    assert "must be one of active, acknowledged, cleared" in fragment.text


async def test_a_viewer_sees_alarms_but_no_action(harness: Harness, web: httpx.AsyncClient) -> None:
    await failing_alarms(harness)
    await as_role(harness, web, "viewer")
    page = await web.get("/alarms")
    assert page.status_code == 200
    assert len(marked(page.text, "data-alarm")) == 2
    assert "Acknowledge" not in page.text
    assert ">Clear</button>" not in page.text
    assert 'method="post" action="/alarms' not in page.text
    assert "/acknowledge" not in page.text
    assert "/clear" not in page.text


async def test_the_audit_page_filters_and_pages_as_the_api_does(
    harness: Harness, web: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = harness
    first = h.service.create_job(JOB, "alice")
    h.clock.advance(timedelta(hours=1))
    for n in range(6):
        h.service.create_job({**JOB, "name": f"Bob's {n}"}, "bob")
    h.service.pause_job(first, "bob")
    await h.settle()
    api = await as_role(h, web, "viewer")

    async def api_positions(query: str) -> list[int]:
        answer = await web.get(f"/api/audit?limit=1000&{query}", headers=api)
        assert answer.status_code == 200, answer.text
        return [e["position"] for e in answer.json()["events"]]

    def shown(page: httpx.Response) -> list[int]:
        assert page.status_code == 200, page.text
        return [int(p) for p in marked(page.text, "data-position")]

    everything = shown(await web.get("/audit"))
    assert everything == await api_positions("")
    # The trail names who did it and when, and the payload is there, collapsed.
    page = await web.get(f"/audit?job_id={first}")
    assert shown(page) == await api_positions(f"job_id={first}")
    assert "<code>job.created</code>" in page.text
    assert "<code>job.paused</code>" in page.text
    assert "<details><summary>" in page.text
    assert "&#34;name&#34;: &#34;Rail check&#34;" in page.text
    assert shown(await web.get("/audit?actor=alice")) == await api_positions("actor=alice")
    assert shown(await web.get("/audit?type=job")) == await api_positions("type=job.")

    # A time range: with an offset, or without one in the zone the page's script sends.
    cut = (h.clock.now() - timedelta(minutes=30)).astimezone()
    since_utc = cut.astimezone(ZoneInfo("UTC")).isoformat(timespec="seconds")
    expected = await api_positions(f"since={since_utc.replace('+', '%2B')}")
    assert 0 < len(expected) < len(everything)
    with_offset = await web.get("/audit", params={"since": since_utc})
    assert shown(with_offset) == expected
    local = cut.astimezone(ZoneInfo("America/New_York")).replace(tzinfo=None)
    naive = await web.get(
        "/audit", params={"since": local.isoformat(timespec="seconds"), "tz": "America/New_York"}
    )
    assert shown(naive) == expected

    # Paged by position: the pages, joined, are the whole trail, each event once.
    monkeypatch.setattr(audit_page, "PAGE_SIZE", 3)
    pages: list[int] = []
    url: str | None = "/audit"
    while url is not None:
        page = await web.get(url)
        pages += shown(page)
        links = [v for v in marked(page.text, "href") if v.startswith("/audit?after=")]
        url = links[0].replace("&amp;", "&") if links else None
    assert pages == everything


async def test_a_bad_audit_filter_is_shown_beside_its_field(
    harness: Harness, web: httpx.AsyncClient
) -> None:
    await as_role(harness, web, "viewer")
    for query, field, reason in [
        ("since=yesterday", "since", "is not a date and time"),
        ("until=2026-03-02T08:00&since=2026-03-02T09:00", "until", "is before the start"),
        ("type=nonsense", "type", "not an event type nor a family prefix"),
        ("tz=Mars/Olympus", "tz", "is not an IANA time zone"),
        ("after=-4", "after", "must be a log position"),
    ]:
        page = await web.get(f"/audit?{query}")
        assert page.status_code == 400, query
        assert page.headers["content-type"].startswith("text/html")
        assert reason in page.text, query
        assert f"{field}=" in page.text, query


async def test_acknowledge_then_clear_from_the_alarms_page_with_a_note(
    harness: Harness, web: httpx.AsyncClient
) -> None:
    psu, _ = await failing_alarms(harness)
    api = await as_role(harness, web, "operator")
    page = await web.get(f"/alarms?job_id={psu}")
    (alarm_id,) = marked(page.text, "data-alarm")
    # The page's own form: its action, its CSRF token, its "next" (back to these filters).
    back = re.search(r'name="next" value="([^"]+)"', page.text)
    assert back is not None
    assert back.group(1) == f"/alarms?job_id={psu}"
    form = {"_csrf_token": csrf(page.text), "next": back.group(1), "note": "fuse replaced"}
    acked = await web.post(f"/alarms/{alarm_id}/acknowledge", data=form)
    assert acked.status_code == 303, acked.text
    assert acked.headers["location"] == f"/alarms?job_id={psu}"
    alarm = (await web.get(f"/api/alarms/{alarm_id}", headers=api)).json()["alarm"]
    assert alarm["state"] == "acknowledged"
    assert alarm["acknowledged"]["note"] == "fuse replaced"
    page = await web.get(acked.headers["location"])
    assert "<q>fuse replaced</q>" in page.text

    cleared = await web.post(
        f"/alarms/{alarm_id}/clear", data={**form, "note": "rail back at 12 V"}
    )
    assert cleared.status_code == 303, cleared.text
    alarm = (await web.get(f"/api/alarms/{alarm_id}", headers=api)).json()["alarm"]
    assert (alarm["state"], alarm["cleared"]["by"]) == ("cleared", "operator-person")
    page = await web.get(f"/alarms?job_id={psu}")
    assert "<q>rail back at 12 V</q>" in page.text
    # A cleared alarm offers nothing more.
    assert f"/alarms/{alarm_id}/" not in page.text


async def test_a_viewers_forged_alarm_post_is_refused(
    harness: Harness, web: httpx.AsyncClient
) -> None:
    psu, _ = await failing_alarms(harness)
    api = await as_role(harness, web, "viewer")
    page = await web.get(f"/alarms?job_id={psu}")
    (alarm_id,) = marked(page.text, "data-alarm")
    refused = await web.post(
        f"/alarms/{alarm_id}/acknowledge", data={"_csrf_token": csrf(page.text), "note": "x"}
    )
    assert refused.status_code == 403
    assert "&#39;viewer&#39; role" in refused.text
    alarm = (await web.get(f"/api/alarms/{alarm_id}", headers=api)).json()["alarm"]
    assert (alarm["state"], alarm["acknowledged"]) == ("active", None)


@pytest.mark.parametrize(
    "path",
    [
        "/alarms?state=active&state=cleared&severity=critical,warning",
        "/alarms?cursor=99999999999999999999999",
        "/alarms?equipment_id=" + "x" * 5000,
        "/alarms?job_id=%00%FF",
        "/fragments/alarms/list?severity=",
        "/audit?since=2026-03-02T08:00%2B99:00",
        "/audit?since=9999-12-31T23:59:59-23:59",
        "/audit?until=0001-01-01T00:00",
        "/audit?after=99999999999999999999999",
        "/audit?actor=" + "é" * 300,
        "/audit?type=job.&type=alarm",
        "/audit?tz=..%2F..%2Fetc%2Fpasswd",
        "/equipment/%E2%9C%96%00",
        "/fragments/equipment/nope/detail",
    ],
)
async def test_odd_queries_get_a_page_never_a_500(
    harness: Harness, web: httpx.AsyncClient, path: str
) -> None:
    await as_role(harness, web, "viewer")
    page = await web.get(path)
    assert page.status_code in (200, 400, 404), (path, page.status_code, page.text[:300])
    assert page.headers["content-type"].startswith("text/html"), path


async def test_the_alarms_page_pages_older_alarms_as_the_api_does(
    harness: Harness, web: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    await failing_alarms(harness)
    await failing_alarms(harness)
    api = await as_role(harness, web, "viewer")
    everything = (await web.get("/api/alarms", headers=api)).json()["alarms"]
    assert len(everything) > 3  # more than a page
    monkeypatch.setattr(alarms_page, "PAGE_SIZE", 3)
    shown: list[str] = []
    url: str | None = "/alarms?severity=critical"
    while url is not None:
        page = await web.get(url)
        assert page.status_code == 200, page.text
        assert len(marked(page.text, "data-alarm")) <= 3
        shown += marked(page.text, "data-alarm")
        older = [v for v in marked(page.text, "href") if "cursor=" in v]
        # The next page keeps the filters.
        assert all("severity=critical" in v for v in older)
        url = older[0] if older else None
    assert shown == [a["alarm_id"] for a in everything if a["severity"] == "critical"]
