"""A request body is parsed once and converted once, strictly (lablink/api/bodies.py), and
its refusals are the ones clients know."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from litestar import Request

from lablink.api import bodies
from tests.api.test_api_fuzz import VALID_JOB


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[type[Any]]:
    """Every decoding of a body: by ``decode_body``, or by Litestar's ``Request.json``."""
    seen: list[type[Any]] = []
    decode_body = bodies.decode_body

    def counted(connection: Any, raw: bytes, type_: type[Any]) -> Any:
        seen.append(type_)
        return decode_body(connection, raw, type_)

    async def litestar_json(self: Request[Any, Any, Any]) -> Any:
        seen.append(Request)
        return await original_json(self)

    original_json = Request.json
    monkeypatch.setattr(bodies, "decode_body", counted)
    monkeypatch.setattr(Request, "json", litestar_json)
    return seen


async def test_each_body_is_decoded_once(
    client: httpx.AsyncClient, decodes: list[type[Any]]
) -> None:
    created = await client.post("/api/scheduler/jobs/create", json=VALID_JOB)
    assert created.status_code == 200, created.text
    job_id = created.json()["job_id"]
    preview = await client.post("/api/scheduler/preview", json=VALID_JOB)
    assert preview.status_code == 200, preview.text
    updated = await client.put(f"/api/scheduler/jobs/{job_id}", json={"description": "x"})
    assert updated.status_code == 200, updated.text
    profile = {"name": "p1", "equipment_type": "oscilloscope", "settings": {}}
    assert (await client.post("/api/profiles", json=profile)).status_code == 200
    assert (await client.put("/api/profiles/p1", json={"description": "d"})).status_code == 200
    assert [t.__name__ for t in decodes] == [
        "JobRequest",
        "JobRequest",
        "JobUpdate",
        "ProfileRequest",
        "ProfileUpdate",
    ]


@pytest.mark.parametrize(
    ("body", "content_type", "status", "error"),
    [
        # Refused by the lenient rules too: answered as Litestar answered, naming the source.
        (
            {**VALID_JOB, "interval_hour": 1},
            "application/json",
            422,
            {"field": "interval_hour", "value": 1, "reason": "unknown field", "source": "body"},
        ),
        (
            {**VALID_JOB, "enabled": "yes"},
            "application/json",
            422,
            {
                "field": "enabled",
                "value": "yes",
                "reason": "Expected `bool`, got `str`",
                "source": "body",
            },
        ),
        # Only the strict rules refuse these.
        (
            {**VALID_JOB, "interval_hours": "1"},
            "application/json",
            422,
            {
                "field": "interval_hours",
                "value": "1",
                "reason": "Expected `float | null`, got `str`",
            },
        ),
        (
            {**VALID_JOB, "max_instances": 10**30},
            "application/json",
            422,
            None,
        ),
        (
            VALID_JOB,
            "text/plain",
            415,
            {
                "field": "request",
                "value": None,
                "reason": "content-type 'text/plain' is not supported: send application/json",
            },
        ),
    ],
)
async def test_refusals_name_field_value_and_reason(
    client: httpx.AsyncClient,
    body: dict[str, Any],
    content_type: str,
    status: int,
    error: dict[str, Any] | None,
) -> None:
    response = await client.post(
        "/api/scheduler/jobs/create",
        content=json.dumps(body).encode(),
        headers={"content-type": content_type},
    )
    assert response.status_code == status, response.text
    answer = response.json()
    assert answer["success"] is False
    assert answer["errors"], answer
    if error is not None:
        assert answer["errors"] == [error], answer
    assert all({"field", "value", "reason"} <= set(e) for e in answer["errors"])
