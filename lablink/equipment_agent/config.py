"""An agent's configuration: the instruments it serves, from a TOML file (``lab.toml``).

::

    [agent]
    id = "lab-pc-1"                 # default: the host name
    heartbeat_seconds = 1.0
    data_dir = "data"               # acquisitions and the agent's ledger go here
    # realtime = true               # default: false only when every instrument is simulated
    keep_free_bytes = 268435456     # a capture that would leave less free is refused
    max_capture_bytes = 8589934592  # the largest file one capture may write (docs/data.md)

    [nats]                          # default: LABLINK_NATS_URL, else the embedded server's URL
    url = "nats://127.0.0.1:4222"   # user, password, credentials, tls_ca, tls_cert, tls_key
                                    # (default: LABLINK_NATS_*, else on the embedded server
                                    # the agent's own user agent-<id>, see docs/nats.md)

    [[instruments]]
    id = "power_supply_1"
    kind = "power_supply"           # power_supply, multimeter, oscilloscope, electronic_load,
                                    # temperature_sensor
    driver = "power_supply"         # the SCPI table; default: the kind's own
    resource = "TCPIP0::10.20.0.11::inst0::INSTR"
    backend = "@py"                 # "@py" (pyvisa-py, real instruments), "@sim" (the built-in
                                    # simulated bench) or a pyvisa-sim YAML file
    timeout_ms = 2000

    [[instruments.calibration]]     # its calibration certificates (docs/calibration.md):
    certificate = "CAL-2026-0042"   # recorded by `lablink serve` when it loads this file
    performed = 2026-01-15          # (LABLINK_AGENT_CONFIG), once: a restart records
    due = 2027-01-15                # nothing again
    by = "Metrology Lab GmbH"

A mistake in the file is reported with the key, the value and the reason, before anything
connects.
"""

from __future__ import annotations

import re
import socket
import tomllib
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

from lablink.equipment_agent.acquisition import (
    DEFAULT_KEEP_FREE_BYTES,
    DEFAULT_MAX_CAPTURE_BYTES,
    CaptureLimits,
)
from lablink.equipment_agent.bench import (
    BENCH_YAML,
    DEFAULT_TIMEOUT_MS,
    Bench,
    PortWrapper,
)
from lablink.errors import LabLinkError
from lablink.instruments.drivers import MODELS
from lablink.instruments.protocol import DEFAULT_HEARTBEAT_SECONDS
from lablink.instruments.simulated import SIMULATED_BENCH

# Ids become NATS subject tokens and file names.
_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class ConfigError(LabLinkError, ValueError):
    def __init__(self, where: str, key: str, value: Any, reason: str) -> None:
        super().__init__(f"{where}: {key} = {value!r}: {reason}")
        self.where = where
        self.key = key
        self.value = value
        self.reason = reason


@dataclass(frozen=True)
class CalibrationEntry:
    """One ``[[instruments.calibration]]`` table: a certificate for the scheduler's record
    (the agent itself does nothing with it)."""

    certificate: str
    performed: date
    due: date
    by: str
    # Where it is in the file (``instruments[0].calibration[1]``), for the errors that name it.
    key: str = ""


@dataclass(frozen=True)
class InstrumentConfig:
    id: str
    kind: str
    resource: str
    backend: str = "@py"
    driver: str = ""
    timeout_ms: int = DEFAULT_TIMEOUT_MS
    calibrations: tuple[CalibrationEntry, ...] = ()

    @property
    def simulated(self) -> bool:
        return self.backend != "@py"

    def visa_library(self, base: Path) -> str:
        if self.backend == "@py":
            return "@py"
        if self.backend == "@sim":
            return f"{BENCH_YAML}@sim"
        path = Path(self.backend)
        return f"{path if path.is_absolute() else base / path}@sim"


@dataclass(frozen=True)
class NatsConfig:
    url: str | None = None
    user: str | None = None
    password: str | None = None
    credentials: str | None = None
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None


@dataclass(frozen=True)
class AgentConfig:
    agent_id: str
    instruments: tuple[InstrumentConfig, ...]
    data_dir: Path = Path("data")
    heartbeat_seconds: float = DEFAULT_HEARTBEAT_SECONDS
    realtime: bool = False
    nats: NatsConfig = field(default_factory=NatsConfig)
    # Where relative backend paths are resolved: the config file's folder.
    base: Path = Path(".")
    limits: CaptureLimits = field(default_factory=CaptureLimits)

    def open_bench(self, *, wrap: PortWrapper | None = None) -> Bench:
        """One VISA session per instrument, grouped by backend (one resource manager each)."""
        # One resource manager per (backend, timeout): each instrument keeps its own timeout.
        groups: dict[tuple[str, int], dict[str, tuple[str, str]]] = defaultdict(dict)
        for inst in self.instruments:
            key = (inst.visa_library(self.base), inst.timeout_ms)
            groups[key][inst.id] = (inst.driver or inst.kind, inst.resource)
        return Bench.combine(
            [
                Bench.open(members, library, wrap=wrap, timeout_ms=timeout_ms)
                for (library, timeout_ms), members in groups.items()
            ]
        )


