"""A screen left open across a restart of `lablink serve`: sessions live in the server's
memory, so the restart signs it out; the page must notice (its live stream is gone and made
anew) and go to the sign-in form by itself, never sit on stale cards saying "reconnecting"."""

from __future__ import annotations

import pytest
from playwright.sync_api import Browser, expect

from tests.support.browser import Lab, signed_in
from tests.support.serve import Server

pytestmark = [pytest.mark.e2e, pytest.mark.nats, pytest.mark.slow, pytest.mark.browser]


def test_a_screen_left_open_across_a_restart_asks_to_sign_in_again(
    browser: Browser, lab: Lab, servers: list[Server]
) -> None:
    page = signed_in(browser, lab)
    expect(page.locator("#live-state")).to_have_attribute("data-state", "open")
    page.evaluate("window.__marker = 1")

    lab.server.terminate()
    assert lab.server.proc.wait(timeout=60) == 0
    expect(page.locator("#live-state")).to_have_attribute("data-state", "closed")
    restarted = Server(lab.data_dir, lab.server.port)
    servers.append(restarted)
    restarted.listening()

    # No one touched the page: it found its session gone and went to sign in, back to "/".
    expect(page).to_have_url(f"{lab.url}/signin?next=/", timeout=60_000)
    page.get_by_label("API key").fill(lab.admin_key)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{lab.url}/")
    expect(page.locator("#live-state")).to_have_attribute("data-state", "open")
