"""Instruments: what each one is, whether its agent is online, and what it is running."""

from __future__ import annotations

from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.params import FromPath

from lablink.api.context import ApiContext
from lablink.api.openapi import READ_ERRORS
from lablink.api.queries import list_equipment
from lablink.api.responses import EquipmentAnswer, EquipmentList, EquipmentView, views
from lablink.errors import EquipmentNotFound

READ = {"role": "viewer"}


class EquipmentController(Controller):
    path = "/api/equipment"
    tags = ["equipment"]  # noqa: RUF012 (Litestar declares it as an instance attribute)

    @get("/", opt=READ, responses=READ_ERRORS)
    async def list_equipment(self, context: NamedDependency[ApiContext]) -> EquipmentList:
        """Every instrument an agent has reported, by id."""
        items = views(
            list_equipment(
                context.reader,
                live=context.sightings(),
                queues=context.queues(),
                calibration=context.calibration_rules(),
            ),
            EquipmentView,
        )
        return EquipmentList(success=True, count=len(items), equipment=items)

    @get("/{equipment_id:str}", opt=READ, responses=READ_ERRORS)
    async def get_equipment(
        self, context: NamedDependency[ApiContext], equipment_id: FromPath[str]
    ) -> EquipmentAnswer:
        """One instrument: kind, online/offline, *IDN? identity, last seen, running, queue,
        calibration."""
        items = list_equipment(
            context.reader,
            live=context.sightings(),
            equipment_id=equipment_id,
            queues=context.queues(),
            calibration=context.calibration_rules(),
        )
        if not items:
            raise EquipmentNotFound(equipment_id)
        return EquipmentAnswer(success=True, equipment=views(items, EquipmentView)[0])