def simulated_config(
    data_dir: Path, *, agent_id: str = "embedded", realtime: bool = False
) -> AgentConfig:
    """The guide's six instruments on the built-in pyvisa-sim bench (``lablink serve``)."""
    return AgentConfig(
        agent_id=agent_id,
        instruments=tuple(
            InstrumentConfig(id=eid, kind=kind, resource=resource, backend="@sim")
            for eid, (kind, resource) in SIMULATED_BENCH.items()
        ),
        data_dir=data_dir,
        realtime=realtime,
    )


def load_config(path: Path) -> AgentConfig:
    where = str(path)
    try:
        raw = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(where, "file", str(path), f"cannot be read: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(where, "file", str(path), f"is not valid TOML: {exc}") from exc
    return parse_config(raw, where=where, base=path.parent)


def parse_config(
    raw: Mapping[str, Any], *, where: str = "config", base: Path = Path(".")
) -> AgentConfig:
    _only(raw, where, "", {"agent", "nats", "instruments"})
    agent = _table(raw, where, "agent")
    _only(
        agent,
        where,
        "agent.",
        {"id", "heartbeat_seconds", "data_dir", "realtime", "keep_free_bytes", "max_capture_bytes"},
    )
    agent_id = _text(agent, where, "agent.id", default=_host_id())
    if not _ID.match(agent_id):
        raise ConfigError(where, "agent.id", agent_id, "use 1-64 letters, digits, '_' or '-'")
    heartbeat = agent.get("heartbeat_seconds", DEFAULT_HEARTBEAT_SECONDS)
    if (
        isinstance(heartbeat, bool)
        or not isinstance(heartbeat, int | float)
        or not 0.05 <= heartbeat <= 60
    ):
        raise ConfigError(
            where,
            "agent.heartbeat_seconds",
            heartbeat,
            "must be a number of seconds from 0.05 to 60",
        )
    data_dir = Path(_text(agent, where, "agent.data_dir", default="data"))
    limits = CaptureLimits(
        keep_free_bytes=_bytes(agent, where, "keep_free_bytes", DEFAULT_KEEP_FREE_BYTES, 0),
        max_capture_bytes=_bytes(agent, where, "max_capture_bytes", DEFAULT_MAX_CAPTURE_BYTES, 1),
    )
    nats = _table(raw, where, "nats")
    keys = {"url", "user", "password", "credentials", "tls_ca", "tls_cert", "tls_key"}
    _only(nats, where, "nats.", keys)
    nats_config = NatsConfig(**{k: _text(nats, where, f"nats.{k}", default=None) for k in keys})
    items = raw.get("instruments")
    if not isinstance(items, list) or not items:
        raise ConfigError(where, "instruments", items, "list at least one [[instruments]] table")
    instruments: list[InstrumentConfig] = []
    seen: set[str] = set()
    resources: dict[str, str] = {}
    for n, item in enumerate(items):
        inst = _instrument(item, where, f"instruments[{n}].", seen)
        # Two ids on one resource would open two sessions to one instrument.
        other = resources.setdefault(f"{inst.backend} {inst.resource}", inst.id)
        if other != inst.id:
            raise ConfigError(
                where, f"instruments[{n}].resource", inst.resource, f"is already {other}'s"
            )
        instruments.append(inst)
    realtime = agent.get("realtime", not all(i.simulated for i in instruments))
    if not isinstance(realtime, bool):
        raise ConfigError(where, "agent.realtime", realtime, "must be true or false")
    return AgentConfig(
        agent_id=agent_id,
        instruments=tuple(instruments),
        data_dir=data_dir if data_dir.is_absolute() else base / data_dir,
        heartbeat_seconds=float(heartbeat),
        realtime=realtime,
        nats=nats_config,
        base=base,
        limits=limits,
    )


def _bytes(agent: Mapping[str, Any], where: str, key: str, default: int, low: int) -> int:
    value = agent.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(where, f"agent.{key}", value, f"must be a whole number of bytes >= {low}")
    return value


def _instrument(item: Any, where: str, prefix: str, seen: set[str]) -> InstrumentConfig:
    if not isinstance(item, dict):
        raise ConfigError(where, prefix.rstrip("."), item, "must be a table")
    _only(
        item,
        where,
        prefix,
        {"id", "kind", "driver", "resource", "backend", "timeout_ms", "calibration"},
    )
    eid = _text(item, where, f"{prefix}id")
    if not _ID.match(eid):
        raise ConfigError(where, f"{prefix}id", eid, "use 1-64 letters, digits, '_' or '-'")
    if eid in seen:
        raise ConfigError(where, f"{prefix}id", eid, "is listed twice")
    seen.add(eid)
    kind = _text(item, where, f"{prefix}kind")
    if kind not in MODELS:
        raise ConfigError(
            where, f"{prefix}kind", kind, f"unknown kind (known: {', '.join(MODELS)})"
        )
    driver = _text(item, where, f"{prefix}driver", default=kind)
    if driver not in MODELS:
        raise ConfigError(
            where, f"{prefix}driver", driver, f"no such driver (known: {', '.join(MODELS)})"
        )
    if MODELS[driver].kind != kind:
        raise ConfigError(
            where, f"{prefix}driver", driver, f"drives {MODELS[driver].kind}, not {kind}"
        )
    resource = _text(item, where, f"{prefix}resource")
    backend = _text(item, where, f"{prefix}backend", default="@py")
    if backend not in ("@py", "@sim") and not backend.endswith((".yaml", ".yml")):
        raise ConfigError(
            where, f"{prefix}backend", backend, "use '@py', '@sim' or a pyvisa-sim .yaml file"
        )
    timeout = item.get("timeout_ms", DEFAULT_TIMEOUT_MS)
    if isinstance(timeout, bool) or not isinstance(timeout, int) or not 10 <= timeout <= 600_000:
        raise ConfigError(
            where, f"{prefix}timeout_ms", timeout, "must be whole milliseconds from 10 to 600000"
        )
    return InstrumentConfig(
        id=eid,
        kind=kind,
        resource=resource,
        backend=backend,
        driver=driver,
        timeout_ms=timeout,
        calibrations=_calibrations(item.get("calibration", []), where, prefix),
    )


def _calibrations(items: Any, where: str, prefix: str) -> tuple[CalibrationEntry, ...]:
    key = f"{prefix}calibration"
    if not isinstance(items, list):
        raise ConfigError(where, key, items, "use [[instruments.calibration]] tables")
    entries: list[CalibrationEntry] = []
    seen: set[str] = set()
    for n, item in enumerate(items):
        at = f"{key}[{n}]"
        if not isinstance(item, dict):
            raise ConfigError(where, at, item, "must be a table")
        _only(item, where, f"{at}.", {"certificate", "performed", "due", "by"})
        certificate = _text(item, where, f"{at}.certificate")
        if certificate in seen:
            raise ConfigError(where, f"{at}.certificate", certificate, "is listed twice")
        seen.add(certificate)
        performed = _date(item, where, f"{at}.performed")
        due = _date(item, where, f"{at}.due")
        if due <= performed:
            raise ConfigError(
                where, f"{at}.due", due.isoformat(), f"must be after performed ({performed})"
            )
        entries.append(
            CalibrationEntry(
                certificate=certificate,
                performed=performed,
                due=due,
                by=_text(item, where, f"{at}.by"),
                key=at,
            )
        )
    return tuple(entries)


def _date(raw: Mapping[str, Any], where: str, key: str) -> date:
    """A TOML date (``2026-01-15``) or the same as a string; not a date and time."""
    value = raw.get(key.rsplit(".", 1)[-1])
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            if len(value.strip()) == 10:
                return date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise ConfigError(where, key, value, "must be a date, e.g. 2026-01-15")


def _table(raw: Mapping[str, Any], where: str, key: str) -> Mapping[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(where, key, value, "must be a table")
    return value


def _only(raw: Mapping[str, Any], where: str, prefix: str, allowed: set[str]) -> None:
    for key in raw:
        if key not in allowed:
            raise ConfigError(
                where,
                f"{prefix}{key}",
                raw[key],
                f"unknown key (known: {', '.join(sorted(allowed))})",
            )


def _text(raw: Mapping[str, Any], where: str, key: str, *, default: Any = ...) -> Any:
    name = key.rsplit(".", 1)[-1]
    if name not in raw:
        if default is ...:
            raise ConfigError(where, key, None, "is required")
        return default
    value = raw[name]
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(where, key, value, "must be a non-empty string")
    return value.strip()


def _host_id() -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname())[:64] or "agent"
