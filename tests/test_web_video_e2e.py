"""The web page with a video space, end to end (headless Debian Chromium through Playwright): a dropped clip is
previewed, video results show a player whose poster is the clip's first frame."""

from pathlib import Path

import pytest

from test_video_index_serve import built  # noqa: F401 - the small video space and index (a fixture)

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs the Debian package chromium (/usr/bin/chromium)")
pytest.importorskip("av")


def test_drop_a_clip_and_see_video_results_with_posters(built):  # noqa: F811
    from playwright.sync_api import sync_playwright

    from anybind.serve import ServeConfig, Service, create_app, serve_in_thread

    root = built[0]
    svc = Service.load(root / "space", root / "ix", cache=root / "cache", config=ServeConfig())
    try:
        with serve_in_thread(create_app(service=svc)) as url, sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True)
            try:
                page = browser.new_page(viewport={"width": 1100, "height": 2400})
                problems: list[str] = []
                page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
                page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
                page.goto(url + "/")
                page.locator("#corpus", has_text="12 items").wait_for(timeout=30_000)
                page.set_input_files("#file", str(root / "c3.webm"))
                page.locator("#results[aria-busy='false']").wait_for(state="attached", timeout=30_000)
                assert page.locator("#files video").count() == 1  # the dropped clip is previewed
                page.select_option("#modality", "video")
                page.locator("#results[aria-busy='false']").wait_for(state="attached", timeout=30_000)
                first = page.locator("#results .hit").first
                assert first.get_attribute("data-id") == "v3" and first.get_attribute("data-modality") == "video"
                player = first.locator("video")
                assert player.count() == 1 and player.get_attribute("src").startswith("/items/v3")
                poster = page.request.get(url + player.get_attribute("poster"))
                assert poster.status == 200 and poster.headers["content-type"] == "image/jpeg"
                clip = page.request.get(url + player.get_attribute("src"))
                assert clip.status == 200 and clip.headers["content-type"] == "video/webm"
                assert clip.body() == (root / "c3.webm").read_bytes()
                assert page.locator("#results .hit video").count() == 6
                assert problems == []
            finally:
                browser.close()
    finally:
        svc.close()
