"""A pull consumer's fetch that takes what is waiting in one turn of the event loop.

nats-py's ``PullSubscription.fetch`` reads a batch one ``next_msg`` at a time, and each
``next_msg`` is a task of its own around ``asyncio.wait_for`` (another task): two tasks and
at least one turn of the loop per message. At 1,000 reports a second that was a thousand
more turns of the scheduler's loop a second, and the consumer could take no more reports a
second than the loop made turns: with the fires' commits tried on the loop (a millisecond a
turn) a fetch of 100 took 100 turns and the reports waited 0.6 s in the stream (BENCHMARKS.md,
"a fire's commit in its thread, a turn of the loop per report"). Here the messages land
through a subscription callback that appends them to a list, so the messages that came
together are taken together.

The protocol is JetStream's own (``$JS.API.CONSUMER.MSG.NEXT``): a request for up to
``batch`` messages answered at once (``no_wait``: what is there, then a 404 when it was
fewer), and, when nothing was there, a waiting request for one message, then the rest of
what came with it. A waiting request's late message (one sent as our wait ran out) stays in
the list for the next fetch; it is not lost, and it is acknowledged as any other.
"""

from __future__ import annotations

import asyncio
import itertools
import json

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import StatusCode
from nats.js.errors import APIError

API_PREFIX = "$JS.API"  # LabLink's servers use no JetStream domain
NO_WAIT_LIMIT = 2.0
EXPIRY_MARGIN = 0.05

# The statuses that end a request without an error (ADR-13): nothing waiting (404) and the
# request's time out (408). A conflict (409) ends it too unless it names the consumer
# deleted (the consumer's leader moved, too many waiting requests: the next request does
# not meet it); see ``_on_message``.
_ENDS = frozenset({StatusCode.NO_MESSAGES, StatusCode.REQUEST_TIMEOUT})
_HEARTBEAT = StatusCode.CONTROL_MESSAGE


class ConsumerGone(APIError):
    """The server ended a request with an error (a 409 naming the consumer deleted, or
    another status than the ends above): the caller subscribes again."""


class BatchPull:
    """Fetches from one durable pull consumer of ``stream``; ``start`` before the first
    fetch, ``close`` after the last."""

    def __init__(self, nc: NATS, stream: str, consumer: str) -> None:
        self._nc = nc
        self._next = f"{API_PREFIX}.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self._inbox = ""
        self._sub: Subscription | None = None
        self._arrived: list[Msg] = []
        self._asking = ""  # the reply subject of the request under way
        self._ended = False  # the server ended it (404, 408, 409)
        self._gone: tuple[int, str] | None = None
        self._signal = asyncio.Event()
        self._numbers = itertools.count(1)

    async def start(self) -> BatchPull:
        self._inbox = self._nc.new_inbox()
        self._sub = await self._nc.subscribe(f"{self._inbox}.*", cb=self._on_message)
        return self

    async def close(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            await sub.unsubscribe()

    async def _on_message(self, msg: Msg) -> None:
        headers = msg.headers or {}
        status = headers.get("Status")
        if status is None:
            self._arrived.append(msg)  # whichever request it answers: it is taken next
        elif status == _HEARTBEAT:
            return
        elif msg.subject != self._asking:
            return  # the end of an earlier request, which was over for us already
        else:
            description = headers.get("Description", "")
            if status not in _ENDS and (
                status != StatusCode.CONFLICT or "deleted" in description.lower()
            ):
                self._gone = (int(status), description)
            self._ended = True
        self._signal.set()

    async def fetch(self, batch: int, wait: float) -> list[Msg]:
        """Up to ``batch`` messages: those waiting now, or, when none is, the first to come
        within ``wait`` seconds and those that came with it. ``TimeoutError`` when none came."""
        if self._sub is None:
            raise RuntimeError("BatchPull.fetch before start")
        taken = self._take(batch)
        if len(taken) < batch:
            taken += await self._ask(batch - len(taken), None)
        if taken:
            return taken
        taken = await self._ask(1, wait)
        if not taken:
            raise TimeoutError(f"no message within {wait:g} s")
        if batch > 1:
            taken += await self._ask(batch - 1, None)
        return taken

    def _take(self, most: int) -> list[Msg]:
        taken, self._arrived = self._arrived[:most], self._arrived[most:]
        return taken

    async def _ask(self, batch: int, within: float | None) -> list[Msg]:
        """One request for ``batch`` messages: answered at once (``within`` None: what is
        waiting) or waiting up to ``within`` seconds for them. Returns once the server ended
        the request, sent the whole batch, or the wait ran out."""
        request: dict[str, object] = {"batch": batch}
        if within is None:
            request["no_wait"] = True
            # The server answers at once; a lost answer (a reconnect) must not hold the fetch.
            wait = NO_WAIT_LIMIT
        else:
            # The server's expiry a little before ours, so its 408 ends the wait, not our
            # timer (and no waiting request outlives the fetch).
            request["expires"] = max(int((within - EXPIRY_MARGIN) * 1e9), 1_000_000)
            wait = within
        self._asking = f"{self._inbox}.{next(self._numbers)}"
        self._ended = False
        self._signal.clear()
        await self._nc.publish(self._next, json.dumps(request).encode(), reply=self._asking)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while len(self._arrived) < batch and not self._ended and self._gone is None:
            left = deadline - loop.time()
            if left <= 0:
                break
            try:
                async with asyncio.timeout(left):
                    await self._signal.wait()
            except TimeoutError:
                break
            self._signal.clear()
        self._asking = ""
        if self._gone is not None:
            (code, description), self._gone = self._gone, None
            raise ConsumerGone(code=code, description=description)
        return self._take(batch)
