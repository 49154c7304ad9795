"""Nothing a client sends causes a 5xx (DESIGN.md: "never a 500 for anything a client can send").

Three parts:

* **Schemathesis over the app's own OpenAPI document.** The harness's engine lives on the test's
  event loop, so the app must be called on that loop. The document is fetched through the
  ``client`` fixture (httpx over ASGI, in-process); schemathesis generates cases from it, each
  operation in turn, positive and negative, inside Hypothesis (``derandomize=True``, a bounded
  number of examples, no example database). Hypothesis runs in a worker thread
  (``asyncio.to_thread``) so the loop stays free; every case goes back to the loop with
  ``asyncio.run_coroutine_threadsafe`` through the same httpx client, and its response is judged
  by schemathesis's own checks (``case.validate_response``) plus the API's error envelope. Path
  parameters, the ``job_id`` filter and job bodies are often swapped for real ids, valid jobs
  and hostile values, so requests reach the deep end of the app rather than stopping at a 404 or
  at the first type check. Failures are collected, one example per operation and kind, and
  reported together at the end.
* **An exhaustive sweep**: every hostile value of a property's type in every property of
  JobRequest and JobUpdate, through create, preview and update; what is accepted must stay
  readable.
* **Targeted tests** for the nastiest inputs, each a 4xx with ``detail`` and ``errors`` (field,
  value, reason) that writes nothing.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode
from schemathesis.checks import CheckFunction, not_a_server_error
from schemathesis.errors import FailureGroup
from schemathesis.schemas import APIOperation
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
)

from lablink.api.app import MAX_BODY_BYTES
from lablink.api.schemas import JobUpdate
from lablink.domain.requests import JobRequest
from tests.support.harness import Harness

Client = httpx.AsyncClient
Body = dict[str, Any]
Operation = APIOperation[Any, Any, Any, Any]

BASE_URL = "http://testserver"
# Operations taking a job body get more examples: that is where the depth is.
EXAMPLES_PER_OPERATION = 100
EXAMPLES_PER_BODY_OPERATION = 300
JOB_PATHS = ("/api/scheduler/jobs/create", "/api/scheduler/preview")

VALID_JOB: Body = {
    "name": "Hourly Voltage Check",
    "schedule_type": "measurement",
    "equipment_id": "power_supply_1",
    "trigger_type": "interval",
    "interval_hours": 1,
    "parameters": {"command": "get_voltage"},
}
SEED_JOBS: list[Body] = [
    VALID_JOB,
    {
        **VALID_JOB,
        "name": "Business Hours Load Testing",
        "trigger_type": "cron",
        "interval_hours": None,
        "cron_expression": "0 9-17 * * 1-5",
        "conflict_policy": "queue",
    },
    {**VALID_JOB, "name": "Disabled check", "enabled": False, "tags": ["backup"]},
]
# Valid bodies over every trigger and job type: the fuzzer changes one or two fields of one.
BASE_JOBS: list[Body] = [
    *SEED_JOBS,
    {**VALID_JOB, "trigger_type": "daily", "interval_hours": None, "time_of_day": "03:00:00"},
    {
        **VALID_JOB,
        "schedule_type": "acquisition",
        "equipment_id": "scope_1",
        "parameters": {"duration": 600, "sample_rate": 1000000, "channels": [1, 2, 3, 4]},
        "trigger_type": "weekly",
        "interval_hours": None,
        "day_of_week": 1,
        "time_of_day": "08:00:00",
    },
    {
        **VALID_JOB,
        "trigger_type": "monthly",
        "interval_hours": None,
        "day_of_month": 31,
        "time_of_day": "12:00:00",
    },
    {
        **VALID_JOB,
        "schedule_type": "command",
        "parameters": {"command": "set_current", "parameters": {"value": 2.5}},
        "trigger_type": "date",
        "interval_hours": None,
        "run_date": "2027-12-25T10:00:00",
    },
]
# Values that have broken servers before, by the JSON type they pretend to be: the limits of
# floats and of SQLite's 64-bit integers, dates at the ends of the calendar and in DST gaps,
# control characters, oversized and path-like strings, deep and odd shapes.
HOSTILE_BY_TYPE: dict[str, list[Any]] = {
    "number": [1e308, -1e308, 5e-324, -1, 0, 1e15, 0.5],
    "integer": [2**63, 2**63 - 1, 10**30, -(10**30), -1, 0, 2**31],
    "string": ["", " ", "\x00", "a" * 300, "\u202e\U0001f9ea", "../../etc/passwd", "0 0 31 2 *"],
    "date-time": [
        "0001-01-01T00:00:00",
        "0001-01-01T00:00:00+14:00",
        "9999-12-31T23:59:59",
        "9999-12-31T23:59:59+00:00",
        "9999-12-31T23:59:59-12:00",
        "2026-03-29T02:30:00",  # does not exist in Berlin
        "2026-10-25T02:30:00",  # exists twice in Berlin
    ],
    "object": [
        {},
        {"a": {"b": {"c": [1, [2, [3, {"d": None}]]]}}},
        {"duration": 1e308, "command": None, "parameters": []},
    ],
    "array": [[], [""], ["x" * 65], [None], [[["nested"]]]],
    "boolean": [],
    "null": [],
}
HOSTILE_ANY_TYPE: list[Any] = [None, True, [], {}, "", 0, -(10**30), 1e308]


def hostile_values(schema: Body) -> list[Any]:
    """Hostile values for one property of the OpenAPI document, most of its own type."""
    options = [schema, *schema.get("oneOf", [])]
    kinds = {str(o.get("format") or o.get("type")) for o in options}
    values = [v for kind in sorted(kinds) for v in HOSTILE_BY_TYPE.get(kind, [])]
    return values + HOSTILE_ANY_TYPE


HOSTILE_QUERY_VALUES = [
    "0",
    "-1",
    "9223372036854775808",
    "1" + "0" * 30,
    "1e3",
    "",
    "\x00",
    "0001-01-01T00:00:00+00:00",
    "9999-12-31T23:59:59-23:59",
    "garbage",
]


def job_request_fields() -> list[str]:
    return list(JobRequest.__struct_fields__)


# --------------------------------------------------------------------------------------------
# The error envelope every 4xx must have (lablink/api/errors.py, DESIGN.md "Errors").
# --------------------------------------------------------------------------------------------


def envelope_problems(response: httpx.Response) -> list[str]:
    """What is wrong with a response's body, judged by the API's own contract."""
    if response.status_code < 400 and response.headers.get("content-type", "").startswith(
        "text/csv"
    ):
        return []  # a file (format=csv): content_type_conformance judges it by the document
    try:
        body = response.json()
    except ValueError:
        return [f"body is not JSON: {response.text[:200]!r}"]
    if not isinstance(body, dict):
        return [f"body is not an object: {body!r:.200}"]
    if response.status_code < 400:
        if response.request.url.path.startswith("/health"):  # probes answer, not envelopes
            return []
        return [] if body.get("success") is True else ["a 2xx without success: true"]
    problems = []
    if body.get("success") is not False:
        problems.append("an error without success: false")
    if not isinstance(body.get("detail"), str) or not body["detail"]:
        problems.append("an error without a detail sentence")
    errors = body.get("errors")
    if not isinstance(errors, list) or not errors:
        problems.append("an error without errors")
    else:
        for error in errors:
            if not isinstance(error, dict) or not {"field", "value", "reason"} <= set(error):
                problems.append(f"an error entry without field/value/reason: {error!r:.200}")
            elif not isinstance(error["field"], str) or not error["reason"]:
                problems.append(f"an error entry with an empty field or reason: {error!r:.200}")
    return problems


def assert_client_error(response: httpx.Response, *, status: int | None = None) -> Body:
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:500])
    if status is not None:
        assert response.status_code == status, (response.status_code, response.text[:500])
    assert envelope_problems(response) == [], response.text[:500]
    body: Body = response.json()
    return body


def fields_named(body: Body) -> list[str]:
    return [str(e["field"]) for e in body["errors"]]


@dataclass
class Snapshot:
    """What the API and the log hold; a refused request must change neither."""

    jobs: int
    events: int

    @classmethod
    async def take(cls, client: Client, harness: Harness) -> Snapshot:
        listed = await client.get("/api/scheduler/jobs")
        assert listed.status_code == 200, listed.text[:500]
        (row,) = harness.rows("SELECT COUNT(*) AS n FROM events")
        return cls(jobs=listed.json()["total"], events=row["n"])


async def create(client: Client, body: Body) -> str:
    response = await client.post("/api/scheduler/jobs/create", json=body)
    assert response.status_code == 200, response.text
    return str(response.json()["job_id"])


# --------------------------------------------------------------------------------------------
# Schemathesis
# --------------------------------------------------------------------------------------------


@dataclass
class Findings:
    """One example per (operation, kind of failure), so a bug is reported once, not 150 times."""

    examples: dict[tuple[str, str], str] = field(default_factory=dict)
    counts: dict[tuple[str, str], int] = field(default_factory=dict)
    statuses: dict[str, dict[int, int]] = field(default_factory=dict)

    def record(self, operation: str, kind: str, example: str) -> None:
        key = (operation, kind)
        self.examples.setdefault(key, example)
        self.counts[key] = self.counts.get(key, 0) + 1

    def saw(self, operation: str, status: int) -> None:
        seen = self.statuses.setdefault(operation, {})
        seen[status] = seen.get(status, 0) + 1

    def report(self) -> str:
        return "\n\n".join(
            f"{operation} - {kind} ({self.counts[(operation, kind)]}x), e.g.\n{example}"
            for (operation, kind), example in self.examples.items()
        )


@dataclass
class Seeds:
    """Real ids to aim at, and the document's parameters and properties to aim with."""

    jobs: list[str]
    execution: str
    query_names: dict[str, list[str]] = field(default_factory=dict)
    hostile: dict[str, dict[str, list[Any]]] = field(default_factory=dict)


