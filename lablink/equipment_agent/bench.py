"""Opening a bench: one VISA session, one lock and one worker thread per instrument.

PyVISA is blocking and a resource is not safe for concurrent use, so everything sent to an
instrument runs on that instrument's single worker thread, holding its lock for the whole
operation: SCPI from two jobs on one instrument never interleaves, and a multi-step operation
(set, check errors, read back) is never split by another job's commands.

The simulated bench is the user's guide's six instruments in ``bench.yaml`` (pyvisa-sim).
pyvisa caches one simulated library per device-file path for the life of the process, so
instruments opened twice from the same file share their simulated state; open a copy of the
file for an independent bench.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import pyvisa
import structlog
from pyvisa.resources import MessageBasedResource

from lablink.instruments.drivers import make_instrument
from lablink.instruments.errors import CommunicationError, EquipmentError, EquipmentOffline
from lablink.instruments.instrument import Instrument
from lablink.instruments.scpi import Identity, MessagePort
from lablink.instruments.simulated import SIMULATED_BENCH

log = structlog.get_logger(tag="equipment")

T = TypeVar("T")

BENCH_YAML = Path(__file__).with_name("bench.yaml")

# Wraps the resource an instrument talks through (a SCPI trace, a recorder in tests).
PortWrapper = Callable[[str, MessagePort], MessagePort]

DEFAULT_TIMEOUT_MS = 2_000


class InstrumentSession:
    def __init__(
        self,
        equipment_id: str,
        kind: str,
        resource: MessageBasedResource,
        *,
        wrap: PortWrapper | None = None,
    ) -> None:
        self.equipment_id = equipment_id
        self.kind = kind
        self.resource_name = resource.resource_name
        port: MessagePort = resource if wrap is None else wrap(equipment_id, resource)
        self.instrument = make_instrument(kind, equipment_id, port)
        self._resource = resource
        self._lock = threading.Lock()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"visa-{equipment_id}")
        self._closed = False
        # What the instrument said it is when the bench opened (for the equipment view).
        self.identity: Identity | None = None

    def submit(self, operation: Callable[[Instrument], T]) -> Future[T]:
        """Queue ``operation`` behind everything already sent to this instrument."""
        if self._closed:
            raise EquipmentOffline(self.equipment_id, "its session is closed")
        try:
            return self._worker.submit(self._exclusive, operation)
        except RuntimeError as exc:  # the worker shut down between the check and the submit
            raise EquipmentOffline(self.equipment_id, "its session is closed") from exc

    def call(self, operation: Callable[[Instrument], T]) -> T:
        """Blocking form of ``submit``, for threads other than the event loop's."""
        return self.submit(operation).result()

    def _exclusive(self, operation: Callable[[Instrument], T]) -> T:
        with self._lock:
            return operation(self.instrument)

    def close(self) -> None:
        self._closed = True
        self._worker.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            try:
                self._resource.close()
            except pyvisa.errors.Error as exc:
                log.warning("closing resource failed", equipment_id=self.equipment_id, error=exc)


class Bench:
    """The instruments one process drives. An instrument that cannot be opened, or does not
    answer ``*IDN?`` when opened, is reported offline with the reason."""

    def __init__(
        self,
        sessions: Mapping[str, InstrumentSession],
        *,
        offline: Mapping[str, str] | None = None,
        resource_manager: pyvisa.ResourceManager | None = None,
    ) -> None:
        self._sessions = dict(sessions)
        self.offline = dict(offline or {})
        self._resource_managers = [resource_manager] if resource_manager is not None else []

    @classmethod
    def combine(cls, benches: list[Bench]) -> Bench:
        """One bench of several (one per VISA backend), closed together."""
        combined = cls({})
        for bench in benches:
            combined._sessions.update(bench._sessions)
            combined.offline.update(bench.offline)
            combined._resource_managers.extend(bench._resource_managers)
        return combined

    @classmethod
    def open(
        cls,
        instruments: Mapping[str, tuple[str, str]],
        visa_library: str,
        *,
        wrap: PortWrapper | None = None,
        timeout_ms: int = DEFAULT_TIMEOUT_MS,
    ) -> Bench:
        rm = pyvisa.ResourceManager(visa_library)
        sessions: dict[str, InstrumentSession] = {}
        offline: dict[str, str] = {}
        for equipment_id, (kind, name) in instruments.items():
            try:
                resource = rm.open_resource(
                    name, read_termination="\n", write_termination="\n", timeout=timeout_ms
                )
            except (pyvisa.errors.Error, ValueError) as exc:
                offline[equipment_id] = f"cannot open {name}: {exc}"
                log.warning("instrument offline", equipment_id=equipment_id, reason=str(exc))
                continue
            if not isinstance(resource, MessageBasedResource):
                resource.close()
                offline[equipment_id] = f"{name} is not a message-based resource"
                continue
            session = InstrumentSession(equipment_id, kind, resource, wrap=wrap)
            try:
                session.identity = session.call(_identify)
            except EquipmentError as exc:
                session.close()
                offline[equipment_id] = str(exc)
                log.warning("instrument offline", equipment_id=equipment_id, reason=str(exc))
                continue
            sessions[equipment_id] = session
        return cls(sessions, offline=offline, resource_manager=rm)

    def session(self, equipment_id: str) -> InstrumentSession:
        try:
            return self._sessions[equipment_id]
        except KeyError:
            raise EquipmentOffline(equipment_id, self.offline.get(equipment_id, "")) from None

    def __contains__(self, equipment_id: object) -> bool:
        return equipment_id in self._sessions

    def __iter__(self) -> Iterator[str]:
        return iter(self._sessions)

    def sessions(self) -> list[InstrumentSession]:
        return list(self._sessions.values())

    def close(self) -> None:
        for session in self._sessions.values():
            session.close()
        for resource_manager in self._resource_managers:
            resource_manager.close()


def _identify(inst: Instrument) -> Identity:
    """An instrument counts as connected once it names itself."""
    identity = inst.identity()
    if not identity.manufacturer:
        raise CommunicationError(inst.equipment_id, "*IDN?", f"no identity in {identity.raw!r}")
    return identity


def open_simulated_bench(
    bench_yaml: Path = BENCH_YAML,
    *,
    instruments: Mapping[str, tuple[str, str]] = SIMULATED_BENCH,
    wrap: PortWrapper | None = None,
    timeout_ms: int = DEFAULT_TIMEOUT_MS,
) -> Bench:
    return Bench.open(instruments, f"{bench_yaml}@sim", wrap=wrap, timeout_ms=timeout_ms)
