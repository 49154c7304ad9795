"""What the scheduler records of a capture whose upload was pending when its result came
(issue 15, review findings A-C): the agent's later word that the store has it, or that it
never will (lost); a capture removed meanwhile; more pending captures than a job remembers.
A real engine on a real SQLite file (the harness), the agent's words handed to
``Engine.record_data_stored`` as ``AgentExecutor`` hands them."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from lablink.domain import job as job_domain
from lablink.events import ExecutionDataRemoved, ExecutionDataStored
from lablink.handler import CommandHandler
from lablink.instruments.execution import Outcome
from tests.support.captures import ACQUISITION, capture, csv_bytes, data_rows, settle
from tests.support.harness import Harness

PAYLOAD = csv_bytes(20)


async def pending(harness: Harness, job_id: str) -> tuple[str, dict[str, Any]]:
    return await capture(harness, job_id, PAYLOAD, store=None, status="pending_upload")


async def say(
    harness: Harness, job_id: str, execution_id: str, data: dict[str, Any], *, lost: str = ""
) -> str:
    """The agent's report of the upload (``lost``: why it can never be made)."""
    return await harness.engine.record_data_stored(
        job_id,
        execution_id,
        equipment_id=ACQUISITION["equipment_id"],
        object=data["object"],
        size=data["size"],
        sha256=data["sha256"],
        stored_at=harness.clock.now(),
        agent_id="lab-pc-1",
        lost=lost,
    )


def facts(harness: Harness, job_id: str, kind: type) -> list[Any]:
    recorded = harness.store.read_stream(harness.jobs.stream_id(job_id))
    return [r.event for r in recorded if isinstance(r.event, kind)]


async def test_a_capture_its_agent_lost_is_recorded_removed_and_answers_410(
    harness: Harness, client: httpx.AsyncClient
) -> None:
    job_id = harness.service.create_job(ACQUISITION, actor="alice")
    execution_id, data = await pending(harness, job_id)
    why = "its file /lab/acquisitions/x.csv changed since its SHA-256 was taken"
    assert await say(harness, job_id, execution_id, data, lost=why) == "lost"
    (removed,) = facts(harness, job_id, ExecutionDataRemoved)
    assert (removed.execution_id, removed.reason, removed.detail) == (execution_id, "lost", why)
    assert facts(harness, job_id, ExecutionDataStored) == []
    settle(harness)
    status, stored = data_rows(harness)[execution_id]
    assert status == "removed"
    assert json.loads(stored or "{}")["removal_reason"] == "lost"
    response = await client.get(f"/api/scheduler/executions/{execution_id}/data")
    assert response.status_code == 410
    assert response.json()["removal_reason"] == "lost"
    assert "lost" in response.json()["detail"]
    # Said again (an agent killed before it forgot the row): nothing more is recorded.
    assert await say(harness, job_id, execution_id, data, lost=why) == "unknown"
    assert len(facts(harness, job_id, ExecutionDataRemoved)) == 1


async def test_a_result_whose_capture_never_reached_the_upload_has_no_data(
    harness: Harness, client: httpx.AsyncClient
) -> None:
    # The agent could not even hash the file: its result names no status (older agents) or
    # "none". Neither may read as stored.
    job_id = harness.service.create_job(ACQUISITION, actor="alice")
    ids = []
    for status in (None, "none"):
        harness.executor.hold = True
        execution_id = await harness.engine.run_now(job_id)
        await harness.settle()
        data = {"bucket": "LABLINK_DATA", "rows": 20, "file_name": "x.csv"}
        if status is not None:
            data |= {"status": status, "lost": "FileNotFoundError: x.csv"}
        harness.executor.release(execution_id, Outcome.ok(sample_count=20, data=data))
        harness.executor.hold = False
        await harness.settle()
        ids.append(execution_id)
    settle(harness)
    rows = data_rows(harness)
    for execution_id in ids:
        assert rows[execution_id][0] == "none"
        response = await client.get(f"/api/scheduler/executions/{execution_id}/data")
        assert response.status_code == 404


async def test_a_pending_capture_removed_before_its_upload_came_is_not_stored(
    harness: Harness,
) -> None:
    job_id = harness.service.create_job(ACQUISITION, actor="alice")
    execution_id, data = await pending(harness, job_id)
    removal = ExecutionDataRemoved(
        job_id=job_id,
        execution_id=execution_id,
        object=data["object"],
        size=data["size"],
        removed_at=harness.clock.now(),
        reason="retention",
    )
    CommandHandler(harness.store).record_together(
        [(harness.jobs.stream_id(job_id), [removal])], "retention"
    )
    # The upload completes afterwards: its object is to go (AgentExecutor deletes it), and
    # nothing says stored.
    assert await say(harness, job_id, execution_id, data) == "removed"
    assert facts(harness, job_id, ExecutionDataStored) == []
    settle(harness)
    assert data_rows(harness)[execution_id][0] == "removed"


async def test_a_capture_the_job_no_longer_remembers_pending_is_still_recorded_stored(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A job remembers only so many pending captures (256; 2 here): the oldest is forgotten
    # when a third comes. Its upload, when it completes, must still make it stored.
    monkeypatch.setattr(job_domain, "MAX_AWAITING_DATA", 2)
    job_id = harness.service.create_job(ACQUISITION, actor="alice")
    captures = [await pending(harness, job_id) for _ in range(3)]
    (oldest, data), *_ = captures
    state, _ = harness.jobs.current(job_id)
    assert oldest not in state.awaiting_data
    assert await say(harness, job_id, oldest, data) == "stored"
    settle(harness)
    assert data_rows(harness)[oldest][0] == "stored"
    # Said again: once is enough.
    assert await say(harness, job_id, oldest, data) == "unknown"
    assert len(facts(harness, job_id, ExecutionDataStored)) == 1
    for execution_id, later in captures[1:]:
        assert await say(harness, job_id, execution_id, later) == "stored"
    settle(harness)
    assert {data_rows(harness)[e][0] for e, _ in captures} == {"stored"}
