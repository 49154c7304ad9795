"""The driver tables: one declarative SCPI table per instrument kind.

Each kind lists its measurements (``get_<name>``), its settings (``get_<name>``, and
``set_<name>`` with ``{"value": ...}`` when writable, validated against the limits here), which
setting is its output (``output_on`` / ``output_off``, switched off by the safe state) and any
multi-step procedures. Every kind also answers ``reset``. The limits match the device file
``equipment_agent/bench.yaml``; a test keeps the two in step.

Profiles written for the original LabLink server name some settings differently
(``current_limit``, ``output_enabled``, ``load_enabled``, a multimeter's ``range`` and
``rate``, a load's ``CC``/``CV``/``CR``/``CP`` modes); each table lists those names as aliases of
its own settings, so such a profile is stored as written and applied through the table
(docs/api.md, "Setting names of the original LabLink").
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lablink.instruments.checks import expect_only
from lablink.instruments.context import RunContext
from lablink.instruments.errors import InvalidParameter
from lablink.instruments.instrument import Instrument
from lablink.instruments.scpi import (
    InstrumentModel,
    Measurement,
    MessagePort,
    SettingAlias,
    WaveformCapture,
    check_number,
    choice,
    integer,
    number,
    readonly,
    switch,
)

SCOPE_CHANNELS = (1, 2, 3, 4)
# An electronic load's modes as most loads' fronts (and the original LabLink) name them.
LOAD_MODES = {"CC": "CURR", "CV": "VOLT", "CR": "RES", "CP": "POW"}

POWER_SUPPLY = InstrumentModel(
    kind="power_supply",
    measurements=(
        Measurement(name="voltage", query="MEAS:VOLT?", unit="V"),
        Measurement(name="current", query="MEAS:CURR?", unit="A"),
        Measurement(name="power", query="MEAS:POW?", unit="W"),
    ),
    settings=(
        number("voltage", "VOLT", "V", 0.0, 30.0),
        number("current", "CURR", "A", 0.0, 5.0),
        number("ovp_level", "VOLT:PROT", "V", 1.0, 33.0),
        switch("output", "OUTP"),
    ),
    primary="voltage",
    output="output",
    aliases=(
        SettingAlias(name="current_limit", setting="current"),
        SettingAlias(name="output_enabled", setting="output"),
    ),
)

MULTIMETER = InstrumentModel(
    kind="multimeter",
    measurements=(
        Measurement(name="voltage", query="MEAS:VOLT:DC?", unit="V"),
        Measurement(name="current", query="MEAS:CURR:DC?", unit="A"),
        Measurement(name="resistance", query="MEAS:RES?", unit="Ohm"),
    ),
    settings=(
        number("nplc", "VOLT:DC:NPLC", "PLC", 0.02, 100.0),
        number("voltage_range", "VOLT:DC:RANG", "V", 0.1, 1000.0),
        switch("autorange", "VOLT:DC:RANG:AUTO"),
        # What the meter measures between jobs: only the functions LabLink reads.
        choice(
            "function", "FUNC", ("VOLT:DC", "CURR:DC", "RES"), {"DCV": "VOLT:DC", "DCI": "CURR:DC"}
        ),
        choice("trigger_source", "TRIG:SOUR", ("IMM", "BUS", "EXT"), {"AUTO": "IMM"}),
        # On: above 10 GOhm input impedance on the low DC ranges; off: 10 MOhm.
        switch("high_impedance", "VOLT:DC:IMP:AUTO"),
    ),
    primary="voltage",
    aliases=(
        SettingAlias(name="range", setting="voltage_range", keywords={"AUTO": ("autorange", True)}),
        SettingAlias(
            name="rate",
            setting="nplc",
            keywords={"SLOW": ("nplc", 10.0), "MEDIUM": ("nplc", 1.0), "FAST": ("nplc", 0.02)},
        ),
        SettingAlias(
            name="dc_impedance",
            setting="high_impedance",
            keywords={"10G": ("high_impedance", True), "10M": ("high_impedance", False)},
        ),
    ),
)

OSCILLOSCOPE = InstrumentModel(
    kind="oscilloscope",
    measurements=(
        Measurement(name="vpp", query="MEAS:VPP? CH{channel}", unit="V", channels=SCOPE_CHANNELS),
        Measurement(name="vavg", query="MEAS:VAVG? CH{channel}", unit="V", channels=SCOPE_CHANNELS),
    ),
    settings=(
        number("sample_rate", "ACQ:SRAT", "Sa/s", 1.0, 1e9, fmt="{:.6e}"),
        number("trigger_level", "TRIG:LEV", "V", -5.0, 5.0),
        choice(
            "trigger_mode",
            "TRIG:SWE",
            ("AUTO", "NORM", "SING"),
            {"NORMAL": "NORM", "SINGLE": "SING"},
        ),
        number("timebase_scale", "TIM:SCAL", "s/div", 1e-9, 50.0, fmt="{:.6e}"),
        *(
            number(f"channel_{n}_scale", f"CHAN{n}:SCAL", "V/div", 0.001, 10.0, fmt="{:.6e}")
            for n in SCOPE_CHANNELS
        ),
        *(
            choice(f"channel_{n}_coupling", f"CHAN{n}:COUP", ("AC", "DC", "GND"))
            for n in SCOPE_CHANNELS
        ),
        readonly("record_length", "ACQ:POIN", "pts", type="int"),
        readonly("y_increment", "WAV:YINC", "V"),
        readonly("y_origin", "WAV:YOR", "V"),
    ),
    primary="vpp",
    capture=WaveformCapture(channels=SCOPE_CHANNELS),
)


def check_load_test(
    model: InstrumentModel, equipment_id: str, params: Mapping[str, Any]
) -> tuple[float, int]:
    """run_load_test's parameters: (duration, samples); ``current`` within the load's limit."""
    command = "run_load_test"
    expect_only(equipment_id, command, params, "duration", "current", "samples")
    duration = check_number(equipment_id, params, "duration", 0.0, 86_400.0, context=command)
    samples = int(
        check_number(
            equipment_id, params, "samples", 2, 1_000, context=command, default=5, whole=True
        )
    )
    if "current" not in params:
        raise InvalidParameter(equipment_id, "current", None, "is required", context=command)
    current = model.setting("current")
    assert current is not None
    current.validate(equipment_id, params["current"], parameter="current", context=command)
    return duration, samples


def run_load_test(inst: Instrument, params: Mapping[str, Any], ctx: RunContext) -> dict[str, Any]:
    """Sink ``current`` amps for ``duration`` seconds, sampling ``samples`` readings evenly.

    The input is switched off at the end whatever happens, so a failed or stopped test never
    leaves the load drawing current. Every parameter is checked before anything is sent.
    """
    duration, samples = check_load_test(inst.model, inst.equipment_id, params)
    inst.apply("mode", "CURR", parameter="mode")
    setpoint = inst.apply("current", params["current"], parameter="current")
    readings: list[dict[str, float]] = []
    inst.set_output(True)
    try:
        interval = duration / (samples - 1)
        start = ctx.clock()
        for i in range(samples):
            ctx.wait_until(start + i * interval)
            row = {"t": round(i * interval, 6)}
            for name in ("voltage", "current", "power"):
                row[name] = inst.measure(name).value
            readings.append(row)
            ctx.step(i + 1, samples, f"load test sample {i + 1}/{samples}", row)
    finally:
        input_on = inst.set_output(False)
    summary = {
        name: {
            "min": min(r[name] for r in readings),
            "max": max(r[name] for r in readings),
            "mean": sum(r[name] for r in readings) / len(readings),
        }
        for name in ("voltage", "current", "power")
    }
    return {
        "duration": duration,
        "current_setpoint": setpoint,
        "samples": len(readings),
        "readings": readings,
        "summary": summary,
        "input": input_on,
    }


ELECTRONIC_LOAD = InstrumentModel(
    kind="electronic_load",
    measurements=(
        Measurement(name="voltage", query="MEAS:VOLT?", unit="V"),
        Measurement(name="current", query="MEAS:CURR?", unit="A"),
        Measurement(name="power", query="MEAS:POW?", unit="W"),
    ),
    settings=(
        number("current", "CURR", "A", 0.0, 30.0),
        # Constant current, voltage, resistance or power; the levels of the last three.
        choice("mode", "FUNC", ("CURR", "VOLT", "RES", "POW"), LOAD_MODES),
        number("voltage", "VOLT", "V", 0.0, 150.0),
        number("resistance", "RES", "Ohm", 0.05, 10_000.0),
        number("power", "POW", "W", 0.0, 300.0),
        # A load's input plays the part of a source's output.
        switch("input", "INP"),
    ),
    primary="current",
    output="input",
    procedures={"run_load_test": run_load_test},
    checks={"run_load_test": check_load_test},
    aliases=(SettingAlias(name="load_enabled", setting="input"),),
)

TEMPERATURE_SENSOR = InstrumentModel(
    kind="temperature_sensor",
    measurements=(Measurement(name="temperature", query="MEAS:TEMP?", unit="degC"),),
    settings=(integer("averaging", "SENS:AVER:COUN", 1, 64),),
    primary="temperature",
)

MODELS: dict[str, InstrumentModel] = {
    m.kind: m for m in (POWER_SUPPLY, MULTIMETER, OSCILLOSCOPE, ELECTRONIC_LOAD, TEMPERATURE_SENSOR)
}


def make_instrument(kind: str, equipment_id: str, port: MessagePort) -> Instrument:
    try:
        model = MODELS[kind]
    except KeyError:
        raise ValueError(
            f"{equipment_id}: no driver for kind {kind!r} (known: {', '.join(MODELS)})"
        ) from None
    return Instrument(equipment_id, model, port)
