"""Progress reports into the log (issue 19): how many transactions and appends the scheduler
spends on N agents' progress reports, and how long until they are all in the log.

Run it from the repository root::

    .venv/bin/python -m bench.bench_progress                     # 1,000 reports, 10 executions
    .venv/bin/python -m bench.bench_progress --reports 10000 --executions 100

A real nats-server and SQLite log in a temporary folder; the scheduler's engine and agent
executor in this process (the tests' ``AgentLab``). The agent is played at the protocol level:
it accepts the run commands, then publishes the executions' progress reports interleaved,
all at once, on the instrument's reports subjects. The log's ``append_batch`` is counted
(one call: one transaction, one fsync), with the appends (one per stream) and events in it.
It runs unchanged against an older checkout (``PYTHONPATH=<checkout>``), which is how the
"before" figure was taken.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nats
from nats.aio.msg import Msg

from lablink.bus.server import NatsServer
from lablink.clock import ManualClock
from lablink.events import ExecutionProgressed
from lablink.eventstore.base import AppendOutcome, AppendRequest
from lablink.instruments.protocol import Report, RunReply, encoder, report_subject, run_subject
from tests.support.agent_lab import AgentLab
from tests.support.eventually import eventually

PSU = "power_supply_1"


class Counted:
    """The log's append_batch, counting transactions, appends and events."""

    def __init__(self, lab: AgentLab) -> None:
        self.inner = lab.store.append_batch
        self.transactions = self.appends = self.events = 0

    def __call__(self, requests: Sequence[AppendRequest]) -> list[AppendOutcome]:
        self.transactions += 1
        self.appends += len(requests)
        self.events += sum(len(r.events) for r in requests)
        return self.inner(requests)


async def measure(folder: Path, reports: int, executions: int) -> dict[str, Any]:
    server = await NatsServer(folder / "nats").start()
    clock = ManualClock(datetime(2026, 12, 5, 9, tzinfo=UTC))
    lab = await AgentLab(folder / "scheduler.db", server.url, clock, heartbeat_timeout=600).start()
    nc = await nats.connect(server.url)
    try:
        accepted: list[str] = []

        async def on_run(msg: Msg) -> None:
            accepted.append(msg.subject)
            await msg.respond(encoder.encode(RunReply(status="accepted", agent_id="bench")))

        await nc.subscribe(run_subject(PSU), cb=on_run)
        await nc.flush()
        jobs: dict[str, str] = {}
        for n in range(executions):
            job_id = lab.create(
                {
                    "name": f"reporting {n}",
                    "schedule_type": "measurement",
                    "equipment_id": PSU,
                    "parameters": {"command": "get_voltage"},
                }
            )
            jobs[await lab.engine.run_now(job_id)] = job_id
        await eventually(lambda: len(accepted) == executions, timeout=60)
        each = reports // executions
        sent = [
            Report(
                execution_id=execution_id,
                job_id=job_id,
                equipment_id=PSU,
                agent_id="bench",
                seq=seq,
                at=datetime.now(UTC),
                progress=seq / each,
                message=f"step {seq}",
            )
            for seq in range(1, each + 1)
            for execution_id, job_id in jobs.items()
        ]
        counted = Counted(lab)
        lab.store.append_batch = counted  # type: ignore[method-assign]
        started = time.perf_counter()
        js = nc.jetstream()
        acks = [
            await js.publish_async(
                report_subject(PSU, r.execution_id, r.seq),
                encoder.encode(r),
                headers={"Nats-Msg-Id": f"{r.execution_id}:{r.seq}"},
            )
            for r in sent
        ]
        await asyncio.gather(*acks)

        def recorded() -> int:
            events = [e for j in set(jobs.values()) for e in lab.events(j)]
            return sum(isinstance(e, ExecutionProgressed) for e in events)

        await eventually(recorded, until=lambda n: n == len(sent), timeout=600, interval=0.05)
        seconds = time.perf_counter() - started
        return {
            "reports": len(sent),
            "executions": executions,
            "transactions": counted.transactions,
            "appends": counted.appends,
            "events": counted.events,
            "seconds_until_all_recorded": round(seconds, 3),
        }
    finally:
        await nc.close()
        await lab.close()
        await server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reports", type=int, default=1000)
    parser.add_argument("--executions", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-progress-") as folder:
        figures = asyncio.run(measure(Path(folder), args.reports, args.executions))
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
