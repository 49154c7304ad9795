"""The dashboard's page controllers beyond the overview and sign-in, each in its own module
(one per page); the plugin mounts every one listed here."""

from __future__ import annotations

from litestar.types import ControllerRouterHandler

from lablink.dashboard.alarm_actions import AlarmActionsController
from lablink.dashboard.alarms_page import AlarmsPageController
from lablink.dashboard.audit_page import AuditPageController
from lablink.dashboard.equipment_pages import EquipmentPagesController
from lablink.dashboard.job_detail import JobDetailController
from lablink.dashboard.job_form import JobFormController
from lablink.dashboard.jobs_list import JobsListController

PAGE_CONTROLLERS: list[ControllerRouterHandler] = [
    JobFormController,
    EquipmentPagesController,
    AlarmsPageController,
    AuditPageController,
    JobsListController,
    JobDetailController,
    AlarmActionsController,
]
