"""The web page with API keys (issue 21): it asks for a key on the first 401, keeps it for the tab, sends
it as a Bearer header and shows thumbnails fetched with it (headless Chromium, as test_web_e2e)."""

from pathlib import Path

import pytest

from anybind.serve import ServeConfig, Service, create_app, serve_in_thread
from anybind.serve.auth import add_key

CHROMIUM = Path("/usr/bin/chromium")

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs the Debian package chromium")


def test_the_page_asks_for_the_key_and_then_shows_results(serve_small, shared_cache, tmp_path_factory):
    from playwright.sync_api import sync_playwright

    data = serve_small
    keys = tmp_path_factory.mktemp("keys") / "keys.json"
    key = add_key(keys, "page")
    svc = Service.load(data["space"], data["index"], cache=shared_cache, config=ServeConfig())
    try:
        with serve_in_thread(create_app(service=svc, api_keys=keys)) as url, sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True)
            try:
                page = browser.new_page(viewport={"width": 1100, "height": 2400})
                page.goto(url + "/")
                page.locator("#corpus", has_text="84 items").wait_for(timeout=30_000)  # /health is open
                page.fill("#q", "a dog")
                page.press("#q", "Enter")
                page.locator("#auth:not([hidden])").wait_for(timeout=30_000)
                assert "needs an API key" in page.locator("#auth-why").inner_text()
                page.fill("#key", key)
                page.press("#key", "Enter")
                page.locator("#results[aria-busy='false'] .hit").first.wait_for(timeout=30_000)
                assert page.locator("#results .hit").count() == 12
                assert page.evaluate("sessionStorage.getItem('anybind-api-key')") == key
                page.select_option("#modality", "image")
                page.locator("#results[aria-busy='false'] .hit[data-modality='image']").first.wait_for(timeout=30_000)
                page.wait_for_function(
                    "() => [...document.querySelectorAll('#results .hit img')].every(i => i.src.startsWith('blob:'))",
                    timeout=30_000)
                ok = page.locator("#results .hit img").evaluate_all(
                    "imgs => Promise.all(imgs.map(i => i.decode().then(() => i.naturalWidth > 0, () => false)))")
                assert ok and all(ok)
            finally:
                browser.close()
    finally:
        svc.close()
