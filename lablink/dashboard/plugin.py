"""Mounts the dashboard on the API's Litestar app: its router (session + CSRF middleware,
sign-in guard), the templates and the vendored static files. The API knows nothing of it:
`lablink serve` passes ``DashboardPlugin()`` to ``create_app``."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from litestar import Router
from litestar.config.app import AppConfig
from litestar.config.csrf import CSRFConfig
from litestar.exceptions import PermissionDeniedException
from litestar.middleware import DefineMiddleware
from litestar.middleware.csrf import CSRFMiddleware
from litestar.plugins import InitPlugin
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig

from lablink.dashboard.live import LiveController
from lablink.dashboard.overview import OverviewController
from lablink.dashboard.pages import PAGE_CONTROLLERS
from lablink.dashboard.rendering import register_filters
from lablink.dashboard.session import (
    STATE_KEY,
    SessionController,
    Sessions,
    SignInNeeded,
    forbidden_page,
    page_guard,
    to_sign_in,
)

HERE = Path(__file__).parent
STATIC_PATH = "/static"


def csrf_config() -> CSRFConfig:
    # A secret per process: sessions live in memory too, so a restart ends both together.
    return CSRFConfig(
        secret=secrets.token_hex(32),
        cookie_name="lablink_csrf",
        cookie_httponly=True,
        cookie_samesite="strict",
        header_name="x-csrftoken",
    )


def dashboard_router() -> Router:
    return Router(
        path="/",
        route_handlers=[SessionController, LiveController, OverviewController, *PAGE_CONTROLLERS],
        middleware=[DefineMiddleware(CSRFMiddleware, config=csrf_config())],
        guards=[page_guard],
        exception_handlers={
            SignInNeeded: to_sign_in,
            PermissionDeniedException: forbidden_page,
        },
        include_in_schema=False,
    )


class DashboardPlugin(InitPlugin):
    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        app_config.route_handlers.append(dashboard_router())
        app_config.route_handlers.append(
            create_static_files_router(
                path=STATIC_PATH,
                directories=[HERE / "static"],
                include_in_schema=False,
            )
        )
        app_config.template_config = TemplateConfig(
            directory=HERE / "templates",
            engine=JinjaTemplateEngine,
            engine_callback=_configure,
        )
        app_config.state[STATE_KEY] = Sessions()
        return app_config


def _configure(engine: Any) -> None:
    register_filters(engine.engine)
