"""The leader's duties in cluster mode (``scheduler.leadership``): a service only the lease
holder runs (the notifier) is made fresh on each gain and closed on each loss, and one
added while the replica leads already is led at once."""

from __future__ import annotations

from typing import Any

from lablink.eventstore.lease import LeaseRecord
from lablink.eventstore.lease_keeper import LeaseKeeper
from lablink.scheduler.leadership import Leadership, ServiceDuty


class Service:
    def __init__(self, n: int) -> None:
        self.n = n
        self.closed = False

    async def aclose(self) -> None:
        self.closed = True


class NoLink:
    """The keeper is driven by hand here (its on_gain / on_lose): no server is asked."""

    async def read(self) -> LeaseRecord | None:
        raise AssertionError("not asked")

    async def claim(self, after: LeaseRecord | None) -> LeaseRecord | None:
        raise AssertionError("not asked")

    async def take_over(self, stale: LeaseRecord) -> LeaseRecord | None:
        raise AssertionError("not asked")


def leadership() -> tuple[Leadership, LeaseKeeper]:
    keeper = LeaseKeeper(NoLink(), replica="a", ttl=5.0)

    async def start_engine(lease: LeaseRecord) -> Any:
        return Engine()

    return Leadership(keeper, start_engine), keeper


class Engine:
    async def aclose(self, grace_seconds: float = 0.0) -> None:
        return None


LEASE = LeaseRecord("a", 7, 5.0, "2026-12-06T00:00:00Z", 7)


async def test_a_service_duty_is_made_on_each_gain_and_closed_on_each_loss() -> None:
    made: list[Service] = []

    async def start() -> Service:
        made.append(Service(len(made)))
        return made[-1]

    lead, keeper = leadership()
    duty = ServiceDuty("notifier", start)
    await lead.add_duty(duty)
    assert made == []  # following: nothing runs
    await keeper.on_gain(LEASE)
    assert [s.n for s in made] == [0]
    await keeper.on_lose("renewal refused")
    assert made[0].closed
    assert duty.running is None
    await keeper.on_gain(LEASE)
    assert [s.n for s in made] == [0, 1]
    assert not made[1].closed


async def test_a_duty_added_while_leading_is_led_at_once() -> None:
    made: list[Service] = []

    async def start() -> Service:
        made.append(Service(0))
        return made[-1]

    lead, keeper = leadership()
    await keeper.on_gain(LEASE)
    await lead.add_duty(ServiceDuty("notifier", start))
    assert len(made) == 1


async def test_a_duty_that_makes_nothing_is_no_service() -> None:
    async def start() -> None:
        return None

    lead, keeper = leadership()
    duty = ServiceDuty("notifier", start)
    await lead.add_duty(duty)
    await keeper.on_gain(LEASE)
    await keeper.on_lose("gone")
    assert duty.running is None
