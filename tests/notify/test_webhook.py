"""Webhook channels against a receiver served by the test: signature, idempotency key,
routing, retries with backoff, give-up, and the rebuild of what is owed after a restart."""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime, timedelta

from lablink.alarm_service import AlarmService
from lablink.application import JobService
from lablink.clock import ManualClock, SystemClock
from lablink.events import AlarmRaised, NotificationAbandoned, NotificationFailed
from lablink.eventstore.sqlite import SQLiteEventStore
from lablink.health import Health
from lablink.notify.message import signature
from lablink.notify.notifier import Notifier
from tests.notify.conftest import SECRET, Start, facts, raise_alarm, sent, webhook
from tests.notify.receiver import Receiver
from tests.support.eventually import eventually
from tests.support.serve import free_port


async def test_a_raised_alarm_is_posted_signed_once(
    store: SQLiteEventStore, clock: ManualClock, receiver: Receiver, start: Start
) -> None:
    await start([webhook("ops", receiver.url)], clock)
    raise_alarm(store, "alarm_1")
    await eventually(lambda: sent(store))
    (request,) = receiver.requests
    assert request.signature_ok
    assert request.key == "alarm_1:ops:raised"
    assert request.body["transition"] == "raised"
    alarm = request.body["alarm"]
    assert (alarm["alarm_id"], alarm["severity"], alarm["state"]) == (
        "alarm_1",
        "critical",
        "active",
    )
    assert request.body["url"] == "http://127.0.0.1:8000/alarms?equipment_id=power_supply_1"
    (fact,) = sent(store)
    assert (fact.alarm_id, fact.channel, fact.attempt, fact.idempotency_key) == (
        "alarm_1",
        "ops",
        1,
        "alarm_1:ops:raised",
    )
    (recorded,) = [r for r in store.read_all() if r.type == "notification.sent"]
    assert recorded.stream_id == "notification:alarm_1:ops"


def test_the_signature_is_hmac_sha256_of_the_body_with_the_secret() -> None:
    body = b'{"alarm":{}}'
    expected = hmac.new(b"k" * 16, body, hashlib.sha256).hexdigest()
    assert signature("k" * 16, body) == f"sha256={expected}"
    assert signature("j" * 16, body) != f"sha256={expected}"


async def test_routing_by_severity_equipment_tags_and_transitions(
    store: SQLiteEventStore,
    clock: ManualClock,
    service: JobService,
    receiver: Receiver,
    start: Start,
) -> None:
    tagged = service.create_job(
        {
            "name": "Overnight sweep",
            "schedule_type": "measurement",
            "equipment_id": "multimeter_1",
            "trigger_type": "interval",
            "interval_seconds": 60,
            "parameters": {"command": "get_voltage"},
            "tags": ["overnight", "sweep"],
        },
        "alice",
    )
    channels = [
        webhook("critical", receiver.url, severities=("critical",)),
        webhook("psu", receiver.url, equipment=("power_supply_1",)),
        webhook("night", receiver.url, job_tags=("overnight",)),
        webhook("all", receiver.url, transitions=("raised", "acknowledged", "cleared")),
    ]
    await start(channels, clock)
    raise_alarm(store, "a_warn_psu", severity="warning")
    raise_alarm(store, "a_crit_dmm", equipment_id="multimeter_1")
    raise_alarm(store, "a_info_job", severity="info", equipment_id=None, job_id=tagged)
    alarms = AlarmService.on_store(store, clock)
    alarms.acknowledge("a_warn_psu", by="bob", note="on it", actor="bob")
    alarms.clear("a_warn_psu", by="bob", note="", actor="bob")
    expected = {
        "a_warn_psu:psu:raised",
        "a_crit_dmm:critical:raised",
        "a_info_job:night:raised",
        "a_warn_psu:all:raised",
        "a_crit_dmm:all:raised",
        "a_info_job:all:raised",
        "a_warn_psu:all:acknowledged",
        "a_warn_psu:all:cleared",
    }
    await eventually(lambda: {s.idempotency_key for s in sent(store)}, until=expected.__eq__)
    assert sorted(r.key for r in receiver.requests) == sorted(expected)
    cleared = next(r for r in receiver.requests if r.key == "a_warn_psu:all:cleared")
    assert cleared.body["alarm"]["cleared"]["by"] == "bob"


