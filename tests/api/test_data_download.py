"""Downloading a capture over HTTP (issue 15 point 3): a real nats-server holds the object in
its LABLINK_DATA object store, the execution's result is recorded through the engine, and
the real Litestar app streams the bytes: identical, with the SHA-256 as ETag, Range, 304,
and the statuses that say why there is nothing to send (404, 409, 410, 416, 503)."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from lablink.bus.server import NatsServer
from lablink.events import ExecutionDataRemoved, ExecutionDataStored
from lablink.handler import CommandHandler
from lablink.keys import create_key
from tests.support.captures import ACQUISITION, Lab, capture, csv_bytes, lab, put, settle
from tests.support.harness import Harness, api_client

pytestmark = pytest.mark.nats
__all__ = ["lab"]  # the fixture (tests/support/captures.py)


@pytest.fixture
async def client(lab: Lab) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(lab.harness, auth=False, data=lab.data) as test_client:
        yield test_client


def url(execution_id: str) -> str:
    return f"/api/scheduler/executions/{execution_id}/data"


def first_error(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert body["detail"]
    return dict(body["errors"][0])


async def test_download_is_byte_identical_with_its_sha256(
    lab: Lab, client: httpx.AsyncClient
) -> None:
    # Several of nats-py's 128 KiB chunks, and a last one that is not full.
    payload = csv_bytes(40_000)
    assert len(payload) > 3 * 128 * 1024
    execution_id, data = await capture(lab.harness, lab.job_id, payload, store=lab.store)

    response = await client.get(url(execution_id))

    assert response.status_code == 200, response.text
    assert response.content == payload
    assert hashlib.sha256(response.content).hexdigest() == data["sha256"]
    assert response.headers["etag"] == f'"{data["sha256"]}"'
    assert response.headers["content-length"] == str(len(payload))
    assert response.headers["content-type"].startswith("text/csv")
    assert response.headers["accept-ranges"] == "bytes"
    disposition = response.headers["content-disposition"]
    assert disposition.startswith('attachment; filename="Line-check_oscilloscope_1_')
    assert '.csv"' in disposition

    # The execution's view shows the capture and where to get it.
    view = (await client.get(f"/api/scheduler/executions/{execution_id}")).json()["execution"]
    assert view["data"]["status"] == "stored"
    assert view["data"]["sha256"] == data["sha256"]
    assert view["data"]["size"] == len(payload)
    assert view["data"]["rows"] == data["rows"]
    assert view["data"]["columns"] == data["columns"]
    assert view["data"]["sample_rate"] == 1000.0
    assert view["data"]["url"] == url(execution_id)


async def test_ranges_return_the_right_bytes(lab: Lab, client: httpx.AsyncClient) -> None:
    payload = csv_bytes(30_000, seed=3)
    size = len(payload)
    execution_id, data = await capture(lab.harness, lab.job_id, payload, store=lab.store)
    chunk = 128 * 1024
    cases = {
        "bytes=0-99": (0, 99),
        "bytes=100-": (100, size - 1),
        "bytes=-100": (size - 100, size - 1),
        f"bytes={chunk - 10}-{chunk + 10}": (chunk - 10, chunk + 10),  # across two chunks
        f"bytes={size - 1}-{size + 500}": (size - 1, size - 1),  # past the end: clipped
        f"bytes=-{size * 2}": (0, size - 1),  # a suffix longer than the capture
        f"bytes={2 * chunk}-{2 * chunk}": (2 * chunk, 2 * chunk),  # one byte
    }
    for header, (first, last) in cases.items():
        response = await client.get(url(execution_id), headers={"Range": header})
        assert response.status_code == 206, (header, response.text)
        assert response.content == payload[first : last + 1], header
        assert response.headers["content-range"] == f"bytes {first}-{last}/{size}", header
        assert response.headers["content-length"] == str(last - first + 1), header
        assert response.headers["etag"] == f'"{data["sha256"]}"'

    for header in (f"bytes={size}-", f"bytes={size + 10}-{size + 20}", "bytes=-0"):
        response = await client.get(url(execution_id), headers={"Range": header})
        assert response.status_code == 416, header
        assert response.headers["content-range"] == f"bytes */{size}"
        assert first_error(response) == {
            "field": "Range",
            "value": header,
            "reason": f"range {header!r} selects no byte of a {size}-byte capture",
        }

    # A Range this server does not serve (several ranges, other units) is ignored: all of it.
    # A number of thousands of digits (int() refuses more than 4,300) is ignored, not a 500.
    for header in ("bytes=0-1,5-9", "items=0-5", "bytes=9-3", f"bytes=0-{'9' * 5000}"):
        response = await client.get(url(execution_id), headers={"Range": header})
        assert response.status_code == 200, header
        assert response.content == payload
    # If-Range naming another capture: the whole of this one.
    response = await client.get(
        url(execution_id), headers={"Range": "bytes=0-9", "If-Range": '"other"'}
    )
    assert response.status_code == 200
    assert response.content == payload


async def test_if_none_match_is_304(lab: Lab, client: httpx.AsyncClient) -> None:
    execution_id, data = await capture(lab.harness, lab.job_id, csv_bytes(50), store=lab.store)
    etag = f'"{data["sha256"]}"'
    response = await client.get(url(execution_id), headers={"If-None-Match": etag})
    assert response.status_code == 304
    assert response.content == b""
    assert response.headers["etag"] == etag
    response = await client.get(url(execution_id), headers={"If-None-Match": '"other"'})
    assert response.status_code == 200


async def test_no_data_and_no_execution_are_404_naming_it(
    lab: Lab, client: httpx.AsyncClient
) -> None:
    response = await client.get(url("exec_nope"))
    assert response.status_code == 404
    assert first_error(response) == {
        "field": "execution_id",
        "value": "exec_nope",
        "reason": "no such execution",
    }
    measurement = lab.harness.service.create_job(
        {**ACQUISITION, "name": "plain", "schedule_type": "measurement", "parameters": {}},
        actor="alice",
    )
    execution_id = await lab.harness.engine.run_now(measurement)
    await lab.harness.settle()
    settle(lab.harness)
    response = await client.get(url(execution_id))
    assert response.status_code == 404
    assert first_error(response)["value"] == execution_id
    assert "no captured data" in response.json()["detail"]
    view = (await client.get(f"/api/scheduler/executions/{execution_id}")).json()["execution"]
    assert view["data"]["status"] == "none"
    assert view["data"]["url"] is None


async def test_pending_upload_is_409_then_stored(lab: Lab, client: httpx.AsyncClient) -> None:
    payload = csv_bytes(500)
    execution_id, data = await capture(
        lab.harness, lab.job_id, payload, store=lab.store, status="pending_upload"
    )
    response = await client.get(url(execution_id))
    assert response.status_code == 409
    assert first_error(response)["value"] == execution_id
    assert "pending_upload" in response.json()["detail"]

    # The agent's retry lands: the object is in the bucket, the scheduler records it.
    await put(lab.store, data["object"], payload)
    stored = ExecutionDataStored(
        job_id=lab.job_id,
        execution_id=execution_id,
        object=data["object"],
        size=len(payload),
        sha256=data["sha256"],
        stored_at=lab.harness.clock.now(),
    )
    CommandHandler(lab.harness.store).record(lab.job_id, [stored], "agent")
    # The same fact again (a redelivered report) changes nothing.
    CommandHandler(lab.harness.store).record(lab.job_id, [stored], "agent")
    settle(lab.harness)
    response = await client.get(url(execution_id))
    assert response.status_code == 200
    assert response.content == payload
    view = (await client.get(f"/api/scheduler/executions/{execution_id}")).json()["execution"]
    assert view["data"]["status"] == "stored"
    assert view["data"]["stored_at"] is not None


async def test_removed_by_the_bound_is_410_naming_when_and_why(
    lab: Lab, client: httpx.AsyncClient
) -> None:
    execution_id, data = await capture(lab.harness, lab.job_id, csv_bytes(50), store=lab.store)
    removed_at = lab.harness.clock.now() + timedelta(hours=1)
    CommandHandler(lab.harness.store).record(
        lab.job_id,
        [
            ExecutionDataRemoved(
                job_id=lab.job_id,
                execution_id=execution_id,
                object=data["object"],
                size=data["size"],
                removed_at=removed_at,
                reason="bound",
            )
        ],
        "retention",
    )
    settle(lab.harness)
    response = await client.get(url(execution_id))
    assert response.status_code == 410
    body = response.json()
    assert body["removal_reason"] == "bound"
    assert body["removed_at"] == removed_at.isoformat()
    assert "byte bound" in body["detail"]
    assert removed_at.isoformat() in body["detail"]
    view = (await client.get(f"/api/scheduler/executions/{execution_id}")).json()["execution"]
    assert view["data"]["status"] == "removed"
    assert view["data"]["removal_reason"] == "bound"
    assert view["data"]["url"] is None


async def test_stored_but_gone_from_the_bucket_is_410_record_pending(
    lab: Lab, client: httpx.AsyncClient
) -> None:
    """Retention deleted the object and has not recorded it yet (or its record failed on a
    full disk): the view still says stored, the download says gone."""
    execution_id, data = await capture(lab.harness, lab.job_id, csv_bytes(50), store=lab.store)
    await lab.data.delete(data["object"])
    response = await client.get(url(execution_id))
    assert response.status_code == 410, response.text
    error = first_error(response)
    assert error["field"] == "execution_id"
    assert error["value"] == execution_id
    assert "record is pending" in error["reason"]
    assert data["object"] in response.json()["detail"]


@pytest.mark.slow
async def test_nats_down_is_503_naming_nats(
    lab: Lab, client: httpx.AsyncClient, nats_server: NatsServer
) -> None:
    execution_id, _ = await capture(lab.harness, lab.job_id, csv_bytes(50), store=lab.store)
    await nats_server.stop()
    response = await client.get(url(execution_id))
    assert response.status_code == 503
    assert response.headers["retry-after"]
    error = first_error(response)
    assert error["field"] == "nats"
    assert "NATS" in response.json()["detail"]


async def test_without_a_bus_a_stored_capture_is_503(harness: Harness) -> None:
    """LABLINK_NATS=off: the API has no bucket to read."""
    job_id = harness.service.create_job(ACQUISITION, actor="alice")
    execution_id, _ = await capture(harness, job_id, csv_bytes(10), store=None)
    async with api_client(harness, auth=False) as no_bus:
        response = await no_bus.get(url(execution_id))
    assert response.status_code == 503
    assert first_error(response)["field"] == "nats"


async def test_viewer_key_may_download_no_key_may_not(lab: Lab) -> None:
    execution_id, _ = await capture(lab.harness, lab.job_id, csv_bytes(50), store=lab.store)
    _, secret = create_key(
        lab.harness.store,
        name="viewer",
        role="viewer",
        actor="test",
        now=lab.harness.clock.now(),
    )
    settle(lab.harness)
    async with api_client(lab.harness, auth=True, data=lab.data) as secured:
        refused = await secured.get(url(execution_id))
        allowed = await secured.get(
            url(execution_id), headers={"Authorization": f"Bearer {secret}"}
        )
    assert refused.status_code == 401
    assert allowed.status_code == 200
    assert allowed.content == csv_bytes(50)


async def test_openapi_documents_the_download(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/schema/openapi.json")).json()
    operation = schema["paths"]["/api/scheduler/executions/{execution_id}/data"]["get"]
    assert {"200", "304", "404", "409", "410", "416", "503"} <= set(operation["responses"])
    assert "text/csv" in operation["responses"]["200"]["content"]
