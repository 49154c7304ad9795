"""Reports go to JetStream in batches: published without waiting, acknowledged together.

An agent running many executions at once makes many reports. Each used to wait for its own
acknowledgement and then for its own ledger write; here every report waiting when the sender
is free is published at once (``publish_async``), the acknowledgements are awaited together,
and the executions whose results were acknowledged are marked in the ledger in one commit.
What a report's caller sees is unchanged: acknowledged, or the error that kept it from being
(the caller decides whether to try again, as before).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.api import PubAck

from lablink.equipment_agent.ledger import Ledger
from lablink.instruments.protocol import Report, encoder, report_subject, upload_subject

# Reports published before their acknowledgements are awaited: a bound on what one lost
# connection leaves to retry, well under nats-py's 4,000 pending async publishes.
MAX_BATCH = 500


@dataclass
class _Waiting:
    report: Report
    done: asyncio.Future[None]


class ReportSender:
    def __init__(
        self,
        js: Callable[[], JetStreamContext],
        ledger: Ledger,
        *,
        ack_timeout: float = 5.0,
    ) -> None:
        self._js = js
        self._ledger = ledger
        self.ack_timeout = ack_timeout
        self._waiting: list[_Waiting] = []
        self._sender: asyncio.Task[None] | None = None

    async def send(self, report: Report) -> None:
        """Once JetStream acknowledged ``report`` (and, for a result, the ledger marked it
        published); raises what kept it from being acknowledged."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Waiting(report, done))
        if self._sender is None:
            self._sender = asyncio.create_task(self._send(), name="agent reports")
        await done

    async def _send(self) -> None:
        batch: list[_Waiting] = []
        try:
            while self._waiting:
                batch, self._waiting = self._waiting[:MAX_BATCH], self._waiting[MAX_BATCH:]
                await self._send_batch(batch)
        finally:
            self._sender = None
            # Cancelled (the agent closes): its callers are told, and keep their results.
            for item in [*batch, *self._waiting]:
                if not item.done.done():
                    item.done.set_exception(ConnectionError("the agent is closing"))
            self._waiting = []

    async def aclose(self) -> None:
        """Stop sending: what waits is answered ``ConnectionError`` (kept for the next
        start by its caller)."""
        sender = self._sender
        if sender is not None:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender

    async def _send_batch(self, batch: list[_Waiting]) -> None:
        js = self._js()
        acks: list[asyncio.Future[PubAck] | BaseException] = []
        for item in batch:
            report = item.report
            # An upload's word goes to its own stream (the only copy of it, kept on disk).
            subject = upload_subject if report.stored is not None else report_subject
            try:
                acks.append(
                    await js.publish_async(
                        subject(report.equipment_id, report.execution_id, report.seq),
                        encoder.encode(report),
                        headers={"Nats-Msg-Id": f"{report.execution_id}:{report.seq}"},
                    )
                )
            except Exception as exc:  # not sent (the connection is gone): the caller retries
                acks.append(exc)
        pending = [a for a in acks if isinstance(a, asyncio.Future)]
        if pending:
            await asyncio.wait(pending, timeout=self.ack_timeout)
        outcomes: list[BaseException | None] = []
        for ack in acks:
            if isinstance(ack, BaseException):
                outcomes.append(ack)
            elif not ack.done():
                ack.cancel()
                outcomes.append(TimeoutError(f"no acknowledgement within {self.ack_timeout:g} s"))
            else:
                outcomes.append(ack.exception())
        results = [
            item.report.execution_id
            for item, error in zip(batch, outcomes, strict=True)
            if error is None and item.report.outcome is not None
        ]
        if results:
            try:
                await asyncio.to_thread(self._ledger.published_many, results)
            except Exception as exc:  # acknowledged, not marked: sent again at the next start
                outcomes = [
                    exc if i.report.outcome is not None else o
                    for i, o in zip(batch, outcomes, strict=True)
                ]
        for item, error in zip(batch, outcomes, strict=True):
            if item.done.done():
                continue
            if error is None:
                item.done.set_result(None)
            else:
                item.done.set_exception(error)
