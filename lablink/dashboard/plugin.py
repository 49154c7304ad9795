"""Mounts the dashboard on the API's Litestar app: its router (session + CSRF middleware,
sign-in guard), the templates and the vendored static files. The API knows nothing of it:
`lablink serve` passes ``DashboardPlugin()`` to ``create_app``."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
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

from lablink.api.consistency import SETTLES_ITSELF
from lablink.dashboard.drawer import close_drawer
from lablink.dashboard.drawings import TEMPLATES
from lablink.dashboard.live import LiveController
from lablink.dashboard.overview import OverviewController
from lablink.dashboard.pages import PAGE_CONTROLLERS
from lablink.dashboard.pushed import OverviewLiveController
from lablink.dashboard.rendering import templates
from lablink.dashboard.requests import views_behind_page
from lablink.dashboard.session import (
    STATE_KEY,
    SessionController,
    Sessions,
    SignInNeeded,
    forbidden_page,
    page_guard,
    to_sign_in,
)
from lablink.projections.follower import ViewsBehind

HERE = Path(__file__).parent
STATIC_PATH = "/static"


def csrf_secret(data_dir: Path | None) -> str:
    """The secret the CSRF tokens are signed with, kept in the data directory (0600) so that
    it outlives a restart: a browser keeps its CSRF cookie across one, and a token signed with
    a secret that is gone would refuse every form, the sign-in form first, until the browser
    is closed. ``data_dir=None`` (tests of the app alone): a secret of this process."""
    if data_dir is None:
        return secrets.token_hex(32)
    path = data_dir / "dashboard.secret"
    try:
        found = path.read_text().strip()
    except FileNotFoundError:
        found = ""
    if len(found) == 64:
        return found
    data_dir.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_hex(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secret + "\n")
    return secret


def csrf_config(secret: str | None = None) -> CSRFConfig:
    return CSRFConfig(
        secret=secret or secrets.token_hex(32),
        cookie_name="lablink_csrf",
        cookie_httponly=True,
        cookie_samesite="strict",
        header_name="x-csrftoken",
    )


def dashboard_router(secret: str | None = None) -> Router:
    return Router(
        path="/",
        route_handlers=[
            SessionController,
            LiveController,
            OverviewController,
            OverviewLiveController,
            *PAGE_CONTROLLERS,
        ],
        middleware=[DefineMiddleware(CSRFMiddleware, config=csrf_config(secret))],
        guards=[page_guard],
        exception_handlers={
            SignInNeeded: to_sign_in,
            PermissionDeniedException: forbidden_page,
            ViewsBehind: views_behind_page,
        },
        # Each write route waits for the views itself and says so in the page (requests.seen).
        opt={SETTLES_ITSELF: True},
        include_in_schema=False,
    )


class DashboardPlugin(InitPlugin):
    """``data_dir``: where the CSRF secret is kept (`lablink serve` passes its own)."""

    def __init__(self, data_dir: Path | None = None) -> None:
        self.data_dir = data_dir

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        app_config.route_handlers.append(dashboard_router(csrf_secret(self.data_dir)))
        app_config.route_handlers.append(
            create_static_files_router(
                path=STATIC_PATH,
                directories=[HERE / "static"],
                include_in_schema=False,
            )
        )
        engine = JinjaTemplateEngine.from_environment(templates(TEMPLATES))
        engine.register_template_callable("require_reason", _require_reason)
        app_config.template_config = TemplateConfig(instance=engine)
        app_config.state[STATE_KEY] = Sessions()
        app_config.on_shutdown.append(close_drawer)
        return app_config


def _require_reason(values: Mapping[str, Any]) -> bool:
    """``require_reason()`` in a template: whether this server requires a reason for every
    change (LABLINK_REQUIRE_REASON), so that the forms that change a job say so."""
    return bool(values["request"].app.state["context"].settings.require_reason)
