"""The calibration endpoints over the real Litestar app, on a real SQLite file, with a manual
clock: what they record, what they refuse (4xx naming the field, the value and why, never a
500, nothing written), and what the equipment, executions and history answers show."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from lablink.domain.calibration import stream_id
from lablink.keys import create_key
from tests.support.calibration import DAY_AFTER_DUE, DUE, HOURLY, PSU, T0, calibrate, hours
from tests.support.harness import Harness, api_client

CERTIFICATE = {
    "certificate": "CAL-2026-0042",
    "performed": "2026-02-20",
    "due": "2027-02-20",
    "by": "Metrology Lab GmbH",
}


@pytest.fixture
async def api(bench: Harness) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(bench, auth=False) as client:
        yield client


def written(h: Harness) -> int:
    return h.store.last_position()


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["success"] is False
    return body


async def test_record_list_and_read_the_status(bench: Harness, api: httpx.AsyncClient) -> None:
    answer = await api.post(f"/api/equipment/{PSU}/calibrations", json=CERTIFICATE)
    assert answer.status_code == 200, answer.text
    status = answer.json()["calibration"]
    assert status["status"] == "valid"
    assert (status["certificate"], status["due"], status["blocked"]) == (
        "CAL-2026-0042",
        "2027-02-20",
        False,
    )
    # Valid through the due date in the server's zone: until midnight after it.
    assert status["valid_until"] == "2027-02-21T00:00:00+01:00"
    assert status["warn_from"] == "2027-02-06T00:00:00+01:00"

    listed = (await api.get(f"/api/equipment/{PSU}/calibrations")).json()
    assert listed["count"] == 1
    (record,) = listed["calibrations"]
    assert record["certificate"] == "CAL-2026-0042"
    assert (record["state"], record["in_force"], record["source"]) == ("active", True, "api")
    assert record["recorded_by"] == "local"

    (event,) = bench.store.read_stream(stream_id(PSU))
    assert event.type == "equipment.calibrated"
    assert event.actor == "local"


async def test_correct_and_withdraw_keep_the_reason_and_the_old_values(
    bench: Harness, api: httpx.AsyncClient
) -> None:
    await api.post(f"/api/equipment/{PSU}/calibrations", json=CERTIFICATE)
    path = f"/api/equipment/{PSU}/calibrations/CAL-2026-0042"
    corrected = await api.put(path, json={"due": "2026-08-20", "reason": "typo on the form"})
    assert corrected.status_code == 200, corrected.text
    assert corrected.json()["calibration"]["due"] == "2026-08-20"
    same = await api.put(path, json={"due": "2026-08-20", "reason": "again"})
    assert same.json()["message"] == "nothing changed"

    (record,) = (await api.get(f"/api/equipment/{PSU}/calibrations")).json()["calibrations"]
    assert record["corrections"] == 1
    assert record["correction_reason"] == "typo on the form"
    assert record["changes"] == [{"field": "due", "old": "2027-02-20", "new": "2026-08-20"}]

    withdrawn = await api.post(f"{path}/withdraw", json={"reason": "certificate revoked"})
    assert withdrawn.status_code == 200, withdrawn.text
    assert withdrawn.json()["calibration"]["status"] == "missing"
    (record,) = (await api.get(f"/api/equipment/{PSU}/calibrations")).json()["calibrations"]
    assert (record["state"], record["in_force"]) == ("withdrawn", False)
    assert record["withdraw_reason"] == "certificate revoked"

    events = [r.event for r in bench.store.read_stream(stream_id(PSU))]
    assert [type(e).__struct_config__.tag for e in events] == [
        "equipment.calibrated",
        "equipment.calibration_corrected",
        "equipment.calibration_withdrawn",
    ]
    assert getattr(events[1], "reason", None) == "typo on the form"
    # A withdrawn certificate is neither corrected nor recorded again.
    problem(await api.put(path, json={"due": "2027-01-01"}), 409)
    again = problem(await api.post(f"/api/equipment/{PSU}/calibrations", json=CERTIFICATE), 409)
    assert again["errors"][0]["field"] == "certificate"


@pytest.mark.parametrize(
    ("change", "field", "value", "reason"),
    [
        ({"due": "2026-02-19"}, "due", "2026-02-19", "must be after performed (2026-02-20)"),
        ({"due": "2026-02-20"}, "due", "2026-02-20", "must be after performed (2026-02-20)"),
        ({"performed": "2026-03-03"}, "performed", "2026-03-03", "is in the future"),
        ({"performed": "2026-02-30"}, "performed", "2026-02-30", "Invalid"),
        ({"due": "next year"}, "due", "next year", "Invalid"),
        ({"performed": "2026-02-20T10:00:00Z"}, "performed", "2026-02-20T10:00:00Z", "Invalid"),
        ({"due": 20270220}, "due", 20270220, "Expected `date`"),
        ({"certificate": ""}, "certificate", "", "must not be empty"),
        ({"certificate": "CAL/42"}, "certificate", "CAL/42", "must not hold '/'"),
        ({"certificate": "CAL\x0742"}, "certificate", "CAL\x0742", "control character"),
        ({"by": "   "}, "by", "   ", "must not be empty"),
        ({"by": "x" * 201}, "by", "x" * 201, "at most 200 characters"),
        ({"lab": "elsewhere"}, "lab", "elsewhere", "unknown field"),
    ],
)
async def test_bad_input_is_a_422_naming_field_value_and_reason(
    bench: Harness,
    api: httpx.AsyncClient,
    change: dict[str, Any],
    field: str,
    value: Any,
    reason: str,
) -> None:
    before = written(bench)
    response = await api.post(f"/api/equipment/{PSU}/calibrations", json={**CERTIFICATE, **change})
    body = problem(response, 422)
    error = body["errors"][0]
    assert (error["field"], error["value"]) == (field, value), body
    assert reason in error["reason"], body
    assert written(bench) == before


async def test_unknown_instruments_and_certificates_are_404s_naming_them(
    bench: Harness, api: httpx.AsyncClient
) -> None:
    before = written(bench)
    for path in ("/api/equipment/psu_9/calibrations", "/api/equipment/bad%20id/calibrations"):
        body = problem(await api.post(path, json=CERTIFICATE), 404)
        assert body["errors"][0]["field"] == "equipment_id"
        problem(await api.get(path), 404)
    missing = problem(
        await api.put(f"/api/equipment/{PSU}/calibrations/CAL-9", json={"due": "2027-01-01"}),
        404,
    )
    assert missing["errors"][0] == {"field": "certificate", "value": "CAL-9", "reason": "not found"}
    assert written(bench) == before


async def test_an_override_without_a_reason_is_a_422_naming_reason_and_writes_nothing(
    bench: Harness, api: httpx.AsyncClient
) -> None:
    calibrate(bench)
    before = written(bench)
    path = f"/api/equipment/{PSU}/calibration-override"
    for body in (
        {"expires_at": "2026-03-05T12:00:00+01:00"},
        {"expires_at": "2026-03-05T12:00:00+01:00", "reason": ""},
        {"expires_at": "2026-03-05T12:00:00+01:00", "reason": "  "},
        {"expires_at": "2026-03-05T12:00:00+01:00", "reason": None},
    ):
        refused = problem(await api.post(path, json=body), 422)
        assert refused["errors"][0]["field"] == "reason", refused
    past = problem(
        await api.post(path, json={"expires_at": "2026-03-01T12:00:00Z", "reason": "why"}), 422
    )
    assert past["errors"][0]["field"] == "expires_at"
    assert "must be in the future" in past["errors"][0]["reason"]
    garbled = problem(await api.post(path, json={"expires_at": "soon", "reason": "why"}), 422)
    assert garbled["errors"][0]["field"] == "expires_at"
    assert written(bench) == before
    assert bench.store.stream_version(stream_id(PSU)) == 1

    ok = await api.post(path, json={"expires_at": "2026-03-05T12:00:00", "reason": "booked"})
    assert ok.status_code == 200, ok.text
    override = ok.json()["calibration"]["override"]
    # Without an offset: the server's zone (Berlin, +01:00 in March).
    assert override["expires_at"] == "2026-03-05T11:00:00+00:00"
    assert (override["reason"], override["by"], override["active"]) == ("booked", "local", True)


async def test_quarantine_and_release_need_a_reason_and_the_right_state(
    bench: Harness, api: httpx.AsyncClient
) -> None:
    before = written(bench)
    quarantine = f"/api/equipment/{PSU}/quarantine"
    release = f"/api/equipment/{PSU}/release"
    assert problem(await api.post(quarantine, json={}), 422)["errors"][0]["field"] == "reason"
    not_in = problem(await api.post(release, json={"reason": "fine"}), 409)
    assert not_in["errors"][0]["field"] == "equipment_id"
    assert written(bench) == before

    taken = await api.post(quarantine, json={"reason": "fell off the bench"})
    assert taken.status_code == 200, taken.text
    status = taken.json()["calibration"]
    assert (status["status"], status["blocked"], status["cause"]) == (
        "quarantined",
        True,
        "quarantined",
    )
    assert status["quarantine"]["reason"] == "fell off the bench"
    twice = problem(await api.post(quarantine, json={"reason": "again"}), 409)
    assert "already quarantined" in twice["detail"]
    back = await api.post(release, json={"reason": "inspected"})
    assert back.json()["calibration"]["status"] == "missing"


async def test_correcting_needs_a_reason_when_reasons_are_required(bench: Harness) -> None:
    calibrate(bench)
    async with api_client(bench, auth=False, require_reason=True) as api:
        path = f"/api/equipment/{PSU}/calibrations/CAL-1"
        before = written(bench)
        refused = problem(await api.put(path, json={"due": "2026-04-10"}), 422)
        assert refused["errors"][0]["field"] == "reason"
        refused = problem(await api.post(f"{path}/withdraw", json={}), 422)
        assert refused["errors"][0]["field"] == "reason"
        assert written(bench) == before
        ok = await api.put(path, json={"due": "2026-04-10", "reason": "extended by the lab"})
        assert ok.status_code == 200, ok.text


async def test_who_may_do_what(bench: Harness) -> None:
    keys = {
        role: create_key(bench.store, name=role, role=role, actor="test", now=T0)[1]
        for role in ("viewer", "operator", "admin")
    }

    def as_(role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {keys[role]}"}

    async with api_client(bench, auth=True) as api:
        base = f"/api/equipment/{PSU}"
        assert (await api.get(f"{base}/calibrations", headers=as_("viewer"))).status_code == 200
        record = await api.post(f"{base}/calibrations", json=CERTIFICATE, headers=as_("viewer"))
        assert record.status_code == 403
        record = await api.post(f"{base}/calibrations", json=CERTIFICATE, headers=as_("operator"))
        assert record.status_code == 200, record.text
        withdraw = f"{base}/calibrations/CAL-2026-0042/withdraw"
        assert (await api.post(withdraw, json={}, headers=as_("operator"))).status_code == 403
        override = {"reason": "r", "expires_at": "2026-03-04T00:00:00Z"}
        for path, body in (
            (f"{base}/calibration-override", override),
            (f"{base}/quarantine", {"reason": "r"}),
        ):
            assert (await api.post(path, json=body, headers=as_("operator"))).status_code == 403
            assert (await api.post(path, json=body, headers=as_("admin"))).status_code == 200
        (event,) = [
            r
            for r in bench.store.read_stream(stream_id(PSU))
            if r.type == "equipment.calibration_overridden"
        ]
        assert event.actor == "admin"
        assert getattr(event.event, "by", None) == "admin"


async def test_the_equipment_view_shows_the_calibration_status(
    bench: Harness, api: httpx.AsyncClient
) -> None:
    # The instrument's row comes from its agent; this one reports itself online.
    from lablink.equipment_service import EquipmentService
    from lablink.instruments.protocol import Presence

    EquipmentService(bench.store, bench.clock).record(
        Presence(
            equipment_id=PSU,
            agent_id="lab-pc-1",
            state="online",
            kind="power_supply",
            identity="LabLink,PSU,1,1",
            resource="ASRL1::INSTR",
        )
    )
    (item,) = (await api.get("/api/equipment")).json()["equipment"]
    assert item["calibration"]["status"] == "missing"
    assert item["calibration"]["blocked"] is False
    calibrate(bench)
    bench.clock.set(DAY_AFTER_DUE)
    one = (await api.get(f"/api/equipment/{PSU}")).json()["equipment"]
    assert one["calibration"]["status"] == "expired"
    assert one["calibration"]["blocked"] is True
    assert one["calibration"]["cause"] == "calibration_expired"
    assert one["calibration"]["due"] == DUE.isoformat()
    bench.clock.set(hours(T0, 24 * 1))  # 2026-03-03: within the 14 warning days of 03-10
    one = (await api.get(f"/api/equipment/{PSU}")).json()["equipment"]
    assert one["calibration"]["status"] == "due_soon"


async def test_executions_and_history_show_blocked_runs_with_their_cause(
    bench: Harness, api: httpx.AsyncClient
) -> None:
    calibrate(bench)
    bench.clock.set(DAY_AFTER_DUE)
    job_id = bench.service.create_job(HOURLY, "alice")
    await bench.at(hours(DAY_AFTER_DUE, 1))

    listed = (
        await api.get("/api/scheduler/executions", params={"job_id": job_id, "status": "blocked"})
    ).json()
    assert listed["count"] == 1
    (execution,) = listed["executions"]
    assert (execution["status"], execution["cause"]) == ("blocked", "calibration_expired")
    assert execution["error"]["type"] == "calibration_expired"
    assert "CAL-1" in execution["message"]
    assert execution["started_at"] is None
    assert execution["dispatched_at"] is None
    one = (await api.get(f"/api/scheduler/executions/{execution['execution_id']}")).json()
    assert one["execution"]["cause"] == "calibration_expired"

    history = (await api.get(f"/api/scheduler/jobs/{job_id}/history")).json()["history"]
    assert (history["blocked"], history["total_executions"]) == (1, 1)
    assert (history["last_status"], history["in_progress"]) == ("blocked", 0)
    statistics = (await api.get("/api/scheduler/statistics")).json()["statistics"]
    assert statistics["today_by_status"]["blocked"] == 1

    refused = problem(await api.post(f"/api/scheduler/jobs/{job_id}/run"), 409)
    assert refused["cause"] == "calibration_expired"
    assert refused["errors"][0]["field"] == "equipment_id"

    metrics = (await api.get("/metrics")).text
    assert re.search(
        r'^lablink_executions_total\{[^}]*status="blocked"[^}]*\} 1\.0$', metrics, re.M
    ), metrics

    audit = (await api.get("/api/audit", params={"type": "execution.blocked"})).json()
    assert audit["count"] == 1
    assert json.dumps(audit["events"][0]["data"]["cause"]) == '"calibration_expired"'


async def test_the_audit_trail_shows_a_corrected_certificate_as_amended_and_not_its_sibling(
    bench: Harness, api: httpx.AsyncClient
) -> None:
    """Both certificates live in the instrument's calibration stream: a correction amends the
    record of its own certificate only, and the trail shows its old and new values."""
    await api.post(f"/api/equipment/{PSU}/calibrations", json=CERTIFICATE)
    second = {**CERTIFICATE, "certificate": "CAL-2026-0043"}
    assert (await api.post(f"/api/equipment/{PSU}/calibrations", json=second)).status_code == 200
    path = f"/api/equipment/{PSU}/calibrations/CAL-2026-0042"
    corrected = await api.put(path, json={"due": "2026-08-20", "reason": "typo on the form"})
    assert corrected.status_code == 200, corrected.text

    trail = (await api.get("/api/audit", params={"type": "equipment."})).json()["events"]
    entries = {(e["type"], e["data"]["certificate"]): e for e in trail}
    first = entries["equipment.calibrated", "CAL-2026-0042"]
    sibling = entries["equipment.calibrated", "CAL-2026-0043"]
    correction = entries["equipment.calibration_corrected", "CAL-2026-0042"]
    assert (first["amended"], first["amended_at_position"]) == (True, correction["position"])
    assert (sibling["amended"], sibling["amended_at_position"]) == (False, None)
    assert correction["reason"] == "typo on the form"
    assert correction["changes"] == [{"field": "due", "old": "2027-02-20", "new": "2026-08-20"}]
    assert correction["amended"] is False