async def test_a_receiver_failing_twice_is_retried_with_backoff_then_delivered(
    store: SQLiteEventStore, clock: ManualClock, start: Start
) -> None:
    failing = Receiver(SECRET, fail_first=2)
    try:
        notifier = await start([webhook("ops", failing.url, retry_initial=5, retry_max=600)], clock)
        raise_alarm(store, "alarm_1")
        await eventually(lambda: len(facts(store)) == 1)
        (first,) = facts(store)
        assert isinstance(first, NotificationFailed)
        assert first.attempt == 1
        assert "HTTP 503" in first.error
        assert first.retry_at == clock.now() + timedelta(seconds=5)
        clock.advance(4)
        notifier.wake()
        await eventually(lambda: notifier.outboxes["ops"].next_due(clock.now()) is not None)
        assert len(failing.requests) == 1  # not before its time
        clock.advance(1)
        notifier.wake()
        await eventually(lambda: len(facts(store)) == 2)
        assert facts(store)[1].retry_at == clock.now() + timedelta(seconds=10)  # doubled
        clock.advance(10)
        notifier.wake()
        await eventually(lambda: sent(store))
        assert sent(store)[0].attempt == 3
        assert [r.status for r in failing.requests] == [503, 503, 200]
        assert {r.key for r in failing.requests} == {"alarm_1:ops:raised"}
    finally:
        failing.close()


async def settled(notifier: Notifier, channel: str, clock: ManualClock) -> datetime | None:
    """Wait until the channel has nothing due now; when it next has."""
    outbox = notifier.outboxes[channel]

    def idle() -> bool:
        due = outbox.next_due(clock.now())
        return due is None or due > clock.now()

    await eventually(idle)
    return outbox.next_due(clock.now())


async def test_a_dead_webhook_is_given_up_on_with_an_alarm_sent_elsewhere_only(
    store: SQLiteEventStore, clock: ManualClock, receiver: Receiver, start: Start
) -> None:
    dead = f"http://127.0.0.1:{free_port()}/nothing-listens"  # connection refused
    notifier = await start(
        [
            webhook("dead", dead, retry_initial=60, retry_max=3600, give_up_after=3 * 3600),
            webhook("ops", receiver.url),
        ],
        clock,
    )
    t0 = clock.now()
    raise_alarm(store, "alarm_1")
    await eventually(lambda: [f for f in facts(store) if f.channel == "dead"])
    while (due := await settled(notifier, "dead", clock)) is not None:
        clock.set(due)
        notifier.wake()
    dead_facts = [f for f in facts(store) if f.channel == "dead"]
    # Tries at 0, 60, 180, 420, 900, 1860, 3780, 7380 s; the next (10,980 s) would be past
    # the give-up age (10,800 s).
    assert [type(f) for f in dead_facts] == [NotificationFailed] * 7 + [NotificationAbandoned]
    assert [f.retry_at - t0 for f in dead_facts[:-1]] == [
        timedelta(seconds=t) for t in (60, 180, 420, 900, 1860, 3780, 7380)
    ]
    abandoned = dead_facts[-1]
    assert abandoned.attempts == 8
    assert "ConnectError" in abandoned.error
    (raised,) = [
        r.event
        for r in store.read_all()
        if isinstance(r.event, AlarmRaised) and r.event.kind == "notification_abandoned"
    ]
    assert raised.error["channel"] == "dead"
    assert raised.error["alarm_ids"] == ["alarm_1"]
    # The other channel is told of the give-up; the channel that gave up is not.
    await eventually(
        lambda: {s.idempotency_key for s in sent(store)},
        until=lambda k: f"{raised.alarm_id}:ops:raised" in k,
    )
    assert not notifier.outboxes["dead"].owed
    assert all(f.alarm_id == "alarm_1" for f in facts(store) if f.channel == "dead")


