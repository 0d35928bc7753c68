"""The Tux Paint stamps corpus: real data (tuxpaint-stamps-default) and a synthetic mini stamps dir."""

from __future__ import annotations

import json
import os
import subprocess
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from anybind.corpora import debian
from anybind.corpora import tuxpaint as tp
from anybind.corpora.debian import debian_package_version, ensure_debian_package
from anybind.corpora.tuxpaint import build_tuxpaint, parse_caption
from anybind.data.manifest import load_manifest
from anybind.data.media import load_audio, load_image
from anybind.errors import DataError

STAMPS = Path(tp.DEFAULT_STAMPS_DIR)
needs_stamps = pytest.mark.skipif(
    not STAMPS.is_dir(), reason=f"{tp.PACKAGE} is not installed (apt-get install -y {tp.PACKAGE})"
)

FILE_FIELDS = ("image", "audio", "speech")


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _file_fields(rec: dict) -> dict[str, str]:
    return {k: v for k, v in rec.items() if k.split("_", 1)[0] in FILE_FIELDS}


# --------------------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def real(tux_dir):
    """The session's real corpus (conftest's ``tux_dir``, copy mode): never modified here."""
    meta = json.loads((tux_dir / "corpus.json").read_text())
    c = meta["counts"]
    summary = tp.CorpusSummary(
        name=meta["name"],
        out_dir=tux_dir,
        manifest=tux_dir / "manifest.jsonl",
        records=c["records"],
        splits=c["splits"],
        modalities=c["modalities"],
        skipped=meta["skipped"],
        problems=meta["problems"],
    )
    return summary, tux_dir, _read(tux_dir / "manifest.jsonl"), meta


@needs_stamps
def test_real_counts_are_plausible(real):
    summary, out, recs, meta = real
    assert 600 <= len(recs) <= 2000
    assert summary.records == len(recs) == meta["counts"]["records"]
    assert all(r["text"].strip() and r["image"] for r in recs)
    n = Counter(k for r in recs for k in r)
    assert n["audio"] >= 50  # sound effects
    assert n["speech"] >= 30  # English spoken descriptions
    assert n["speech_fr"] >= 500 and n["speech_es"] >= 500
    assert n["text_fr"] >= 0.9 * len(recs) and n["text_pt_br"] >= 0.9 * len(recs)
    assert sum(1 for r in recs if any(k.startswith("speech_name") for k in r)) >= 100
    assert meta["counts"]["text_languages"] >= 60
    # every stamp is either a record or skipped with a reason
    assert sum(summary.skipped.values()) >= 10
    assert set(summary.skipped) <= {
        "mirror_variant", "no_caption", "no_image", "no_image_no_caption",
        "no_english_caption", "unreadable_caption", "bad_image",
    }  # fmt: skip
    # keys are clean: lowercase languages, no empty values, known modality names
    for r in recs:
        for k, v in r.items():
            assert k == k.lower() and "@" not in k
            if k != "labels":
                assert isinstance(v, str) and v.strip() == v and v
            assert k in ("id", "split", "labels") or k.split("_", 1)[0] in ("text", *FILE_FIELDS)


@needs_stamps
def test_real_accounts_for_every_stamp(real):
    summary, out, recs, meta = real
    stems = set()
    for f in STAMPS.rglob("*"):
        if f.suffix in (".png", ".svg", ".txt", ".dat"):
            stems.add(f.relative_to(STAMPS).with_suffix("").as_posix())
    skipped = {i for ids in meta["skipped_ids"].values() for i in ids}
    ids = {r["id"] for r in recs}
    assert not ids & skipped
    assert ids | skipped == stems


@needs_stamps
def test_real_ids_unique_and_labels(real):
    _, _, recs, _ = real
    ids = [r["id"] for r in recs]
    assert len(ids) == len(set(ids))
    for r in recs:
        cat, _, stem = r["id"].rpartition("/")
        assert r["labels"] == {"category": cat, "top": cat.split("/")[0]}
        assert stem and (STAMPS / cat / (stem + ".txt")).is_file()


