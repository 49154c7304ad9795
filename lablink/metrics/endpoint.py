"""``GET /metrics`` and the plugin that mounts it with the HTTP metrics' middleware.

The route is Litestar's ``PrometheusController`` with its handler replaced: Litestar's reads
prometheus_client's global registry, LabLink's reads the app's own (``scrape.Metrics``). It
needs the viewer role (the app's role guard reads ``opt``; Prometheus sends the key as a
bearer token), and it is not in the OpenAPI document: its body is not JSON.

It never waits for the views to catch up (the app's ``before_request`` does, for the other
reads): it reports how far behind they are, and must answer when they are.
"""

from __future__ import annotations

import asyncio
from typing import Any

from litestar import Request, Response, get
from litestar.config.app import AppConfig
from litestar.plugins import InitPlugin
from litestar.plugins.prometheus import PrometheusController

from lablink.metrics.scrape import Metrics, Sources

STATE_KEY = "metrics"
# The classic text format (Prometheus 2 and 3): every LabLink name is a legacy-valid name.
# Litestar adds "; charset=utf-8".
MEDIA_TYPE = "text/plain; version=0.0.4"


async def _no_wait(request: Request[Any, Any, Any]) -> None:
    """Replaces the app's ``before_request`` (the wait for the views) on this route."""


class MetricsController(PrometheusController):
    path = "/metrics"
    tags = ["monitoring"]  # noqa: RUF012 (Litestar declares it as an instance attribute)

    @get(
        opt={"role": "viewer"},
        before_request=_no_wait,
        include_in_schema=False,
        name="metrics",
    )
    async def get(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        """Every LabLink metric in the Prometheus text format (docs/operations.md)."""
        metrics: Metrics = request.app.state[STATE_KEY]
        # On the event loop: the health probes may read asyncio tasks' state.
        snapshot = metrics.sources.snapshot()
        body = await asyncio.to_thread(metrics.scrape, snapshot)
        return Response(body, media_type=MEDIA_TYPE)


class MetricsPlugin(InitPlugin):
    """Mounts ``/metrics`` and the request metrics' middleware on the app it is given to."""

    def __init__(self, sources: Sources) -> None:
        self.sources = sources

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        metrics = Metrics(self.sources)
        app_config.route_handlers.append(MetricsController)
        app_config.middleware.append(metrics.http.middleware)
        app_config.state[STATE_KEY] = metrics
        app_config.on_shutdown.append(metrics.close)
        return app_config