def describe(kwargs: dict[str, Any], response: httpx.Response) -> str:
    body = kwargs.get("json", kwargs.get("data"))
    return (
        f"  {response.request.method} {response.request.url}\n"
        f"  body: {body!r:.400}\n"
        f"  -> {response.status_code} {response.text[:400]}"
    )


async def send(client: Client, kwargs: dict[str, Any]) -> httpx.Response:
    """A case's requests-style transport arguments, sent through the in-process httpx client."""
    unexpected = set(kwargs) - {"method", "url", "headers", "params", "cookies", "json", "data"}
    assert not unexpected, unexpected
    content = kwargs.get("data")
    if "json" in kwargs:
        content = json.dumps(kwargs["json"]).encode()
    elif isinstance(content, str):
        content = content.encode()
    return await client.request(
        kwargs["method"],
        kwargs["url"],
        params=kwargs.get("params"),
        headers=dict(kwargs.get("headers") or {}),
        content=content,
    )


def steer(case: Case[Any], draw: Callable[[st.SearchStrategy[Any]], Any], seeds: Seeds) -> bool:
    """Often point the case at real objects, and wrap hostile values in valid jobs.

    Returns True when the case was changed, so schemathesis's positive/negative label no
    longer holds for it."""
    changed = False
    operation: Operation = case.operation
    path_parameters = dict(case.path_parameters or {})
    if "job_id" in path_parameters and draw(st.booleans()):
        path_parameters["job_id"] = draw(st.sampled_from(seeds.jobs))
    if "execution_id" in path_parameters and draw(st.booleans()):
        path_parameters["execution_id"] = seeds.execution
    if path_parameters != (case.path_parameters or {}):
        case.path_parameters = path_parameters
    query = dict(case.query or {})
    if operation.path == "/api/scheduler/executions" and draw(st.booleans()):
        query["job_id"] = draw(st.sampled_from(seeds.jobs))
        changed = True
    names = seeds.query_names.get(operation.label, [])
    if names and draw(st.integers(0, 2)) == 0:
        query[draw(st.sampled_from(names))] = draw(st.sampled_from(HOSTILE_QUERY_VALUES))
        changed = True
    if changed:
        case.query = query
    if takes_job_body(operation) and draw(st.integers(0, 3)) > 0:
        generated = case.body if isinstance(case.body, dict) else {}
        creating = operation.path in JOB_PATHS
        base: Body = dict(draw(st.sampled_from(BASE_JOBS))) if creating else {}
        hostile = seeds.hostile["JobRequest" if creating else "JobUpdate"]
        fields = sorted(hostile)
        for name in draw(st.lists(st.sampled_from(fields), min_size=1, max_size=2, unique=True)):
            if name in generated and draw(st.integers(0, 2)) == 0:
                base[name] = generated[name]
            else:
                base[name] = draw(st.sampled_from(hostile[name]))
        case.body = base
        changed = True
    return changed


