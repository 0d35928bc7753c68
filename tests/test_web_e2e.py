"""The web page end to end: headless Chromium (Debian `chromium`, driven by Playwright; no browser download)
against the real service on a loopback port, over a small real space + index."""

from pathlib import Path

import pytest
from web_page import CHROMIUM, chromium_page, settled

from anybind.serve import ServeConfig, Service, create_app, serve_in_thread

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="headless end-to-end test needs the Debian package chromium (/usr/bin/chromium): apt-get install chromium",
)


@pytest.fixture(scope="module")
def site(serve_small, shared_cache):
    data = serve_small
    svc = Service.load(data["space"], data["index"], cache=shared_cache, config=ServeConfig())
    try:
        with serve_in_thread(create_app(service=svc)) as url:
            yield url, data
    finally:
        svc.close()


@pytest.fixture
def page(site):
    with chromium_page() as pg:
        yield pg


def _settled(page) -> None:
    settled(page, timeout=30000)


def _loaded_images(page) -> list[bool]:
    """Whether each result thumbnail decoded to a real picture (waits for them; a broken one is False)."""
    return page.locator("#results .hit img").evaluate_all(
        "imgs => Promise.all(imgs.map(i => i.decode().then(() => i.naturalWidth > 0, () => false)))"
    )


def test_type_a_query_and_see_result_images(site, page):
    url, data = site
    page.goto(url + "/")
    page.locator("#corpus", has_text="84 items").wait_for(timeout=30_000)  # /health answered
    texts = [r.values["text"] for r in data["records"]]
    rec = next(r for r in data["records"] if texts.count(r.values["text"]) == 1)  # a caption no other stamp has
    caption = rec.values["text"]
    page.fill("#q", caption)
    page.press("#q", "Enter")
    _settled(page)
    assert "results for" in page.locator("#status").inner_text()
    hits = page.locator("#results .hit")
    assert hits.count() == 12
    assert hits.first.get_attribute("data-id") == rec.id  # its own caption, score 1.000
    assert hits.first.locator(".score").inner_text() == "1.000"
    # only images: every card shows a thumbnail that the browser actually decoded
    page.select_option("#modality", "image")
    _settled(page)
    cards = page.locator("#results .hit")
    assert cards.count() == 12
    assert set(cards.evaluate_all("els => els.map(e => e.dataset.modality)")) == {"image"}
    assert all(_loaded_images(page)) and len(_loaded_images(page)) == 12
    assert page.problems == []


def test_drop_a_sound_and_see_results(site, page):
    url, data = site
    rec = data["audio"][0]
    page.goto(url + "/")
    page.locator("#corpus", has_text="84 items").wait_for(timeout=30_000)
    page.set_input_files("#file", rec.values["audio"])  # what a drop on the page does: the file goes to the query
    _settled(page)
    assert Path(rec.values["audio"]).name in page.locator("#status").inner_text()
    assert page.locator("#files audio").count() == 1  # the dropped sound is shown, playable
    first = page.locator("#results .hit").first
    assert first.get_attribute("data-id") == rec.id and first.get_attribute("data-modality") == "audio"
    player = first.locator("audio")
    src = player.get_attribute("src")
    res = page.request.get(url + src)
    assert res.status == 200 and res.headers["content-type"] == "audio/ogg"
    # image results of the sound: thumbnails load
    page.select_option("#modality", "image")
    _settled(page)
    cards = page.locator("#results .hit")
    assert set(cards.evaluate_all("els => els.map(e => e.dataset.modality)")) == {"image"}
    assert all(_loaded_images(page)) and len(_loaded_images(page)) == 12
    # a file that is no image or sound: the page shows the service's message
    bad = Path(data["manifest"]).parent / "notes.png"
    bad.write_bytes(b"just some text, not a picture")
    page.set_input_files("#file", str(bad))
    _settled(page)
    assert "not an image, a sound or a video" in page.locator("#status.error").inner_text()
    # the refused query leaves the previous results on screen (they were cleared): the error is beside them,
    # and they are marked as the previous query's (dimmed, with a note in the status line)
    assert page.locator("#results .hit").count() == 12
    assert page.locator("#results.stale").count() == 1
    assert "results of the previous query" in page.locator("#status .stale-note").inner_text()
    # the next query that answers shows its own results: no longer marked stale, no note
    page.set_input_files("#file", rec.values["audio"])
    _settled(page)
    assert Path(rec.values["audio"]).name in page.locator("#status").inner_text()
    assert page.locator("#results.stale").count() == 0 and page.locator("#status .stale-note").count() == 0
    assert [p for p in page.problems if "415" not in p] == []  # the browser logs the 415 itself


