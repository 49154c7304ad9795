"""The dashboard's equipment pages show each instrument's calibration as the API answers it:
the status in the list, and on the instrument's page the certificate in force, the
override or quarantine, and every certificate with its corrections and withdrawals."""

from __future__ import annotations

from datetime import date

from lablink.equipment_service import EquipmentService
from lablink.instruments.protocol import Presence
from tests.dashboard.test_equipment_alarms_audit import marked
from tests.dashboard.test_session import new_key, sign_in
from tests.support.calibration import DAY_AFTER_DUE, PSU, calibrate, calibrations
from tests.support.harness import Harness, api_client


async def test_the_equipment_pages_show_the_calibration(bench: Harness) -> None:
    h = bench
    for equipment_id in (PSU, "multimeter_1"):
        EquipmentService(h.store, h.clock).record(
            Presence(
                equipment_id=equipment_id,
                agent_id="bench-pc",
                state="online",
                kind="power_supply" if equipment_id == PSU else "multimeter",
                identity="LabLink,Sim,1,1",
            )
        )
    calibrate(h)
    service = calibrations(h)
    service.correct(
        PSU,
        "CAL-1",
        performed=None,
        due=date(2026, 3, 10),
        by="Metrology Lab (Berlin)",
        reason="the lab's full name",
        actor="alice",
    )
    calibrate(h, "CAL-0", performed=date(2024, 3, 1), due=date(2025, 3, 1))
    service.withdraw(PSU, "CAL-0", reason="superseded", actor="alice")
    h.clock.set(DAY_AFTER_DUE)

    _, secret = new_key(h, "viewer", "vera")
    async with api_client(h, auth=True, dashboard=True) as web:
        assert (await sign_in(web, secret)).status_code == 303
        api = {"Authorization": f"Bearer {secret}"}
        listed = (await web.get("/api/equipment", headers=api)).json()["equipment"]
        page = await web.get("/equipment")
        assert page.status_code == 200, page.text
        assert marked(page.text, "data-calibration") == [e["calibration"]["status"] for e in listed]
        assert marked(page.text, "data-calibration") == ["missing", "expired"]
        assert "runs blocked" in page.text

        detail = await web.get(f"/equipment/{PSU}")
        assert detail.status_code == 200, detail.text
        assert marked(detail.text, "data-calibration") == ["expired"]
        assert marked(detail.text, "data-certificate") == ["CAL-1", "CAL-0"]
        for shown in (
            "Runs are blocked:",
            "certificate CAL-1 was due 2026-03-10",
            "1 correction: the lab&#39;s full name",
            "withdrawn: superseded",
            "in force",
        ):
            assert shown in detail.text, shown
        fragment = await web.get(
            f"/fragments/equipment/{PSU}/detail", headers={"HX-Request": "true"}
        )
        assert marked(fragment.text, "data-certificate") == ["CAL-1", "CAL-0"]
