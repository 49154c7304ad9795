"""Nothing a client sends to a dashboard route causes a 500 or a half-written state, in-process
through the real app (DESIGN.md: "never a 500 for anything a client can send").

The routes are read from the dashboard's router when the test runs, so every page added to
``PAGE_CONTROLLERS`` is covered without touching this file. Hypothesis (in a worker thread, as
tests/api/test_api_fuzz.py does, so the harness's engine keeps its loop) posts random form
fields, path ids and query strings, signed in as admin with a valid CSRF token; every answer
must be below 500, and the log may grow only on a 2xx/3xx answer to a POST. Then the guards
that stand in front of every route: a foreign Host or Origin is refused (the API's
BrowserGuard sits on the whole app), a POST without the CSRF token or with a wrong one is a
403 that writes nothing, and a live stream without a session is a redirect, not a stream.
"""

from __future__ import annotations

import asyncio
import inspect
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
import msgspec
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from litestar.routes import HTTPRoute

from lablink.dashboard.plugin import dashboard_router
from tests.dashboard.test_session import csrf, new_key, sign_in
from tests.support.harness import Harness, api_client

EXAMPLES = 400
# The stream never ends: it is checked on its own below, and signing out would end the
# session every later example needs.
# The streams, one of each route (``test_every_stream_route_is_checked`` keeps the list whole).
STREAMS = (
    "/live",
    "/live/overview",
    "/live/equipment",
    "/live/equipment/power_supply_1",
    "/live/jobs",
    "/live/job/job_000001",
)
NOT_FUZZED = {"/signout"}


def is_stream(path: str) -> bool:
    return path == "/live" or path.startswith("/live/")


PARAMETER = re.compile(r"\{(\w+)(?::\w+)?\}")
READ = re.compile(
    r"(?:query_params|params|query|form|data)\.(?:get|getall|getlist|getone)\(\s*[\"'](\w+)[\"']"
)

JOB = {
    "name": "Hourly Voltage Check",
    "schedule_type": "measurement",
    "equipment_id": "power_supply_1",
    "trigger_type": "interval",
    "interval_hours": 1,
    "parameters": {"command": "get_voltage"},
}
# Values that have broken servers before, as the text a form or a URL carries.
HOSTILE = [
    "",
    " ",
    # Digits str.isdigit() takes and int() refuses; a zone folder; a zone name too long.
    "²",
    "٣",
    "Europe",
    "Europe/" + "x" * 300,
    "\x00",
    "%00",
    "a" * 3000,
    "\u202e\U0001f9ea",
    "../../etc/passwd",
    "<script>alert(1)</script>",
    "{{ 7*7 }}",
    "' OR 1=1 --",
    "-1",
    "0",
    "1e308",
    "nan",
    "inf",
    "9223372036854775808",
    "-99999999999999999999",
    "true",
    "null",
    "[]",
    "{}",
    '{"command": "get_voltage"}',
    "2026-02-30T25:61:00",
    "9999-12-31T23:59:59",
    "0001-01-01T00:00:00",
    "2026-03-29T02:30:00",
    "Mars/Olympus_Mons",
    "Europe/Berlin",
    "0 9-17 * * 1-5",
    "* * * * * * *",
    "//evil.example/",
    "https://evil.example/",
]
# Field and query names the pages read (request.query_params, form bodies), beyond what the
# handlers' signatures name.
NAMES = [
    "q",
    "search",
    "page",
    "per_page",
    "limit",
    "offset",
    "cursor",
    "sort",
    "order",
    "status",
    "severity",
    "state",
    "type",
    "schedule_type",
    "trigger",
    "trigger_type",
    "enabled",
    "tag",
    "tags",
    "equipment",
    "equipment_id",
    "job_id",
    "job_ids",
    "alarm_id",
    "actor",
    "since",
    "until",
    "from",
    "to",
    "range",
    "zone",
    "timezone",
    "next",
    "name",
    "description",
    "interval_seconds",
    "interval_minutes",
    "interval_hours",
    "interval_days",
    "interval_weeks",
    "cron_expression",
    "time_of_day",
    "day_of_week",
    "day_of_month",
    "run_date",
    "start_date",
    "end_date",
    "parameters",
    "timeout_seconds",
    "max_retries",
    "retry_delay_seconds",
    "conflict_policy",
    "on_failure_alarm",
    "profile_id",
    "version",
    "note",
    "reason",
    "confirm",
    "action",
    "key",
]


