"""Signing in to the dashboard, in-process through the real app: a key buys a session cookie
(HttpOnly, SameSite=Strict, Secure over TLS), every unsafe request carries the CSRF token,
roles are enforced by the server, a revoked key ends its sessions, and the JSON API never
takes the cookie."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest

from lablink.keys import create_key, revoke_key
from tests.support.harness import Harness, api_client


@pytest.fixture
async def web(harness: Harness) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(harness, auth=True, dashboard=True) as client:
        yield client


def new_key(harness: Harness, role: str, name: str | None = None) -> tuple[str, str]:
    key_id, secret = create_key(
        harness.store, name=name or f"{role}-key", role=role, actor="test", now=harness.clock.now()
    )
    return key_id, secret


def csrf(page: str) -> str:
    found = re.search(r'name="_csrf_token" value="([^"]+)"', page)
    assert found is not None, page[:500]
    return found.group(1)


async def sign_in(web: httpx.AsyncClient, secret: str, next_path: str = "/") -> httpx.Response:
    form = await web.get("/signin")
    assert form.status_code == 200, form.text
    return await web.post(
        "/signin", data={"key": secret, "next": next_path, "_csrf_token": csrf(form.text)}
    )


async def test_a_page_without_a_session_sends_the_browser_to_sign_in(
    web: httpx.AsyncClient,
) -> None:
    response = await web.get("/")
    assert response.status_code == 303
    assert response.headers["location"] == "/signin?next=/"
    # htmx asks for fragments: it is told to load the sign-in page instead.
    fragment = await web.get("/fragments/overview/today", headers={"HX-Request": "true"})
    assert fragment.status_code == 401
    assert fragment.headers["HX-Redirect"].startswith("/signin")


async def test_a_key_buys_a_strict_http_only_cookie_and_sign_out_ends_it(
    harness: Harness, web: httpx.AsyncClient
) -> None:
    _, secret = new_key(harness, "admin", "alice")
    answer = await sign_in(web, secret, "/")
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == "/"
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith("lablink_session=")
    assert "HttpOnly" in cookie
    assert "samesite=strict" in cookie.lower()
    assert "Secure" not in cookie  # plain HTTP here
    assert "Max-Age=43200" in cookie

    page = await web.get("/")
    assert page.status_code == 200
    assert "alice" in page.text
    assert ">admin<" in page.text

    signed_out = await web.post("/signout", data={"_csrf_token": csrf(page.text)})
    assert signed_out.status_code == 303
    assert (await web.get("/")).status_code == 303


async def test_the_cookie_is_secure_over_tls(harness: Harness) -> None:
    async with api_client(harness, auth=True, dashboard=True) as client:
        client.base_url = httpx.URL("https://testserver")
        _, secret = new_key(harness, "viewer")
        answer = await sign_in(client, secret)
        assert answer.status_code == 303
        assert "Secure" in answer.headers["set-cookie"]


@pytest.mark.parametrize(
    ("secret", "reason"),
    [("", "paste an API key"), ("llk_not-a-key", "the API key is unknown or revoked")],
)
async def test_a_wrong_key_is_refused_on_the_form_and_buys_nothing(
    web: httpx.AsyncClient, secret: str, reason: str
) -> None:
    answer = await sign_in(web, secret)
    assert answer.status_code == 401
    assert reason in answer.text
    assert "lablink_session" not in answer.headers.get("set-cookie", "")
    assert (await web.get("/")).status_code == 303


async def test_a_post_without_the_csrf_token_is_refused(
    harness: Harness, web: httpx.AsyncClient
) -> None:
    _, secret = new_key(harness, "admin")
    await web.get("/signin")
    refused = await web.post("/signin", data={"key": secret, "next": "/"})
    assert refused.status_code == 403
    assert "lablink_session" not in refused.headers.get("set-cookie", "")


async def test_next_never_leaves_this_server(harness: Harness, web: httpx.AsyncClient) -> None:
    _, secret = new_key(harness, "viewer")
    for target in ("//evil.example/", "https://evil.example/", "/\\evil.example"):
        answer = await sign_in(web, secret, target)
        assert answer.headers["location"] == "/", target
        await web.post("/signout", data={"_csrf_token": csrf((await web.get("/")).text)})


async def test_a_revoked_key_ends_its_sessions_on_the_next_request(
    harness: Harness, web: httpx.AsyncClient
) -> None:
    key_id, secret = new_key(harness, "operator")
    await sign_in(web, secret)
    assert (await web.get("/")).status_code == 200
    revoke_key(harness.store, key_id, actor="test", now=harness.clock.now())
    assert (await web.get("/")).status_code == 303


async def test_the_api_takes_keys_only_never_the_session_cookie(
    harness: Harness, web: httpx.AsyncClient
) -> None:
    _, secret = new_key(harness, "admin")
    await sign_in(web, secret)
    assert (await web.get("/")).status_code == 200
    # The browser holds a session; the API still wants a key (no CSRF on a key-only API).
    assert (await web.get("/api/scheduler/jobs")).status_code == 401


async def test_with_auth_off_there_is_no_sign_in(harness: Harness) -> None:
    async with api_client(harness, auth=False, dashboard=True) as client:
        page = await client.get("/")
        assert page.status_code == 200
        assert "Sign out" not in page.text
        assert (await client.get("/signin")).status_code == 303


async def test_static_files_are_vendored_and_served(web: httpx.AsyncClient) -> None:
    for name in ("htmx-2.0.11.min.js", "htmx-ext-sse-2.2.4.js", "dashboard.js", "dashboard.css"):
        response = await web.get(f"/static/{name}")
        assert response.status_code == 200, name
        assert len(response.content) > 500, name


async def test_sign_in_returns_to_the_page_asked_for_with_its_filters(
    harness: Harness, web: httpx.AsyncClient
) -> None:
    asked = await web.get("/jobs", params={"q": "pump & co", "type": "interval", "page": "2"})
    assert asked.status_code == 303
    # The whole address, query and all, is one encoded value of next.
    assert asked.headers["location"] == (
        "/signin?next=/jobs%3Fq%3Dpump%2B%2526%2Bco%26type%3Dinterval%26page%3D2"
    )
    form = await web.get(asked.headers["location"])
    assert form.status_code == 200
    found = re.search(r'name="next" value="([^"]+)"', form.text)
    assert found is not None
    back_to = found.group(1).replace("&amp;", "&")
    assert back_to == "/jobs?q=pump+%26+co&type=interval&page=2"
    _, secret = new_key(harness, "viewer")
    answer = await sign_in(web, secret, back_to)
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == "/jobs?q=pump+%26+co&type=interval&page=2"
    page = await web.get(answer.headers["location"])
    assert page.status_code == 200
    assert 'value="pump &amp; co"' in page.text


@pytest.mark.parametrize(
    "target",
    [
        "https://elsewhere.example/",
        "//elsewhere.example/",
        "/\t/elsewhere.example/",
        "/\\elsewhere.example",
        "/\n/elsewhere.example",
    ],
)
async def test_sign_in_never_returns_to_another_site(
    harness: Harness, web: httpx.AsyncClient, target: str
) -> None:
    _, secret = new_key(harness, "viewer")
    answer = await sign_in(web, secret, target)
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == "/"
