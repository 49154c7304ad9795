"""Alarms: raised with failures, timeouts, interruptions, missed runs (the dead-man's switch)
and instruments going offline; listed, acknowledged and cleared over HTTP; counted in the
statistics. A real engine on a real SQLite file, driven by the manual clock."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest

from lablink.alarm_service import AlarmService
from lablink.bus.relay import NatsOptions, Relay
from lablink.bus.server import NatsServer
from lablink.clock import ManualClock
from lablink.equipment_service import EquipmentService
from lablink.events import AlarmCleared, AlarmRaised
from lablink.instruments.execution import Outcome
from lablink.instruments.protocol import Presence
from lablink.keys import create_key
from tests.support.harness import Harness, api_client

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
BASE: dict[str, Any] = {
    "name": "Load test",
    "schedule_type": "command",
    "equipment_id": "load_1",
    "parameters": {"command": "run_load_test", "parameters": {"duration": 60}},
    "trigger_type": "interval",
    "interval_minutes": 10,
    "timeout_seconds": 7 * 86_400,
}


def minutes(n: float) -> datetime:
    return T0 + timedelta(minutes=n)


def alarms(h: Harness, job_id: str) -> list[AlarmRaised]:
    return [r.event for r in h.store.read_stream(job_id) if isinstance(r.event, AlarmRaised)]


@pytest.fixture
async def keyed(harness: Harness) -> tuple[Harness, dict[str, dict[str, str]]]:
    """The harness with auth on and a key per role."""
    keys = {}
    for role in ("viewer", "operator"):
        _, secret = create_key(harness.store, name=f"{role}-key", role=role, actor="test", now=T0)
        keys[role] = {"Authorization": f"Bearer {secret}"}
    return harness, keys


async def test_a_failure_alarm_carries_what_the_guide_lists(harness: Harness) -> None:
    h = harness
    h.executor.hold = True
    job = h.service.create_job({**BASE, "on_failure_alarm": True}, "alice")
    await h.at(minutes(10))
    (running,) = h.executor.held()
    h.executor.release(running, Outcome.failed("instrument_error", "-222,out of range"))
    await h.settle()
    (alarm,) = alarms(h, job)
    assert alarm.kind == "job_failure"
    assert alarm.severity == "critical"
    assert (alarm.job_id, alarm.job_name, alarm.execution_id) == (job, "Load test", running)
    assert alarm.equipment_id == "load_1"
    assert alarm.equipment == {"equipment_id": "load_1"}
    assert alarm.error["type"] == "instrument_error"
    assert alarm.error["message"] == "-222,out of range"
    assert alarm.execution_time == minutes(10)
    assert "Load test" in alarm.message
    assert "failed" in alarm.message


async def test_timed_out_and_interrupted_raise_alarms_success_does_not(
    tmp_path: Path, clock: ManualClock
) -> None:
    h = await Harness(tmp_path / "scheduler.db", clock).start()
    h.executor.hold = True
    fine = h.service.create_job({**BASE, "on_failure_alarm": True, "name": "fine"}, "alice")
    slow = h.service.create_job(
        {**BASE, "on_failure_alarm": True, "name": "slow", "timeout_seconds": 30}, "alice"
    )
    cut = h.service.create_job({**BASE, "on_failure_alarm": True, "name": "cut"}, "alice")
    await h.at(minutes(10))
    by_job = {r.job_id: r.execution_id for r in h.executor.requests}
    h.executor.release(by_job[fine])
    await h.at(minutes(10) + timedelta(seconds=30))
    await h.crash()

    again = await Harness(tmp_path / "scheduler.db", clock).start()
    try:
        assert alarms(again, fine) == []
        (timed_out,) = alarms(again, slow)
        assert timed_out.severity == "critical"
        assert timed_out.error == {"type": "timed_out", "timeout_seconds": 30.0}
        (interrupted,) = alarms(again, cut)
        assert interrupted.severity == "warning"
        assert interrupted.execution_id == by_job[cut]
        assert interrupted.error["type"] == "interrupted"
    finally:
        await again.close()


async def test_the_dead_mans_switch_fires_once_per_streak(harness: Harness) -> None:
    h = harness
    h.executor.hold = True
    job = h.service.create_job({**BASE, "alarm_after_missed": 3}, "alice")
    await h.at(minutes(10))
    (running,) = h.executor.held()
    for n in (20, 30):
        await h.at(minutes(n))
    assert alarms(h, job) == []  # two skipped: not yet
    await h.at(minutes(40))
    (alarm,) = alarms(h, job)
    assert alarm.kind == "missed_runs"
    assert alarm.severity == "warning"
    assert alarm.error["consecutive"] == 3
    assert "last 3 occurrence(s) were missed or skipped" in alarm.message
    await h.at(minutes(50))
    assert len(alarms(h, job)) == 1  # the same streak: no second alarm

    h.executor.release(running)
    await h.settle()
    await h.at(minutes(60))  # runs: the streak ends
    (running,) = h.executor.held()
    for n in (70, 80, 90):
        await h.at(minutes(n))
    assert len(alarms(h, job)) == 2
    h.executor.release(running)


async def test_a_coalesced_missed_record_counts_every_occurrence_it_stands_for(
    harness: Harness,
) -> None:
    h = harness
    h.executor.hold = True
    job = h.service.create_job({**BASE, "alarm_after_missed": 5}, "alice")
    await h.at(minutes(10))
    assert len(h.executor.held()) == 1  # stuck: the catch-up after the stall is skipped
    await h.at(minutes(10) + timedelta(days=1))
    (alarm,) = alarms(h, job)
    assert alarm.error["consecutive"] == 24 * 6  # 143 missed in one record + 1 skipped


async def test_a_catch_up_run_after_downtime_is_not_a_dead_job(harness: Harness) -> None:
    h = harness
    job = h.service.create_job({**BASE, "alarm_after_missed": 5}, "alice")
    await h.at(minutes(10) + timedelta(days=1))
    assert [e["status"] for e in h.executions(job)] == ["missed", "completed"]
    assert alarms(h, job) == []


async def test_alarms_over_http_filter_acknowledge_and_clear(
    keyed: tuple[Harness, dict[str, dict[str, str]]],
) -> None:
    h, keys = keyed
    h.executor.hold = True
    job = h.service.create_job({**BASE, "on_failure_alarm": True}, "alice")
    await h.at(minutes(10))
    (running,) = h.executor.held()
    h.executor.release(running, Outcome.failed("instrument_error", "boom"))
    await h.settle()
    (raised,) = alarms(h, job)
    alarm_id = raised.alarm_id

    async with api_client(h, auth=True) as client:
        viewer, operator = keys["viewer"], keys["operator"]
        listed = (await client.get("/api/alarms", headers=viewer)).json()
        assert [a["alarm_id"] for a in listed["alarms"]] == [alarm_id]
        for params, count in (
            ({"state": "active"}, 1),
            ({"state": "cleared"}, 0),
            ({"severity": "critical"}, 1),
            ({"severity": "warning,info"}, 0),
            ({"equipment_id": "load_1"}, 1),
            ({"equipment_id": "scope_1"}, 0),
            ({"job_id": job}, 1),
        ):
            got = (await client.get("/api/alarms", params=params, headers=viewer)).json()
            assert got["count"] == count, params
        bad = await client.get("/api/alarms", params={"state": "sleeping"}, headers=viewer)
        assert bad.status_code == 400
        assert bad.json()["errors"][0] == {
            "field": "state",
            "value": "sleeping",
            "reason": "must be one of active, acknowledged, cleared",
        }

        forbidden = await client.post(f"/api/alarms/{alarm_id}/acknowledge", headers=viewer)
        assert forbidden.status_code == 403
        missing = await client.post("/api/alarms/alarm_nope/acknowledge", headers=operator)
        assert missing.status_code == 404
        assert missing.json()["errors"][0]["value"] == "alarm_nope"
        unknown_field = await client.post(
            f"/api/alarms/{alarm_id}/acknowledge", json={"who": "bob"}, headers=operator
        )
        assert unknown_field.status_code == 422
        assert unknown_field.json()["errors"][0]["field"] == "who"
        for body, field in (({"by": " "}, "by"), ({"note": "x" * 2001}, "note")):
            refused = await client.post(
                f"/api/alarms/{alarm_id}/acknowledge", json=body, headers=operator
            )
            assert refused.status_code == 422
            assert refused.json()["errors"][0]["field"] == field

        stats = (await client.get("/api/scheduler/statistics", headers=viewer)).json()
        assert stats["statistics"]["active_alarms"] == 1
        acked = await client.post(
            f"/api/alarms/{alarm_id}/acknowledge",
            json={"by": "Dana (night shift)", "note": "load disconnected"},
            headers=operator,
        )
        assert acked.status_code == 200, acked.text
        alarm = acked.json()["alarm"]
        assert alarm["state"] == "acknowledged"
        assert alarm["acknowledged"]["by"] == "Dana (night shift)"
        assert alarm["acknowledged"]["note"] == "load disconnected"
        stats = (await client.get("/api/scheduler/statistics", headers=viewer)).json()
        assert stats["statistics"]["active_alarms"] == 1
        assert stats["statistics"]["unacknowledged_alarms"] == 0

        cleared = await client.post(f"/api/alarms/{alarm_id}/clear", headers=operator)
        assert cleared.status_code == 200
        assert cleared.json()["alarm"]["cleared"]["by"] == "operator-key"
        twice = await client.post(f"/api/alarms/{alarm_id}/clear", headers=operator)
        assert twice.status_code == 409
        assert twice.json()["errors"][0] == {
            "field": "alarm_id",
            "value": alarm_id,
            "reason": "already cleared by operator-key",
        }
        late_ack = await client.post(f"/api/alarms/{alarm_id}/acknowledge", headers=operator)
        assert late_ack.status_code == 409
        stats = (await client.get("/api/scheduler/statistics", headers=viewer)).json()
        assert stats["statistics"]["active_alarms"] == 0

    # Who did what is in the alarm's own stream, with the key's name as actor.
    trail = h.store.read_stream(f"alarm:{alarm_id}")
    assert [(r.type, r.actor) for r in trail] == [
        ("alarm.acknowledged", "operator-key"),
        ("alarm.cleared", "operator-key"),
    ]


async def test_an_instrument_offline_raises_an_alarm_that_clears_when_it_is_back(
    harness: Harness,
) -> None:
    store = harness.store

    service = EquipmentService(
        store, harness.clock, alarms=AlarmService.on_store(store, harness.clock)
    )
    online = Presence(
        equipment_id="scope_1",
        agent_id="lab-pc",
        kind="oscilloscope",
        state="online",
        identity="LabLink Sim,DSO-1104,SN-SC1-0002,2.1.0",
    )
    service.record(online)
    service.record(msgspec_replace(online, state="offline", reason="agent lost"))
    service.record(msgspec_replace(online, state="offline", reason="agent lost"))  # once
    events = [r.event for r in store.read_stream("equipment:scope_1")]
    raised = [e for e in events if isinstance(e, AlarmRaised)]
    assert len(raised) == 1
    assert raised[0].kind == "equipment_offline"
    assert raised[0].equipment["identity"].startswith("LabLink Sim,DSO-1104")

    service.record(online)
    (cleared,) = [r.event for r in store.read_stream(f"alarm:{raised[0].alarm_id}")]
    assert isinstance(cleared, AlarmCleared)
    assert (cleared.by, cleared.note) == ("agents", "back online")
    service.record(msgspec_replace(online, state="offline", reason="unplugged"))
    raised = [
        r.event for r in store.read_stream("equipment:scope_1") if isinstance(r.event, AlarmRaised)
    ]
    assert [a.alarm_id for a in raised] == ["alarm_offline_scope_1_1", "alarm_offline_scope_1_2"]


def msgspec_replace(presence: Presence, **changes: Any) -> Presence:
    import msgspec

    return msgspec.structs.replace(presence, **changes)


async def test_the_statistics_count_alarms(client: httpx.AsyncClient) -> None:
    stats = (await client.get("/api/scheduler/statistics")).json()["statistics"]
    assert (stats["active_alarms"], stats["unacknowledged_alarms"]) == (0, 0)


async def test_a_failure_alarm_is_published_on_its_severity_and_equipment_subject(
    harness: Harness, nats_server: NatsServer
) -> None:
    h = harness
    relay = Relay(h.store.path, NatsOptions(url=nats_server.url), batch_size=100, ack_timeout=2)
    relay.attach(h.store)
    await relay.start()
    nc = await nats.connect(nats_server.url)
    try:
        exact = await nc.subscribe("lablink.alarms.critical.load_1")
        await nc.flush()
        h.executor.hold = True
        job = h.service.create_job({**BASE, "on_failure_alarm": True}, "alice")
        await h.at(minutes(10))
        (running,) = h.executor.held()
        h.executor.release(running, Outcome.failed("instrument_error", "boom"))
        await h.settle()
        msg = await exact.next_msg(timeout=60)
    finally:
        await nc.close()
        await relay.aclose()
    envelope = json.loads(msg.data)
    assert envelope["type"] == "alarm.raised"
    assert envelope["stream_id"] == job
    assert envelope["data"]["execution_id"] == running
    assert envelope["data"]["error"]["message"] == "boom"