def takes_job_body(operation: Operation) -> bool:
    return operation.path in JOB_PATHS or operation.method.upper() == "PUT"


CHECKS: list[CheckFunction] = [
    not_a_server_error,
    response_schema_conformance,
    content_type_conformance,
]


def fuzz_operation(
    operation: Operation,
    seeds: Seeds,
    call: Callable[[dict[str, Any]], httpx.Response],
    findings: Findings,
) -> None:
    """Runs in a worker thread: Hypothesis draws, the event loop answers."""
    cases = st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
    )

    @settings(
        max_examples=(
            EXAMPLES_PER_BODY_OPERATION if takes_job_body(operation) else EXAMPLES_PER_OPERATION
        ),
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=cases, data=st.data())
    def run(case: Case[Any], data: st.DataObject) -> None:
        steered = steer(case, data.draw, seeds)
        kwargs = case.as_transport_kwargs(base_url=BASE_URL)
        response = call(kwargs)
        label = operation.label
        findings.saw(label, response.status_code)
        checks = CHECKS if steered else [*CHECKS, negative_data_rejection]
        try:
            case.validate_response(response, checks=checks)
        except FailureGroup as group:
            for failure in group.exceptions:
                findings.record(label, failure.title, describe(kwargs, response))
        for problem in envelope_problems(response):
            findings.record(label, problem, describe(kwargs, response))

    run()


async def seed(client: Client, document: Body) -> Seeds:
    jobs = [await create(client, body) for body in SEED_JOBS]
    run = await client.post(f"/api/scheduler/jobs/{jobs[0]}/run")
    assert run.status_code == 200, run.text
    query_names = {
        f"{method.upper()} {path}": [
            p["name"] for p in operation.get("parameters", []) if p["in"] == "query"
        ]
        for path, methods in document["paths"].items()
        for method, operation in methods.items()
    }
    components = document["components"]["schemas"]
    hostile = {
        name: {f: hostile_values(schema) for f, schema in components[name]["properties"].items()}
        for name in ("JobRequest", "JobUpdate")
    }
    return Seeds(
        jobs=[*jobs, "job_999999"],
        execution=str(run.json()["execution_id"]),
        query_names=query_names,
        hostile=hostile,
    )


def operations(schema: Any) -> Iterator[Operation]:
    for result in schema.get_all_operations():
        operation: Operation = result.ok()
        yield operation


@pytest.mark.slow
# Every operation is fuzzed in turn (about 60 s on a quiet machine, 300 s on a loaded one): a
# generous timeout still turns a hang into a traceback.
@pytest.mark.timeout(900)
async def test_schemathesis_finds_no_server_error(client: Client, harness: Harness) -> None:
    document = (await client.get("/schema/openapi.json")).json()
    schema = schemathesis.openapi.from_dict(document, config=schemathesis.Config())
    loop = asyncio.get_running_loop()

    def call(kwargs: dict[str, Any]) -> httpx.Response:
        return asyncio.run_coroutine_threadsafe(send(client, kwargs), loop).result(timeout=60)

    findings = Findings()
    fuzzed = []
    for operation in operations(schema):
        seeds = await seed(client, document)  # fresh ones: DELETE and PUT cases change them
        await asyncio.to_thread(fuzz_operation, operation, seeds, call, findings)
        await harness.settle()
        fuzzed.append(f"{operation.method.upper()} {operation.path}")

    assert len(fuzzed) == len(set(fuzzed)) >= 17, fuzzed
    assert {m.split()[0] for m in fuzzed} == {"GET", "POST", "PUT", "DELETE"}
    # Whatever was accepted on the way must still be readable: no stored value may poison a
    # later read (a job the API cannot show is a job nobody can delete from the UI).
    for path in ("/api/scheduler/jobs", "/api/scheduler/statistics", "/api/scheduler/executions"):
        response = await client.get(path)
        if response.status_code >= 500:
            findings.record(f"GET {path} after fuzzing", "server error", response.text[:400])
    listed = await client.get("/api/scheduler/jobs")
    for job_id in [j["job_id"] for j in listed.json().get("jobs", [])]:
        for suffix in ("", "/history", "/next-runs", "/events"):
            response = await client.get(f"/api/scheduler/jobs/{job_id}{suffix}")
            if response.status_code >= 500:
                findings.record(f"GET /jobs/{{id}}{suffix}", "server error", response.text[:300])
    assert not findings.examples, "\n\n" + findings.report()


SWEEP_BASES = [
    next(b for b in BASE_JOBS if b["trigger_type"] == t) for t in ("interval", "monthly", "date")
]


