"""The page's caption actions end to end (issue 18): headless Chromium against the service with a captioner,
over the drawn-shapes space of tests/caption_serve_data.py.  A dropped image gets the caption the library gives
it; a result card's "caption" button shows the caption of that stored item; a service without a captioner
shows no caption action."""

from pathlib import Path

import pytest
from caption_serve_data import caption_site
from web_page import CHROMIUM, chromium_page, settled

from anybind.caption import Captioner
from anybind.serve import ServeConfig, Service, create_app, serve_in_thread

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="headless end-to-end test needs the Debian package chromium (/usr/bin/chromium): apt-get install chromium",
)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    site = caption_site(tmp_path_factory.mktemp("caption-site"))
    svc = Service.load(site["space"], site["index"], cache=site["cache"], config=ServeConfig())
    cap = Captioner.load(site["captioner"], svc.space, lm=site["lm"])
    try:
        with serve_in_thread(create_app(service=svc, captioner=cap)) as url, \
                serve_in_thread(create_app(service=svc)) as plain:
            yield url, plain, site, cap
    finally:
        svc.close()


@pytest.fixture
def page():
    with chromium_page() as pg:
        yield pg


def _settled(page) -> None:
    settled(page, timeout=60000)


def test_caption_a_dropped_image_and_a_result(served, page):
    url, _, site, cap = served
    rec = [r for r in site["records"] if r["split"] == "test"][4]
    page.goto(url + "/")
    page.locator("#caption-go").wait_for(timeout=30_000)  # the service has a captioner: the action is offered
    page.set_input_files("#file", rec["image"])
    _settled(page)
    page.click("#caption-go")
    page.locator("#captions[aria-busy='false'] q").wait_for(timeout=60_000)
    want = cap.caption("image", [rec["image"]], method="beam")[0]
    assert page.locator("#captions .caption .name").inner_text() == Path(rec["image"]).name
    assert page.locator("#captions q").inner_text() == want and want
    # each image result can be captioned; text results cannot
    page.select_option("#modality", "")
    _settled(page)
    cards = page.locator("#results .hit")
    mods = cards.evaluate_all("els => els.map(e => e.dataset.modality)")
    buttons = cards.evaluate_all("els => els.map(e => !!e.querySelector('.cap-btn'))")
    assert buttons == [m == "image" for m in mods] and any(buttons)
    card = page.locator("#results .hit[data-modality='image']").first
    hit_id = card.get_attribute("data-id")
    card.locator(".cap-btn").click()
    card.locator("q.caption").filter(has_not_text="\u2026").wait_for(timeout=60_000)
    hit_image = next(r["image"] for r in site["records"] if r["id"] == hit_id)
    assert card.locator("q.caption").inner_text() == cap.caption("image", [hit_image], method="beam")[0]
    assert page.problems == []


def test_no_caption_action_without_a_captioner(served, page):
    _, plain, site, _ = served
    page.goto(plain + "/")
    page.locator("#corpus", has_text="items").wait_for(timeout=30_000)
    page.fill("#q", "Two red stars.")
    page.press("#q", "Enter")
    _settled(page)
    page.wait_for_load_state("networkidle")
    assert page.locator("#results .hit").count() > 0
    assert page.locator("#caption-go").count() == 0 and page.locator(".cap-btn").count() == 0
    assert page.problems == []
