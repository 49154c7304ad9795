"""A real browser for the dashboard's tests: Playwright driving Debian's chromium (the README's
test command installs it when missing; ``playwright install`` cannot download browsers here),
against a real `lablink serve` child with its simulated bench.

``lab`` is a started server with its admin key; ``lab.key(role)`` makes another key the way an
admin would (`lablink keys create`); ``signed_in(browser, lab, key)`` is a page whose session
that key bought through the sign-in form. Screenshots go to ``LABLINK_SCREENSHOTS`` when set
(docs/dashboard.md's script sets it), else nowhere."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.support.serve import LABLINK, Server, free_port

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Generous: a slow machine makes a slow page, never a failed test.
PAGE_TIMEOUT_MS = 30_000
# expect() waits 5 s unless told otherwise: the same generous deadline for every assertion.
expect.set_options(timeout=PAGE_TIMEOUT_MS)


@dataclass
class Lab:
    url: str
    data_dir: Path
    admin_key: str
    server: Server
    keys: dict[str, str] = field(default_factory=dict)

    def key(self, role: str, name: str | None = None) -> str:
        """A new API key of ``role``, made as an admin makes one."""
        name = name or f"{role}-{len(self.keys) + 1}"
        result = subprocess.run(
            [
                LABLINK,
                "keys",
                "create",
                "--role",
                role,
                "--name",
                name,
                "--data-dir",
                str(self.data_dir),
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        secret = result.stdout.strip().splitlines()[0]
        self.keys[name] = secret
        return secret

    def api(self, key: str | None = None) -> httpx.Client:
        """An API client with ``key`` (the admin's when None)."""
        return httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {key or self.admin_key}"},
            timeout=30,
        )

    def shot(self, page: Page, name: str) -> None:
        """Save a screenshot for docs/dashboard.md when its script asked for them."""
        folder = os.environ.get("LABLINK_SCREENSHOTS")
        if folder:
            Path(folder).mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


@pytest.fixture
def lab(tmp_path: Path, servers: list[Server]) -> Lab:
    data = tmp_path / "data"
    port = free_port()
    server = Server(data, port)
    servers.append(server)
    server.listening()
    key = (data / "admin.key").read_text().strip()
    return Lab(url=f"http://127.0.0.1:{port}", data_dir=data, admin_key=key, server=server)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        # As root (CI) chromium's sandbox cannot start: the pages are our own, on loopback.
        sandbox = ["--no-sandbox"] if os.geteuid() == 0 else []
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=sandbox)
        try:
            yield launched
        finally:
            launched.close()


def new_page(browser: Browser, **options: Any) -> Page:
    context = browser.new_context(viewport={"width": 1400, "height": 900}, **options)
    context.set_default_timeout(PAGE_TIMEOUT_MS)
    return context.new_page()


def signed_in(browser: Browser, lab: Lab, key: str | None = None, path: str = "/") -> Page:
    """A page signed in through the form with ``key`` (the admin's when None), at ``path``."""
    page = new_page(browser)
    page.goto(f"{lab.url}{path}")
    page.get_by_label("API key").fill(key or lab.admin_key)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{lab.url}{path}")
    return page