async def test_after_a_restart_nothing_delivered_is_sent_again_and_retries_go_on(
    store: SQLiteEventStore, clock: ManualClock, start: Start, notifiers: list[Notifier]
) -> None:
    flaky = Receiver(SECRET, fail_first=1)
    try:
        first = await start([webhook("ops", flaky.url)], clock)
        raise_alarm(store, "alarm_ok")
        await eventually(lambda: len(facts(store)) == 1)  # failed once
        clock.advance(5)
        first.wake()
        await eventually(lambda: len(sent(store)) == 1)
        raise_alarm(store, "alarm_late")
        await eventually(lambda: len(sent(store)) == 2)
        notifiers.remove(first)
        await first.aclose()
        raise_alarm(store, "alarm_while_down")
        again = await start([webhook("ops", flaky.url)], clock)
        await eventually(lambda: len(sent(store)) == 3)
        await eventually(lambda: again.ready.is_set())
        keys = [r.key for r in flaky.requests]
        assert sorted(set(keys)) == sorted(
            ["alarm_ok:ops:raised", "alarm_late:ops:raised", "alarm_while_down:ops:raised"]
        )
        assert keys.count("alarm_ok:ops:raised") == 2  # the failure, then the delivery
        assert len(keys) == 4
    finally:
        flaky.close()


async def test_the_loops_run_on_the_system_clock_with_short_backoff(
    store: SQLiteEventStore, start: Start
) -> None:
    flaky = Receiver(SECRET, fail_first=2)
    try:
        health = Health(SystemClock())
        await start(
            [webhook("ops", flaky.url, retry_initial=0.05, retry_max=0.2)],
            SystemClock(),
            health=health,
        )
        raise_alarm(store, "alarm_1")
        await eventually(lambda: sent(store))
        assert sent(store)[0].attempt == 3
        assert [r.status for r in flaky.requests] == [503, 503, 200]
        # The channel notes its success in /health just after it records the delivery.
        component = await eventually(
            lambda: health.get("task.notify.ops"), until=lambda c: c is not None and c.state == "ok"
        )
        assert component is not None
        follower = health.get("task.notify")
        assert follower is not None
        assert follower.state == "ok"
    finally:
        flaky.close()


async def test_a_first_start_begins_at_the_end_of_the_log(
    store: SQLiteEventStore,
    clock: ManualClock,
    receiver: Receiver,
    start: Start,
    notifiers: list[Notifier],
) -> None:
    """Channels configured on a LabLink that has run for a while: the alarms of before are
    not sent; the first start's position is kept, so a restart does not send them either."""
    raise_alarm(store, "alarm_before")
    first = await start([webhook("ops", receiver.url)], clock)
    raise_alarm(store, "alarm_after")
    await eventually(lambda: sent(store))
    assert [r.key for r in receiver.requests] == ["alarm_after:ops:raised"]
    notifiers.remove(first)
    await first.aclose()
    again = await start([webhook("ops", receiver.url)], clock)
    raise_alarm(store, "alarm_later")
    await eventually(lambda: len(sent(store)) == 2)
    await eventually(lambda: again.ready.is_set())
    assert [r.key for r in receiver.requests] == [
        "alarm_after:ops:raised",
        "alarm_later:ops:raised",
    ]


async def test_a_first_start_sends_what_this_start_raised_before_it_ran(
    store: SQLiteEventStore, clock: ManualClock, receiver: Receiver, start: Start
) -> None:
    """The runtime opens the log, recovers (which may raise alarms), then starts the
    notifier: it begins where the log stood when the runtime opened it."""
    raise_alarm(store, "alarm_of_last_year")
    opened_at = store.last_position()
    raise_alarm(store, "alarm_of_the_recovery")
    await start([webhook("ops", receiver.url)], clock, first_start_at=opened_at)
    await eventually(lambda: sent(store))
    assert [r.key for r in receiver.requests] == ["alarm_of_the_recovery:ops:raised"]


async def test_a_receiver_that_never_answers_is_a_failed_attempt_after_the_timeout(
    store: SQLiteEventStore, clock: ManualClock, start: Start
) -> None:
    silent = Receiver(SECRET, hold=True)
    try:
        await start([webhook("ops", silent.url, timeout=0.2)], clock)
        raise_alarm(store, "alarm_1")
        await eventually(lambda: facts(store))
        (failed,) = facts(store)
        assert isinstance(failed, NotificationFailed)
        assert failed.error == "no answer within 0.2 s"
        assert [r.status for r in silent.requests] == [0]  # taken, never answered
    finally:
        silent.close()