@pytest.mark.slow
async def test_every_hostile_value_in_every_field(client: Client, harness: Harness) -> None:
    """The exhaustive companion of the random run: each hostile value of a property's type
    (and a few of any type) in each property of JobRequest and JobUpdate, on an interval, a
    monthly and a date job, through create, preview and update. Each answer is a 2xx, or a 4xx
    with the error envelope; what is accepted must stay readable. One example is reported per
    endpoint, kind of failure and field."""
    document = (await client.get("/schema/openapi.json")).json()
    components = document["components"]["schemas"]
    findings = Findings()

    def judge(label: str, name: str, request: str, response: httpx.Response) -> bool:
        findings.saw(label, response.status_code)
        example = f"  {request}\n  -> {response.status_code} {response.text[:300]}"
        problems = ["server error"] if response.status_code >= 500 else []
        for problem in [*problems, *envelope_problems(response)]:
            findings.record(label, f"{problem} [{name}]", example)
        return not problems

    for base in SWEEP_BASES:
        kind = f"{base['trigger_type']} job"
        for name, schema in components["JobRequest"]["properties"].items():
            for value in hostile_values(schema):
                for path in JOB_PATHS:
                    response = await client.post(path, json={**base, name: value})
                    judge(path, name, f"{kind}, {name}={value!r:.80}", response)
        job_id = await create(client, base)
        for name, schema in components["JobUpdate"]["properties"].items():
            for value in hostile_values(schema):
                request = f"{kind}, PUT {name}={value!r:.80}"
                response = await client.put(f"/api/scheduler/jobs/{job_id}", json={name: value})
                judge("PUT /api/scheduler/jobs/{job_id}", name, request, response)
                read = await client.get(f"/api/scheduler/jobs/{job_id}")
                if not judge(
                    "GET /api/scheduler/jobs/{job_id} after that PUT", name, request, read
                ):
                    # The update stored a value the API cannot show: start again from a
                    # fresh job, so the next value is judged on its own.
                    await client.delete(f"/api/scheduler/jobs/{job_id}")
                    job_id = await create(client, base)
    for path in ("/api/scheduler/jobs", "/api/scheduler/statistics"):
        judge(f"GET {path} after the sweep", "-", "GET", await client.get(path))
    await harness.settle()
    assert sum(sum(s.values()) for s in findings.statuses.values()) > 1000
    assert not findings.examples, "\n\n" + findings.report()


async def test_openapi_documents_the_error_statuses_the_api_answers(client: Client) -> None:
    """DESIGN.md: "The OpenAPI document at /schema is complete and true" - and the API answers
    404 for unknown ids, 409 for conflicts, 422 for refused bodies, 413 for big ones."""
    document = (await client.get("/schema/openapi.json")).json()
    expected = {
        ("post", "/api/scheduler/jobs/create"): {"200", "400", "413", "422"},
        ("post", "/api/scheduler/preview"): {"200", "400", "413", "422"},
        ("put", "/api/scheduler/jobs/{job_id}"): {"200", "400", "404", "409", "413", "422"},
        ("get", "/api/scheduler/jobs/{job_id}"): {"200", "404"},
        ("delete", "/api/scheduler/jobs/{job_id}"): {"200", "404"},
        ("post", "/api/scheduler/jobs/{job_id}/run"): {"200", "404", "409"},
        ("post", "/api/scheduler/jobs/{job_id}/pause"): {"200", "404"},
        ("post", "/api/scheduler/jobs/{job_id}/resume"): {"200", "404"},
        ("get", "/api/scheduler/jobs/{job_id}/history"): {"200", "404"},
        ("get", "/api/scheduler/jobs/{job_id}/next-runs"): {"200", "400", "404"},
        ("get", "/api/scheduler/jobs/{job_id}/events"): {"200", "404"},
        ("get", "/api/scheduler/executions/{execution_id}"): {"200", "404"},
        ("get", "/api/scheduler/executions"): {"200", "400"},
        ("get", "/api/scheduler/jobs/{job_id}/results"): {"200", "400", "404"},
    }
    missing = {
        f"{method.upper()} {path}": sorted(
            codes - set(document["paths"][path][method]["responses"])
        )
        for (method, path), codes in expected.items()
    }
    assert {k: v for k, v in missing.items() if v} == {}


# --------------------------------------------------------------------------------------------
# Targeted: the nastiest inputs, one by one
# --------------------------------------------------------------------------------------------

NUMBER_FIELDS = [
    "interval_seconds",
    "interval_minutes",
    "interval_hours",
    "interval_days",
    "misfire_grace_time",
    "timeout_seconds",
]
INTEGER_FIELDS = [
    "day_of_week",
    "day_of_month",
    "max_instances",
    "max_executions",
    "alarm_after_missed",
]


def with_field(name: str, value: Any) -> Body:
    """A valid job with one field set; a trigger field brings the trigger it belongs to."""
    body = dict(VALID_JOB)
    if name in ("day_of_week",):
        body.update(trigger_type="weekly", interval_hours=None, time_of_day="09:00:00")
    elif name in ("day_of_month",):
        body.update(trigger_type="monthly", interval_hours=None, time_of_day="09:00:00")
    elif name.startswith("interval_"):
        body.pop("interval_hours")
    body[name] = value
    return body


@pytest.mark.parametrize("value", [1e308, -1e308], ids=["1e308", "-1e308"])
@pytest.mark.parametrize("name", NUMBER_FIELDS)
@pytest.mark.parametrize("path", JOB_PATHS)
async def test_huge_floats_are_refused_by_field(
    client: Client, harness: Harness, path: str, name: str, value: float
) -> None:
    before = await Snapshot.take(client, harness)
    body = assert_client_error(await client.post(path, json=with_field(name, value)), status=422)
    assert name in fields_named(body), body
    assert (name, value) in [(e["field"], e["value"]) for e in body["errors"]]
    assert await Snapshot.take(client, harness) == before


