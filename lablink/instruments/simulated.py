"""The simulated bench's instruments, by id: the user's guide's six.

Their ids, driver kinds and VISA resource names, as the device file the agents open
(``lablink/equipment_agent/bench.yaml``, pyvisa-sim) declares them; a test keeps the two in
step. Everything that must know which instruments exist without opening them (the job
service's parameter checks, the shipped profiles, the equipment view) reads them here.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

# equipment id -> (driver kind, VISA resource name), as bench.yaml declares them.
SIMULATED_BENCH: Mapping[str, tuple[str, str]] = MappingProxyType(
    {
        "power_supply_1": ("power_supply", "TCPIP0::10.20.0.11::inst0::INSTR"),
        "multimeter_1": ("multimeter", "TCPIP0::10.20.0.12::inst0::INSTR"),
        "oscilloscope_1": ("oscilloscope", "TCPIP0::10.20.0.13::inst0::INSTR"),
        "scope_1": ("oscilloscope", "TCPIP0::10.20.0.14::inst0::INSTR"),
        "load_1": ("electronic_load", "TCPIP0::10.20.0.15::inst0::INSTR"),
        "sensor_1": ("temperature_sensor", "TCPIP0::10.20.0.16::inst0::INSTR"),
    }
)


def simulated_bench() -> dict[str, tuple[str, str]]:
    """The guide's six instruments: ``{equipment_id: (kind, resource name)}``."""
    return dict(SIMULATED_BENCH)
