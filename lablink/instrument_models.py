"""Which driver table an instrument runs under, as far as LabLink knows it.

What its agent described when it came online (the kind in the ``equipment:<id>`` stream) comes
first; before any agent has described it, the simulated bench's ids are known by their kind. An
instrument known neither way is unknown: a job for it is accepted with its parameters check
pending, and a profile is checked only for existing. The job service's parameter check and
its profile check both ask this.
"""

from __future__ import annotations

from collections.abc import Mapping

from lablink.equipment_service import load_equipment
from lablink.eventstore.base import EventStore
from lablink.instruments.drivers import MODELS
from lablink.instruments.scpi import InstrumentModel
from lablink.instruments.simulated import SIMULATED_BENCH


class KnownInstruments:
    def __init__(
        self,
        store: EventStore,
        *,
        bench: Mapping[str, tuple[str, str]] = SIMULATED_BENCH,
        models: Mapping[str, InstrumentModel] = MODELS,
    ) -> None:
        self.store = store
        self.bench = bench
        self.models = models

    def kind(self, equipment_id: str) -> str | None:
        state, _ = load_equipment(self.store, equipment_id)
        if state.kind:
            return state.kind
        known = self.bench.get(equipment_id)
        return known[0] if known is not None else None

    def model(self, equipment_id: str) -> InstrumentModel | None:
        kind = self.kind(equipment_id)
        return self.models.get(kind) if kind is not None else None
