"""What the corpus-builder tests (tests/test_corpus_*.py) check on every built corpus folder, and how they read it:
its manifest lines, its files' bytes (for byte-identical rebuilds), the corpus.json that agrees with the manifest,
and a skip marker naming the Debian package that a real-data test needs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from anybind.data.manifest import SPLITS, base_modality, load_manifest
from anybind.data.media import load_audio, load_image


def needs(path: Path, pkg: str):
    """Skip a real-data test when ``path`` is missing, with the command that installs it."""
    return pytest.mark.skipif(not path.exists(), reason=f"{path} missing: apt-get install -y {pkg}")


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def folder_files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (its relative POSIX path -> its bytes)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def check_corpus(
    out: Path, name: str, *, splits: bool = True, decode: bool = False
) -> tuple[list[dict], dict]:
    """What every corpus folder has: manifest + corpus.json that agree, LICENSE, SOURCE.md, unique ids; with
    ``splits``, valid splits and skipped ids that match the skip counts; with ``decode``, every record's image and
    speech files load and the manifest loads strictly without a bad record."""
    recs = read_jsonl(out / "manifest.jsonl")
    meta = json.loads((out / "corpus.json").read_text(encoding="utf-8"))
    assert meta["name"] == name and meta["kept"] == meta["counts"]["records"] == len(recs)
    assert meta["dropped"] == sum(meta["skipped"].values())
    assert len({r["id"] for r in recs}) == len(recs)
    assert (out / "LICENSE").stat().st_size > 0 and (out / "SOURCE.md").is_file()
    if splits:
        assert {k: len(v) for k, v in meta["skipped_ids"].items()} == meta["skipped"] or any(
            v and v[-1].startswith("...") for v in meta["skipped_ids"].values()
        )
        assert sum(meta["counts"]["splits"].values()) == len(recs)
        assert all(r["split"] in SPLITS for r in recs)
    if decode:
        for r in recs:
            for k, v in r.items():
                if base_modality(k) == "image":
                    assert load_image(out / v).size[0] > 0
                elif base_modality(k) == "speech":
                    assert len(load_audio(out / v)[0]) > 0
        man = load_manifest(out / "manifest.jsonl", strict=True, check_cache=False)
        assert len(man.records) == len(recs) and not man.bad
    return recs, meta


FILE_FIELDS = ("image", "audio", "speech")


def file_fields(rec: dict) -> dict[str, str]:
    """A manifest record's file fields (``image``, ``audio``, ``speech`` and their suffixed forms) -> paths."""
    return {k: v for k, v in rec.items() if k.split("_", 1)[0] in FILE_FIELDS}
