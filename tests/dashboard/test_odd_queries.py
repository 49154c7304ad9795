"""Query values that once made dashboard pages answer 500 (found in review): digits that
``str.isdigit`` takes and ``int`` refuses, a zone folder, an over-long zone. Each is now a
page naming the field, or the value ignored, never a 500."""

from __future__ import annotations

import pytest

from tests.dashboard.test_session import new_key, sign_in
from tests.support.harness import Harness, api_client


@pytest.mark.parametrize(
    "path",
    [
        "/jobs?page=²",
        "/alarms?cursor=²",
        "/audit?after=²",
        "/audit?after=٣",
        "/audit?tz=Europe",
        "/audit?tz=Europe/" + "x" * 300,
        "/audit?tz=/etc/passwd",
    ],
)
async def test_odd_query_values_are_never_a_500(harness: Harness, path: str) -> None:
    async with api_client(harness, auth=True, dashboard=True) as web:
        _, secret = new_key(harness, "viewer")
        await sign_in(web, secret)
        answer = await web.get(path)
        assert answer.status_code < 500, (path, answer.text[:300])
        assert answer.headers["content-type"].startswith("text/html")
        if answer.status_code == 400:
            field = path.split("?")[1].split("=")[0]
            assert field in answer.text
