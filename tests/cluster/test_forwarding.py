"""Run-now forwarded to the lease holder (lablink/cluster/forwarding.py), in process: the real
API and engine of the harness behind ``RunService`` on one record's connection, a follower's
``ClusterRunner`` on another's, a real nats-server between them. A forwarded run-now answers
what the holder's own API answers (200, 404, 409), and no holder is a 503 that says so."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest

from lablink.bus.server import NatsServer
from lablink.bus.subjects import CLUSTER_RUN
from lablink.cluster.forwarding import ClusterRunner, RunService
from lablink.eventstore.jetstream import JetStreamEventStore
from lablink.eventstore.record_link import JetStreamOptions
from lablink.scheduler.runner import EngineRunner
from tests.support.harness import Harness, api_client

pytestmark = pytest.mark.nats

HOURLY: dict[str, Any] = {
    "name": "Hourly Voltage Check",
    "schedule_type": "measurement",
    "equipment_id": "power_supply_1",
    "trigger_type": "interval",
    "interval_hours": 1,
    "parameters": {"command": "get_voltage"},
    "enabled": False,
}


@pytest.fixture
def records(nats_server: NatsServer, tmp_path: Path) -> Iterator[list[JetStreamEventStore]]:
    """Two replicas' records on one stream: the holder's and a follower's."""
    options = JetStreamOptions(servers=(nats_server.url,))
    opened = [JetStreamEventStore(tmp_path / f"{name}.db", options) for name in ("a", "b")]
    yield opened
    for record in opened:
        record.close()


@pytest.fixture
async def holder(harness: Harness, records: list[JetStreamEventStore]) -> AsyncIterator[RunService]:
    """Replica a leads: its run service runs the harness's engine."""
    service = RunService(
        records[0],
        replica="a",
        engine=lambda: harness.engine,
        position=harness.store.last_position,
    )
    await service.lead()
    yield service
    await service.follow()


def follower(harness: Harness, record: JetStreamEventStore, timeout: float = 15.0) -> ClusterRunner:
    return ClusterRunner(
        record,
        leading=lambda: None,
        views=harness.store.views,
        views_wait=5.0,
        timeout=timeout,
    )


async def test_a_follower_run_now_runs_on_the_holder_and_is_shown_at_once(
    harness: Harness, records: list[JetStreamEventStore], holder: RunService
) -> None:
    async with api_client(harness, auth=False, runner=follower(harness, records[1])) as client:
        created = await client.post("/api/scheduler/jobs/create", json=HOURLY)
        job_id = created.json()["job_id"]
        answer = await client.post(f"/api/scheduler/jobs/{job_id}/run")
        assert answer.status_code == 200, answer.text
        execution_id = answer.json()["execution_id"]
        # Read-your-writes: shown by the very next read.
        shown = await client.get(f"/api/scheduler/executions/{execution_id}")
        assert shown.status_code == 200, shown.text
        assert shown.json()["execution"]["trigger_info"] == "manual"
    assert holder.served == 1
    assert [e["execution_id"] for e in harness.executions(job_id)] == [execution_id]


async def test_refusals_are_the_holders_own_answers(
    harness: Harness, records: list[JetStreamEventStore], holder: RunService
) -> None:
    harness.executor.hold = True
    async with (
        api_client(harness, auth=False) as local,
        api_client(harness, auth=False, runner=follower(harness, records[1])) as forwarded,
    ):
        job_id = (await local.post("/api/scheduler/jobs/create", json=HOURLY)).json()["job_id"]
        first = (await forwarded.post(f"/api/scheduler/jobs/{job_id}/run")).json()
        refused = await forwarded.post(f"/api/scheduler/jobs/{job_id}/run")
        on_holder = await local.post(f"/api/scheduler/jobs/{job_id}/run")
        assert refused.status_code == on_holder.status_code == 409
        assert refused.json() == on_holder.json()
        assert refused.json()["running"] == [first["execution_id"]]
        assert first["execution_id"] in refused.json()["detail"]

        unknown = await forwarded.post("/api/scheduler/jobs/job_nope/run")
        unknown_on_holder = await local.post("/api/scheduler/jobs/job_nope/run")
        assert unknown.status_code == unknown_on_holder.status_code == 404
        assert unknown.json() == unknown_on_holder.json()


async def test_no_holder_is_a_503_naming_the_lease(
    harness: Harness, records: list[JetStreamEventStore]
) -> None:
    async with api_client(harness, auth=False, runner=follower(harness, records[1])) as client:
        job_id = (await client.post("/api/scheduler/jobs/create", json=HOURLY)).json()["job_id"]
        answer = await client.post(f"/api/scheduler/jobs/{job_id}/run")
    assert answer.status_code == 503, answer.text
    body = answer.json()
    assert "no replica holds the scheduler lease now" in body["detail"]
    assert "nothing was run" in body["detail"]
    assert body["errors"][0]["field"] == "scheduler"
    assert answer.headers["retry-after"]
    assert harness.executions(job_id) == []


async def test_a_holder_that_does_not_answer_is_a_503_that_may_have_run(
    nats_server: NatsServer, harness: Harness, records: list[JetStreamEventStore]
) -> None:
    # Subscribed and silent: a holder paused (SIGSTOP) while its subscription lives on.
    silent = await nats.connect(nats_server.url)
    try:
        await silent.subscribe(CLUSTER_RUN)
        await silent.flush()
        runner = follower(harness, records[1], timeout=0.5)
        async with api_client(harness, auth=False, runner=runner) as client:
            answer = await client.post("/api/scheduler/jobs/job_x/run")
    finally:
        await silent.close()
    assert answer.status_code == 503, answer.text
    assert "did not answer within 0.5 s" in answer.json()["detail"]
    assert "may have been recorded" in answer.json()["detail"]


async def test_a_former_holder_stops_serving(
    harness: Harness, records: list[JetStreamEventStore], holder: RunService
) -> None:
    await holder.follow()
    runner = follower(harness, records[1])
    async with api_client(harness, auth=False, runner=runner) as client:
        job_id = (await client.post("/api/scheduler/jobs/create", json=HOURLY)).json()["job_id"]
        assert (await client.post(f"/api/scheduler/jobs/{job_id}/run")).status_code == 503
        await holder.lead()
        assert (await client.post(f"/api/scheduler/jobs/{job_id}/run")).status_code == 200


async def test_the_holder_runs_its_own_run_now_without_the_bus(
    harness: Harness, records: list[JetStreamEventStore]
) -> None:
    runner = ClusterRunner(
        records[1],
        leading=lambda: EngineRunner(lambda: harness.engine),
        views=harness.store.views,
        views_wait=5.0,
    )
    async with api_client(harness, auth=False, runner=runner) as client:
        job_id = (await client.post("/api/scheduler/jobs/create", json=HOURLY)).json()["job_id"]
        answer = await client.post(f"/api/scheduler/jobs/{job_id}/run")
    assert answer.status_code == 200, answer.text
    assert runner.forwarded == 0
