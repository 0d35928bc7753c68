"""The Fashion-MNIST corpus (evaluation only): the idx reader, a made-up idx set (tests/corpus_sources.py), the
real dataset-fashion-mnist package (skipped with the command to run when missing), and the corpus.json readers."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from anybind.corpora import fashion_mnist as fm
from anybind.corpora import is_eval_only, read_corpus_meta
from anybind.data.manifest import load_manifest
from anybind.data.media import load_image
from anybind.errors import DataError

from corpus_checks import check_corpus, needs, read_jsonl
from corpus_sources import write_idx

FM_DIR = Path(fm.DEFAULT_DIR)
needs_fm = needs(FM_DIR, fm.PACKAGE)


def test_read_idx_errors(tmp_path):
    write_idx(tmp_path / "ok.gz", np.arange(12).reshape(3, 2, 2))
    assert fm.read_idx(tmp_path / "ok.gz").shape == (3, 2, 2)
    assert fm.read_idx(tmp_path / "ok.gz", limit=2).tolist() == [[[0, 1], [2, 3]], [[4, 5], [6, 7]]]
    write_idx(tmp_path / "raw", np.arange(5), gz=False)
    assert fm.read_idx(tmp_path / "raw").tolist() == [0, 1, 2, 3, 4]
    (tmp_path / "magic.gz").write_bytes(gzip.compress(b"\x12\x34\x08\x01" + b"\x00" * 8))
    with pytest.raises(DataError, match="not an idx file"):
        fm.read_idx(tmp_path / "magic.gz")
    full = struct.pack(">BBBBI", 0, 0, 8, 1, 100) + bytes(10)
    (tmp_path / "short.gz").write_bytes(gzip.compress(full))
    with pytest.raises(DataError, match="truncated: header says 100 items, only 10"):
        fm.read_idx(tmp_path / "short.gz")
    (tmp_path / "notgz.gz").write_bytes(b"plain bytes, not gzip")
    with pytest.raises(DataError, match="unreadable"):
        fm.read_idx(tmp_path / "notgz.gz")
    (tmp_path / "cut.gz").write_bytes(gzip.compress(full)[:-12])
    with pytest.raises(DataError, match=r"notgz|cut\.gz"):
        fm.read_idx(tmp_path / "cut.gz")


def test_fashion_mnist_mini_build(mini_fm, tmp_path):
    out = tmp_path / "out"
    summary = fm.build_fashion_mnist(out, data_dir=mini_fm, progress=True)
    recs, meta = check_corpus(out, "fashion-mnist")
    assert meta["eval_only"] is True and is_eval_only(out / "manifest.jsonl") and is_eval_only(out)
    assert summary.skipped == {"bad_label": 1} and meta["skipped_ids"] == {"bad_label": ["train/00007"]}
    assert meta["problems"] == {"test_count_mismatch": 1} and meta["missing_sources"] == {}
    assert len(recs) == 59 + 19
    tests = [r for r in recs if r["id"].startswith("test/")]
    trains = [r for r in recs if r["id"].startswith("train/")]
    assert all(r["split"] == "test" for r in tests) and {r["split"] for r in trains} <= {"train", "val"}
    r0 = recs[0]
    assert r0 == {
        "id": "train/00000", "split": r0["split"], "text": "t-shirt or top", "image": "media/train/00/00000.png",
        "labels": {"class": "T-shirt/top", "class_id": 0},
    }  # fmt: skip
    assert np.asarray(load_image(out / r0["image"])).min() == 255  # black inverted to white
    raw = fm.read_idx(mini_fm / "train-images-idx3-ubyte.gz")
    from PIL import Image

    png = np.asarray(Image.open(out / recs[1]["image"]))
    assert png.shape == (28, 28) and (png == 255 - raw[1]).all()
    assert next(r for r in recs if r["id"] == "train/00009")["text"] == "ankle boot"
    assert meta["per_class"]["Ankle boot"] == 6 + 1
    load_manifest(out / "manifest.jsonl", strict=True)
    # limit: the first N of each file, same splits as the full build
    out2 = tmp_path / "out2"
    fm.build_fashion_mnist(out2, data_dir=mini_fm, limit=5, progress=False)
    small = read_jsonl(out2 / "manifest.jsonl")
    full = {r["id"]: r["split"] for r in recs}
    assert [r["id"] for r in small] == [f"train/{i:05d}" for i in range(5)] + [
        f"test/{i:05d}" for i in range(5)
    ]
    assert all(full[r["id"]] == r["split"] for r in small)


def test_fashion_mnist_missing_or_corrupt_set(mini_fm, tmp_path):
    (mini_fm / "t10k-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b garbage")
    out = tmp_path / "out"
    fm.build_fashion_mnist(out, data_dir=mini_fm, progress=False)
    recs, meta = check_corpus(out, "fashion-mnist")
    assert set(meta["missing_sources"]) == {"test"} and all(r["id"].startswith("train/") for r in recs)
    for f in mini_fm.iterdir():
        f.unlink()
    with pytest.raises(DataError, match="no Fashion-MNIST set is readable"):
        fm.build_fashion_mnist(tmp_path / "o2", data_dir=mini_fm, progress=False)
    with pytest.raises(DataError, match="apt-get install -y dataset-fashion-mnist"):
        fm.build_fashion_mnist(tmp_path / "o3", data_dir=tmp_path / "nope", progress=False)


@needs_fm
def test_fashion_mnist_real_sample(tmp_path):
    out = tmp_path / "fm"
    fm.build_fashion_mnist(out, limit=300, progress=False)
    recs, meta = check_corpus(out, "fashion-mnist")
    assert len(recs) == 600 and meta["eval_only"] is True and meta["classes"][9] == "Ankle boot"
    assert recs[0]["labels"]["class"] == "Ankle boot"  # the first training image of Fashion-MNIST
    assert meta["counts"]["splits"]["test"] == 300 and 10 < meta["counts"]["splits"]["val"] < 60
    assert all(v > 10 for v in meta["per_class"].values())
    img = np.asarray(load_image(out / recs[0]["image"]))
    assert img.mean() > 128  # mostly white background: inverted
    assert meta["source"]["version"] != "unknown" and "Zalando" in (out / "LICENSE").read_text()


def test_corpus_meta_helpers(tmp_path):
    assert read_corpus_meta(tmp_path / "manifest.jsonl") is None and not is_eval_only(tmp_path)
    (tmp_path / "corpus.json").write_text('{"name": "x", "eval_only": "yes"}')
    assert read_corpus_meta(tmp_path / "manifest.jsonl") == {"name": "x", "eval_only": "yes"}
    assert not is_eval_only(tmp_path / "manifest.jsonl")  # only a real true counts
