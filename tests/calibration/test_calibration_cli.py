"""`lablink equipment …` against a real server over HTTP (uvicorn on a loopback port, the
real app over a harness), with API keys: what the commands print, and that a refusal exits
1 with the server's words. The commands run in a worker thread (they block on HTTP) while
the server answers on the test's loop."""

from __future__ import annotations

import asyncio

from typer.testing import CliRunner, Result

from lablink.cli import app
from lablink.domain.calibration import stream_id
from lablink.keys import create_key
from tests.support.calibration import PSU, T0
from tests.support.harness import Harness
from tests.support.series import served


async def test_calibrate_list_correct_withdraw_override_quarantine_release(
    bench: Harness,
) -> None:
    _, admin = create_key(bench.store, name="admin", role="admin", actor="test", now=T0)
    _, viewer = create_key(bench.store, name="eve", role="viewer", actor="test", now=T0)
    runner = CliRunner()

    async with served(bench) as url:

        async def lablink(*args: str, key: str = admin) -> Result:
            env = {"LABLINK_URL": url, "LABLINK_API_KEY": key}
            return await asyncio.to_thread(runner.invoke, app, list(args), env=env)

        done = await lablink(
            "equipment",
            "calibrate",
            PSU,
            "--certificate",
            "CAL-7",
            "--performed",
            "2026-02-01",
            "--due",
            "2027-02-01",
            "--by",
            "Metrology Lab",
        )
        assert done.exit_code == 0, done.output
        assert "certificate 'CAL-7' recorded" in done.output
        assert f"{PSU}: valid (runs go ahead)" in done.output

        refused = await lablink(
            "equipment",
            "calibrate",
            PSU,
            "--certificate",
            "CAL-8",
            "--performed",
            "2026-02-01",
            "--due",
            "2026-01-01",
            "--by",
            "Metrology Lab",
        )
        assert refused.exit_code == 1
        assert "HTTP 422" in refused.output
        assert "due='2026-01-01': must be after performed (2026-02-01)" in refused.output

        listed = await lablink("equipment", "calibrations", PSU, key=viewer)
        assert listed.exit_code == 0, listed.output
        assert "CAL-7" in listed.output
        assert "in force" in listed.output

        corrected = await lablink(
            "equipment", "correct", PSU, "CAL-7", "--due", "2026-03-05", "--reason", "typo"
        )
        assert corrected.exit_code == 0, corrected.output
        assert f"{PSU}: due_soon (runs go ahead)" in corrected.output

        no_reason = await lablink(
            "equipment", "override", PSU, "--reason", " ", "--expires", "2026-03-09T00:00:00"
        )
        assert no_reason.exit_code == 1
        assert "reason" in no_reason.output
        overridden = await lablink(
            "equipment", "override", PSU, "--reason", "booked", "--expires", "2026-03-09T18:00:00"
        )
        assert overridden.exit_code == 0, overridden.output

        quarantined = await lablink("equipment", "quarantine", PSU, "--reason", "lid cracked")
        assert quarantined.exit_code == 0, quarantined.output
        assert f"{PSU}: quarantined (runs blocked)" in quarantined.output
        released = await lablink("equipment", "release", PSU, "--reason", "lid replaced")
        assert released.exit_code == 0, released.output

        withdrawn = await lablink("equipment", "withdraw", PSU, "CAL-7", "--reason", "revoked")
        assert withdrawn.exit_code == 0, withdrawn.output
        assert f"{PSU}: missing (runs go ahead)" in withdrawn.output

        forbidden = await lablink("equipment", "quarantine", PSU, "--reason", "x", key=viewer)
        assert forbidden.exit_code == 1
        assert "HTTP 403" in forbidden.output

    assert [r.type for r in bench.store.read_stream(stream_id(PSU))] == [
        "equipment.calibrated",
        "equipment.calibration_corrected",
        "equipment.calibration_overridden",
        "equipment.quarantined",
        "equipment.released",
        "equipment.calibration_withdrawn",
    ]
