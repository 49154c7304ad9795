"""`lablink cluster import` and `lablink cluster status` against deploy/nats-server.conf as three
real nodes on loopback: the record made R3 by the import, a lease message published in the
documented format, two replicas' presence, then a node killed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nats
import pytest
from typer.testing import CliRunner

from lablink.bus.server import NatsServer
from lablink.cli import app
from lablink.cluster.presence import Presence
from lablink.cluster.status import LEASE_SUBJECT
from lablink.eventstore.record_link import RECORD_STREAM
from tests.support.eventually import eventually_sync
from tests.support.nats_cluster import PASSWORDS, SCHEDULER
from tests.support.nats_thread import ServerThread, nats_cluster
from tests.support.single_log import single_node_log

pytestmark = [pytest.mark.nats, pytest.mark.slow, pytest.mark.timeout(240)]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[ServerThread, list[NatsServer]]]:
    with nats_cluster(tmp_path) as started:
        yield started


def env_of(nodes: list[NatsServer], user: str, password: str) -> dict[str, str]:
    return {
        "LABLINK_NATS_URL": ",".join(node.url for node in nodes),
        "LABLINK_NATS_USER": user,
        "LABLINK_NATS_PASSWORD": password,
        "LABLINK_NATS_REPLICAS": "3",
    }


def status(env: dict[str, str]) -> tuple[int, dict[str, Any]]:
    result = CliRunner().invoke(app, ["cluster", "status", "--json"], env=env)
    if result.exit_code == 2:  # no answer: a cluster still electing its meta leader
        return 2, {"output": result.output}
    assert result.exit_code in (0, 1), result.output
    return result.exit_code, json.loads(result.stdout)


async def put_lease(url: str, replica: str, ttl: float, epoch: int) -> int:
    """A lease message in the documented format, after the stream's last message (the
    acquiring one says epoch 0: its own sequence is the epoch; a renewal names its epoch)."""
    nc = await nats.connect(url, user=SCHEDULER[0], password=SCHEDULER[1])
    js = nc.jetstream()
    last = (await js.stream_info(RECORD_STREAM)).state.last_seq
    body = {
        "replica": replica,
        "epoch": epoch,
        "ttl_seconds": ttl,
        "at": datetime.now(UTC).isoformat(),
    }
    ack = await js.publish(
        LEASE_SUBJECT,
        json.dumps(body).encode(),
        headers={"Nats-Expected-Last-Sequence": str(last)},
    )
    await nc.close()
    assert ack.seq == last + 1
    return ack.seq


def test_status_shows_the_servers_stream_lease_and_replicas(
    cluster: tuple[ServerThread, list[NatsServer]], tmp_path: Path
) -> None:
    thread, nodes = cluster
    scheduler = env_of(nodes, *SCHEDULER)
    reader = env_of(nodes, "subscriber", PASSWORDS["NATS_SUBSCRIBER_PASSWORD"])

    code, shown = eventually_sync(lambda: status(reader), until=lambda found: found[0] != 2)
    assert (code, shown["stream"], shown["problems"]) == (
        1,
        None,
        ["the record's stream does not exist"],
    )

    single_node_log(tmp_path / "single" / "scheduler.db", 40).close()
    imported = CliRunner().invoke(
        app, ["cluster", "import", "--data-dir", str(tmp_path / "single")], env=scheduler
    )
    assert imported.exit_code == 0, imported.output
    assert "imported 40 events into LABLINK_LOG" in imported.stdout
    again = CliRunner().invoke(
        app, ["cluster", "import", "--data-dir", str(tmp_path / "single")], env=scheduler
    )
    assert again.exit_code == 1
    assert "stream LABLINK_LOG is not empty: it holds 40 messages" in again.output

    assert thread.call(put_lease(nodes[0].url, "replica-1", 30.0, 0)) == 41
    code, shown = eventually_sync(lambda: status(reader), until=lambda found: found[0] != 2)
    assert (shown["lease"]["epoch"], shown["lease"]["sequence"]) == (41, 41)
    assert thread.call(put_lease(nodes[0].url, "replica-1", 30.0, 41)) == 42  # a renewal
    nc = thread.call(nats.connect([n.url for n in nodes], user=SCHEDULER[0], password=SCHEDULER[1]))
    presences = [
        Presence(nc, "replica-1", "https://one", copied=lambda: 42, folded=lambda: 39,
                 role=lambda: "leader", replicas=3),
        Presence(nc, "replica-2", "https://two", copied=lambda: 30, folded=lambda: 30,
                 role=lambda: "follower", replicas=3),
    ]  # fmt: skip
    for presence in presences:
        thread.call(presence.start())
    try:
        # The stream's followers are current once they have caught up with the leader, and a
        # presence whose first put met the new bucket still electing is put again 2 s later.
        code, shown = eventually_sync(
            lambda: status(reader),
            until=lambda found: found[0] == 0 and len(found[1]["replicas"]) == 2,
        )
        stream = shown["stream"]
        assert (stream["replicas"], stream["messages"], stream["last_sequence"]) == (3, 42, 42)
        assert {s["name"] for s in shown["servers"]} == {"nats-1", "nats-2", "nats-3"}
        assert [s["role"] for s in shown["servers"]].count("stream leader") == 1
        lease = shown["lease"]
        assert (lease["replica"], lease["epoch"], lease["sequence"]) == ("replica-1", 41, 42)
        assert lease["ttl_seconds"] == 30.0
        assert lease["expired"] is False
        lags = {
            r["replica"]: (r["role"], r["behind_record"], r["behind_copy"])
            for r in shown["replicas"]
        }
        assert lags == {"replica-1": ("leader", 0, 3), "replica-2": ("follower", 12, 0)}

        table = CliRunner().invoke(app, ["cluster", "status"], env=reader)
        assert table.exit_code == 0, table.output
        assert "lease: held by replica-1, epoch 41" in table.stdout
        assert "replica-2" in table.stdout

        # A node lost: its stream replica goes offline or stops being current.
        leader = stream["leader"]
        victim = next(
            n for n in nodes if n.url != nodes[0].url and f"nats-{nodes.index(n) + 1}" != leader
        )
        thread.kill(victim)
        code, shown = eventually_sync(
            lambda: status(env_of([nodes[0]], *SCHEDULER)),
            until=lambda found: found[0] == 1,
            what="a replica not current",
        )
        assert any(f"nats-{nodes.index(victim) + 1} " in p for p in shown["problems"])
    finally:
        for presence in presences:
            thread.call(presence.stop())
        thread.call(nc.close())
