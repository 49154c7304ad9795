"""Failed authentications, counted per client address.

A client that presents ``max_failures`` wrong (unknown or revoked) keys within ``window``
is refused with 429 and ``Retry-After`` until the oldest of those failures ages out. While
refused, its keys are not checked at all: answering "wrong" to wrong keys and "ok" to the
right one would still let it guess at full speed. Requests that authenticate are never
counted, and requests without a key are a plain 401, not a guess.

Litestar's RateLimitMiddleware counts every request; this counts only failures, so a busy
dashboard with a good key is never slowed. Counts live in memory: a restart forgets them.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from datetime import datetime, timedelta

from lablink.clock import Clock

# Past this many tracked addresses, those whose failures have all aged out are dropped.
_PRUNE_AT = 10_000


class FailedAuthentications:
    def __init__(self, clock: Clock, *, max_failures: int, window_seconds: float) -> None:
        self.clock = clock
        self.max_failures = max_failures
        self.window = timedelta(seconds=window_seconds)
        self._lock = threading.Lock()
        self._failures: dict[str, deque[datetime]] = {}

    def retry_after(self, client: str) -> int | None:
        """Seconds until ``client`` may try a key again, or None if it may now."""
        now = self.clock.now()
        with self._lock:
            failures = self._recent(client, now)
            if failures is None or len(failures) < self.max_failures:
                return None
            wait = (failures[0] + self.window - now).total_seconds()
        return max(1, math.ceil(wait))

    def failed(self, client: str) -> int:
        """Count a failure; returns how many ``client`` has within the window."""
        now = self.clock.now()
        with self._lock:
            if len(self._failures) >= _PRUNE_AT:
                self._prune(now)
            failures = self._failures.setdefault(client, deque(maxlen=self.max_failures))
            failures.append(now)
            self._recent(client, now)
            return len(failures)

    def _recent(self, client: str, now: datetime) -> deque[datetime] | None:
        failures = self._failures.get(client)
        if failures is None:
            return None
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        if not failures:
            del self._failures[client]
            return None
        return failures

    def _prune(self, now: datetime) -> None:
        for client in list(self._failures):
            self._recent(client, now)
