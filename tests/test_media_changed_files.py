"""Undecodable items and files changed after validation (issue 14, item 4): one bad item never stops the others in
the feature cache, the in-memory fit, the index or the streaming fit; each is skipped, reported once and its
remembered media check dropped."""

import logging

import numpy as np
import pytest
from media_helpers import ENC, _corpus, _corrupt_in_place, _ImageLoader
from PIL import Image

from anybind.cache import FeatureCache
from anybind.data.manifest import load_manifest
from anybind.errors import DataError
from anybind.index import Index
from anybind.space import Space


def test_undecodable_items_never_stop_the_others(tmp_path):
    imgs = []
    for i in range(5):
        imgs.append(tmp_path / f"{i}.png")
        Image.new("RGB", (6, 6), (10 * i, 0, 0)).save(imgs[-1])
    _corrupt_in_place(imgs[2])
    fc = FeatureCache(tmp_path / "cache")
    items = [str(p) for p in imgs] + [str(imgs[2])]
    bad: dict[int, str] = {}
    X = fc.encode(_ImageLoader(), items, progress=False, bad=bad)
    assert sorted(bad) == [2, 5] and "2.png: corrupt or unsupported image" in bad[2]
    assert np.isnan(X[[2, 5]]).all() and np.isfinite(np.delete(X, [2, 5], axis=0)).all()
    assert fc.last_stats.encoded == 4 and fc.last_stats.failed == 1
    with pytest.raises(DataError, match="cannot decode .*2.png"):  # without ``bad``: an error naming it,
        fc.encode(_ImageLoader(), items, progress=False)
    assert FeatureCache(tmp_path / "cache").count("test:image-means/1") == 4  # the others are cached


def test_a_file_changed_after_validation_is_skipped_reported_and_rechecked(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("ANYBIND_MEDIA_CHECKS", str(tmp_path / "checks.sqlite"))
    manifest = _corpus(tmp_path / "data", n=8)
    img = tmp_path / "data" / "img"
    assert load_manifest(manifest).bad == []  # validated: every check remembered
    _corrupt_in_place(img / "3.png")
    assert load_manifest(manifest).bad == []  # same size and mtime: the remembered check says it is fine
    caplog.set_level(logging.WARNING)
    space = Space.fit(manifest, ["image", "text"], encoders=ENC, method="procrustes", cache=tmp_path / "c",
                      progress=False)
    assert space.modalities == ["image", "text"]
    lines = [r.getMessage() for r in caplog.records if "3.png" in r.getMessage()]
    assert len(lines) == 1 and "record 'r3'" in lines[0] and "corrupt or unsupported image" in lines[0]
    again = load_manifest(manifest)  # the remembered check was dropped: validate reports it now
    assert [b.id for b in again.bad] == ["r3"] and "3.png" in again.bad[0].reason
    # the index, fed records directly (as after a validation that remembered the old file)
    caplog.clear()
    _corrupt_in_place(img / "5.png")
    index = Index.create(tmp_path / "index", space=space)
    stats = index.add(load_manifest(manifest, check_media=False).records, cache=tmp_path / "c")
    assert [i for i, _ in stats.failed] == ["r3", "r5"] and "5.png" in stats.failed[1][1]
    assert index.counts() == {"image": 6, "text": 8}
    assert sum("record 'r5'" in r.getMessage() for r in caplog.records) == 1


def test_a_file_changed_after_validation_is_skipped_by_the_streaming_fit_too(tmp_path, monkeypatch, caplog):
    """The streaming trainer skips and reports the record as the in-memory one does (it raised NameError)."""
    from anybind.scale.sharded import fit_sharded

    monkeypatch.setenv("ANYBIND_MEDIA_CHECKS", str(tmp_path / "checks.sqlite"))
    manifest = _corpus(tmp_path / "data", n=8)
    assert load_manifest(manifest).bad == []  # validated: every check remembered
    _corrupt_in_place(tmp_path / "data" / "img" / "4.png")
    caplog.set_level(logging.WARNING)
    space = fit_sharded(manifest, ["image", "text"], encoders=ENC, cache=tmp_path / "c", progress=False,
                        dim=4, batch_size=4, epochs=2)
    assert space.modalities == ["image", "text"]
    lines = [r.getMessage() for r in caplog.records if "4.png" in r.getMessage()]
    assert any("r4" in line and "corrupt" in line for line in lines), lines
    assert all("\n" not in line for line in lines)