@needs_stamps
def test_real_split_proportions_and_caption_groups(real):
    _, _, recs, meta = real
    c = Counter(r["split"] for r in recs)
    n = len(recs)
    assert 0.62 < c["train"] / n < 0.78
    assert 0.05 < c["val"] / n < 0.16
    assert 0.13 < c["test"] / n < 0.27
    assert meta["counts"]["splits"] == {"train": c["train"], "val": c["val"], "test": c["test"]}
    by_caption: dict[str, set[str]] = {}
    for r in recs:
        by_caption.setdefault(tp.split_key(r["text"]), set()).add(r["split"])
    assert all(len(s) == 1 for s in by_caption.values())


@needs_stamps
def test_real_known_stamps(real):
    _, _, recs, meta = real
    by_id = {r["id"]: r for r in recs}
    badger = by_id["animals/mammals/badger"]
    assert badger["text"] == "A badger."
    assert badger["text_fr"] == "Un blaireau." and badger["text_pt_br"] == "Um texugo."
    assert badger["text_sr_latin"] and badger["text_ca_valencia"]
    assert badger["image"].endswith("badger.png") and badger["audio"].endswith("badger.ogg")
    assert badger["speech"].endswith("badger_desc.ogg") and badger["speech_fr"].endswith("badger_desc_fr.ogg")
    seven = by_id["symbols/math/7"]  # spoken numbers, not a sound effect
    assert "audio" not in seven
    assert seven["speech_name"].endswith("/7.ogg") and seven["speech_name_de"].endswith("7_de.ogg")
    assert seven["speech_name_en_gb"].endswith("7_en_GB.ogg") and seven["speech_name_zh_tw"]
    letter = by_id["symbols/alphabets/english/filled/uppercase/A_filled"]
    assert "audio" not in letter and "speech_name" not in letter
    assert letter["speech_name_en_gb"].endswith("A_filled_en_GB.ogg")
    # SVG-only stamps use the SVG; stamps with both use the PNG
    assert Counter(Path(r["image"]).suffix for r in recs).keys() == {".png", ".svg"}
    both = [p.with_suffix("") for p in STAMPS.rglob("*.svg") if p.with_suffix(".png").exists()]
    for stem in both[:20]:
        rid = stem.relative_to(STAMPS).as_posix()
        if rid in by_id:
            assert by_id[rid]["image"].endswith(".png")
    # Tamil lines are TSCII mojibake in this package: dropped, counted
    assert all(any("\u0b80" <= ch <= "\u0bff" for ch in r["text_ta"]) for r in recs if "text_ta" in r)
    assert "household/tools/measuring_tape_mirror" in meta["skipped_ids"]["mirror_variant"]
    assert "cartoon/tux/tux-drat" in meta["skipped_ids"]["no_caption"]
    assert "seasonal/christmas/gift" in meta["skipped_ids"]["no_image"]
    assert "animals/insects/mosquito.ogg" in meta["unmatched_files"]
    # recovered misnamings: Strawberry2 vs strawberry2_desc_el.ogg, *.ogg.ogg
    assert by_id["food/fruit/Strawberry2"]["speech_el"].endswith("Strawberry2_desc_el.ogg")
    assert by_id["town/monuments/inukshuk-photo"]["speech_da"].endswith("inukshuk-photo_desc_da.ogg")


