"""A dead webhook in a real `lablink serve` slows neither firing nor the other channels.

A 1 s job fails at every fire and raises an alarm each time. Two channels are dead: one
receiver takes each request and never answers (every attempt waits out the channel's
timeout), one port has nothing listening. A third channel is healthy. While the dead ones
are still retrying their first alarms, the healthy one has delivered every alarm, and the job
has fired at every second with no miss, skip or coalesce. The lateness of the fires (from
the log) with and without the dead channels is recorded as the test's properties, not
asserted: it is a figure of the machine's load, the missing misfires are the guarantee."""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.notify.conftest import SECRET
from tests.notify.receiver import Receiver
from tests.notify.serving import FAILING, configure, logged, sent_keys, serve, webhook_table
from tests.support.eventually import eventually_sync
from tests.support.serve import Server, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ALARMS = 8
EVERY_SECOND = {
    **{k: v for k, v in FAILING.items() if k != "interval_hours"},
    "name": "Failing every second",
    "interval_seconds": 1,
    "enabled": True,
    # A machine stalled past a second (not a webhook) would otherwise skip or coalesce a
    # fire: each due fire runs, late if need be, so that every second is on record.
    "coalesce": False,
    "conflict_policy": "replace",
    "max_instances": 5,
}
MISFIRES = ("execution.missed", "execution.skipped", "execution.coalesced")


def fires(data: Path, job_id: str) -> list[dict[str, Any]]:
    return [
        r["payload"] for r in logged(data, "execution.pending") if r["payload"]["job_id"] == job_id
    ]


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def lateness_ms(fired: list[dict[str, Any]]) -> dict[str, float]:
    late = sorted(
        (at(f["actual_time"]) - at(f["scheduled_time"])).total_seconds() * 1000 for f in fired
    )
    return {
        "fires": len(late),
        "late_catch_up": sum(f["trigger_info"] == "catch_up" for f in fired),
        "p50": round(statistics.median(late), 2),
        "max": round(late[-1], 2),
    }


def every_second_without_misfires(data: Path, job_id: str) -> list[dict[str, Any]]:
    fired = fires(data, job_id)
    scheduled = [at(f["scheduled_time"]) for f in fired]
    gaps = {b - a for a, b in itertools.pairwise(scheduled)}
    assert gaps == {timedelta(seconds=1)}, sorted(gaps)
    misfires = [r for kind in MISFIRES for r in logged(data, kind)]
    assert misfires == []
    return fired


def run_job(data: Path, servers: list[Server], until: Callable[[], bool]) -> tuple[Server, str]:
    server = serve(data, servers)
    with httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=30) as client:
        created = client.post("/api/scheduler/jobs/create", json=EVERY_SECOND)
        assert created.status_code == 200, created.text
    eventually_sync(until, what=f"{ALARMS} alarms through")
    return server, str(created.json()["job_id"])


def test_dead_webhooks_slow_neither_the_fires_nor_the_other_channel(
    tmp_path: Path, servers: list[Server], record_property: Callable[[str, object], None]
) -> None:
    # Without notifications: the lateness to compare with.
    quiet = tmp_path / "quiet"
    server, job_id = run_job(quiet, servers, lambda: len(logged(quiet, "alarm.raised")) >= ALARMS)
    server.terminate()
    assert server.proc.wait(timeout=60) == 0  # its log no longer grows
    record_property(
        "lateness_ms_without_channels", lateness_ms(every_second_without_misfires(quiet, job_id))
    )

    data = tmp_path / "data"
    hanging = Receiver(SECRET, hold=True)  # takes each request, never answers
    healthy = Receiver(SECRET)
    try:
        configure(
            data,
            webhook_table("hang", hanging.url, timeout=1, retry_initial=1, retry_max=2),
            webhook_table(
                "closed",
                f"http://127.0.0.1:{free_port()}/nothing-listens",
                retry_initial=1,
                retry_max=2,
            ),
            webhook_table("ops", healthy.url, storm_threshold=1000),
        )
        server, job_id = run_job(data, servers, lambda: len(sent_keys(data, "ops")) >= ALARMS)
        notified = logged(data, "notification.")
        raised = logged(data, "alarm.raised")

        def facts(channel: str, kind: str) -> list[dict[str, Any]]:
            return [
                r["payload"]
                for r in notified
                if r["payload"]["channel"] == channel and r["type"] == f"notification.{kind}"
            ]

        # The healthy channel: every alarm raised before its latest delivery, once each.
        ops = facts("ops", "sent")
        assert len(ops) >= ALARMS
        delivered = [f["alarm_id"] for f in ops]
        assert len(set(delivered)) == len(delivered)
        assert delivered == [r["payload"]["alarm_id"] for r in raised][: len(delivered)]
        assert {r.key for r in healthy.requests} == {f["idempotency_key"] for f in ops}
        # The dead ones are still at it: failures on record, no delivery, no give-up.
        for channel, error in (("hang", "no answer within 1 s"), ("closed", "ConnectError")):
            failed = facts(channel, "failed")
            assert failed, channel
            assert all(error in f["error"] for f in failed), failed
            assert facts(channel, "sent") == facts(channel, "abandoned") == []
        assert hanging.requests
        assert all(r.status == 0 for r in hanging.requests)  # never answered
        with httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=30) as client:

            def components() -> dict[str, Any]:
                found: dict[str, Any] = client.get("/health").json()["components"]
                return found

            health = eventually_sync(
                components,
                until=lambda c: (
                    c["task.notify.hang"]["state"] == "degraded"
                    and c["task.notify.closed"]["state"] == "degraded"
                ),
            )
        assert health["task.notify.ops"]["state"] == "ok"
        assert health["scheduler"]["state"] == "ok"

        fired = every_second_without_misfires(data, job_id)
        record_property("lateness_ms_with_dead_channels", lateness_ms(fired))
        by_alarm = {r["payload"]["alarm_id"]: at(r["occurred_at"]) for r in raised}
        taken = sorted(
            (at(r["occurred_at"]) - by_alarm[r["payload"]["alarm_id"]]).total_seconds() * 1000
            for r in notified
            if r["payload"]["channel"] == "ops"
        )
        record_property(
            "ops_delivery_ms",
            {"p50": round(statistics.median(taken), 2), "max": round(taken[-1], 2)},
        )
    finally:
        hanging.close()
        healthy.close()
