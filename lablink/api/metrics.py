"""Where ``/metrics`` reads, in the API's context: the same sources as ``/health`` and the
statistics (``lablink.metrics`` sits below the API and cannot import its context)."""

from __future__ import annotations

from lablink.api.context import ApiContext
from lablink.api.probes import components
from lablink.metrics.endpoint import MetricsPlugin
from lablink.metrics.gauges import Snapshot
from lablink.metrics.scrape import Sources


def metrics_plugin(context: ApiContext) -> MetricsPlugin:
    def snapshot() -> Snapshot:
        status = context.relay.status if context.relay is not None else None
        views = context.views
        return Snapshot(
            components={name: c.state for name, c in components(context).items()},
            sightings=context.sightings(),
            relay_lag_events=status.lag if status is not None else None,
            relay_lag_seconds=status.lag_seconds() if status is not None else None,
            projection_lag_events=views.lag_events() if views is not None else None,
        )

    return MetricsPlugin(Sources(connect=context.connect_reader, snapshot=snapshot))
