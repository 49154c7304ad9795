"""The Litestar application: routes, dependency injection, the exception map, OpenAPI."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from litestar import Litestar, Request
from litestar.datastructures import State
from litestar.di import Provide
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.plugins import PluginProtocol

from lablink import __version__
from lablink.api.alarms import AlarmController
from lablink.api.audit import AuditController
from lablink.api.auth import role_guard
from lablink.api.calibration import CalibrationController
from lablink.api.consistency import SettleWrites, before_request
from lablink.api.context import ApiContext
from lablink.api.data import DataController
from lablink.api.equipment import EquipmentController
from lablink.api.errors import EXCEPTION_HANDLERS
from lablink.api.executions import ExecutionController
from lablink.api.hosts import BrowserGuard, browser_guard_config
from lablink.api.jobs import JobController
from lablink.api.keys import KeyController
from lablink.api.metrics import metrics_plugin
from lablink.api.profiles import ProfileController
from lablink.api.results import ResultController
from lablink.api.system import SystemController
from lablink.api.throttle import FailedAuthentications
from lablink.keys import KeyUsage

MAX_BODY_BYTES = 1024 * 1024


def create_app(context: ApiContext, plugins: Sequence[PluginProtocol] = ()) -> Litestar:
    """The API; ``plugins`` adds what sits beside it (the dashboard, for `lablink serve`)."""

    def provide_context(request: Request[Any, Any, Any]) -> ApiContext:
        return context

    settings = context.settings
    failures = FailedAuthentications(
        context.clock,
        max_failures=settings.auth_max_failures,
        window_seconds=settings.auth_failure_window,
    )
    usage = KeyUsage(context.side_file, context.clock)

    return Litestar(
        route_handlers=[
            JobController,
            ExecutionController,
            DataController,
            SystemController,
            EquipmentController,
            CalibrationController,
            AlarmController,
            AuditController,
            ProfileController,
            KeyController,
            ResultController,
        ],
        # Outermost: a foreign Host or Origin is refused before anything else runs.
        middleware=[
            DefineMiddleware(BrowserGuard, config=browser_guard_config(settings)),
            SettleWrites,
        ],
        before_request=before_request,
        dependencies={"context": Provide(provide_context, sync_to_thread=False)},
        guards=[role_guard],
        exception_handlers=EXCEPTION_HANDLERS,
        request_max_body_size=MAX_BODY_BYTES,
        state=State({"context": context, "auth_failures": failures, "key_usage": usage}),
        openapi_config=OpenAPIConfig(
            title="LabLink scheduler",
            version=__version__,
            description=(
                "Scheduled operations on laboratory instruments. Every change is an event in "
                "an append-only log; these endpoints read its projections."
            ),
            path="/schema",
        ),
        # GET /metrics and the request metrics' middleware (lablink/metrics).
        plugins=[*plugins, metrics_plugin(context)],
        debug=False,
    )
