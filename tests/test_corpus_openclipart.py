"""The Open Clip Art corpus: title cleaning and the non-descriptive-title rule, a made-up SVG folder
(tests/corpus_sources.py), then the real openclipart-svg package (skipped with the command to run when missing).
Nothing is encoded with a model."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anybind.corpora import openclipart as oc
from anybind.data.manifest import load_manifest
from anybind.data.media import load_image
from anybind.errors import DataError

from corpus_checks import check_corpus, folder_files, needs

OC_DIR = Path(oc.DEFAULT_SVG_DIR)
WORDS = Path(oc.DEFAULT_WORDS)
needs_oc = needs(OC_DIR, oc.PACKAGE)
needs_words = needs(WORDS, oc.WORDS_PACKAGE)


@pytest.mark.parametrize(
    "raw, clean",
    [
        ("arrow-up-green", "arrow up green"),
        ("double_note_two", "double note two"),
        ("Viet_nam", "Viet nam"),
        ("boat2", "boat"),
        ("Leone 02", "Leone"),
        ("filmPhoto1", "film Photo"),
        ("BlueMan#208", "Blue Man#208"),
        ("eMule", "eMule"),
        ("Miguel S&amp;Atilde;&amp;iexcl;nchez", "Miguel Sánchez"),  # as ElementTree reads the file
        ("L&Atilde;&copy;zard", "Lézard"),
        ("  Trumpet  B Flat\n(B and W) ", "Trumpet B Flat (B and W)"),
        ("Hotel Icon 24 Hour Room Service", "Hotel Icon 24 Hour Room Service"),
        ("T-shirt", "T shirt"),
        ("t-shirt with logo", "t-shirt with logo"),
        (None, ""),
    ],
)
def test_clean_title(raw, clean):
    assert oc.clean_title(raw) == clean


WORDLIST = frozenset(
    "a simple pig dog head stop sign rhinoceros man in chair thinking green mug of tea brunei tux belize "
    "flag blue gun bird boat horse".split()
)


@pytest.mark.parametrize(
    "title, creator, share, reason",
    [
        ("A simple pig", "Hermann Schwarting", 1, None),
        ("stop signs", None, 1, None),  # plural of a known word
        ("Rhinoceros 3D", None, 1, None),  # 3D is a word, not an identifier
        ("", None, 0, "no_title"),
        ("Clipart by Nicu Buculei - jigsaw red", "Nicu Buculei", 1, "author_title"),
        ("Lumen Design Studio", "Lumen Design Studio", 1, "author_title"),
        (
            "Chalet di montagna Architetto Francesco Rollandin",
            "Architetto Francesco Rollandin",
            1,
            "author_title",
        ),
        ("Part of the Flat Icon Collection (Wed Aug 25 23:29:46 2004)", "Danny Allen", 1, "collection_title"),
        ("Lemon SVG theme", None, 1, "collection_title"),
        ("gramastar", None, 1375, "collection_title"),
        ("dog head", None, 10, "collection_title"),  # shared by 10 drawings: names a set
        ("dog head", None, 9, None),
        ("Blue Man#208", None, 1, "file_like_title"),
        ("p2p", None, 1, "file_like_title"),
        ("MPCAD Box 40x30x80", None, 1, "file_like_title"),
        ("M", None, 1, "no_words"),
        ("Cavallo", None, 1, "not_english"),
        ("flamme nue interdite", None, 1, "not_english"),
        ("zielony kubek herbaty - green mug of tea", None, 1, None),  # 4 of 7 words known
        ("Brunei Darussalam", None, 1, None),  # half known: kept
    ],
)
def test_title_problem(title, creator, share, reason):
    assert oc.title_problem(title, creator, share, WORDLIST) == reason


def test_title_problem_without_word_list():
    assert oc.title_problem("Cavallo", None, 1, None) is None  # rule off, as corpus.json then says


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_clean_title_and_rule_total(raw):
    t = oc.clean_title(raw)
    assert t == t.strip() and "  " not in t and "_" not in t and "\n" not in t
    assert oc.title_problem(t, raw[:10], 1, WORDLIST) in (None, *oc.TITLE_REASONS)


def test_openclipart_mini_build(mini_oc, tmp_path):
    root, words = mini_oc
    out = tmp_path / "out"
    summary = oc.build_openclipart(
        out, svg_dir=root, check_sample=-1, words=words, max_title_share=3, progress=True
    )
    recs, meta = check_corpus(out, "openclipart")
    by_id = {r["id"]: r for r in recs}
    assert sorted(by_id) == ["animals/pets/cat", "animals/pets/dog_01", "animals/pets/late_root"]
    assert summary.skipped == {
        "author_title": 1, "bad_svg": 1, "collection_title": 3, "duplicate": 1, "file_like_title": 1,
        "no_title": 1, "not_english": 1, "svg_entities": 1, "svg_no_size": 1, "svg_unsupported": 1, "symlink": 1,
    }  # fmt: skip
    assert meta["duplicate_of"] == {"animals/dog_01": "animals/pets/dog_01"}
    assert meta["skipped_ids"]["symlink"] == ["animals/pets/cat_link"]
    assert meta["title_rule"]["dropped"] == {
        "no_title": 1, "author_title": 1, "collection_title": 3, "file_like_title": 1, "no_words": 0, "not_english": 1,
    }  # fmt: skip
    assert meta["title_rule"]["examples"]["not_english"] == ["'Cavallo'"]
    assert meta["render_check"]["sampled"] == meta["render_check"]["of"] == 3
    assert meta["render_check"]["failed"] == 0 and meta["files"]["svg"] == 16
    dog = by_id["animals/pets/dog_01"]
    assert (
        dog["text"] == "Dog"
        and dog["text_keywords"] == "pet, dog"
        and dog["image"] == "media/animals/pets/dog_01.svg"
    )
    assert dog["labels"] == {"category": "animals/pets", "top": "animals"} and dog["meta"] == {
        "creator": "Ann Artist"
    }
    assert by_id["animals/pets/cat"]["text"] == "cat"  # cat_2 -> cat
    assert meta["problems"] == {"title_cleaned": 1}
    man = load_manifest(out / "manifest.jsonl", strict=True)  # every kept SVG rasterises
    assert len(man.records) == 3
    before = folder_files(out)
    oc.build_openclipart(out, svg_dir=root, check_sample=-1, words=words, max_title_share=3, progress=False)
    assert folder_files(out) == before


def test_openclipart_no_copy_and_sample(mini_oc, tmp_path):
    root, words = mini_oc
    out = tmp_path / "nested" / "out"
    oc.build_openclipart(
        out, svg_dir=root, copy_media=False, check_sample=1, words=None, max_title_share=3, progress=False
    )
    recs, meta = check_corpus(out, "openclipart")
    assert not (out / "media").exists() and meta["render_check"]["sampled"] == 1
    ids = {r["id"] for r in recs}
    assert (
        "animals/pets/italian" in ids and "off" in meta["title_rule"]["word_list"]
    )  # no word list: rule off
    r = next(r for r in recs if r["id"] == "animals/pets/italian")
    assert (out / r["image"]).resolve() == (root / "animals/pets/italian.svg").resolve()


def test_openclipart_bad_render_is_skipped(mini_oc, tmp_path, monkeypatch):
    root, words = mini_oc
    from anybind.data import media

    real = media.load_image

    def picky(path, size=None):
        if "late_root" in str(path):
            raise DataError(f"{path}: corrupt SVG (made up)")
        return real(path, size)

    monkeypatch.setattr(media, "load_image", picky)
    out = tmp_path / "out"
    oc.build_openclipart(out, svg_dir=root, check_sample=-1, words=words, max_title_share=3, progress=False)
    recs, meta = check_corpus(out, "openclipart")
    assert "animals/pets/late_root" not in {r["id"] for r in recs}
    assert (
        meta["skipped_ids"]["bad_render"] == ["animals/pets/late_root"]
        and meta["render_check"]["failed"] == 1
    )
    assert "made up" in meta["bad_files"]["animals/pets/late_root"]


def test_openclipart_refuses_foreign_folder(mini_oc, tmp_path):
    root, _ = mini_oc
    out = tmp_path / "important"
    out.mkdir()
    (out / "thesis.tex").write_text("keep")
    with pytest.raises(DataError, match="refusing to replace"):
        oc.build_openclipart(out, svg_dir=root, progress=False)
    assert (out / "thesis.tex").read_text() == "keep"
    with pytest.raises(DataError, match="apt-get install -y openclipart-svg"):
        oc.build_openclipart(tmp_path / "o", svg_dir=tmp_path / "nope", progress=False)


def test_load_image_finds_a_late_svg_root(tmp_path):
    p = tmp_path / "late.svg"
    p.write_text(
        '<?xml version="1.0"?>\n'
        + "<!-- a comment -->" * 300
        + '<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"><rect width="8" height="8" fill="red"/></svg>'
    )
    img = load_image(p, size=16)
    assert img.size == (16, 16) and img.getpixel((8, 8))[0] > 200


REAL_OC = [
    "animals/mammals/a_simple_pig_01",  # kept
    "animals/2_dead_frogs_lumen_desig_01",  # duplicate of the amphibian copy
    "animals/amphibian/2_dead_frogs_lumen_desig_01",
    "shapes/stars/star_49pt10step",  # "gramastar": a made-up name
    "computer/icons/flat-theme/action/3leftarrow",  # "Part of the Flat Icon Collection (...)"
    "people/stickmen/blueman_208_01",  # "BlueMan#208"
    "shapes/jigsaw/jigsaw_green_13",  # "Clipart by Nicu Buculei - jigsaw_red_10"
    "animals/mammals/horses/cavallo_architetto_franc_03",  # Italian
    "office/floppy_frederic_moser_01",  # <!ENTITY>
    "signs_and_symbols/flags/america/peru",  # fill-opacity in percent
    "office/telephone/mobile_phone_01",  # <svg> after 2 KB of comments
    "signs_and_symbols/flags/asia/myanmar",
    "transportation/roadsigns/stop",  # no size
]


@needs_oc
@needs_words
def test_openclipart_real_handful(tmp_path):
    root = tmp_path / "svg"
    for rid in REAL_OC:
        src = OC_DIR / f"{rid}.svg"
        if not src.is_file():
            pytest.skip(f"{src} not in this version of {oc.PACKAGE}")
        (root / rid).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, root / f"{rid}.svg")
    link = OC_DIR / "shapes/arrows/arki_arrow_down_jean_vic_.svg"
    if link.is_symlink():
        (root / "shapes/arrows").mkdir(parents=True, exist_ok=True)
        os.symlink(os.readlink(link), root / "shapes/arrows/arki_arrow_down_jean_vic_.svg")
    out = tmp_path / "out"
    oc.build_openclipart(out, svg_dir=root, check_sample=-1, progress=False)
    recs, meta = check_corpus(out, "openclipart")
    texts = {r["id"]: r["text"] for r in recs}
    assert texts == {
        "animals/mammals/a_simple_pig_01": "A simple pig",
        "animals/amphibian/2_dead_frogs_lumen_desig_01": "2 dead frogs",
        "office/telephone/mobile_phone_01": texts.get("office/telephone/mobile_phone_01", "?"),
        "signs_and_symbols/flags/asia/myanmar": "Myanmar",
    }
    ids = meta["skipped_ids"]
    assert ids["duplicate"] == ["animals/2_dead_frogs_lumen_desig_01"]
    assert ids["collection_title"] == ["computer/icons/flat-theme/action/3leftarrow"]
    assert ids["file_like_title"] == ["people/stickmen/blueman_208_01"]
    assert ids["author_title"] == ["shapes/jigsaw/jigsaw_green_13"]
    assert sorted(ids["not_english"]) == [
        "animals/mammals/horses/cavallo_architetto_franc_03", "shapes/stars/star_49pt10step",
    ]  # fmt: skip
    assert ids["svg_entities"] == ["office/floppy_frederic_moser_01"]
    assert ids["svg_unsupported"] == ["signs_and_symbols/flags/america/peru"]
    assert ids["svg_no_size"] == ["transportation/roadsigns/stop"]
    assert meta["render_check"]["failed"] == 0
    frogs = next(r for r in recs if r["text"] == "2 dead frogs")
    assert "frog" in frogs["text_keywords"] and frogs["labels"]["category"] == "animals/amphibian"
    load_manifest(out / "manifest.jsonl", strict=True)


@needs_oc
@needs_words
def test_openclipart_real_counts(tmp_path):
    """The whole package, without copying or rasterising (~10 s): the rule's numbers are plausible."""
    out = tmp_path / "oc"
    oc.build_openclipart(out, copy_media=False, check_sample=0, progress=False)
    recs, meta = check_corpus(out, "openclipart")
    rule = meta["title_rule"]["dropped"]
    assert 1800 < len(recs) < 3000 and meta["files"]["svg"] > 8000
    assert 500 < meta["skipped"]["symlink"] < 800 and 300 < meta["skipped"]["duplicate"] < 600
    assert rule["collection_title"] > 3000 and rule["author_title"] > 300 and rule["not_english"] > 200
    assert all(rule[k] > 0 for k in ("no_title", "file_like_title"))
    assert meta["title_rule"]["dropped_total"] == sum(rule.values())
    texts = [r["text"] for r in recs]
    assert "gramastar" not in {t.lower() for t in texts} and not any(
        "Flat Icon Collection" in t for t in texts
    )
    assert {r["labels"]["top"] for r in recs} >= {"animals", "food", "people", "signs_and_symbols"}
    assert meta["source"]["version"] != "unknown"
