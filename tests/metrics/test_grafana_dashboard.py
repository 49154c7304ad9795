"""deploy/grafana/lablink.json queries only metrics that /metrics exposes, from the start (on
a fresh data dir, before anything has happened), and shows every metric the issue names."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx

from tests.metrics.scraping import parse

DASHBOARD = Path(__file__).parents[2] / "deploy" / "grafana" / "lablink.json"
NAME = re.compile(r"\blablink_[A-Za-z0-9_]+")
# What Prometheus exposes of a histogram besides its name.
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
# The list (issue 17, "Metrics"), and component health and HTTP.
REQUIRED = {
    "lablink_fire_lateness_seconds",
    "lablink_executions_total",
    "lablink_execution_duration_seconds",
    "lablink_misfires_total",
    "lablink_running_executions",
    "lablink_jobs",
    "lablink_next_fire_timestamp_seconds",
    "lablink_event_log_position",
    "lablink_relay_lag_events",
    "lablink_relay_lag_seconds",
    "lablink_projection_lag_events",
    "lablink_alarms_active",
    "lablink_agent_up",
    "lablink_agent_last_seen_timestamp_seconds",
    "lablink_notifications_total",
    "lablink_component_up",
    "lablink_requests_total",
    "lablink_request_duration_seconds",
}


def queried(dashboard: dict[str, Any]) -> set[str]:
    names: set[str] = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            for found in NAME.findall(target["expr"]):
                for suffix in HISTOGRAM_SUFFIXES:
                    found = found.removesuffix(suffix)
                names.add(found)
    return names


async def test_every_queried_metric_is_exposed(client: httpx.AsyncClient) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    response = await client.get("/metrics")
    assert response.status_code == 200
    exposed, _ = parse(response.text)
    names = queried(dashboard)
    assert sorted(names - exposed) == []
    assert sorted(REQUIRED - names) == []


def test_the_datasource_is_an_input() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert [i["name"] for i in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    sources = {
        json.dumps(source)
        for panel in dashboard["panels"]
        for source in [panel["datasource"], *(t["datasource"] for t in panel["targets"])]
    }
    assert sources == {json.dumps({"type": "prometheus", "uid": "${DS_PROMETHEUS}"})}
