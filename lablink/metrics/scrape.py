"""One app's metrics: its registry, and what a scrape does.

A scrape costs nothing when nobody scrapes: between scrapes nothing runs. When Prometheus
asks, the scrape takes the in-memory snapshot on the event loop (the caller), then, on a
worker thread, folds the log's new events into the counters and reads the views' gauges, on a
read-only connection of its own. Scrapes are one at a time (a lock): two Prometheus servers
scraping at once read the log's new events once.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, disable_created_metrics, generate_latest

from lablink.eventstore.sqlite import LogReader
from lablink.metrics.gauges import Snapshot, StateCollector
from lablink.metrics.http import LabLinkPrometheusConfig, http_config
from lablink.metrics.log_counters import LogCounters

# A scrape reads at most this many new events; a larger backlog (a burst, a long pause
# between scrapes) is read over the next scrapes, so that none exceeds Prometheus's timeout.
MAX_EVENTS_PER_SCRAPE = 200_000

# The ``*_created`` series (when each counter was made) would double the counters' lines for
# nothing a dashboard uses. prometheus_client's switch is process-wide; LabLink keeps no
# metrics elsewhere.
disable_created_metrics()  # type: ignore[no-untyped-call]


@dataclass(frozen=True)
class Sources:
    """Where a scrape reads: ``connect`` opens a read-only connection to the views with the
    log attached; ``snapshot`` reads what lives in memory (called on the event loop)."""

    connect: Callable[[], sqlite3.Connection]
    snapshot: Callable[[], Snapshot]


class Metrics:
    """``start_at_head``: count from the log's head when the app is made (counters count
    since the process started); False: fold the whole log at the first scrape."""

    def __init__(self, sources: Sources, *, start_at_head: bool = True) -> None:
        self.sources = sources
        self.registry = CollectorRegistry()
        self.http: LabLinkPrometheusConfig = http_config(self.registry)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = sources.connect()
        start = LogReader(self._conn).last_position() if start_at_head else 0
        self.log = LogCounters(self.registry, start)
        self.state = StateCollector()
        self.registry.register(self.state)

    def scrape(self, snapshot: Snapshot) -> bytes:
        """The text exposition (blocking: call it on a worker thread)."""
        with self._lock:
            conn = self._connection()
            head = LogReader(conn).last_position()
            self.log.catch_up(conn, up_to=min(head, self.log.position + MAX_EVENTS_PER_SCRAPE))
            self.state.prepare(snapshot, conn)
            return generate_latest(self.registry)

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = self.sources.connect()
        return self._conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
