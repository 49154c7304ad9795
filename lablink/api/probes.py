"""What `/health` answers, built from the Health registry (``lablink.health``).

The runtime's components fill the registry (``scheduler``, ``event_log``, ``relay``, ``nats``,
``agent.<equipment_id>``, the supervised ``task.*``). `/health` renders whatever it holds,
generically. When the API runs alone (tests), or a component has not registered itself, the
API answers for it from what its context has: ``database`` (the API's own connection reads the
log), ``scheduler`` (the engine is there), ``relay`` and ``nats`` (the relay's status, judged
by the bus's own probes) and each ``agent.<id>`` (its last heartbeat, and its queue while
online). Those fallbacks live in a registry of the API's own, so their ``since`` is as true as
the registry's.
"""

from __future__ import annotations

import sqlite3
from typing import Any, Literal, Protocol

import msgspec

from lablink.bus.probes import register as register_bus_probes
from lablink.bus.relay import Relay
from lablink.clock import Clock
from lablink.eventstore.sqlite import LogReader
from lablink.health import Component, Health, Reading, State, worst
from lablink.scheduler.agents import AgentExecutor
from lablink.scheduler.engine import Engine
from lablink.settings import Settings


class ApiContext(Protocol):
    """What the probes read of ``api.context.ApiContext`` (named here so that the context,
    which builds its probes, and the probes do not import each other)."""

    @property
    def settings(self) -> Settings: ...
    @property
    def clock(self) -> Clock: ...
    @property
    def engine(self) -> Engine: ...
    @property
    def relay(self) -> Relay | None: ...
    @property
    def health(self) -> Health | None: ...
    @property
    def reader(self) -> sqlite3.Connection: ...
    @property
    def probes(self) -> Health: ...
    def nats_health(self) -> dict[str, Any]: ...
    def agents_health(self) -> dict[str, Any]: ...


# The components that must be there, and not failing, for the process to be ready.
STORE = ("event_log", "database")
ENGINE = ("scheduler",)


class HealthReport(msgspec.Struct, kw_only=True):
    """GET /health. ``components`` is the truth; the other sections are the summaries that
    earlier versions answered, kept for their clients."""

    status: State
    components: dict[str, Component]
    database: dict[str, Any]
    scheduler: dict[str, Any]
    nats: dict[str, Any]
    agents: dict[str, Any]


class Liveness(msgspec.Struct, kw_only=True):
    """GET /health/live: the process and its event loop answer."""

    status: Literal["ok"] = "ok"


class Readiness(msgspec.Struct, kw_only=True):
    """GET /health/ready: ready once the store is open, the engine started and no component
    is failing; ``reasons`` says what is missing or failing otherwise."""

    ready: bool
    status: State
    reasons: list[str]


def api_probes(context: ApiContext) -> Health:
    """The API's own registry: the fallbacks described in the module docstring."""
    health = Health(context.clock)

    def database() -> Reading:
        position = LogReader(context.reader).last_position()
        return Reading(
            state="ok",
            details={"path": str(context.settings.db_path), "events": position},
        )

    def scheduler() -> Reading:
        engine = context.engine
        return Reading(
            state="ok",
            details={
                "planned_jobs": len(engine.timers),
                "running_executions": len(engine.tasks()),
                "timezone": context.settings.timezone,
            },
        )

    health.probe("database", database)
    health.probe("scheduler", scheduler)
    if context.relay is not None:
        # The bus's own rules (lablink/bus/probes.py): lag in events and seconds, connection.
        register_bus_probes(health, context.relay.status)
    return health


def _agent_components(context: ApiContext) -> dict[str, Component]:
    executor = context.engine.executor
    if not isinstance(executor, AgentExecutor):
        return {}
    names: list[str] = []
    for equipment_id, sighting in list(executor.sightings.items()):
        name = f"agent.{equipment_id}"
        names.append(name)
        # Set in the API's registry, so that ``since`` is when the agent went on or offline.
        queue = sighting.presence.queue
        context.probes.set(
            name,
            "ok" if sighting.online else "degraded",
            "" if sighting.online else f"offline: {sighting.presence.reason or 'no heartbeat'}",
            agent_id=sighting.presence.agent_id,
            last_seen=sighting.at,
            **({"queued": queue.queued, "running": queue.running} if sighting.online else {}),
        )
    own = context.probes.read()
    return {name: own[name] for name in names}


def components(context: ApiContext) -> dict[str, Component]:
    """Every component: the runtime's registry, plus the API's fallbacks for what it lacks."""
    found = context.health.read() if context.health is not None else {}
    own = context.probes.read()
    if "event_log" not in found and "database" in own:
        found["database"] = own["database"]
    if "scheduler" not in found:
        found["scheduler"] = own["scheduler"]
    if "nats" not in found and "relay" not in found:
        found.update({name: own[name] for name in ("relay", "nats") if name in own})
    if not any(name.startswith("agent.") for name in found):
        found.update(_agent_components(context))
    return dict(sorted(found.items()))


def _database_summary(context: ApiContext) -> dict[str, Any]:
    try:
        position = LogReader(context.reader).last_position()
    except Exception as exc:  # reported, not raised: health must answer
        return {"status": "error", "path": str(context.settings.db_path), "error": str(exc)}
    return {"status": "ok", "path": str(context.settings.db_path), "events": position}


def report(context: ApiContext) -> HealthReport:
    found = components(context)
    scheduler = found.get("scheduler")
    return HealthReport(
        status=worst([c.state for c in found.values()]),
        components=found,
        database=_database_summary(context),
        scheduler={
            "status": scheduler.state if scheduler is not None else "ok",
            "planned_jobs": len(context.engine.timers),
            "running_executions": len(context.engine.tasks()),
            "timezone": context.settings.timezone,
        },
        nats=context.nats_health(),
        agents=context.agents_health(),
    )


def readiness(found: dict[str, Component]) -> Readiness:
    reasons: list[str] = []
    if not any(name in found for name in STORE):
        reasons.append("the event store is not open")
    if not any(name in found for name in ENGINE):
        reasons.append("the scheduling engine has not started")
    for name, component in found.items():
        if component.state == "failing":
            reasons.append(f"{name}: {component.reason or 'failing'}")
    status = worst([c.state for c in found.values()])
    return Readiness(ready=not reasons, status=status, reasons=reasons)
