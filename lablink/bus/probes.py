"""The bus's health entries: ``relay`` and ``nats``, computed when `/health` is read.

``relay``: how far publishing is behind, in events and in seconds (the age of the oldest event
not yet in the stream). ``ok`` while it keeps up; ``degraded`` once the oldest waiting event is
more than ``DEGRADED_AFTER`` seconds old; ``failing`` once the checkpoint has not moved for
``FAILING_AFTER`` seconds with events waiting (nothing reaches subscribers any more).

``nats``: the relay's own connection. ``ok`` when connected; ``degraded`` for the first
``DISCONNECTED_FAILING_AFTER`` seconds without one (a restart, a reconnect); ``failing`` after.

Cluster mode: a replica that does not hold the scheduler lease does not publish (another
replica's relay does) and holds no connection of its own: both entries are ``ok``, saying
"following", never degraded for it.

The supervised loops have their own entries (``task.relay``, ``task.nats-server``): a failure,
its error and since when.
"""

from __future__ import annotations

import time
from typing import Any

from lablink.bus.relay import RelayStatus
from lablink.health import Health, Reading, State

DEGRADED_AFTER = 5.0
FAILING_AFTER = 60.0
DISCONNECTED_FAILING_AFTER = 5.0
FOLLOWING = "following: the replica holding the scheduler lease publishes the log"


def relay_reading(
    status: RelayStatus,
    *,
    degraded_after: float = DEGRADED_AFTER,
    failing_after: float = FAILING_AFTER,
    now: float | None = None,
) -> Reading:
    now = time.monotonic() if now is None else now
    if status.following:
        return Reading(
            state="ok",
            reason=FOLLOWING,
            details={
                "role": "following",
                "published_position": status.published_position,
                "log_position": status.log_position,
                "published_total": status.published_total,
                "resumed_at": status.resumed_at,
            },
        )
    lag = status.lag
    lag_seconds = status.lag_seconds(now)
    stalled = status.stalled_seconds(now)
    details = {
        "lag_events": lag,
        "lag_seconds": round(lag_seconds, 3),
        "stalled_seconds": round(stalled, 3),
        "published_position": status.published_position,
        "log_position": status.log_position,
        "published_total": status.published_total,
        "oldest_unpublished_at": status.oldest_unpublished_at if lag else None,
        "last_error": status.last_error,
        "stuck_calls": status.stuck_calls,
        "role": "publishing",
        "resumed_at": status.resumed_at,
    }
    error = f" (last error: {status.last_error})" if status.last_error else ""
    if lag and stalled > failing_after:
        return Reading(
            state="failing",
            reason=f"nothing published for {stalled:.0f} s, {lag} events waiting{error}",
            details=details,
        )
    if lag and lag_seconds > degraded_after:
        return Reading(
            state="degraded",
            reason=f"{lag} events behind, the oldest waiting {lag_seconds:.1f} s{error}",
            details=details,
        )
    return Reading(state="ok", reason="caught up" if not lag else "publishing", details=details)


def nats_reading(
    status: RelayStatus,
    *,
    failing_after: float = DISCONNECTED_FAILING_AFTER,
    now: float | None = None,
) -> Reading:
    away = status.disconnected_seconds(now)
    details = {"url": status.url, "connected": status.connected, "last_error": status.last_error}
    if status.following:
        # The replica's own connection to the cluster is the record's (its ``record`` entry).
        return Reading(
            state="ok", reason=f"{FOLLOWING} (no connection of its own)", details=details
        )
    if status.connected:
        return Reading(state="ok", reason="connected", details=details)
    details["disconnected_seconds"] = round(away, 3)
    error = f": {status.last_error}" if status.last_error else ""
    state: State = "failing" if away > failing_after else "degraded"
    return Reading(
        state=state,
        reason=f"disconnected from {status.url} for {away:.0f} s{error}",
        details=details,
    )


def relay_summary(status: RelayStatus) -> dict[str, Any]:
    """The ``nats`` section of /health: the relay's state, judged by ``relay_reading``."""
    return {
        "status": relay_reading(status).state,
        "role": "following" if status.following else "publishing",
        "url": status.url,
        "connected": status.connected,
        "published_position": status.published_position,
        "log_position": status.log_position,
        "lag_events": status.lag,
        "lag_seconds": round(status.lag_seconds(), 3),
        "last_error": status.last_error,
    }


def register(health: Health, status: RelayStatus) -> None:
    """Register the ``relay`` and ``nats`` probes for ``status``."""
    health.probe("relay", lambda: relay_reading(status))
    health.probe("nats", lambda: nats_reading(status))
