"""Replicas' presence in the LABLINK_REPLICAS bucket, on a real nats-server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NATS

from lablink.bus.server import NatsServer
from lablink.cluster.presence import Presence, ReplicaPresence, read_presences, replica_key
from tests.support.eventually import eventually

pytestmark = pytest.mark.nats


@pytest.fixture
async def nc(tmp_path: Path) -> AsyncIterator[NATS]:
    server = await NatsServer(tmp_path / "nats").start()
    client = await nats.connect(server.url)
    yield client
    await client.close()
    await server.stop()


async def replicas(nc: NATS) -> dict[str, ReplicaPresence]:
    return {p.replica: p for p in await read_presences(nc) or []}


async def test_each_replica_puts_its_positions_and_role(nc: NATS) -> None:
    assert await read_presences(nc) is None  # no bucket before the first replica
    positions = {"copied": 10, "folded": 7}
    role = {"now": "follower"}
    one = Presence(
        nc,
        "replica-1",
        "https://one:8443",
        copied=lambda: positions["copied"],
        folded=lambda: positions["folded"],
        role=lambda: role["now"],  # type: ignore[arg-type,return-value]
        interval=1.0,
    )
    two = Presence(
        nc,
        "replica-2",
        "https://two:8443",
        copied=lambda: 3,
        folded=lambda: 3,
        role=lambda: "leader",
        interval=1.0,
    )
    await one.start()
    await two.start()
    seen = await replicas(nc)
    assert seen["replica-1"].url == "https://one:8443"
    assert (seen["replica-1"].copied, seen["replica-1"].folded) == (10, 7)
    assert seen["replica-2"].role == "leader"

    positions.update(copied=12, folded=12)
    role["now"] = "leader"

    async def moved() -> tuple[int, int, str] | None:
        found = (await replicas(nc)).get("replica-1")
        return None if found is None else (found.copied, found.folded, found.role)

    await eventually(moved, until=lambda seen: seen == (12, 12, "leader"))

    await one.stop()
    assert set(await replicas(nc)) == {"replica-2"}  # left at once, not after the TTL
    await two.stop()


async def test_a_replica_that_stops_putting_drops_out_by_the_ttl(nc: NATS) -> None:
    gone = Presence(
        nc, "replica-9", "", copied=lambda: 1, folded=lambda: 1, role=lambda: "follower"
    )
    gone.interval = 0.2  # the bucket's TTL: 3 intervals
    await gone.start()
    assert "replica-9" in await replicas(nc)
    # As a killed process: the task ends, nothing is deleted.
    assert gone._task is not None
    gone._task.cancel()
    await eventually(
        lambda: replicas(nc), until=lambda seen: "replica-9" not in seen, what="expired"
    )


async def test_a_put_that_fails_is_reported_not_raised(nc: NATS) -> None:
    presence = Presence(
        nc, "replica-1", "", copied=lambda: 1, folded=lambda: 1, role=lambda: "follower"
    )
    assert await presence.put_once() is True
    await nc.close()  # as a connection lost for good
    assert await presence.put_once() is False
    assert presence.error is not None
    assert presence.puts == 1


def test_replica_ids_must_be_plain_keys() -> None:
    assert replica_key("lab-pc_1") == "lab-pc_1"
    with pytest.raises(ValueError, match="replica id"):
        replica_key("a.b")
