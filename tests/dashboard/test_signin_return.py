"""After signing in again, back to the page that was shown: for an htmx request (a part of a
page refreshing) that is the page htmx names in HX-Current-URL, never another site."""

from __future__ import annotations

from urllib.parse import unquote

import httpx

from tests.support.harness import Harness, api_client


async def redirect_for(client: httpx.AsyncClient, current: str) -> str:
    answer = await client.get(
        "/fragments/overview/today", headers={"HX-Request": "true", "HX-Current-URL": current}
    )
    assert answer.status_code == 401
    target = answer.headers["HX-Redirect"]
    assert target.startswith("/signin?next=")
    return unquote(target.removeprefix("/signin?next="))


async def test_a_refreshing_part_sends_the_browser_back_to_its_page(harness: Harness) -> None:
    async with api_client(harness, auth=True, dashboard=True) as client:
        assert await redirect_for(client, "http://testserver/jobs?q=a%20b&page=2") == (
            "/jobs?q=a%20b&page=2"
        )
        assert await redirect_for(client, "http://testserver/") == "/"
        # Whatever htmx is told, the way back stays on this server.
        assert await redirect_for(client, "http://evil.example//evil.example/x") == "/"
        plain = await client.get("/fragments/overview/today", headers={"HX-Request": "true"})
        assert unquote(plain.headers["HX-Redirect"]) == "/signin?next=/fragments/overview/today"