@pytest.mark.parametrize("value", [2**63, 10**30, -(10**30)], ids=["2**63", "1e30", "-1e30"])
@pytest.mark.parametrize("name", INTEGER_FIELDS)
@pytest.mark.parametrize("path", JOB_PATHS)
async def test_huge_integers_are_refused_by_field(
    client: Client, harness: Harness, path: str, name: str, value: int
) -> None:
    before = await Snapshot.take(client, harness)
    body = assert_client_error(await client.post(path, json=with_field(name, value)), status=422)
    assert (name, value) in [(e["field"], e["value"]) for e in body["errors"]], body
    assert await Snapshot.take(client, harness) == before


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("interval_hours", 1e308),
        ("interval_days", -1e308),
        ("max_executions", 10**30),
        ("max_instances", 2**63),
        ("misfire_grace_time", 1e308),
        ("timezone", "a" * 300),
        ("start_date", "0001-01-01T00:00:00"),
        ("end_date", "9999-12-31T23:59:59+00:00"),
    ],
)
async def test_hostile_updates_are_refused_and_change_nothing(
    client: Client, harness: Harness, name: str, value: Any
) -> None:
    job_id = await create(client, VALID_JOB)
    before = await Snapshot.take(client, harness)
    response = await client.put(f"/api/scheduler/jobs/{job_id}", json={"version": 1, name: value})
    body = assert_client_error(response)
    assert name in fields_named(body), body
    assert await Snapshot.take(client, harness) == before
    job = await client.get(f"/api/scheduler/jobs/{job_id}")
    assert job.status_code == 200, job.text[:500]
    assert job.json()["job"]["version"] == 1


def with_raw_interval(literal: str) -> bytes:
    """VALID_JOB as JSON text, with interval_hours written as ``literal`` verbatim."""
    body = {k: v for k, v in VALID_JOB.items() if k != "interval_hours"}
    return (json.dumps(body)[:-1] + f', "interval_hours": {literal}}}').encode()


@pytest.mark.parametrize("literal", ["1e999", "-1e999"])
async def test_numbers_beyond_a_float_are_a_422_naming_the_field(
    client: Client, harness: Harness, literal: str
) -> None:
    """Valid JSON, but no float holds it: refused as the field's value, not as unreadable."""
    before = await Snapshot.take(client, harness)
    response = await client.post(
        "/api/scheduler/jobs/create",
        content=with_raw_interval(literal),
        headers={"content-type": "application/json"},
    )
    body = assert_client_error(response, status=422)
    assert "interval_hours" in fields_named(body), body
    assert await Snapshot.take(client, harness) == before


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "0x10", "01", "+1", ".5"])
async def test_numbers_json_cannot_carry_are_a_400(
    client: Client, harness: Harness, literal: str
) -> None:
    before = await Snapshot.take(client, harness)
    response = await client.post(
        "/api/scheduler/jobs/create",
        content=with_raw_interval(literal),
        headers={"content-type": "application/json"},
    )
    assert_client_error(response, status=400)
    assert await Snapshot.take(client, harness) == before
    control = await client.post(
        "/api/scheduler/jobs/create",
        content=with_raw_interval("2.5"),
        headers={"content-type": "application/json"},
    )
    assert control.status_code == 200, control.text  # the same text with a JSON number


def nested(depth: int) -> str:
    return '{"a": ' * depth + "1" + "}" * depth


def nested_body(where: str, depth: int) -> bytes:
    """A job body (as JSON text) with an object ``depth`` levels deep in ``where``."""
    body = {k: v for k, v in VALID_JOB.items() if k != "parameters"}
    head = json.dumps(body)[:-1]
    return {
        "parameters": f'{head}, "parameters": {nested(depth)}}}',
        "unknown_field": f'{head}, "extra": {nested(depth)}}}',
        "top": nested(depth),
    }[where].encode()


@pytest.mark.parametrize("depth", [1_000, 100_000])
@pytest.mark.parametrize("where", ["parameters", "unknown_field", "top"])
async def test_deeply_nested_json_is_refused(
    client: Client, harness: Harness, depth: int, where: str
) -> None:
    before = await Snapshot.take(client, harness)
    raw = nested_body(where, depth)
    assert len(raw) < MAX_BODY_BYTES  # refused for its depth, not its size
    response = await client.post(
        "/api/scheduler/jobs/create", content=raw, headers={"content-type": "application/json"}
    )
    assert_client_error(response)
    assert await Snapshot.take(client, harness) == before


@pytest.mark.parametrize(
    ("where", "status"), [("parameters", 200), ("unknown_field", 422), ("top", 422)]
)
async def test_shallow_nesting_is_judged_on_its_content(
    client: Client, where: str, status: int
) -> None:
    """The control for the test above: the same bodies, 10 levels deep."""
    response = await client.post(
        "/api/scheduler/jobs/create",
        content=nested_body(where, 10),
        headers={"content-type": "application/json"},
    )
    assert response.status_code == status, response.text


async def test_moderately_nested_parameters_round_trip(client: Client) -> None:
    parameters = {"sweep": {"steps": [{"v": 1.0, "settle": {"ms": 50}}], "repeat": 2}}
    job_id = await create(client, {**VALID_JOB, "parameters": parameters})
    job = (await client.get(f"/api/scheduler/jobs/{job_id}")).json()["job"]
    assert job["parameters"] == parameters


@pytest.mark.parametrize(
    "name",
    ["Messung Spannung µV ✓", "電圧チェック", "проверка", "🧪 scope sweep", "Ωhm — ‰"],
)
async def test_unicode_names_are_accepted_and_round_trip(client: Client, name: str) -> None:
    job_id = await create(client, {**VALID_JOB, "name": name})
    job = (await client.get(f"/api/scheduler/jobs/{job_id}")).json()["job"]
    assert job["name"] == name
    found = await client.get("/api/scheduler/jobs", params={"search": name[:4]})
    assert job_id in [j["job_id"] for j in found.json()["jobs"]]


