"""HTTP request metrics: Litestar's Prometheus middleware, on LabLink's own registry.

Litestar's ``PrometheusMiddleware`` creates its metrics in prometheus_client's process-global
registry, once per process (a class attribute). LabLink keeps a registry per app instead (two
apps in one process, as the tests build, must not share or clash), so the middleware is
subclassed to hand out metrics made in advance in that registry. Made in advance, they are
also in ``/metrics`` before the first request has ended.

Paths are grouped by route template (``/api/scheduler/jobs/{job_id:str}``), never the raw
path: the label's values are bounded by the routes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from litestar.plugins.prometheus import PrometheusConfig, PrometheusMiddleware
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

PREFIX = "lablink"
APP_NAME = "lablink"
# The labels Litestar's middleware sets, in its order (no extra labels are configured).
LABELS = ("method", "path", "status_code", "app_name")


class HttpMetrics:
    """The four metrics the middleware updates, in ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            f"{PREFIX}_requests_total",
            "HTTP requests answered, by method, route template and status code.",
            LABELS,
            registry=registry,
        )
        self.duration = Histogram(
            f"{PREFIX}_request_duration_seconds",
            "HTTP request duration, by method, route template and status code.",
            LABELS,
            registry=registry,
        )
        self.in_progress = Gauge(
            f"{PREFIX}_requests_in_progress",
            "HTTP requests being answered now.",
            LABELS,
            registry=registry,
        )
        self.errors = Counter(
            f"{PREFIX}_requests_error_total",
            "HTTP requests answered with a 5xx.",
            LABELS,
            registry=registry,
        )


@dataclass
class LabLinkPrometheusConfig(PrometheusConfig):
    """Litestar's config, carrying the metrics its middleware is to update."""

    http: HttpMetrics | None = field(default=None)


class LabLinkPrometheusMiddleware(PrometheusMiddleware):
    """Litestar's middleware, updating ``config.http`` rather than global metrics."""

    def _own(self) -> HttpMetrics:
        config: LabLinkPrometheusConfig = self._config  # type: ignore[assignment]
        assert config.http is not None, "LabLinkPrometheusConfig needs its metrics"
        return config.http

    def request_count(self, labels: dict[str, Any]) -> Counter:
        return self._own().requests

    def request_time(self, labels: dict[str, Any]) -> Histogram:
        return self._own().duration

    def requests_in_progress(self, labels: dict[str, Any]) -> Gauge:
        return self._own().in_progress

    def requests_error_count(self, labels: dict[str, Any]) -> Counter:
        return self._own().errors


def http_config(registry: CollectorRegistry) -> LabLinkPrometheusConfig:
    return LabLinkPrometheusConfig(
        app_name=APP_NAME,
        prefix=PREFIX,
        group_path=True,
        middleware_class=LabLinkPrometheusMiddleware,
        http=HttpMetrics(registry),
    )
