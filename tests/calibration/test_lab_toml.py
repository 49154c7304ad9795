"""Certificates in a lab.toml (``[[instruments.calibration]]``): read with the file, refused
with the key that is wrong, and recorded by serve's runtime when it loads the file, once:
a restart records nothing again."""

from __future__ import annotations

import sqlite3
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from lablink.clock import ManualClock
from lablink.equipment_agent.config import ConfigError, load_config, parse_config
from lablink.runtime import Runtime
from lablink.settings import Settings
from tests.support.calibration import T0
from tests.support.views import view_rows

LAB_TOML = """\
[agent]
id = "lab_a"

[[instruments]]
id = "psu_7"
kind = "power_supply"
resource = "ASRL7::INSTR"
backend = "@sim"

[[instruments.calibration]]
certificate = "CAL-2025-0007"
performed = 2025-06-01
due = 2026-06-01
by = "Metrology Lab GmbH"

[[instruments.calibration]]
certificate = "CAL-2024-0003"
performed = "2024-06-01"
due = "2025-06-01"
by = "Metrology Lab GmbH"

[[instruments]]
id = "dmm_7"
kind = "multimeter"
resource = "ASRL8::INSTR"
backend = "@sim"
"""


def test_calibration_tables_are_read_with_the_file(tmp_path: Path) -> None:
    lab = tmp_path / "lab.toml"
    lab.write_text(LAB_TOML)
    psu, dmm = load_config(lab).instruments
    assert [(c.certificate, c.performed, c.due, c.by, c.key) for c in psu.calibrations] == [
        (
            "CAL-2025-0007",
            date(2025, 6, 1),
            date(2026, 6, 1),
            "Metrology Lab GmbH",
            "instruments[0].calibration[0]",
        ),
        (
            "CAL-2024-0003",
            date(2024, 6, 1),
            date(2025, 6, 1),
            "Metrology Lab GmbH",
            "instruments[0].calibration[1]",
        ),
    ]
    assert dmm.calibrations == ()


@pytest.mark.parametrize(
    ("entry", "key", "reason"),
    [
        ({"due": date(2025, 5, 1)}, "instruments[0].calibration[0].due", "must be after performed"),
        ({"performed": "June"}, "instruments[0].calibration[0].performed", "must be a date"),
        ({"due": "2026-02-30"}, "instruments[0].calibration[0].due", "must be a date"),
        ({"by": ""}, "instruments[0].calibration[0].by", "must be a non-empty string"),
        ({"lab": "x"}, "instruments[0].calibration[0].lab", "unknown key"),
    ],
)
def test_a_bad_calibration_table_names_its_key(
    entry: dict[str, object], key: str, reason: str
) -> None:
    table = {
        "certificate": "CAL-1",
        "performed": date(2025, 6, 1),
        "due": date(2026, 6, 1),
        "by": "Lab",
        **entry,
    }
    raw = {
        "agent": {"id": "lab_a"},
        "instruments": [
            {"id": "psu_7", "kind": "power_supply", "resource": "R", "calibration": [table]}
        ],
    }
    with pytest.raises(ConfigError) as refused:
        parse_config(raw)
    assert refused.value.key == key
    assert reason in refused.value.reason


def _settings(tmp_path: Path, lab: Path) -> Settings:
    # No bus, no agent: only the runtime's own parts, which record the file's certificates.
    return Settings(
        data_dir=tmp_path / "data",
        nats=False,
        executor="noop",
        timezone="Europe/Berlin",
        agent_config=lab,
    )


def _calibration_events(tmp_path: Path) -> list[tuple[str, str, str]]:
    conn = sqlite3.connect(tmp_path / "data" / "scheduler.db")
    try:
        return conn.execute(
            "SELECT stream_id, type, actor FROM events WHERE type LIKE 'equipment.calib%'"
            " ORDER BY position"
        ).fetchall()
    finally:
        conn.close()


async def test_serve_records_the_files_certificates_once(tmp_path: Path) -> None:
    lab = tmp_path / "lab.toml"
    lab.write_text(LAB_TOML)
    clock = ManualClock(T0)
    for _ in range(2):  # a restart records nothing again
        async with Runtime(_settings(tmp_path, lab), clock=clock) as runtime:
            # The certificate in force is the one performed last, whatever the file's order.
            gate = runtime.calibration_gate
            assert gate.block("psu_7", T0) is None
            expired = gate.block("psu_7", datetime(2026, 6, 2, tzinfo=UTC))
            assert expired is not None
            assert (expired.cause, expired.certificate) == ("calibration_expired", "CAL-2025-0007")
            assert gate.block("dmm_7", T0) is None  # no record: not blocked by default
    assert _calibration_events(tmp_path) == [
        ("calibration:psu_7", "equipment.calibrated", "lablink serve"),
        ("calibration:psu_7", "equipment.calibrated", "lablink serve"),
    ]
    rows = view_rows(
        tmp_path / "data" / "scheduler.db",
        "SELECT certificate, performed, due, source FROM calibrations ORDER BY recorded_position",
    )
    assert rows == [
        {
            "certificate": "CAL-2025-0007",
            "performed": "2025-06-01",
            "due": "2026-06-01",
            "source": "lab.toml",
        },
        {
            "certificate": "CAL-2024-0003",
            "performed": "2024-06-01",
            "due": "2025-06-01",
            "source": "lab.toml",
        },
    ]
    # An edited file changes no record: that takes a correction, with its reason.
    lab.write_text(LAB_TOML.replace("due = 2026-06-01", "due = 2026-07-01"))
    async with Runtime(_settings(tmp_path, lab), clock=clock):
        pass
    assert len(_calibration_events(tmp_path)) == 2


async def test_a_certificate_performed_in_the_future_stops_the_start(tmp_path: Path) -> None:
    lab = tmp_path / "lab.toml"
    lab.write_text(
        LAB_TOML.replace("performed = 2025-06-01", "performed = 2999-06-01").replace(
            "due = 2026-06-01", "due = 3000-06-01"
        )
    )
    with pytest.raises(ConfigError) as refused:
        async with Runtime(_settings(tmp_path, lab), clock=ManualClock(T0)):
            pytest.fail("the runtime started")
    assert refused.value.key == "instruments[0].calibration[0].performed"
    assert "is in the future" in refused.value.reason
    assert _calibration_events(tmp_path) == []
