"""The icons corpus read from several icon themes (builder version 4): a small build of the real Debian themes
(per-theme counts that add up, every theme's licence, a byte-identical rebuild), the same caption drawn by several
themes in one split (the duplicate-aware metric ranks them as one answer; no caption leaks across splits), a theme
folder with a corrupt SVG, a dangling link and a missing context counted and skipped, a missing theme's package
installed through ``ensure_debian_package``, and every theme's package in the bootstrap script."""

from __future__ import annotations

import re
import shutil
from collections import defaultdict
from pathlib import Path

import pytest

from anybind.corpora import icons
from anybind.corpora.icons_themes import DEFAULT_THEMES, THEMES, Theme
from anybind.corpora.words import DEFAULT_WORDS, WORDS_PACKAGE
from anybind.errors import DataError

from corpus_checks import check_corpus, folder_files, needs

ROOT = Path(__file__).resolve().parents[1]
MISSING = [t.package for t in THEMES.values() if not Path(t.root).is_dir()]
needs_themes = pytest.mark.skipif(bool(MISSING), reason=f"apt-get install -y {' '.join(map(str, MISSING))}")
needs_words = needs(Path(DEFAULT_WORDS), WORDS_PACKAGE)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    if MISSING or not Path(DEFAULT_WORDS).is_file():
        pytest.skip(f"apt-get install -y {' '.join(map(str, MISSING))} {WORDS_PACKAGE}")
    out = tmp_path_factory.mktemp("icons") / "icons"
    summary = icons.build_icons(out, limit=12, size=48, progress=False)
    return out, summary


def test_small_build_of_every_theme(small):
    out, _ = small
    recs, meta = check_corpus(out, "icons", decode=True)
    per = meta["source"]["themes"]
    assert list(per) == list(DEFAULT_THEMES) and meta["builder"]["version"] == "4"
    assert sum(t["svg"] for t in per.values()) == meta["files"]["svg"]
    assert sum(t["kept"] for t in per.values()) == len(recs)
    for key, t in per.items():  # each theme: every file a record or dropped for one reason
        assert 0 < t["svg"] <= 12 * 4 and t["kept"] > 0 and not t["missing_contexts"]
        assert t["kept"] + sum(t["dropped"].values()) == t["svg"], key
        assert t["version"] not in ("", "unknown") and t["package"] == THEMES[key].package
    for r in recs:
        theme, ctx, _ = r["id"].split("/")
        assert r["labels"] == {"context": ctx, "theme": theme} and r["image"] == f"media/{r['id']}.png"
    lic = (out / "LICENSE").read_text(encoding="utf-8")
    for t in THEMES.values():  # every theme's copyright file
        assert f"===== {t.package} (" in lic
    heads = {"Upstream-Name: breeze-icons", "Upstream-Name: Tango icon theme", "License: public-domain"}
    assert heads <= set(lic.splitlines())


def test_same_caption_same_split_across_themes(small):
    out, _ = small
    recs, _ = check_corpus(out, "icons")
    by_cap: dict[str, set[str]] = defaultdict(set)
    themes: dict[str, set[str]] = defaultdict(set)
    for r in recs:
        by_cap[r["text"]].add(r["split"])
        themes[r["text"]].add(r["labels"]["theme"])
    shared = [c for c, ts in themes.items() if len(ts) > 1]
    assert shared, "no caption drawn by two themes: the check below would be empty"
    assert all(len(s) == 1 for s in by_cap.values())
    # no caption (nor alias) of one split is a caption of another: a test query never has a train twin
    split_texts: dict[str, set[str]] = defaultdict(set)
    for r in recs:
        split_texts[r["split"]].update([r["text"], *filter(None, r.get("text_aliases", "").split("; "))])
    assert not (split_texts["train"] & split_texts["test"]) and not (split_texts["val"] & split_texts["test"])


def test_duplicate_aware_metric_counts_a_caption_once(small):
    """Two themes' pictures of one caption are interchangeable answers for the project's metric (content keys =
    captions): a query that finds the other theme's picture of its caption is right, not ranked below it."""
    import numpy as np

    from anybind.metrics import pair_recalls

    out, _ = small
    recs, _ = check_corpus(out, "icons")
    caps = [r["text"] for r in recs]
    twin = [max(j for j, c in enumerate(caps) if c == cap) for cap in caps]  # the last picture of the caption
    assert any(t != i for i, t in enumerate(twin))
    gallery = np.eye(len(recs), dtype=np.float32)
    queries = gallery[twin]
    assert pair_recalls(queries, gallery, query_keys=caps)["R@1"] == 1.0
    assert pair_recalls(queries, gallery)["R@1"] < 1.0  # without the keys, a twin counts as a miss


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)