@pytest.mark.parametrize(
    "name",
    ["\x00", "Volt\x00age", "bell\x07", "esc\x1b[31mred", "line\nbreak", "tab\there", "\x7f"],
    ids=["nul", "inner-nul", "bel", "ansi-escape", "newline", "tab", "del"],
)
async def test_control_characters_in_name_are_refused(
    client: Client, harness: Harness, name: str
) -> None:
    """A name is shown in lists, logs, alarms and NATS messages; control characters there
    corrupt terminals and log lines. Unicode letters and symbols are welcome (above)."""
    before = await Snapshot.take(client, harness)
    response = await client.post("/api/scheduler/jobs/create", json={**VALID_JOB, "name": name})
    body = assert_client_error(response, status=422)
    assert ("name", name) in [(e["field"], e["value"]) for e in body["errors"]], body
    assert await Snapshot.take(client, harness) == before


@pytest.mark.parametrize(
    "raw",
    [
        b'"\\ud800"',  # a lone surrogate escape
        b'"caf\xe9"',  # Latin-1, not UTF-8
        b'"\xff\xfe\xfd"',
        b'"\xc0\xaf"',  # an overlong encoding of "/"
        b'"\xed\xa0\x80"',  # a surrogate encoded in UTF-8
    ],
    ids=["lone-surrogate-escape", "latin-1", "ff-fe-fd", "overlong", "utf8-surrogate"],
)
async def test_invalid_utf8_and_lone_surrogates_are_a_400(
    client: Client, harness: Harness, raw: bytes
) -> None:
    before = await Snapshot.take(client, harness)
    text = json.dumps({**VALID_JOB, "name": "PLACEHOLDER"}).encode()
    response = await client.post(
        "/api/scheduler/jobs/create",
        content=text.replace(b'"PLACEHOLDER"', raw),
        headers={"content-type": "application/json"},
    )
    assert_client_error(response, status=400)
    assert await Snapshot.take(client, harness) == before
    control = await client.post(
        "/api/scheduler/jobs/create",
        content=text.replace(b'"PLACEHOLDER"', '"café"'.encode()),
        headers={"content-type": "application/json"},
    )
    assert control.status_code == 200, control.text  # the same text in valid UTF-8


async def test_utf16_body_is_a_400(client: Client, harness: Harness) -> None:
    before = await Snapshot.take(client, harness)
    response = await client.post(
        "/api/scheduler/jobs/create",
        content=b"\xff\xfe" + json.dumps(VALID_JOB).encode("utf-16-le"),
        headers={"content-type": "application/json"},
    )
    assert_client_error(response, status=400)
    assert await Snapshot.take(client, harness) == before


REQUIRED = ("name", "schedule_type", "equipment_id", "trigger_type")


@pytest.mark.parametrize("name", [f for f in job_request_fields() if f != "description"])
async def test_empty_string_in_any_field_is_refused_by_name(
    client: Client, harness: Harness, name: str
) -> None:
    """Only ``description`` may be empty; every other field refuses "" and names itself."""
    before = await Snapshot.take(client, harness)
    body = assert_client_error(
        await client.post("/api/scheduler/jobs/create", json=with_field(name, "")), status=422
    )
    assert (name, "") in [(e["field"], e["value"]) for e in body["errors"]], body
    assert await Snapshot.take(client, harness) == before


async def nullable_fields(client: Client, component: str) -> set[str]:
    """The fields the OpenAPI document says may be null."""
    document = (await client.get("/schema/openapi.json")).json()
    properties = document["components"]["schemas"][component]["properties"]
    return {
        name
        for name, schema in properties.items()
        if any(option.get("type") == "null" for option in schema.get("oneOf", []))
    }


@pytest.mark.parametrize("name", job_request_fields())
async def test_null_in_any_field(client: Client, harness: Harness, name: str) -> None:
    """null is accepted exactly where the OpenAPI document says so; everywhere else it is a
    422 naming the field. (On an interval job, null interval_hours leaves it without any
    interval: then the trigger names what it needs.)"""
    nullable = await nullable_fields(client, "JobRequest")
    before = await Snapshot.take(client, harness)
    response = await client.post("/api/scheduler/jobs/create", json={**VALID_JOB, name: None})
    if name in nullable and name != "interval_hours":
        assert response.status_code == 200, response.text
        return
    body = assert_client_error(response, status=422)
    if name == "interval_hours":
        assert fields_named(body) == ["interval_seconds"], body
    else:
        assert [(e["field"], e["value"]) for e in body["errors"]] == [(name, None)], body
    assert await Snapshot.take(client, harness) == before


async def test_null_in_every_field_at_once(client: Client, harness: Harness) -> None:
    before = await Snapshot.take(client, harness)
    every = await client.post(
        "/api/scheduler/jobs/create", json=dict.fromkeys(job_request_fields())
    )
    body = assert_client_error(every, status=422)
    assert set(fields_named(body)) <= set(job_request_fields()), body
    assert await Snapshot.take(client, harness) == before


def wrong_types(schema: Body) -> list[Any]:
    """JSON values of every type the property's schema does not allow."""
    options = [schema, *schema.get("oneOf", [])]
    allowed = {o.get("type") for o in options}
    if "number" in allowed:
        allowed.add("integer")
    if any(o.get("format") == "date-time" for o in options):
        allowed.add("integer")  # epoch seconds: see test_numbers_and_strings_are_not_coerced
    candidates: list[tuple[str, Any]] = [
        ("object", {"nested": "object"}),
        ("array", ["a", "list"]),
        ("string", "text"),
        ("integer", 123),
        ("boolean", True),
        ("null", None),
    ]
    return [value for kind, value in candidates if kind not in allowed]


