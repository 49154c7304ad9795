"""Profiles written for the original LabLink server import unchanged and apply on the bench.

The original server (X9X0/LabLink, ``server/equipment/profiles.py``) saves each profile as
``json.dump(profile.dict(), f, indent=2, default=str)`` into ``<name with spaces as _>.json``:
``name``, ``description`` (null when none), ``equipment_type``, ``model`` (``generic``),
``settings``, ``created_at``/``modified_at`` (``str(datetime)``) and ``tags``. Its built-in
profiles use ``current_limit``/``output_enabled`` for supplies, ``mode``
(``CC``/``CR``)/``current``/``resistance``/``load_enabled`` for loads, timebase, channel and
trigger settings for scopes; its multimeter files ``function``/``range``/``rate``/
``dc_impedance``/``trigger_source``. The files below are written here in exactly that format.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from lablink.cli import app
from lablink.equipment_agent.inprocess import InProcessExecutor
from lablink.logstore import open_store
from lablink.projections.profiles import profile_lookup, read_profile
from lablink.projections.reading import reading_views
from tests.support.bench import ProgressLog, copy_bench, execution_request

SAVED = datetime(2025, 11, 14, 1, 17, 48, 238893)

# The original's create_default_profiles(), field for field.
BUILT_IN: list[dict[str, Any]] = [
    {
        "name": "Oscilloscope - Debug Quick",
        "description": "Quick debug settings: 1ms/div, AC coupling, auto trigger",
        "equipment_type": "oscilloscope",
        "model": "generic",
        "settings": {
            "timebase_scale": 0.001,
            "channel_1_scale": 1.0,
            "channel_1_coupling": "AC",
            "trigger_mode": "auto",
        },
        "tags": ["debug", "quick", "default"],
    },
    {
        "name": "Oscilloscope - Power Analysis",
        "description": "Power supply analysis: 10us/div, DC coupling",
        "equipment_type": "oscilloscope",
        "model": "generic",
        "settings": {
            "timebase_scale": 0.00001,
            "channel_1_scale": 5.0,
            "channel_1_coupling": "DC",
            "trigger_mode": "normal",
        },
        "tags": ["power", "analysis"],
    },
    {
        "name": "Power Supply - 5V Logic",
        "description": "5V @ 1A for digital logic circuits",
        "equipment_type": "power_supply",
        "model": "generic",
        "settings": {"voltage": 5.0, "current_limit": 1.0, "output_enabled": False},
        "tags": ["5v", "logic", "default"],
    },
    {
        "name": "Power Supply - 3.3V MCU",
        "description": "3.3V @ 500mA for microcontrollers",
        "equipment_type": "power_supply",
        "model": "generic",
        "settings": {"voltage": 3.3, "current_limit": 0.5, "output_enabled": False},
        "tags": ["3v3", "mcu", "default"],
    },
    {
        "name": "Power Supply - 12V Standard",
        "description": "12V @ 2A for general use",
        "equipment_type": "power_supply",
        "model": "generic",
        "settings": {"voltage": 12.0, "current_limit": 2.0, "output_enabled": False},
        "tags": ["12v", "standard"],
    },
    {
        "name": "Electronic Load - Battery Test",
        "description": "Constant current mode for battery discharge testing",
        "equipment_type": "electronic_load",
        "model": "generic",
        "settings": {"mode": "CC", "current": 1.0, "load_enabled": False},
        "tags": ["battery", "discharge", "test"],
    },
    {
        "name": "Electronic Load - Power Supply Test",
        "description": "Constant resistance mode for power supply testing",
        "equipment_type": "electronic_load",
        "model": "generic",
        "settings": {"mode": "CR", "resistance": 10.0, "load_enabled": False},
        "tags": ["power_supply", "test"],
    },
]
# The original's multimeter profile files (its profiles/ folder).
MULTIMETER: list[dict[str, Any]] = [
    {
        "name": "Multimeter - DC Voltage Precision",
        "description": "DCV, auto range, slow rate, >10 GOhm input impedance",
        "equipment_type": "multimeter",
        "model": "generic",
        "settings": {
            "function": "DCV",
            "range": "AUTO",
            "rate": "SLOW",
            "dc_impedance": "10G",
            "trigger_source": "AUTO",
        },
        "tags": ["dcv", "precision", "default"],
    },
    {
        "name": "Multimeter - Fast DC Logging",
        "description": "DCV, 20 V manual range, fast rate for data acquisition",
        "equipment_type": "multimeter",
        "model": "generic",
        "settings": {
            "function": "DCV",
            "range": 20.0,
            "rate": "FAST",
            "dc_impedance": "10M",
            "trigger_source": "AUTO",
        },
        "tags": ["dcv", "fast", "acquisition"],
    },
    {
        "name": "Multimeter - 4-Wire Resistance",
        "description": "FRES, auto range, slow rate for low-resistance work",
        "equipment_type": "multimeter",
        "model": "generic",
        "settings": {"function": "FRES", "range": "AUTO", "rate": "SLOW"},
        "tags": ["resistance", "4wire"],
    },
    {
        "name": "Multimeter - AC Mains Check",
        "description": "ACV 750 V range with frequency on the secondary display",
        "equipment_type": "multimeter",
        "model": "generic",
        "settings": {
            "function": "ACV",
            "range": 750.0,
            "rate": "MEDIUM",
            "secondary_function": "FREQ",
        },
        "tags": ["acv", "mains", "frequency"],
    },
]
# What the simulated bench cannot take: a 4-wire or AC function, a secondary display.
REFUSED = {"Multimeter_-_4-Wire_Resistance", "Multimeter_-_AC_Mains_Check"}
INSTRUMENT = {
    "oscilloscope": "scope_1",
    "power_supply": "power_supply_1",
    "multimeter": "multimeter_1",
    "electronic_load": "load_1",
}


def file_name(name: str) -> str:
    """The original's ``_get_profile_path``: alphanumerics, space, - and _; spaces as _."""
    safe = "".join(c for c in name if c.isalnum() or c in (" ", "-", "_")).strip()
    return safe.replace(" ", "_") + ".json"