@needs_themes
@needs_words
def test_corrupt_file_dangling_link_missing_context(tmp_path):
    """A context-first theme (Breeze's files) with a cut SVG, a not-SVG and a dangling link, beside a size-first
    theme (Tango's files) without a ``places`` folder: all counted, listed and skipped, never a crash."""
    breeze, tango = Path(THEMES["breeze"].root), Path(THEMES["tango"].root)
    a, b = tmp_path / "a", tmp_path / "b"
    for n in ("audio-card", "audio-headphones", "computer"):
        _copy(breeze / "devices/64" / f"{n}.svg", a / "devices/64" / f"{n}.svg")
    (a / "devices/64/computer.svg").write_bytes((breeze / "devices/64/computer.svg").read_bytes()[:150])
    (a / "devices/64/printer.svg").write_bytes(b"\x89PNG not an svg")
    (a / "devices/64/ghost.svg").symlink_to("no-such-file.svg")
    _copy(breeze / "places/64/folder.svg", a / "places/64/folder.svg")
    _copy(tango / "scalable/devices/audio-card.svg", b / "scalable/devices/audio-card.svg")
    ta = Theme("a", None, str(a), (("devices", "devices/64"), ("places", "places/64")))
    tb = Theme("b", None, str(b), (("devices", "scalable/devices"), ("places", "scalable/places")))
    out = tmp_path / "out"
    summary = icons.build_icons(out, themes=(ta, tb), contexts=("devices", "places"), size=32, progress=False)
    recs, meta = check_corpus(out, "icons", decode=True)
    bad = {"a/devices/computer", "a/devices/printer"}
    assert set(meta["bad_files"]) == bad == set(meta["skipped_ids"]["bad_render"])
    assert all("\n" not in why and str(tmp_path) not in why for why in meta["bad_files"].values())
    assert meta["source"]["themes"]["a"]["links"] == {"broken": 1, "total": 1}
    assert meta["source"]["themes"]["b"]["missing_contexts"] == ["places"]
    assert meta["source"]["themes"]["a"]["dropped"] == {"bad_render": 2} and summary.skipped["bad_render"] == 2
    assert {r["id"]: r["text"] for r in recs} == {
        "a/devices/audio-card": "audio card", "a/devices/audio-headphones": "audio headphones",
        "a/places/folder": "folder", "b/devices/audio-card": "audio card"}  # fmt: skip
    assert len({r["split"] for r in recs if r["text"] == "audio card"}) == 1
    again = tmp_path / "again"
    icons.build_icons(again, themes=(ta, tb), contexts=("devices", "places"), size=32, progress=False)
    assert folder_files(again) == folder_files(out)


@needs_themes
@needs_words
def test_a_missing_theme_is_installed_from_its_package(tmp_path, monkeypatch):
    """A theme whose folder is missing goes through ``ensure_debian_package`` (as papirus does): here a stand-in
    that "installs" Tango's files; an install that leaves the folder missing is one line naming the package."""
    calls = []
    root = tmp_path / "usr-share-icons" / "fake"

    def fake_install(pkg, probe):
        calls.append((pkg, str(probe)))
        if pkg == "fake-icon-theme":
            _copy(Path(THEMES["tango"].root) / "scalable/devices/computer.svg", root / "scalable/devices/computer.svg")
        return Path(probe)

    monkeypatch.setattr(icons, "ensure_debian_package", fake_install)
    fake = Theme("fake", "fake-icon-theme", str(root), (("devices", "scalable/devices"),))
    out = tmp_path / "out"
    icons.build_icons(out, themes=(fake,), contexts=("devices",), size=32, progress=False)
    assert calls == [("fake-icon-theme", str(root))]
    assert [r["id"] for r in check_corpus(out, "icons")[0]] == ["fake/devices/computer"]
    gone = Theme("gone", "gone-icon-theme", str(tmp_path / "gone"), (("devices", "scalable/devices"),))
    with pytest.raises(DataError) as e:
        icons.build_icons(tmp_path / "o2", themes=(gone,), contexts=("devices",), progress=False)
    assert "\n" not in str(e.value) and "apt-get install -y gone-icon-theme" in str(e.value)


def test_unknown_theme_is_one_line(tmp_path):
    with pytest.raises(DataError) as e:
        icons.build_icons(tmp_path / "out", themes=("papirus", "nope"), progress=False)
    assert "'nope'" in str(e.value) and "breeze" in str(e.value) and not (tmp_path / "out").exists()


def test_every_theme_package_is_bootstrapped():
    script = (ROOT / "scripts" / "bootstrap-debian.sh").read_text(encoding="utf-8")
    pkgs = {w for line in script.splitlines() if line.startswith("PKGS") for w in re.split(r"[\s()=+]+", line)}
    assert {t.package for t in THEMES.values()} <= pkgs


def _svg(colour: str) -> bytes:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16"><rect width="16" height="16" '
            f'fill="{colour}"/></svg>').encode()


@needs_words
def test_a_name_two_themes_caption_differently_is_in_one_split(tmp_path):
    """Theme ``a`` draws ``media-optical`` and links ``drive-optical`` to it; theme ``b`` draws ``drive-optical``
    itself.  The captions differ ("media optical" train, "drive optical" val by their own hash) but the name is
    shared: both pictures are in one split, else a val/test caption is a train record's caption (its alias)."""
    a, b = tmp_path / "a" / "devices", tmp_path / "b" / "devices"
    a.mkdir(parents=True), b.mkdir(parents=True)
    (a / "media-optical.svg").write_bytes(_svg("red"))
    (a / "drive-optical.svg").symlink_to("media-optical.svg")
    (a / "printer.svg").write_bytes(_svg("green"))
    (b / "drive-optical.svg").write_bytes(_svg("blue"))
    ta = Theme("a", None, str(tmp_path / "a"), (("devices", "devices"),))
    tb = Theme("b", None, str(tmp_path / "b"), (("devices", "devices"),))
    out = tmp_path / "out"
    icons.build_icons(out, themes=(ta, tb), contexts=("devices",), size=16, install=False, progress=False)
    recs, _ = check_corpus(out, "icons")
    by_id = {r["id"]: r for r in recs}
    assert by_id["a/devices/media-optical"]["text_aliases"] == "drive optical"
    assert by_id["b/devices/drive-optical"]["text"] == "drive optical"
    splits: dict[str, set[str]] = defaultdict(set)
    for r in recs:
        for cap in [r["text"], *r.get("text_aliases", "").split("; ")]:
            if cap:
                splits[cap].add(r["split"])
    assert all(len(s) == 1 for s in splits.values()), dict(splits)
    assert by_id["a/devices/printer"]["split"] == "val"  # a caption no other record shares keeps its own hash split
