"""The Tux Paint stamps corpus's rules: caption parsing, then a synthetic mini stamps dir (skips counted, no-copy
mode, rebuilds, refusals, a failed build keeping the previous corpus)."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest

from anybind.corpora import tuxpaint as tp
from anybind.corpora.tuxpaint import build_tuxpaint, parse_caption
from anybind.data.manifest import load_manifest
from anybind.data.media import load_audio, load_image
from anybind.errors import DataError

from corpus_checks import file_fields, read_jsonl
from corpus_sources import write_ogg


def test_parse_caption_rules():
    data = (
        b"\xef\xbb\xbfA  dog.\r\n"
        b"\r\n"
        b"fr.utf8=Un chien.\r\n"
        b"pt_BR.utf8= Um cachorro. \n"
        b"sr@latin.utf8=Pas.\n"
        b"de.utf8=\n"
        b"fr.utf8=Encore un chien.\n"
        b"this line does not parse\n"
        b"es.utf8=Un perro \xf1\n"  # Latin-1, not UTF-8
        b"ta.utf8=\xc2\xb4\xc3\x95 \xc2\xa8\xc2\xb8.\n"  # TSCII shown as Latin-1
        b"ja.utf8=\xe7\x8a\xac\n"
        b"\n"
    )
    cap = parse_caption(data)
    assert cap.english == "A dog."
    assert cap.translations == {"fr": "Un chien.", "pt_br": "Um cachorro.", "sr_latin": "Pas.", "ja": "犬"}
    assert cap.problems == Counter(
        caption_translation_empty=1,
        caption_duplicate_language=1,
        caption_line_unparsed=1,
        caption_line_not_utf8=1,
        caption_wrong_script=1,
    )
    assert parse_caption("A dog.\nta.utf8=நாய்\n".encode()).translations == {"ta": "நாய்"}
    assert parse_caption(b"fr.utf8=Un chien.\n").english is None
    assert parse_caption(b"\n  \n").english is None
    assert parse_caption(b"Caf\xe9 au lait.\n").english == "Café au lait."  # cp1252 fallback
    assert parse_caption(b"A calculator.  6x7=42\n").english == "A calculator. 6x7=42"


# --------------------------------------------------------------------------- synthetic stamps dir


def _png(path: Path, color=(200, 30, 30, 255)) -> None:
    from PIL import Image

    Image.new("RGBA", (8, 6), color).save(path)


SVG = (
    b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
    b'<rect width="10" height="10" fill="blue"/></svg>'
)


@pytest.fixture
def mini(tmp_path) -> Path:
    root = tmp_path / "stamps"
    a = root / "animals" / "pets"
    m = root / "symbols"
    a.mkdir(parents=True)
    m.mkdir(parents=True)
    # a full stamp: sound effect, English + translated spoken descriptions, a mirror image
    _png(a / "dog.png")
    _png(a / "dog_mirror.png")
    (a / "dog.txt").write_bytes(
        b"A dog.\nfr.utf8=Un chien.\npt_BR.utf8=Um cachorro.\n\ngarbage line\nde.utf8=\nes.utf8=Un perro.\n"
    )
    (a / "dog.dat").write_text("colorable\n")
    write_ogg(a / "dog.ogg")
    write_ogg(a / "dog_desc.ogg")
    write_ogg(a / "dog_desc_fr.ogg")
    (a / "dog_desc_es.ogg").write_bytes(b"not an ogg file at all")  # corrupt: dropped, counted
    # misnamed sounds: wrong letter case, doubled extension
    _png(a / "Cat.png")
    (a / "Cat.txt").write_text("A cat.\n", encoding="utf-8")
    write_ogg(a / "cat_desc_fr.ogg")
    write_ogg(a / "Cat_desc_es.ogg.ogg")
    write_ogg(a / "Cat_red.ogg")  # "red" is no language: unmatched
    # caption without image, image without caption, .dat alone, translations only, broken image
    (a / "ghost.txt").write_text("A ghost.\n", encoding="utf-8")
    _png(a / "nocaption.png")
    (a / "flagsonly.dat").write_text("noflip\n")
    _png(a / "french.png")
    (a / "french.txt").write_text("fr.utf8=Seulement en français.\n", encoding="utf-8")
    (a / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    (a / "broken.txt").write_text("A broken image.\n", encoding="utf-8")
    write_ogg(a / "unicorn_desc.ogg")  # no such stamp
    # spoken names: localized sounds make stem.ogg a spoken name too
    _png(m / "7.png")
    (m / "7.txt").write_text("Seven.\nde.utf8=Sieben.\n", encoding="utf-8")
    write_ogg(m / "7.ogg")
    write_ogg(m / "7_de.ogg")
    write_ogg(m / "7_en_GB.ogg")
    # SVG only; PNG + SVG -> PNG
    (m / "A_filled.svg").write_bytes(SVG)
    (m / "A_filled.txt").write_text("The letter A.\n", encoding="utf-8")
    write_ogg(m / "A_filled_en_GB.ogg")
    (m / "A_outline.svg").write_bytes(SVG)
    _png(m / "A_outline.png")
    (m / "A_outline.txt").write_text("The letter a!\n", encoding="utf-8")
    return root


def test_mini_rules_and_skip_counting(mini, tmp_path):
    out = tmp_path / "out"
    summary = build_tuxpaint(out, stamps_dir=mini, progress=True)
    recs = {r["id"]: r for r in read_jsonl(out / "manifest.jsonl")}
    meta = json.loads((out / "corpus.json").read_text())
    assert sorted(recs) == [
        "animals/pets/Cat", "animals/pets/dog", "symbols/7", "symbols/A_filled", "symbols/A_outline",
    ]  # fmt: skip
    assert summary.records == meta["counts"]["records"] == 5 and summary.out_dir == out
    assert summary.splits == meta["counts"]["splits"] and summary.modalities == meta["counts"]["modalities"]
    assert summary.problems == meta["problems"] and summary.seconds > 0 and "5 records" in str(summary)
    assert summary.skipped == meta["skipped"] == {
        "bad_image": 1, "mirror_variant": 1, "no_caption": 1, "no_english_caption": 1,
        "no_image": 1, "no_image_no_caption": 1,
    }  # fmt: skip
    assert meta["skipped_ids"]["no_image"] == ["animals/pets/ghost"]
    assert meta["skipped_ids"]["no_caption"] == ["animals/pets/nocaption"]
    assert meta["skipped_ids"]["mirror_variant"] == ["animals/pets/dog_mirror"]
    assert meta["skipped_ids"]["no_english_caption"] == ["animals/pets/french"]
    assert meta["skipped_ids"]["no_image_no_caption"] == ["animals/pets/flagsonly"]
    assert "animals/pets/broken" in meta["bad_images"]

    dog = recs["animals/pets/dog"]
    assert list(dog) == [
        "id", "split", "text", "text_es", "text_fr", "text_pt_br",
        "image", "audio", "speech", "speech_fr", "labels",
    ]  # fmt: skip
    assert dog["text"] == "A dog." and dog["text_pt_br"] == "Um cachorro."
    assert dog["image"] == "media/animals/pets/dog.png"
    assert dog["audio"] == "media/animals/pets/dog.ogg" and dog["speech"] == "media/animals/pets/dog_desc.ogg"
    assert dog["labels"] == {"category": "animals/pets", "top": "animals"}
    cat = recs["animals/pets/Cat"]
    assert cat["speech_fr"] == "media/animals/pets/Cat_desc_fr.ogg"
    assert cat["speech_es"] == "media/animals/pets/Cat_desc_es.ogg"
    assert "audio" not in cat
    seven = recs["symbols/7"]
    assert "audio" not in seven
    assert (seven["speech_name"], seven["speech_name_de"], seven["speech_name_en_gb"]) == (
        "media/symbols/7.ogg", "media/symbols/7_de.ogg", "media/symbols/7_en_GB.ogg",
    )  # fmt: skip
    assert recs["symbols/A_filled"]["image"].endswith(".svg")
    assert recs["symbols/A_filled"]["speech_name_en_gb"].endswith("A_filled_en_GB.ogg")
    assert recs["symbols/A_outline"]["image"].endswith(".png")
    # "The letter A." and "The letter a!" share a split key
    assert recs["symbols/A_filled"]["split"] == recs["symbols/A_outline"]["split"]

    assert meta["problems"] == {
        "caption_line_unparsed": 1,
        "caption_no_english_line": 1,
        "caption_translation_empty": 1,
        "sound_bad_file": 1,
        "sound_recovered_double_extension": 1,
        "sound_recovered_letter_case": 1,
    }
    assert meta["unmatched_files"] == ["animals/pets/Cat_red.ogg", "animals/pets/unicorn_desc.ogg"]
    assert meta["source"]["version"] == "unknown" and (out / "LICENSE").is_file()

    for r in recs.values():
        for k, v in file_fields(r).items():
            if k == "image":
                assert load_image(out / v, size=16).size[0] > 0
            else:
                assert load_audio(out / v)[0].size > 0
    man = load_manifest(out / "manifest.jsonl", strict=True)
    assert len(man.records) == 5

    before = {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    build_tuxpaint(out, stamps_dir=mini, progress=False)
    after = {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    assert after == before  # the whole corpus folder, media included, is rebuilt identically
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "stamps"]


def test_mini_no_copy_and_rebuild(mini, tmp_path):
    out = tmp_path / "nested" / "out"
    build_tuxpaint(out, stamps_dir=mini, copy_media=False, progress=False)
    first = (out / "manifest.jsonl").read_bytes()
    dog = next(r for r in read_jsonl(out / "manifest.jsonl") if r["id"] == "animals/pets/dog")
    assert dog["image"] == os.path.relpath(mini / "animals/pets/dog.png", out)
    assert (out / dog["image"]).resolve() == (mini / "animals/pets/dog.png").resolve()
    build_tuxpaint(out, stamps_dir=mini, copy_media=False, progress=False)
    assert (out / "manifest.jsonl").read_bytes() == first
    # a new stamp does not move the others
    _png(mini / "symbols" / "8.png")
    (mini / "symbols" / "8.txt").write_text("Eight.\n", encoding="utf-8")
    build_tuxpaint(out, stamps_dir=mini, copy_media=False, progress=False)
    new = {r["id"]: r["split"] for r in read_jsonl(out / "manifest.jsonl")}
    old = {r["id"]: r["split"] for r in (json.loads(x) for x in first.decode().splitlines())}
    assert "symbols/8" in new and all(new[k] == v for k, v in old.items())


def test_missing_stamps_dir_says_how_to_install(tmp_path):
    with pytest.raises(DataError, match=r"apt-get install -y tuxpaint-stamps-default"):
        build_tuxpaint(tmp_path / "out", stamps_dir=tmp_path / "nope", progress=False)
    assert not (tmp_path / "out").exists()


def test_refuses_to_replace_a_foreign_folder(mini, tmp_path):
    out = tmp_path / "important"
    out.mkdir()
    (out / "thesis.tex").write_text("do not delete")
    with pytest.raises(DataError, match="refusing to replace"):
        build_tuxpaint(out, stamps_dir=mini, progress=False)
    assert (out / "thesis.tex").read_text() == "do not delete"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["important", "stamps"]


def test_failed_build_keeps_previous_corpus(mini, tmp_path, monkeypatch):
    out = tmp_path / "out"
    build_tuxpaint(out, stamps_dir=mini, progress=False)
    before = (out / "manifest.jsonl").read_bytes()

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(tp, "write_license", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        build_tuxpaint(out, stamps_dir=mini, progress=False)
    assert (out / "manifest.jsonl").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "stamps"]
