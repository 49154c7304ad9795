"""Subscribers for people: `lablink events tail` and `lablink alarms watch`.

On the machine of `lablink serve` they connect as the private server's read-only
``subscriber`` (``bus.access``); elsewhere with the configured LABLINK_NATS_* credentials.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client as NATS
from nats.js.api import ConsumerConfig, DeliverPolicy
from rich.console import Console

from lablink.bus.access import resolve
from lablink.bus.consume import wait_for_stream
from lablink.bus.options import NatsOptions
from lablink.bus.private import URL_FILE
from lablink.bus.subjects import ALARMS_PREFIX, STREAM, event_filter

__all__ = ["URL_FILE", "connect", "resolve_url", "tail_events", "watch_alarms"]


def resolve_url(explicit: str | None, data_dir: Path) -> str:
    return resolve(explicit, data_dir)[0]


def _options(target: str | NatsOptions) -> NatsOptions:
    return target if isinstance(target, NatsOptions) else NatsOptions(url=target)


async def connect(target: str | NatsOptions) -> NATS:
    """Connect once, or fail with a clear message (no endless reconnect from a CLI)."""
    options = _options(target)

    async def quiet(exc: Exception) -> None:
        return None

    try:
        return await nats.connect(
            **options.connect_kwargs(),
            connect_timeout=3,
            allow_reconnect=False,
            max_reconnect_attempts=1,
            reconnect_time_wait=0.2,
            error_cb=quiet,
        )
    except Exception as exc:
        raise ConnectionError(f"cannot reach NATS at {options.redacted()}: {exc}") from exc


def _line(envelope: dict[str, Any]) -> str:
    data = envelope.get("data", {})
    detail = ", ".join(
        f"{k}={v}"
        for k, v in data.items()
        if k in ("job_id", "execution_id", "reason", "message", "severity", "equipment_id")
    )
    return (
        f"[dim]{envelope['position']:>8}[/dim] {envelope['occurred_at']}  "
        f"[bold]{envelope['type']:<22}[/bold] {envelope['stream_id']}  "
        f"[cyan]{envelope['actor']}[/cyan]  {detail}"
    )


async def tail_events(
    url: str | NatsOptions,
    *,
    event_type: str | None = None,
    job_id: str | None = None,
    equipment_id: str | None = None,
    from_start: bool = False,
    start_position: int | None = None,
    count: int | None = None,
    console: Console | None = None,
) -> int:
    """Print events as they arrive; returns how many were printed. Duplicates (a batch the
    relay sent twice) are dropped by event id."""
    console = console or Console()
    nc = await connect(url)
    try:
        await wait_for_stream(nc, wait=3600)
        js = nc.jetstream()
        if start_position is not None:
            config = ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start_position
            )
        else:
            config = ConsumerConfig(
                deliver_policy=DeliverPolicy.ALL if from_start else DeliverPolicy.NEW
            )
        subscription = await js.subscribe(
            event_filter(event_type, job_id, equipment_id),
            stream=STREAM,
            config=config,
            ordered_consumer=True,
        )
        seen: set[str] = set()
        printed = 0
        async for message in subscription.messages:
            event_id = (message.headers or {}).get("Nats-Msg-Id", "")
            if event_id in seen:
                continue
            seen.add(event_id)
            console.print(_line(json.loads(message.data)), highlight=False)
            printed += 1
            if count is not None and printed >= count:
                break
        return printed
    finally:
        await nc.close()


async def watch_alarms(
    url: str | NatsOptions, *, count: int | None = None, console: Console | None = None
) -> int:
    console = console or Console()
    nc = await connect(url)
    try:
        subscription = await nc.subscribe(f"{ALARMS_PREFIX}.>")
        await nc.flush()  # the server has the subscription: no alarm from now on is missed
        print(
            f"watching {ALARMS_PREFIX}.> on {_options(url).redacted()}", file=sys.stderr, flush=True
        )
        printed = 0
        async for message in subscription.messages:
            envelope = json.loads(message.data)
            data = envelope.get("data", {})
            console.print(
                f"[bold red]{data.get('severity', '?').upper()}[/bold red] "
                f"{envelope['occurred_at']} {data.get('equipment_id') or '-'} "
                f"{data.get('job_name') or ''} {data.get('message', '')}",
                highlight=False,
            )
            printed += 1
            if count is not None and printed >= count:
                break
        return printed
    finally:
        await nc.close()
