"""A live dashboard of executions from LabLink's NATS stream, in plain nats-py.

    python examples/dashboard.py nats://127.0.0.1:4222      # or the URL in data/nats/url

Counts executions running, completed and failed (failed, timed out or interrupted), from the
start of the stream, and prints the counts after every change. Events may arrive twice (the
relay resends a batch after a crash), so they are counted once per event id.
"""

import asyncio
import json
import sys

import nats
from nats.js.api import ConsumerConfig, DeliverPolicy

FAILED = {"execution.failed", "execution.timed_out", "execution.interrupted"}
ENDED = FAILED | {"execution.completed", "execution.cancelled"}


async def follow(url: str, updates: int | None = None) -> dict[str, int]:
    counts = {"running": 0, "completed": 0, "failed": 0}
    seen: set[str] = set()
    nc = await nats.connect(url)
    js = nc.jetstream()
    config = ConsumerConfig(deliver_policy=DeliverPolicy.ALL)
    sub = await js.subscribe("lablink.events.execution.>", config=config, ordered_consumer=True)
    changes = 0
    async for message in sub.messages:
        event_id = (message.headers or {}).get("Nats-Msg-Id", "")
        if event_id in seen:
            continue
        seen.add(event_id)
        kind = json.loads(message.data)["type"]
        if kind == "execution.started":
            counts["running"] += 1
        elif kind in ENDED:
            counts["running"] = max(0, counts["running"] - 1)
            if kind in FAILED:
                counts["failed"] += 1
            elif kind == "execution.completed":
                counts["completed"] += 1
        else:
            continue
        changes += 1
        print(" ".join(f"{name}={value}" for name, value in counts.items()), flush=True)
        if updates is not None and changes >= updates:
            break
    await nc.close()
    return counts


if __name__ == "__main__":
    asyncio.run(follow(sys.argv[1] if len(sys.argv) > 1 else "nats://127.0.0.1:4222"))
