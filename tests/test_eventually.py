"""The one polling helper of the suite: it returns what the condition gave once it holds,
and on timeout fails saying what was awaited and the last value seen."""

from __future__ import annotations

import itertools

import pytest

from tests.support.eventually import NotYet, eventually, eventually_sync


async def test_returns_the_first_truthy_value() -> None:
    calls = itertools.count(1)
    found = await eventually(lambda: [n] if (n := next(calls)) >= 3 else [], interval=0)
    assert found == [3]


async def test_awaits_a_coroutine_condition() -> None:
    calls = itertools.count(1)

    async def third_call() -> int:
        return n if (n := next(calls)) >= 3 else 0

    assert await eventually(third_call, interval=0) == 3


def test_sync_variant_returns_the_first_truthy_value() -> None:
    calls = itertools.count(1)
    assert eventually_sync(lambda: next(calls) >= 3, interval=0) is True


async def test_times_out_naming_the_condition_and_the_last_value() -> None:
    state = {"checkpoint": 41}
    with pytest.raises(NotYet) as failed:
        await eventually(lambda: state["checkpoint"] == 50 and state, timeout=0.1, interval=0.01)
    message = str(failed.value)
    assert "not within 0.1 s" in message
    assert 'lambda: state["checkpoint"] == 50 and state' in message
    assert "last value seen: False" in message


def test_sync_variant_times_out_with_what_was_awaited() -> None:
    published: list[str] = []
    with pytest.raises(NotYet, match=r"not within 0.1 s: the relay caught up; last value seen: 0"):
        eventually_sync(
            lambda: len(published), timeout=0.1, interval=0.01, what="the relay caught up"
        )


def test_a_timeout_is_an_assertion_failure() -> None:
    with pytest.raises(AssertionError):
        eventually_sync(lambda: None, timeout=0, interval=0)


async def test_ignored_exceptions_mean_not_yet_and_are_shown_last() -> None:
    def refused() -> bool:
        raise ConnectionRefusedError("port 8000")

    with pytest.raises(NotYet, match=r"last value seen: ConnectionRefusedError\('port 8000'\)"):
        await eventually(refused, timeout=0.05, interval=0.01, ignoring=(ConnectionRefusedError,))
    calls = itertools.count(1)

    def up_on_the_third_try() -> str:
        if next(calls) < 3:
            raise ConnectionRefusedError
        return "up"

    assert eventually_sync(up_on_the_third_try, interval=0, ignoring=(OSError,)) == "up"


async def test_other_exceptions_fail_at_once() -> None:
    calls = itertools.count(1)

    def died() -> bool:
        next(calls)
        raise AssertionError("the child exited with 1")

    with pytest.raises(AssertionError, match="the child exited with 1"):
        await eventually(died, timeout=60)
    assert next(calls) == 2


async def test_until_makes_the_condition_a_probe_whose_last_value_is_shown() -> None:
    published = iter([3, 7, 10, 12])
    assert await eventually(lambda: next(published), until=lambda n: n >= 10, interval=0) == 10
    with pytest.raises(NotYet, match=r"until lambda n: n == 100.*last value seen: 41"):
        await eventually(lambda: 41, until=lambda n: n == 100, timeout=0.05, interval=0.01)


def test_a_described_wait_asks_its_description_only_on_failure() -> None:
    asked: list[int] = []

    def output() -> str:
        asked.append(1)
        return "'api listening' in: ['starting', 'bound']"

    assert eventually_sync(lambda: True, what=output) is True
    assert asked == []
    with pytest.raises(NotYet, match=r"not within 0.05 s: 'api listening' in: \['starting'"):
        eventually_sync(lambda: False, timeout=0.05, interval=0.01, what=output)
    assert asked == [1]