@dataclass
class Target:
    path: str  # the route's template, e.g. /jobs/{job_id:str}
    method: str
    parameters: list[str]
    names: list[str] = field(default_factory=list)

    def url(self, values: dict[str, str]) -> str:
        return PARAMETER.sub(lambda m: quote(values[m.group(1)], safe=""), self.path)


def read_names(fn: Any) -> list[str]:
    """The names a page's module reads from the query or the form (``query_params.get("page")``,
    ``form.getall("job_ids")``): handlers that read them themselves name them in no signature,
    and a fuzzer that never sends them never reaches the code that parses them."""
    module = inspect.getmodule(fn)
    if module is None:
        return []
    try:
        source = inspect.getsource(module)
    except (OSError, TypeError):
        return []
    return sorted(set(READ.findall(source)))


def targets() -> list[Target]:
    """Every dashboard route and method, from the router as the plugin mounts it."""
    found: list[Target] = []
    for route in dashboard_router().routes:
        if not isinstance(route, HTTPRoute) or route.path in NOT_FUZZED or is_stream(route.path):
            continue
        for handler in route.route_handlers:
            for method in sorted(handler.http_methods - {"OPTIONS", "HEAD"}):
                names = [
                    name
                    for name in handler.parsed_fn_signature.parameters
                    if name not in ("request", "data", "self", *route.path_parameters)
                ]
                names += read_names(handler.fn)
                data = handler.parsed_fn_signature.parameters.get("data")
                body_type = getattr(data, "annotation", None)
                if isinstance(body_type, type) and issubclass(body_type, msgspec.Struct):
                    names += list(body_type.__struct_fields__)
                found.append(Target(route.path, method, list(route.path_parameters), names))
    return found


def routes_of(method: str) -> list[Target]:
    return [t for t in targets() if t.method == method]


@dataclass
class Signed:
    web: httpx.AsyncClient
    harness: Harness
    token: str
    ids: list[str]


@pytest.fixture
async def admin(harness: Harness) -> AsyncIterator[Signed]:
    """Signed in as admin, with real jobs (one paused) whose ids the fuzzer mixes in."""
    ids = [
        harness.service.create_job(JOB, actor="test"),
        harness.service.create_job({**JOB, "name": "Nightly capture"}, actor="test"),
    ]
    harness.service.pause_job(ids[1], actor="test")
    async with api_client(harness, auth=True, dashboard=True) as web:
        _, secret = new_key(harness, "admin", "fuzz-admin")
        answer = await sign_in(web, secret)
        assert answer.status_code == 303, answer.text
        page = await web.get("/")
        assert page.status_code == 200, page.text
        yield Signed(web, harness, csrf(page.text), ids)


def text() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(HOSTILE), st.text(max_size=40))


@st.composite
def requests(draw: st.DrawFn, routes: list[Target], ids: list[str]) -> dict[str, Any]:
    target = draw(st.sampled_from(routes))
    real = [*ids, "power_supply_1", "scope_1", "job_unknown"]
    values = {name: draw(st.one_of(st.sampled_from(real), text())) for name in target.parameters}
    names = st.sampled_from([*target.names, *NAMES]) if target.names else st.sampled_from(NAMES)
    pairs = draw(st.lists(st.tuples(names, st.one_of(st.sampled_from(real), text())), max_size=8))
    return {
        "target": target,
        "url": target.url(values),
        "pairs": pairs,
        "htmx": draw(st.booleans()),
    }


