"""docs/dashboard.md matches what it documents: it shows exactly the screenshots its script
writes (each one there, and small), and names every page and action the dashboard serves."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

from litestar import Router

from lablink.dashboard.plugin import dashboard_router

ROOT = Path(__file__).parent.parent.parent
DOC = ROOT / "docs" / "dashboard.md"
# Kept small: the pictures travel with every clone of the repository.
MAX_TOTAL_BYTES = 3_000_000


def script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "dashboard_screenshots", ROOT / "docs" / "dashboard_screenshots.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_page_shows_exactly_the_screenshots_the_script_writes() -> None:
    shots = script().SHOTS
    linked = re.findall(r"!\[([^\]]*)\]\((img/dashboard/[^)]+\.png)\)", DOC.read_text())
    assert sorted(path for _, path in linked) == sorted(f"img/dashboard/{n}.png" for n in shots)
    # The alt text is the script's own description of the picture.
    assert {path: alt for alt, path in linked} == {
        f"img/dashboard/{name}.png": alt for name, alt in shots.items()
    }
    files = [ROOT / "docs" / path for _, path in linked]
    assert [f for f in files if not f.is_file()] == []
    assert sum(f.stat().st_size for f in files) < MAX_TOTAL_BYTES
    for f in files:
        assert f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f


def test_every_page_and_action_of_the_dashboard_is_in_the_doc() -> None:
    router: Router = dashboard_router()
    documented = DOC.read_text()
    paths = {
        re.sub(r":\w+\}", "}", route.path)
        for route in router.routes
        # Fragments are parts of the pages, fetched by the pages themselves.
        if not route.path.startswith("/fragments/")
    }
    assert "/" in paths
    assert "/audit" in paths
    missing = sorted(p for p in paths if f"`{p}`" not in documented)
    assert missing == []
