"""What a user types into the job form while the swap of its trigger's or type's fields is on
its way stays typed (issue 16): the swap's answer is held back by the test (``page.route``)
until the user has typed, so the race a loaded machine makes now and then happens every
time. Against a real `lablink serve`, in Debian's chromium."""

from __future__ import annotations

import pytest
from playwright.sync_api import Browser, Page, Route, expect

from tests.support.browser import Lab, signed_in
from tests.support.eventually import eventually_sync

pytestmark = [pytest.mark.e2e, pytest.mark.nats, pytest.mark.slow, pytest.mark.browser]


class Held:
    """The swap requests of one URL, held until released."""

    def __init__(self, page: Page, url: str) -> None:
        self.page = page
        self.routes: list[Route] = []
        page.route(url, self._hold)

    def _hold(self, route: Route) -> None:
        self.routes.append(route)

    def count(self) -> int:
        self.page.evaluate("0")  # Playwright hands a route to its handler while it is called
        return len(self.routes)

    def wait_for(self, count: int) -> None:
        eventually_sync(self.count, until=lambda n: n >= count, what=f"{count} held request(s)")

    def release(self) -> int:
        """Let every held request through; how many there were."""
        released = len(self.routes)
        while self.routes:
            self.routes.pop(0).continue_()
        return released


def settled(page: Page) -> None:
    """No htmx request on its way any more (htmx marks the element that sent one)."""
    expect(page.locator("#job-form .htmx-request, #job-form.htmx-request")).to_have_count(0)


def test_what_is_typed_while_a_fields_swap_is_on_its_way_is_kept(
    browser: Browser, lab: Lab
) -> None:
    page = signed_in(browser, lab, path="/jobs/new")
    expect(page.get_by_label("Hours")).to_be_visible()
    page.evaluate("window.__marker = 1")

    # The trigger's fields: the time zone is in the interval's and the daily's.
    trigger = Held(page, "**/fragments/form/trigger")
    page.get_by_label("Trigger").select_option("daily")
    trigger.wait_for(1)
    page.get_by_label("Time zone").fill("Europe/Berlin")
    trigger.release()
    expect(page.get_by_label("Time of day")).to_be_visible()
    settled(page)
    expect(page.get_by_label("Time zone")).to_have_value("Europe/Berlin")
    expect(page.get_by_label("Trigger")).to_have_value("daily")

    # The type's fields: a measurement's command is a command's command too.
    kind = Held(page, "**/fragments/form/parameters")
    page.get_by_label("Type of job").select_option("command")
    kind.wait_for(1)
    page.get_by_label("Command", exact=True).fill("set_current")
    page.get_by_label("Command parameters (JSON object)").fill('{"value": 2.5}')
    kind.release()
    expect(page.locator("#parameter-fields legend")).to_contain_text("(command)")
    settled(page)
    expect(page.get_by_label("Command", exact=True)).to_have_value("set_current")
    expect(page.get_by_label("Command parameters (JSON object)")).to_have_value('{"value": 2.5}')

    # The trigger chosen again while the first choice's fields are on their way: the fields
    # shown at the end are the last choice's, and the time zone typed meanwhile stays.
    page.get_by_label("Trigger").select_option("weekly")
    trigger.wait_for(1)
    page.get_by_label("Time zone").fill("America/New_York")
    page.get_by_label("Trigger").select_option("monthly")
    # Each request the page sends now is let through, until the last choice's fields are in.
    eventually_sync(
        lambda: (
            trigger.release(),
            page.get_by_label("Day of the month").count(),
            page.locator("#job-form .htmx-request").count(),
        )[1:],
        until=lambda found: found == (1, 0),
        what="the monthly trigger's fields swapped in, no request on its way",
    )
    expect(page.get_by_label("Trigger")).to_have_value("monthly")
    expect(page.get_by_label("Day of the week")).to_have_count(0)
    expect(page.get_by_label("Time zone")).to_have_value("America/New_York")

    # What was kept is what the form sends: the preview's runs are in the zone typed.
    page.get_by_label("Name", exact=True).fill("Mid-month check")
    page.get_by_label("…or one no agent has reported yet").fill("power_supply_1")
    page.get_by_label("Day of the month").fill("15")
    page.get_by_label("Time of day").fill("08:00:00")
    runs = page.locator("#preview ol.next-runs li time")
    expect(runs).to_have_count(5)
    expect(runs.first).to_have_attribute("data-zone", "America/New_York")
    assert page.evaluate("window.__marker") == 1