async def send(admin: Signed, case: dict[str, Any]) -> tuple[httpx.Response, int, int]:
    """One request; the log's length before and after it (the engine settled both times)."""
    store = admin.harness.store
    await admin.harness.settle()
    before = store.last_position()
    target: Target = case["target"]
    headers = {"HX-Request": "true", "x-csrftoken": admin.token} if case["htmx"] else {}
    if target.method == "GET":
        response = await admin.web.get(case["url"], params=case["pairs"], headers=headers)
    else:
        form = [*case["pairs"], ("_csrf_token", admin.token)]
        response = await admin.web.request(
            target.method,
            case["url"],
            content=_encode(form),
            headers={**headers, "Content-Type": "application/x-www-form-urlencoded"},
        )
    await admin.harness.settle()
    return response, before, store.last_position()


def _encode(pairs: list[tuple[str, str]]) -> bytes:
    # Repeated names are kept (a multi-select's form): httpx's data= would need a dict.
    return "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in pairs).encode()


@dataclass
class Found:
    failures: list[str] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)
    statuses: dict[int, int] = field(default_factory=dict)


def fuzz(admin: Signed, routes: list[Target], loop: asyncio.AbstractEventLoop) -> Found:
    found = Found()

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=requests(routes, admin.ids))
    def one(case: dict[str, Any]) -> None:
        future = asyncio.run_coroutine_threadsafe(send(admin, case), loop)
        response, before, after = future.result(timeout=60)
        target: Target = case["target"]
        found.seen.add(f"{target.method} {target.path}")
        found.statuses[response.status_code] = found.statuses.get(response.status_code, 0) + 1
        where = f"{target.method} {case['url'][:200]} {case['pairs']!r:.300}"
        if response.status_code >= 500:
            found.failures.append(f"{response.status_code} on {where}: {response.text[:300]}")
        wrote = after != before
        if wrote and (target.method == "GET" or response.status_code >= 400):
            found.failures.append(
                f"{response.status_code} on {where} wrote {after - before} events"
            )

    one()
    return found


@pytest.mark.slow
async def test_random_input_to_every_page_route_is_never_a_500_nor_a_stray_write(
    admin: Signed,
) -> None:
    routes = routes_of("GET")
    assert {"/", "/signin"} <= {t.path for t in routes}
    found = await asyncio.to_thread(fuzz, admin, routes, asyncio.get_running_loop())
    assert not found.failures, "\n".join(found.failures[:20])
    assert found.seen == {f"GET {t.path}" for t in routes}, found.seen
    assert sum(n for status, n in found.statuses.items() if status < 300) > EXAMPLES // 4
    # The session held to the end: the examples reached the pages, not the sign-in form.
    assert (await admin.web.get("/")).status_code == 200


@pytest.mark.slow
async def test_random_forms_to_every_post_route_are_never_a_500_and_write_only_when_accepted(
    admin: Signed,
) -> None:
    routes = routes_of("POST")
    assert routes, "no POST route on the dashboard"
    found = await asyncio.to_thread(fuzz, admin, routes, asyncio.get_running_loop())
    assert not found.failures, "\n".join(found.failures[:20])
    assert found.seen == {f"POST {t.path}" for t in routes}, found.seen


def get_urls() -> Iterator[str]:
    for target in routes_of("GET"):
        yield target.url(dict.fromkeys(target.parameters, "power_supply_1"))


def test_every_stream_route_is_checked() -> None:
    routes = {route.path for route in dashboard_router().routes if is_stream(route.path)}
    patterns = [re.compile(PARAMETER.sub("[^/]+", path) + "$") for path in sorted(routes)]
    assert len(routes) == len(STREAMS)
    assert all(any(p.match(url) for url in STREAMS) for p in patterns), sorted(routes)


async def test_a_job_stream_refuses_a_bad_range_naming_it(admin: Signed) -> None:
    response = await asyncio.wait_for(admin.web.get("/live/job/job_000001?range=fortnight"), 10)
    assert response.status_code == 400
    assert "range" in response.text
    assert "fortnight" in response.text
    assert "text/event-stream" not in response.headers.get("content-type", "")