def test_a_refused_classify_upload_leaves_the_results_shown_and_shows_the_error(site, page):
    """The upload's search answers, its zero-shot classification is refused (a label over the 200 characters a
    label may have): the hits it found stay on screen (the page cleared them) and the status shows the refusal.
    The hits are this query's (not marked stale); the classes shown are the previous query's (marked stale)."""
    url, data = site
    rec, other = data["records"][0], data["records"][1]
    page.goto(url + "/")
    page.locator("#corpus", has_text="84 items").wait_for(timeout=30_000)
    page.fill("#labels", "dog, cat")
    page.set_input_files("#file", other.values["image"])
    _settled(page)
    assert page.locator("#classes .row").count() == 2 and page.locator("#classes.stale").count() == 0
    page.fill("#labels", "dog, " + "x" * 201)
    page.set_input_files("#file", rec.values["image"])
    _settled(page)
    assert "201 characters: at most 200" in page.locator("#status.error").inner_text()
    hits = page.locator("#results .hit")
    assert hits.count() == 12 and hits.first.get_attribute("data-id") == rec.id
    assert page.locator("#results.stale").count() == 0  # this upload's own hits
    assert page.locator("#classes.stale .row").count() == 2  # the first upload's classes, kept and marked
    note = page.locator("#status .stale-note").inner_text()
    assert "classes of the previous query" in note and "results of" not in note
    assert [p for p in page.problems if "400" not in p] == []  # the browser logs the 400 itself


def test_rank_every_modality_by_calibrated_probability(site, page):
    """A calibrated space: the page offers 'rank by P(match)'; checked, the image and sound hits of a text query
    come first, ordered by their P(match) badge (text hits, whose pair has no calibration, follow)."""
    url, data = site
    page.goto(url + "/")
    page.locator("#corpus", has_text="84 items").wait_for(timeout=30_000)
    assert page.locator("#byprob").is_visible()
    page.fill("#q", "a bird")
    page.press("#q", "Enter")
    _settled(page)
    by_score = page.locator("#results .hit").evaluate_all("els => els.map(e => e.dataset.modality)")
    page.check("#byprob")
    _settled(page)
    cards = page.locator("#results .hit")
    mods = cards.evaluate_all("els => els.map(e => e.dataset.modality)")
    probs = cards.evaluate_all("els => els.map(e => { const p = e.querySelector('.prob');"
                               " return p ? Number(p.textContent.replace(/[^0-9]/g, '')) : null; })")
    assert len(mods) == 12 and mods[0] in ("image", "audio") and probs[0] is not None
    calibrated = [p for p in probs if p is not None]
    assert probs[: len(calibrated)] == calibrated and calibrated == sorted(calibrated, reverse=True)
    assert mods.count("text") < by_score.count("text") or "text" not in by_score  # texts no longer crowd the top
    assert page.problems == []


def _why_source(page, url, caption):
    """Search ``caption``, open the first hit's "why?" and return its vocabulary label (source, text)."""
    page.goto(url + "/")
    page.locator("#corpus", has_text="84 items").wait_for(timeout=30_000)
    page.fill("#q", caption)
    page.press("#q", "Enter")
    _settled(page)
    first = page.locator("#results .hit").first
    first.locator(".why-btn").click()
    label = first.locator(".why .near .vocab")
    label.wait_for(timeout=30_000)
    assert first.locator(".why .drops span").count() > 0
    return label.get_attribute("data-source"), label.inner_text()


def test_why_this_result_names_where_its_nearest_words_came_from(site, page, shared_cache, tmp_path):
    """The "why?" panel labels its nearest words: the index's texts' words (the site's space stores no
    vocabulary), or the vocabulary stored with the space, with their count."""
    from anybind.explain import vocabulary
    from anybind.space import Space
    from anybind.vocabulary import embed_vocabulary

    url, data = site
    caption = data["records"][0].values["text"]
    source, text = _why_source(page, url, caption)
    assert source == "index" and "indexed texts' words" in text
    space = Space.load(data["space"])
    words = vocabulary(data["records"])
    space.vocabulary = embed_vocabulary(space, words, cache=shared_cache)
    space.save(tmp_path / "space")
    svc = Service.load(tmp_path / "space", data["index"], cache=shared_cache, config=ServeConfig())
    try:
        with serve_in_thread(create_app(service=svc)) as url2:
            source, text = _why_source(page, url2, caption)
    finally:
        svc.close()
    assert source == "space" and f"(stored vocabulary, {len(words)} words)" in text
    assert page.problems == []
