"""`lablink serve` on the real clock, scraped as Prometheus does, with a key: a 1 s job's
fires keep adding lateness observations, and NATS's relay and health show up."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.metrics.scraping import Samples, parse, total, value
from tests.support.eventually import eventually_sync
from tests.support.serve import Server, admin_client

pytestmark = [pytest.mark.e2e, pytest.mark.nats, pytest.mark.slow]

EVERY_SECOND = {
    "name": "Voltage every second",
    "schedule_type": "measurement",
    "equipment_id": "power_supply_1",
    "trigger_type": "interval",
    "interval_seconds": 1,
    "parameters": {"command": "get_voltage"},
}


def test_lateness_grows_as_a_one_second_job_fires(tmp_path: Path, servers: list[Server]) -> None:
    base, auth = admin_client(tmp_path / "data", servers)
    with httpx.Client(base_url=base, timeout=30) as client:
        assert client.get("/metrics").status_code == 401

        def scrape() -> Samples:
            response = client.get("/metrics", headers=auth)
            assert response.status_code == 200, response.text
            return parse(response.text)[1]

        created = client.post("/api/scheduler/jobs/create", json=EVERY_SECOND, headers=auth)
        assert created.status_code == 200, created.text
        fires = "lablink_fire_lateness_seconds_count"
        first = eventually_sync(
            scrape, until=lambda s: (value(s, fires) or 0) >= 3, what="three fires observed"
        )
        seen = value(first, fires) or 0
        later = eventually_sync(
            scrape, until=lambda s: (value(s, fires) or 0) > seen, what="more fires observed"
        )
        assert value(later, "lablink_jobs", state="active") == 1
        assert total(later, "lablink_executions_total") >= 1
        assert (value(later, "lablink_event_log_position") or 0) > 0
        # With its private nats-server: the relay's lag is a sample, its components are up.
        assert value(later, "lablink_relay_lag_events") is not None
        assert value(later, "lablink_relay_lag_seconds") is not None
        # The job's instrument answered through its agent: up, and heard from.
        assert value(later, "lablink_agent_up", equipment="power_supply_1") == 1
        last_seen = "lablink_agent_last_seen_timestamp_seconds"
        assert (value(later, last_seen, equipment="power_supply_1") or 0) > 0
        assert value(later, "lablink_component_up", component="nats") == 1
        # Scrapes are HTTP requests too, grouped under their route.
        assert total(later, "lablink_requests_total", path="/metrics", status_code=200) >= 2
