"""The dashboard's page controllers beyond the overview and sign-in, each in its own module
(one per page); the plugin mounts every one listed here."""

from __future__ import annotations

from litestar.types import ControllerRouterHandler

PAGE_CONTROLLERS: list[ControllerRouterHandler] = []