async def test_a_foreign_host_is_refused_on_every_dashboard_route(admin: Signed) -> None:
    for url in [*get_urls(), *STREAMS]:
        response = await admin.web.get(url, headers={"Host": "evil.example"})
        assert response.status_code == 400, (url, response.status_code)
        assert "evil.example" in response.text


async def test_a_foreign_origin_is_refused_on_every_post_route_and_writes_nothing(
    admin: Signed,
) -> None:
    for target in [*routes_of("POST"), Target("/signout", "POST", [])]:
        url = target.url(dict.fromkeys(target.parameters, admin.ids[0]))
        before = admin.harness.store.last_position()
        response = await admin.web.post(
            url,
            data={"_csrf_token": admin.token, **writing_form(admin)},
            headers={"Origin": "http://evil.example"},
        )
        assert response.status_code == 403, (url, response.status_code)
        assert "evil.example" in response.text
        assert admin.harness.store.last_position() == before, url
    # The session survived the refused sign-out.
    assert (await admin.web.get("/")).status_code == 200
    await writes_when_allowed(admin, headers={"Origin": "http://testserver"})


# The fields a confirmed bulk pause sends (jobs_list.py reads ``job_id``, repeated, and
# ``confirmed``): with the right token and origin, this body writes, so a refusal that
# "writes nothing" is a refusal, not a form the route would ignore anyway.
def writing_form(admin: Signed) -> dict[str, Any]:
    return {"action": "pause", "job_id": [admin.ids[0], admin.ids[1]], "confirmed": "yes"}


async def writes_when_allowed(admin: Signed, headers: dict[str, str] | None = None) -> None:
    """The control: the same body, with the real token, pauses the (running) job."""
    form = {**writing_form(admin), "_csrf_token": admin.token}
    before = admin.harness.store.last_position()
    response = await admin.web.post("/jobs/bulk", data=form, headers=headers or {})
    await admin.harness.settle()
    assert response.status_code == 200, response.text
    assert admin.harness.store.last_position() > before, response.text
    assert admin.harness.service.get_state(admin.ids[0]).enabled is False


@pytest.mark.parametrize("token", [None, "", "forged", "x" * 64])
async def test_a_post_without_the_right_csrf_token_is_a_403_that_writes_nothing(
    admin: Signed, token: str | None
) -> None:
    posts = [*routes_of("POST"), Target("/signout", "POST", [])]
    for target in posts:
        url = target.url(dict.fromkeys(target.parameters, admin.ids[0]))
        for as_header in (False, True):
            before = admin.harness.store.last_position()
            form: dict[str, Any] = {**writing_form(admin), "key": "x"}
            headers: dict[str, str] = {}
            if token is not None and as_header:
                headers = {"HX-Request": "true", "x-csrftoken": token}
            elif token is not None:
                form["_csrf_token"] = token
            response = await admin.web.post(url, data=form, headers=headers)
            assert response.status_code == 403, (url, token, as_header, response.status_code)
            assert admin.harness.store.last_position() == before, url
    # Refused sign-outs left the session alone.
    assert (await admin.web.get("/")).status_code == 200
    await writes_when_allowed(admin)


async def test_live_without_a_session_is_not_a_stream(harness: Harness) -> None:
    for stream in STREAMS:
        async with api_client(harness, auth=True, dashboard=True) as web:
            # In-process, a stream never completes: a bound turns that into a failure, not a hang.
            page = await asyncio.wait_for(web.get(stream), 10)
            assert page.status_code == 303
            assert page.headers["location"].startswith("/signin")
            assert "text/event-stream" not in page.headers.get("content-type", "")
            htmx = await asyncio.wait_for(web.get(stream, headers={"HX-Request": "true"}), 10)
            assert htmx.status_code == 401
            assert "text/event-stream" not in htmx.headers.get("content-type", "")
            # A forged or stale cookie is no session either.
            web.cookies.set("lablink_session", "forged")
            forged = await asyncio.wait_for(web.get(stream), 10)
            assert forged.status_code == 303
            assert "text/event-stream" not in forged.headers.get("content-type", "")
