"""The dashboard's browser fixtures (tests/support/browser.py)."""

from tests.support.browser import browser, lab  # noqa: F401
