"""The Tux Paint stamps corpus on real data (tuxpaint-stamps-default): the session's corpus (conftest's
``tux_dir``) read once for this module, its counts, stamps, splits, files and provenance, and a rebuild."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from anybind.corpora import tuxpaint as tp
from anybind.corpora.debian import debian_package_version
from anybind.corpora.tuxpaint import build_tuxpaint
from anybind.data.manifest import load_manifest
from anybind.data.media import load_audio, load_image

from corpus_checks import FILE_FIELDS, file_fields, read_jsonl

STAMPS = Path(tp.DEFAULT_STAMPS_DIR)
needs_stamps = pytest.mark.skipif(
    not STAMPS.is_dir(), reason=f"{tp.PACKAGE} is not installed (apt-get install -y {tp.PACKAGE})"
)


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
    return summary, tux_dir, read_jsonl(tux_dir / "manifest.jsonl"), meta


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
        for k, v in file_fields(r).items():
            assert not os.path.isabs(v) and (out / v).is_file(), (r["id"], k, v)
            assert (out / v).resolve().is_relative_to(out.resolve())
    man = load_manifest(out / "manifest.jsonl", check_media=False)
    assert not man.bad and len(man.records) == len(recs)
    sample = recs[:: max(1, len(recs) // 25)]
    for r in sample:
        img = load_image(out / r["image"], size=64)
        assert img.width > 0 and img.mode == "RGB"
        for k, v in file_fields(r).items():
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
    recs2 = read_jsonl(ref / "manifest.jsonl")
    key = lambda r: (r["id"], r["split"], r["text"])  # noqa: E731
    assert [key(r) for r in recs2] == [key(r) for r in recs]
    assert s2.modalities == s3.modalities == summary.modalities and s2.skipped == summary.skipped
    for r in recs2[::50]:
        for v in file_fields(r).values():
            p = (ref / v).resolve()
            assert p.is_file() and p.is_relative_to(STAMPS.resolve())
