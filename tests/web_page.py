"""A headless Debian Chromium page for the web tests (through Playwright), recording page errors and console
errors in ``page.problems`` so that a test can assert the page ran clean."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")


@contextmanager
def chromium_page(width: int = 1100, height: int = 2400) -> Iterator:
    """A fresh page; tall by default, so that every result is in view (thumbnails load lazily)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            pg = browser.new_page(viewport={"width": width, "height": height})
            problems: list[str] = []
            pg.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            pg.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            pg.problems = problems
            yield pg
        finally:
            browser.close()


def settled(page, timeout: int = 30_000) -> None:
    """Wait until the page's latest search has finished."""
    page.locator("#results[aria-busy='false']").wait_for(state="attached", timeout=timeout)
