"""Manifest validation: every bad-input case is named with its record and reason, and costs nothing else."""

import json
import logging
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from anybind.data.manifest import SPLITS, hash_split, load_manifest
from anybind.errors import DataError


@pytest.fixture()
def media(tmp_path):
    img = tmp_path / "ok.png"
    Image.new("RGBA", (20, 20), (255, 0, 0, 128)).save(img)
    import soundfile as sf

    snd = tmp_path / "ok.wav"
    sf.write(snd, np.sin(np.linspace(0, 100, 8000)).astype(np.float32), 16000)
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    (tmp_path / "corrupt.ogg").write_bytes(b"OggS" + b"\x00" * 100)
    (tmp_path / "empty.png").write_bytes(b"")
    return tmp_path


def write(tmp_path: Path, lines) -> Path:
    p = tmp_path / "m.jsonl"
    p.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return p


GOOD = {"id": "good", "split": "train", "text": "a red square", "image": "ok.png", "audio": "ok.wav"}

BAD_CASES = [
    ({"id": "u1", "split": "train", "text": "x", "smell": "a.bin"}, "unknown modality 'smell'"),
    ({"id": "m1", "split": "train", "text": "x", "image": "nope.png"}, "missing file for image"),
    ({"id": "c1", "split": "train", "text": "x", "image": "corrupt.png"}, "corrupt file for image"),
    ({"id": "c2", "split": "train", "text": "x", "audio": "corrupt.ogg"}, "corrupt file for audio"),
    ({"id": "c3", "split": "train", "text": "x", "image": "empty.png"}, "empty"),
    ({"id": "e1", "split": "train", "text": "   "}, "empty text in 'text'"),
    ({"id": "e2", "split": "train", "text_fr": ""}, "empty text in 'text_fr'"),
    ({"id": "good", "split": "train", "text": "again"}, "duplicate id"),
    ({"id": "s1", "split": "training", "text": "x"}, "bad split name 'training'"),
    ({"split": "train", "text": "x"}, "missing id"),
    ('{"id": "j1", "text": ', "malformed JSON"),
    ("[1, 2]", "expected a JSON object"),
    ({"id": "t1", "split": "train", "text": 42}, "expected a string"),
    ({"id": "l1", "split": "train", "text": "x", "labels": ["a"]}, "bad labels"),
]


@pytest.mark.parametrize("record,reason", BAD_CASES, ids=[r for _, r in BAD_CASES])
def test_each_bad_record_is_named_skipped_and_counted(media, record, reason):
    p = write(media, [GOOD, record, {"id": "after", "split": "test", "text": "still here"}])
    man = load_manifest(p)
    assert [r.id for r in man.records] == ["good", "after"], "the valid records must survive"
    assert len(man.bad) == 1
    bad = man.bad[0]
    assert bad.line == 2
    assert reason in bad.reason
    rid = record.get("id") if isinstance(record, dict) else None
    report = man.report()
    assert "line 2" in report and reason in report
    if rid:
        assert repr(rid) in str(bad)


@pytest.mark.parametrize("record,reason", BAD_CASES[:4], ids=[r for _, r in BAD_CASES[:4]])
def test_strict_makes_bad_records_fatal_with_the_reason(media, record, reason):
    p = write(media, [GOOD, record])
    with pytest.raises(DataError) as ei:
        load_manifest(p, strict=True)
    assert reason in str(ei.value) and record["id"] in str(ei.value)


def test_paths_resolve_relative_to_the_manifest_and_any_subset_is_fine(media):
    sub = media / "sub"
    sub.mkdir()
    p = write(sub, [
        {"id": "a", "split": "train", "image": "../ok.png"},
        {"id": "b", "split": "val", "text": "only text", "text_de": "nur Text"},
        {"id": "c", "split": "test", "audio": str(media / "ok.wav"), "labels": {"k": "v"}},
    ])
    man = load_manifest(p)
    assert not man.bad
    assert man.records[0].values["image"] == str((sub / "../ok.png"))
    assert man.modalities == ["audio", "image", "text", "text_de"]
    assert man.records[2].labels == {"k": "v"}
    assert man.counts()["val"] == {"records": 1, "text": 1, "text_de": 1}


def test_modalities_filter_ignores_other_fields(media):
    p = write(media, [{"id": "a", "split": "train", "text": "x", "image": "nope.png"}])
    man = load_manifest(p, modalities=["text"])
    assert not man.bad and man.records[0].values == {"text": "x"}


def test_declared_kinds_for_own_modalities(media):
    p = write(media, [{"id": "a", "split": "train", "imu": True}, {"id": "b", "split": "train", "imu": "key-7"}])
    assert load_manifest(p).bad  # undeclared: unknown modality
    man = load_manifest(p, kinds={"imu": "key"})
    assert [r.values["imu"] for r in man.records] == ["a", "key-7"]