def write_original(folder: Path, profile: dict[str, Any]) -> str:
    """One file as the original's save_profile writes it; returns the id LabLink gives it."""
    body = {
        "name": profile["name"],
        "description": profile.get("description"),
        "equipment_type": profile["equipment_type"],
        "model": profile["model"],
        "settings": profile["settings"],
        "created_at": SAVED,
        "modified_at": SAVED,
        "tags": profile["tags"],
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / file_name(profile["name"])
    path.write_text(json.dumps(body, indent=2, default=str))
    return path.stem


@pytest.fixture
def original_folder(tmp_path: Path) -> tuple[Path, dict[str, dict[str, Any]]]:
    folder = tmp_path / "original-profiles"
    ids = {write_original(folder, p): p for p in [*BUILT_IN, *MULTIMETER]}
    # One without a description: the original writes null.
    bare = {**BUILT_IN[2], "name": "PSU bare", "description": None}
    ids[write_original(folder, bare)] = bare
    return folder, ids


def import_folder(folder: Path, data_dir: Path) -> tuple[int, str]:
    result = CliRunner().invoke(
        app, ["profiles", "import", str(folder), "--data-dir", str(data_dir)]
    )
    return result.exit_code, result.output


def test_the_files_are_in_the_originals_format(
    original_folder: tuple[Path, dict[str, Any]],
) -> None:
    folder, _ = original_folder
    text = (folder / "Power_Supply_-_33V_MCU.json").read_text()
    assert '"created_at": "2025-11-14 01:17:48.238893"' in text
    assert json.loads(text)["settings"] == {
        "voltage": 3.3,
        "current_limit": 0.5,
        "output_enabled": False,
    }
    bare = json.loads((folder / "PSU_bare.json").read_text())
    assert bare["description"] is None


def test_lablink_profiles_import_creates_every_profile_an_instrument_can_take(
    tmp_path: Path, original_folder: tuple[Path, dict[str, dict[str, Any]]]
) -> None:
    folder, ids = original_folder
    data_dir = tmp_path / "data"
    code, output = import_folder(folder, data_dir)
    assert code == 1, output  # two multimeter files are refused
    created = {line.split()[1] for line in output.splitlines() if line.startswith("created")}
    refused = {
        line.split()[1].removesuffix(".json")
        for line in output.splitlines()
        if line.startswith("refused")
    }
    assert created == set(ids) - REFUSED
    assert refused == REFUSED
    # Each refusal names the setting and why.
    assert "settings.function='FRES': is not one of VOLT:DC, CURR:DC, RES" in output
    assert "settings.secondary_function='FREQ': the multimeter driver has no setting" in output

    store = open_store(data_dir / "scheduler.db")
    try:
        with reading_views(store) as views:
            for profile_id in set(ids) - REFUSED:
                stored = read_profile(views, profile_id)
                assert stored is not None, profile_id
                written = ids[profile_id]
                # Stored as written: the original's names, its values (an alias's words
                # and a load's CC as the file wrote them).
                assert stored["settings"] == {
                    k: v.upper() if isinstance(v, str) else v
                    for k, v in written["settings"].items()
                }, profile_id
                assert stored["name"] == written["name"]
                assert stored["description"] == (written["description"] or "")
                assert stored["tags"] == written["tags"]
    finally:
        store.close()
    # Importing again changes nothing.
    code, output = import_folder(folder, data_dir)
    assert f"{len(ids) - len(REFUSED)} unchanged" in output


async def test_the_imported_profiles_apply_and_read_back_on_the_simulated_bench(
    tmp_path: Path, original_folder: tuple[Path, dict[str, dict[str, Any]]]
) -> None:
    folder, ids = original_folder
    data_dir = tmp_path / "data"
    import_folder(folder, data_dir)
    store = open_store(data_dir / "scheduler.db")
    executor = InProcessExecutor.simulated(
        data_dir, bench_yaml=copy_bench(tmp_path / "bench"), profiles=profile_lookup(store)
    )
    try:
        for profile_id in sorted(set(ids) - REFUSED):
            written = ids[profile_id]
            request = execution_request(
                INSTRUMENT[written["equipment_type"]], "state_capture", profile_id=profile_id
            )
            outcome = await executor.execute(request, ProgressLog())
            assert outcome.status == "completed", (profile_id, outcome.error)
            applied = outcome.result["profile"]
            assert applied["applied"] is True, profile_id
            assert set(applied["settings"]) == set(written["settings"]), profile_id
            state = outcome.result["settings"]
            expected = READ_BACK[written["name"]]
            for name, value in expected.items():
                assert state[name]["value"] == pytest.approx(value), (profile_id, name)
    finally:
        await executor.aclose()
        store.close()


# What each profile leaves in the instrument, in the driver's own settings (the state
# capture reads them all back after the profile applied).
READ_BACK: dict[str, dict[str, Any]] = {
    "Oscilloscope - Debug Quick": {
        "timebase_scale": 0.001,
        "channel_1_scale": 1.0,
        "channel_1_coupling": "AC",
        "trigger_mode": "AUTO",
    },
    "Oscilloscope - Power Analysis": {
        "timebase_scale": 0.00001,
        "channel_1_scale": 5.0,
        "channel_1_coupling": "DC",
        "trigger_mode": "NORM",
    },
    "Power Supply - 5V Logic": {"voltage": 5.0, "current": 1.0, "output": False},
    "Power Supply - 3.3V MCU": {"voltage": 3.3, "current": 0.5, "output": False},
    "Power Supply - 12V Standard": {"voltage": 12.0, "current": 2.0, "output": False},
    "PSU bare": {"voltage": 5.0, "current": 1.0, "output": False},
    # CC and CR reach the load as its SCPI modes.
    "Electronic Load - Battery Test": {"mode": "CURR", "current": 1.0, "input": False},
    "Electronic Load - Power Supply Test": {"mode": "RES", "resistance": 10.0, "input": False},
    "Multimeter - DC Voltage Precision": {
        "function": "VOLT:DC",
        "autorange": True,
        "nplc": 10.0,
        "high_impedance": True,
        "trigger_source": "IMM",
    },
    "Multimeter - Fast DC Logging": {
        "function": "VOLT:DC",
        "voltage_range": 20.0,
        "nplc": 0.02,
        "high_impedance": False,
        "trigger_source": "IMM",
    },
}


async def test_an_original_profile_over_the_api_reads_back_as_written(client: Any) -> None:
    body = {k: v for k, v in BUILT_IN[5].items()}
    response = await client.post("/api/profiles", json={**body, "profile_id": "battery"})
    assert response.status_code == 200, response.text
    assert response.json()["profile"]["settings"] == {
        "mode": "CC",
        "current": 1.0,
        "load_enabled": False,
    }
    # The same setting twice, under its name and an alias, is refused.
    twice = await client.post(
        "/api/profiles",
        json={
            "name": "twice",
            "equipment_type": "power_supply",
            "settings": {"current": 1.0, "current_limit": 2.0},
        },
    )
    assert twice.status_code == 422
    (error,) = twice.json()["errors"]
    assert error["field"] == "settings.current_limit"
    assert "which current already sets" in error["reason"]