@pytest.mark.parametrize("component", ["JobRequest", "JobUpdate"])
async def test_wrong_type_in_every_field_is_refused_by_name(
    client: Client, harness: Harness, component: str
) -> None:
    document = (await client.get("/schema/openapi.json")).json()
    properties = document["components"]["schemas"][component]["properties"]
    model = JobRequest if component == "JobRequest" else JobUpdate
    assert set(properties) == set(model.__struct_fields__)
    job_id = await create(client, VALID_JOB)
    before = await Snapshot.take(client, harness)
    tried = 0
    for name, schema in properties.items():
        for value in wrong_types(schema):
            if component == "JobRequest":
                response = await client.post(
                    "/api/scheduler/jobs/create", json=with_field(name, value)
                )
            else:
                response = await client.put(f"/api/scheduler/jobs/{job_id}", json={name: value})
            body = assert_client_error(response, status=422)
            assert [(e["field"], e["value"]) for e in body["errors"]] == [(name, value)], body
            tried += 1
    assert tried >= 3 * len(properties)
    assert await Snapshot.take(client, harness) == before


@pytest.mark.parametrize(
    ("path", "name", "value"),
    [
        (path, name, value)
        for path, names in (
            ("/api/scheduler/executions", ("limit", "cursor")),
            ("/api/scheduler/jobs", ("limit", "offset")),
            ("/api/scheduler/jobs/{job}/next-runs", ("count",)),
            ("/api/scheduler/preview", ("count",)),
        )
        for name in names
        for value in ("0", "-1", "-9223372036854775809", "9223372036854775808", "1" + "0" * 30)
        if not (name == "offset" and value == "0")
    ]
    + [
        ("/api/scheduler/executions", "limit", "1.5"),
        ("/api/scheduler/executions", "limit", "ten"),
        ("/api/scheduler/executions", "limit", ""),
        ("/api/scheduler/jobs", "enabled", "maybe"),
        ("/api/scheduler/jobs", "search", "x" * 201),
    ],
)
async def test_bad_paging_parameters_are_a_400_naming_them(
    client: Client, harness: Harness, path: str, name: str, value: str
) -> None:
    job_id = await create(client, VALID_JOB)
    before = await Snapshot.take(client, harness)
    url = path.replace("{job}", job_id)
    if path == "/api/scheduler/preview":
        response = await client.post(url, params={name: value}, json=VALID_JOB)
    else:
        response = await client.get(url, params={name: value})
    body = assert_client_error(response, status=400)
    assert [(e["field"], e["value"]) for e in body["errors"]] == [(name, value)], body
    assert await Snapshot.take(client, harness) == before


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("interval_hours", "1"),
        ("misfire_grace_time", "300"),
        ("max_instances", "1"),
        ("max_instances", 1.0),
        ("enabled", "true"),
        ("enabled", 1),
        ("coalesce", "false"),
        ("on_failure_alarm", 0),
        ("run_date", 1798196400),
        ("start_date", 1798196400.5),
    ],
)
async def test_numbers_and_strings_are_not_coerced(
    client: Client, harness: Harness, name: str, value: Any
) -> None:
    """The OpenAPI document and lablink/domain/requests.py ("decoding ... checks types") say
    what each field's type is; a value of another type is refused, not guessed at. A client
    that sends "1" for a number or 1 for a boolean has a bug it should hear about."""
    body = dict(VALID_JOB)
    if name == "run_date":
        body.update(trigger_type="date", interval_hours=None)
    before = await Snapshot.take(client, harness)
    response = await client.post("/api/scheduler/jobs/create", json={**body, name: value})
    problem = assert_client_error(response, status=422)
    assert [(e["field"], e["value"]) for e in problem["errors"]] == [(name, value)], problem
    assert await Snapshot.take(client, harness) == before


@pytest.mark.parametrize("name", ["since", "until"])
@pytest.mark.parametrize(
    "value",
    [
        "garbage",
        "",
        "yesterday",
        "2026-13-45",
        "2026-02-30T00:00:00Z",
        "2026-03-02T25:00:00Z",
        "2026-03-02T09:00:00+25:00",
        "2026-03-02T09:00:00",  # no offset: ambiguous, refused
        "\x00",
    ],
)
async def test_garbage_since_until_are_refused_naming_them(
    client: Client, name: str, value: str
) -> None:
    response = await client.get("/api/scheduler/executions", params={name: value})
    body = assert_client_error(response)
    assert [(e["field"], e["value"]) for e in body["errors"]] == [(name, value)], body


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("since", "0001-01-01T00:00:00+00:00"),
        ("since", "0001-01-01T00:00:00-23:59"),
        ("until", "9999-12-31T23:59:59+00:00"),
        ("until", "9999-12-31T23:59:59+23:59"),
    ],
)
async def test_extreme_but_valid_since_until_answer(client: Client, name: str, value: str) -> None:
    response = await client.get("/api/scheduler/executions", params={name: value})
    assert response.status_code == 200, response.text[:500]


