"""The driver tables: one declarative SCPI table per instrument kind.

Each kind lists its measurements (``get_<name>``), its settings (``get_<name>``, and
``set_<name>`` with ``{"value": ...}`` when writable, validated against the limits here), which
setting is its output (``output_on`` / ``output_off``, switched off by the safe state) and any
multi-step procedures. Every kind also answers ``reset``. The limits match the device file
``bench.yaml``; a test keeps the two in step.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lablink.equipment_agent.context import RunContext
from lablink.equipment_agent.errors import InvalidParameter
from lablink.equipment_agent.instrument import Instrument
from lablink.equipment_agent.scpi import (
    InstrumentModel,
    Measurement,
    MessagePort,
    WaveformCapture,
    check_number,
    choice,
    integer,
    number,
    readonly,
    switch,
)

SCOPE_CHANNELS = (1, 2, 3, 4)

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
    ),
    primary="voltage",
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
        readonly("record_length", "ACQ:POIN", "pts", type="int"),
        readonly("y_increment", "WAV:YINC", "V"),
        readonly("y_origin", "WAV:YOR", "V"),
    ),
    primary="vpp",
    capture=WaveformCapture(channels=SCOPE_CHANNELS),
)


def run_load_test(inst: Instrument, params: Mapping[str, Any], ctx: RunContext) -> dict[str, Any]:
    """Sink ``current`` amps for ``duration`` seconds, sampling ``samples`` readings evenly.

    The input is switched off at the end whatever happens, so a failed or stopped test never
    leaves the load drawing current.
    """
    command = "run_load_test"
    inst.expect_only(command, params, "duration", "current", "samples")
    eid = inst.equipment_id
    duration = check_number(eid, params, "duration", 0.0, 86_400.0, context=command)
    samples = int(
        check_number(eid, params, "samples", 2, 1_000, context=command, default=5, whole=True)
    )
    if "current" not in params:
        raise InvalidParameter(inst.equipment_id, "current", None, "is required", context=command)
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
        choice("mode", "FUNC", ("CURR", "VOLT", "RES", "POW")),
        # A load's input plays the part of a source's output.
        switch("input", "INP"),
    ),
    primary="current",
    output="input",
    procedures={"run_load_test": run_load_test},
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
