"""A live dashboard of executions from LabLink's NATS stream, in plain nats-py.

    python examples/dashboard.py                          # the `lablink serve` of ./data
    python examples/dashboard.py --data-dir /srv/lablink  # ... of another data directory
    python examples/dashboard.py nats://user:pass@nats-1:4222   # any NATS, any credentials

With no URL it finds the private server of `lablink serve` the way `lablink events tail`
does: its address in ``DATA_DIR/nats/url`` and the read-only ``subscriber`` user in
``DATA_DIR/nats/credentials.json`` (DATA_DIR: --data-dir, else $LABLINK_DATA_DIR, else
``data``). A read-only user replies only to its own inbox, ``_INBOX.<user>``: nats-py is told
so with ``inbox_prefix``.

Counts executions running, completed and failed (failed, timed out or interrupted), from the
start of the stream, and prints the counts after every change. Events may arrive twice (the
relay resends a batch after a crash), so they are counted once per event id.
"""

import argparse
import asyncio
import json
import os
from pathlib import Path
from typing import Any

import nats
from nats.js.api import ConsumerConfig, DeliverPolicy

FAILED = {"execution.failed", "execution.timed_out", "execution.interrupted"}
ENDED = FAILED | {"execution.completed", "execution.cancelled"}


def private_server(data_dir: Path) -> dict[str, Any]:
    """nats.connect arguments for the private server of ``data_dir``, as its subscriber."""
    folder = data_dir / "nats"
    url = (folder / "url").read_text().strip()
    users = json.loads((folder / "credentials.json").read_text())["users"]
    user = users["subscriber"]
    return {
        "servers": [url],
        "user": user["name"],
        "password": user["password"],
        "inbox_prefix": f"_INBOX.{user['name']}",
    }


async def follow(
    url: str | None = None, updates: int | None = None, *, data_dir: Path | None = None
) -> dict[str, int]:
    counts = {"running": 0, "completed": 0, "failed": 0}
    seen: set[str] = set()
    if url is None:
        data_dir = data_dir or Path(os.environ.get("LABLINK_DATA_DIR", "data"))
        nc = await nats.connect(**private_server(data_dir))
    else:
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
    parser = argparse.ArgumentParser(description="Live execution counts from LabLink's stream.")
    parser.add_argument("url", nargs="?", help="a NATS URL [default: the private server]")
    parser.add_argument("--data-dir", type=Path, help="the data directory of `lablink serve`")
    arguments = parser.parse_args()
    asyncio.run(follow(arguments.url, data_dir=arguments.data_dir))