def test_missing_manifest_and_bad_kind(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_manifest(tmp_path / "none.jsonl")
    p = write(tmp_path, [{"id": "a", "text": "x"}])
    with pytest.raises(DataError, match="kind must be"):
        load_manifest(p, kinds={"x": "blob"})


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=40))
def test_hash_split_is_deterministic_and_valid(rid):
    assert hash_split(rid) in SPLITS
    assert hash_split(rid) == hash_split(rid)


def test_hash_split_proportions():
    from collections import Counter

    c = Counter(hash_split(f"id-{i}") for i in range(20000))
    assert abs(c["train"] / 20000 - 0.7) < 0.02 and abs(c["test"] / 20000 - 0.2) < 0.02


def test_passed_media_checks_are_remembered_until_the_file_changes(media, tmp_path, monkeypatch):
    """A file that decoded once is only stat()ed on later loads; a touched or rewritten file is decoded
    again, a failure is never remembered, and check_cache=False / ANYBIND_MEDIA_CHECKS=off decode all."""
    import os

    import anybind.data.manifest as mf

    monkeypatch.setenv("ANYBIND_MEDIA_CHECKS", str(tmp_path / "checks" / "c.sqlite"))
    decoded: list[str] = []
    real = mf._check_media
    monkeypatch.setattr(mf, "_check_media", lambda kind, path: (decoded.append(path.name), real(kind, path)))
    bad = {"id": "c1", "split": "train", "text": "x", "image": "corrupt.png"}
    p = write(media, [GOOD, bad])

    def load(**kw):
        decoded.clear()
        man = load_manifest(p, **kw)
        return sorted(decoded), [r.id for r in man.records], [(b.id, b.reason) for b in man.bad]

    assert load_manifest(p, check_media=False).media_checks == {"decoded": 0, "unchanged": 0}
    first = load()
    assert first[0] == ["corrupt.png", "ok.png", "ok.wav"] and first[1] == ["good"] and first[2][0][0] == "c1"
    assert load() == (["corrupt.png"], ["good"], first[2])  # good files remembered; the corrupt one reported again
    assert load_manifest(p).media_checks == {"decoded": 1, "unchanged": 2}
    st = (media / "ok.png").stat()
    os.utime(media / "ok.png", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # touched: checked again
    assert load()[0] == ["corrupt.png", "ok.png"]
    (media / "ok.wav").write_bytes(b"RIFF" + b"\x00" * 60)  # rewritten, now corrupt: decoded, and reported
    names, ids, bads = load()
    assert names == ["corrupt.png", "ok.wav"] and ids == [] and "corrupt file for audio" in dict(bads)["good"]
    assert load()[0] == ["corrupt.png", "ok.wav"]  # failures are never remembered
    assert load(check_cache=False)[0] == ["corrupt.png", "ok.png", "ok.wav"]
    monkeypatch.setenv("ANYBIND_MEDIA_CHECKS", "off")
    assert load()[0] == ["corrupt.png", "ok.png", "ok.wav"]


class _Logged(logging.Handler):
    """The records of one logger, whatever the CLI did to the ``anybind`` logger's propagation."""

    def __init__(self, name: str):
        super().__init__(logging.DEBUG)
        self.logger, self.records = logging.getLogger(name), []

    def emit(self, record):
        self.records.append(record)

    def __enter__(self):
        self.logger.addHandler(self)
        return self

    def __exit__(self, *exc):
        self.logger.removeHandler(self)


def test_an_unwritable_check_store_only_warns(media, tmp_path, monkeypatch):
    """One logged warning line naming the checks file (before: a RuntimeWarning, printed as two lines with the
    warning's source line); the manifest still loads."""
    (tmp_path / "a-file").write_text("not a folder")
    store = tmp_path / "a-file" / "c.sqlite"
    monkeypatch.setenv("ANYBIND_MEDIA_CHECKS", str(store))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a Python warning would fail here
        with _Logged("anybind.data.checks") as logged:
            man = load_manifest(write(media, [GOOD]))
    assert [r.id for r in man.records] == ["good"]
    said = [(r.levelno, r.getMessage()) for r in logged.records]
    assert len(said) == 1 and said[0][0] == logging.WARNING, said
    assert said[0][1].startswith(f"{store}: media checks are not remembered") and "\n" not in said[0][1]


def test_a_check_store_that_cannot_be_updated_only_warns(tmp_path):
    from anybind.data.checks import forget

    store = tmp_path / "a-folder.sqlite"
    store.mkdir()  # sqlite cannot open a folder
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with _Logged("anybind.data.checks") as logged:
            forget([tmp_path / "x.png"], store)
    said = [(r.levelno, r.getMessage()) for r in logged.records]
    assert len(said) == 1 and said[0][0] == logging.WARNING, said
    assert said[0][1].startswith(f"{store}: media checks could not be updated") and "\n" not in said[0][1]