@pytest.mark.parametrize(
    ("trigger", "name", "value"),
    [
        ("date", "run_date", "0001-01-01T00:00:00"),
        ("date", "run_date", "0001-01-01T00:00:00+14:00"),
        ("date", "run_date", "9999-12-31T23:59:59"),
        ("date", "run_date", "9999-12-31T23:59:59+00:00"),
        ("interval", "start_date", "0001-01-01T00:00:00"),
        ("interval", "start_date", "9999-12-31T23:59:59"),
        ("monthly", "start_date", "9999-12-01T00:00:00"),
        ("interval", "end_date", "9999-12-31T23:59:59"),
        ("interval", "end_date", "9999-12-31T23:59:59+00:00"),
        ("interval", "end_date", "9999-12-31T23:59:59-12:00"),
    ],
)
async def test_dates_at_the_ends_of_the_calendar(
    client: Client, harness: Harness, trigger: str, name: str, value: str
) -> None:
    """Either refused by field, or accepted and then readable everywhere: a stored value must
    never make a later read fail."""
    body = dict(VALID_JOB)
    if trigger == "monthly":
        body.update(trigger_type="monthly", interval_hours=None, day_of_month=31)
        body["time_of_day"] = "23:59:59"
    elif trigger == "date":
        body.update(trigger_type="date", interval_hours=None, run_date="2026-06-01T12:00:00")
    body[name] = value
    for path in JOB_PATHS:
        before = await Snapshot.take(client, harness)
        response = await client.post(path, json=body)
        assert response.status_code < 500, (path, response.text[:500])
        if response.status_code != 200:
            problem = assert_client_error(response, status=422)
            named = fields_named(problem)
            # A date job whose window excludes its run_date may name run_date instead.
            assert name in named or (trigger == "date" and named == ["run_date"]), problem
            assert await Snapshot.take(client, harness) == before
        elif path.endswith("/create"):
            job_id = response.json()["job_id"]
            for read in (
                f"/api/scheduler/jobs/{job_id}",
                f"/api/scheduler/jobs/{job_id}/history",
                f"/api/scheduler/jobs/{job_id}/next-runs?count=1000",
                "/api/scheduler/jobs",
                "/api/scheduler/statistics",
            ):
                got = await client.get(read)
                assert got.status_code == 200, (read, got.text[:500])


@pytest.mark.parametrize(
    "timezone", ["a" * 300, "Europe/" + "x" * 5000, "../" * 100 + "etc/passwd", "\x00", "UTC\x00"]
)
async def test_hostile_timezones_are_refused_by_field(
    client: Client, harness: Harness, timezone: str
) -> None:
    before = await Snapshot.take(client, harness)
    response = await client.post(
        "/api/scheduler/jobs/create", json={**VALID_JOB, "timezone": timezone}
    )
    body = assert_client_error(response, status=422)
    assert fields_named(body) == ["timezone"], body
    assert await Snapshot.take(client, harness) == before


@pytest.mark.parametrize("path", JOB_PATHS)
async def test_a_body_over_one_megabyte_is_a_413(
    client: Client, harness: Harness, path: str
) -> None:
    before = await Snapshot.take(client, harness)
    for body in (
        {**VALID_JOB, "description": "x" * MAX_BODY_BYTES},
        {**VALID_JOB, "parameters": {"samples": list(range(MAX_BODY_BYTES // 4))}},
    ):
        response = await client.post(path, json=body)
        assert_client_error(response, status=413)
    assert await Snapshot.take(client, harness) == before
    job_id = await create(client, VALID_JOB)
    before = await Snapshot.take(client, harness)
    response = await client.put(
        f"/api/scheduler/jobs/{job_id}", json={"description": "y" * MAX_BODY_BYTES}
    )
    assert_client_error(response, status=413)
    assert await Snapshot.take(client, harness) == before


@pytest.mark.parametrize(
    ("content_type", "content"),
    [
        (
            "application/x-www-form-urlencoded",
            b"name=Hourly+Voltage+Check&schedule_type=measurement",
        ),
        (
            "multipart/form-data; boundary=xyz",
            b'--xyz\r\nContent-Disposition: form-data; name="name"\r\n\r\nx\r\n--xyz--\r\n',
        ),
        ("text/plain", b"create a job please"),
        ("application/xml", b"<job><name>x</name></job>"),
        ("application/octet-stream", b"\x00\x01\x02"),
    ],
    ids=["form", "multipart", "text", "xml", "binary"],
)
async def test_non_json_bodies_are_refused(
    client: Client, harness: Harness, content_type: str, content: bytes
) -> None:
    before = await Snapshot.take(client, harness)
    response = await client.post(
        "/api/scheduler/jobs/create", content=content, headers={"content-type": content_type}
    )
    assert_client_error(response)
    assert await Snapshot.take(client, harness) == before


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml"]
)
async def test_a_json_body_under_a_non_json_content_type_is_a_415(
    client: Client, harness: Harness, content_type: str
) -> None:
    """The request says it is not JSON; treating it as JSON anyway hides client bugs (and
    lets a plain HTML form post a job: "simple" requests skip the CORS preflight)."""
    before = await Snapshot.take(client, harness)
    response = await client.post(
        "/api/scheduler/jobs/create",
        content=json.dumps(VALID_JOB).encode(),
        headers={"content-type": content_type},
    )
    body = assert_client_error(response, status=415)
    assert "content-type" in json.dumps(body).lower(), body
    assert await Snapshot.take(client, harness) == before


@pytest.mark.parametrize(
    ("content", "value"),
    [(b"", None), (b"null", None), (b"[1]", [1]), (b'"job"', "job"), (b"42", 42)],
    ids=["empty", "null", "array", "string", "number"],
)
async def test_a_body_that_is_not_an_object_is_named_body(
    client: Client, harness: Harness, content: bytes, value: Any
) -> None:
    """Litestar calls the body parameter ``data``; a client never sees that name."""
    before = await Snapshot.take(client, harness)
    response = await client.post(
        "/api/scheduler/jobs/create", content=content, headers={"content-type": "application/json"}
    )
    body = assert_client_error(response)
    assert [(e["field"], e["value"]) for e in body["errors"]] == [("body", value)], body
    assert "'data'" not in body["detail"], body
    assert await Snapshot.take(client, harness) == before


def test_hostile_values_are_json() -> None:
    """The fuzzer's own values survive a JSON round trip (no NaN slips in unnoticed)."""
    for value in [*HOSTILE_ANY_TYPE, *(v for vs in HOSTILE_BY_TYPE.values() for v in vs)]:
        assert json.loads(json.dumps(value, allow_nan=False)) == value
        if isinstance(value, float):
            assert math.isfinite(value)
