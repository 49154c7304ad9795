"""Signing in from a real browser against a real `lablink serve`: the key from admin.key buys
a session; the overview shows today's figures and the components' health; sign-out ends it."""

from __future__ import annotations

import pytest
from playwright.sync_api import Browser, expect

from tests.support.browser import Lab, new_page, signed_in

pytestmark = [pytest.mark.e2e, pytest.mark.nats, pytest.mark.slow, pytest.mark.browser]


def test_sign_in_with_the_printed_key_then_sign_out(browser: Browser, lab: Lab) -> None:
    page = new_page(browser)
    page.goto(lab.url)
    expect(page).to_have_url(f"{lab.url}/signin?next=/")
    page.get_by_label("API key").fill("llk_wrong")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("unknown or revoked")

    page = signed_in(browser, lab)
    expect(page.locator(".identity")).to_contain_text("admin")
    expect(page.get_by_role("heading", name="Today")).to_be_visible()
    expect(page.locator("#live-state")).to_have_attribute("data-state", "open")
    health = lab.api().get("/health").json()
    for name, component in health["components"].items():
        expect(page.locator("ul.health")).to_contain_text(f"{component['state']} {name}")
    lab.shot(page, "overview")

    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(f"{lab.url}/signin")
    page.goto(lab.url)
    expect(page).to_have_url(f"{lab.url}/signin?next=/")
