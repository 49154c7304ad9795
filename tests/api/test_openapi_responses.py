"""Every success answer is described: /schema/openapi.json gives a schema for the body of each
operation's 2xx response, so clients generated from it get types, not ``object``, and
schemathesis can check each body against it (tests/api/test_api_fuzz.py)."""

from __future__ import annotations

from typing import Any

import httpx
import msgspec

from lablink.api.responses import JobView, Statistics
from tests.api.test_api_fuzz import VALID_JOB
from tests.support.harness import Harness

Schema = dict[str, Any]


def resolve(document: Schema, schema: Schema) -> Schema:
    while "$ref" in schema:
        name = schema["$ref"].removeprefix("#/components/schemas/")
        schema = document["components"]["schemas"][name]
    return schema


def untyped(document: Schema, schema: Schema | None) -> str | None:
    """Why a 2xx body schema says nothing, or None when it describes the body."""
    if schema is None:
        return "no schema"
    body = resolve(document, schema)
    if body.get("type") == "object" and not body.get("properties"):
        return "an object without properties"
    if not body.get("type") and not body.get("properties") and "oneOf" not in body:
        return f"no type: {body}"
    return None


async def test_every_2xx_response_has_a_typed_schema(client: httpx.AsyncClient) -> None:
    document = (await client.get("/schema/openapi.json")).json()
    problems: dict[str, str] = {}
    operations = 0
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            if method not in ("get", "post", "put", "delete", "patch"):
                continue
            operations += 1
            successes = {c: r for c, r in operation["responses"].items() if c.startswith("2")}
            if not successes:
                problems[f"{method.upper()} {path}"] = "no 2xx response"
            for code, response in successes.items():
                # JSON, or the CSV of a download (a string).
                media = response.get("content", {})
                content = media.get("application/json") or media.get("text/csv")
                why = untyped(document, content.get("schema") if content else None)
                if why is not None:
                    problems[f"{method.upper()} {path} {code}"] = why
    assert operations >= 30
    assert problems == {}


async def test_the_nested_items_are_typed_too(client: httpx.AsyncClient) -> None:
    """An envelope with ``jobs: object[]`` would pass the test above and still tell a client
    nothing: each list of items and each single item names its own schema."""
    document = (await client.get("/schema/openapi.json")).json()
    schemas = document["components"]["schemas"]
    expected = {
        ("/api/scheduler/jobs", "get"): ("jobs", "JobView"),
        ("/api/scheduler/jobs/{job_id}", "get"): ("job", "JobView"),
        ("/api/scheduler/executions", "get"): ("executions", "ExecutionView"),
        ("/api/scheduler/executions/{execution_id}", "get"): ("execution", "ExecutionView"),
        ("/api/scheduler/jobs/{job_id}/history", "get"): ("history", "JobHistory"),
        ("/api/scheduler/statistics", "get"): ("statistics", "Statistics"),
        ("/api/alarms", "get"): ("alarms", "AlarmView"),
        ("/api/audit", "get"): ("events", "AuditEvent"),
        ("/api/equipment", "get"): ("equipment", "EquipmentView"),
        ("/api/profiles", "get"): ("profiles", "ProfileView"),
    }
    for (path, method), (field, item) in expected.items():
        body = resolve(
            document,
            document["paths"][path][method]["responses"]["200"]["content"]["application/json"][
                "schema"
            ],
        )
        prop = body["properties"][field]
        ref = prop.get("items", prop).get("$ref", "")
        assert ref == f"#/components/schemas/{item}", (path, field, prop)
        assert schemas[item]["properties"], item
        assert field in body.get("required", []), (path, body.get("required"))


JOBS: list[Schema] = [
    VALID_JOB,
    {
        "name": "Christmas",
        "schedule_type": "command",
        "equipment_id": "load_1",
        "parameters": {"command": "set_current", "parameters": {"value": 2.5}},
        "trigger_type": "date",
        "run_date": "2026-12-25T10:00:00",
        "timezone": "UTC",
        "enabled": False,
        "profile_id": None,
        "max_executions": 3,
        "end_date": "2027-01-01T00:00:00+00:00",
    },
]


async def test_json_sent_as_rendered_is_what_the_document_says(
    client: httpx.AsyncClient, harness: Harness
) -> None:
    """Job views and statistics are sent as the projection or the cache rendered them, not
    built from their Structs: each must still decode strictly (no unknown, no missing, no
    mistyped field) as the type the document names."""
    for body in JOBS:
        created = await client.post("/api/scheduler/jobs/create", json=body)
        assert created.status_code == 200, created.text
    await client.post(f"/api/scheduler/jobs/{created.json()['job_id']}/run")
    await harness.settle()
    listed = (await client.get("/api/scheduler/jobs")).json()["jobs"]
    assert len(listed) == len(JOBS)
    for job in listed:
        one = (await client.get(f"/api/scheduler/jobs/{job['job_id']}")).json()["job"]
        assert one == job
        msgspec.convert(job, JobView)
        # Strict decoding refuses unknown fields; the spec's fields have defaults, so check
        # that none is missing either.
        assert set(job) == set(JobView.__struct_fields__)
    updated = await client.put(f"/api/scheduler/jobs/{listed[0]['job_id']}", json={})
    msgspec.convert(updated.json()["job"], JobView)
    statistics = (await client.get("/api/scheduler/statistics")).json()["statistics"]
    decoded = msgspec.convert(statistics, Statistics)
    assert decoded.total_jobs == len(JOBS)
    assert list(statistics) == list(Statistics.__struct_fields__)