@needs_stamps
def test_real_paths_exist_and_decode(real):
    _, out, recs, _ = real
    for r in recs:
        for k, v in _file_fields(r).items():
            assert not os.path.isabs(v) and (out / v).is_file(), (r["id"], k, v)
            assert (out / v).resolve().is_relative_to(out.resolve())
    man = load_manifest(out / "manifest.jsonl", check_media=False)
    assert not man.bad and len(man.records) == len(recs)
    sample = recs[:: max(1, len(recs) // 25)]
    for r in sample:
        img = load_image(out / r["image"], size=64)
        assert img.width > 0 and img.mode == "RGB"
        for k, v in _file_fields(r).items():
            wanted = k in ("audio", "speech", "speech_fr", "speech_name") or k.endswith("_en_gb")
            if k != "image" and wanted:
                wav, sr = load_audio(out / v)
                assert wav.size > 0 and sr > 0 and np.isfinite(wav).all()
    svgs = [r for r in recs if r["image"].endswith(".svg")][:5]
    assert svgs and all(load_image(out / r["image"], size=64).width > 0 for r in svgs)


@needs_stamps
def test_real_provenance_files(real):
    _, out, _, meta = real
    assert "GPL-2" in (out / "LICENSE").read_text()
    src = (out / "SOURCE.md").read_text()
    assert tp.PACKAGE in src and meta["source"]["version"] in src
    assert meta["source"]["version"] == debian_package_version(tp.PACKAGE) != ""
    assert meta["name"] == "tuxpaint" and meta["builder"]["version"] == tp.BUILDER_VERSION


@needs_stamps
def test_real_rebuild_is_identical_and_no_copy_points_into_stamps(real, tmp_path):
    # (copying ~200 MB twice is slow on a busy disk: the copy-mode rebuild is tested on the mini dir)
    summary, out, recs, meta = real
    ref = tmp_path / "ref"
    s2 = build_tuxpaint(ref, copy_media=False, progress=False)
    first = (ref / "manifest.jsonl").read_bytes(), (ref / "corpus.json").read_bytes()
    s3 = build_tuxpaint(ref, copy_media=False, progress=False)
    assert ((ref / "manifest.jsonl").read_bytes(), (ref / "corpus.json").read_bytes()) == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ref"]  # no temp folders left behind
    assert not (ref / "media").exists()
    recs2 = _read(ref / "manifest.jsonl")
    key = lambda r: (r["id"], r["split"], r["text"])  # noqa: E731
    assert [key(r) for r in recs2] == [key(r) for r in recs]
    assert s2.modalities == s3.modalities == summary.modalities and s2.skipped == summary.skipped
    for r in recs2[::50]:
        for v in _file_fields(r).values():
            p = (ref / v).resolve()
            assert p.is_file() and p.is_relative_to(STAMPS.resolve())


# --------------------------------------------------------------------------- caption parsing


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


def _ogg(path: Path, seconds: float = 0.2) -> None:
    import soundfile as sf

    t = np.arange(int(16000 * seconds)) / 16000
    wav = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    sf.write(path, wav, 16000, format="OGG", subtype="VORBIS")


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
    _ogg(a / "dog.ogg")
    _ogg(a / "dog_desc.ogg")
    _ogg(a / "dog_desc_fr.ogg")
    (a / "dog_desc_es.ogg").write_bytes(b"not an ogg file at all")  # corrupt: dropped, counted
    # misnamed sounds: wrong letter case, doubled extension
    _png(a / "Cat.png")
    (a / "Cat.txt").write_text("A cat.\n", encoding="utf-8")
    _ogg(a / "cat_desc_fr.ogg")
    _ogg(a / "Cat_desc_es.ogg.ogg")
    _ogg(a / "Cat_red.ogg")  # "red" is no language: unmatched
    # caption without image, image without caption, .dat alone, translations only, broken image
    (a / "ghost.txt").write_text("A ghost.\n", encoding="utf-8")
    _png(a / "nocaption.png")
    (a / "flagsonly.dat").write_text("noflip\n")
    _png(a / "french.png")
    (a / "french.txt").write_text("fr.utf8=Seulement en français.\n", encoding="utf-8")
    (a / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    (a / "broken.txt").write_text("A broken image.\n", encoding="utf-8")
    _ogg(a / "unicorn_desc.ogg")  # no such stamp
    # spoken names: localized sounds make stem.ogg a spoken name too
    _png(m / "7.png")
    (m / "7.txt").write_text("Seven.\nde.utf8=Sieben.\n", encoding="utf-8")
    _ogg(m / "7.ogg")
    _ogg(m / "7_de.ogg")
    _ogg(m / "7_en_GB.ogg")
    # SVG only; PNG + SVG -> PNG
    (m / "A_filled.svg").write_bytes(SVG)
    (m / "A_filled.txt").write_text("The letter A.\n", encoding="utf-8")
    _ogg(m / "A_filled_en_GB.ogg")
    (m / "A_outline.svg").write_bytes(SVG)
    _png(m / "A_outline.png")
    (m / "A_outline.txt").write_text("The letter a!\n", encoding="utf-8")
    return root


def test_mini_rules_and_skip_counting(mini, tmp_path):
    out = tmp_path / "out"
    summary = build_tuxpaint(out, stamps_dir=mini, progress=True)
    recs = {r["id"]: r for r in _read(out / "manifest.jsonl")}
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
        for k, v in _file_fields(r).items():
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
    dog = next(r for r in _read(out / "manifest.jsonl") if r["id"] == "animals/pets/dog")
    assert dog["image"] == os.path.relpath(mini / "animals/pets/dog.png", out)
    assert (out / dog["image"]).resolve() == (mini / "animals/pets/dog.png").resolve()
    build_tuxpaint(out, stamps_dir=mini, copy_media=False, progress=False)
    assert (out / "manifest.jsonl").read_bytes() == first
    # a new stamp does not move the others
    _png(mini / "symbols" / "8.png")
    (mini / "symbols" / "8.txt").write_text("Eight.\n", encoding="utf-8")
    build_tuxpaint(out, stamps_dir=mini, copy_media=False, progress=False)
    new = {r["id"]: r["split"] for r in _read(out / "manifest.jsonl")}
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


# --------------------------------------------------------------------------- ensure_debian_package


def test_ensure_debian_package_present(tmp_path):
    assert ensure_debian_package("some-pkg", tmp_path) == tmp_path


def test_ensure_debian_package_not_root(tmp_path, monkeypatch):
    monkeypatch.setattr(debian, "_is_root", lambda: False)
    monkeypatch.setattr(debian.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(debian.subprocess, "run", pytest.fail)
    with pytest.raises(DataError, match=r"sudo apt-get install -y some-pkg"):
        ensure_debian_package("some-pkg", tmp_path / "missing")
    with pytest.raises(ValueError):
        ensure_debian_package("bad name; rm -rf /", tmp_path / "missing")


def _fake_apt(calls, probe, outcomes):
    def run(cmd, **kw):
        calls.append(cmd[1:])
        rc, out = outcomes.pop(0)
        if rc == 0 and cmd[1] == "install":
            probe.mkdir()
        return subprocess.CompletedProcess(cmd, rc, stdout=out, stderr="")

    return run


def test_ensure_debian_package_root_installs_updating_lists(tmp_path, monkeypatch):
    probe = tmp_path / "installed"
    calls: list[list[str]] = []
    outcomes = [(100, "E: Unable to locate package some-pkg"), (0, "Reading package lists"), (0, "ok")]
    monkeypatch.setattr(debian, "_is_root", lambda: True)
    monkeypatch.setattr(debian.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(debian.subprocess, "run", _fake_apt(calls, probe, outcomes))
    assert ensure_debian_package("some-pkg", probe) == probe
    assert [c[0] for c in calls] == ["install", "update", "install"]
    assert calls[0][-2:] == ["--no-install-recommends", "some-pkg"] and "-y" in calls[0]


def test_ensure_debian_package_root_install_fails(tmp_path, monkeypatch):
    probe = tmp_path / "installed"
    calls: list[list[str]] = []
    outcomes = [(100, "E: Unable to locate package some-pkg"), (100, "E: Could not resolve 'deb.debian.org'")]
    monkeypatch.setattr(debian, "_is_root", lambda: True)
    monkeypatch.setattr(debian.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(debian.subprocess, "run", _fake_apt(calls, probe, outcomes))
    with pytest.raises(DataError, match=r"(?s)apt-get update.*failed.*Could not resolve"):
        ensure_debian_package("some-pkg", probe)
    assert [c[0] for c in calls] == ["install", "update"]
