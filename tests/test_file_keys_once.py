"""A check that keys the scored files (``ZeroShotClassifier.check_not_balanced_on``) and the feature cache that
encodes them next read each file once for its key inside :func:`anybind.data.files.file_keys_remembered`: the second
keying is answered from the first while the file is unchanged (same path, device, inode, size, times)."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

import anybind.encoders.keys as keys
from anybind.cache import FeatureCache
from anybind.data.files import file_keys_remembered
from anybind.encoders.registry import get_encoder


def _pictures(tmp_path, n=4):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        p = tmp_path / f"p{i}.png"
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(p)
        paths.append(str(p))
    return paths


def test_keys_made_for_a_check_serve_the_encoding_that_follows(tmp_path, key_reads):
    enc = get_encoder("callable:helper_encoders:image_stats")
    paths = _pictures(tmp_path)
    cache = FeatureCache(tmp_path / "cache")
    with file_keys_remembered():
        checked = [enc.content_key(p) for p in paths]  # what the overlap check digests
        X = cache.encode(enc, paths + paths[:1], progress=False)
    assert key_reads == {p: 1 for p in paths}, key_reads
    assert checked == [enc.content_key(p) for p in paths]  # outside: read again, the same keys
    assert key_reads == {p: 2 for p in paths}
    np.testing.assert_array_equal(X, FeatureCache(tmp_path / "cache2").encode(enc, paths + paths[:1], progress=False))


def test_a_file_changed_inside_the_scope_is_keyed_again(tmp_path, key_reads):
    enc = get_encoder("callable:helper_encoders:image_stats")
    p = _pictures(tmp_path, 2)
    with file_keys_remembered():
        first = enc.content_key(p[0])
        with file_keys_remembered():  # nested: the same memo
            assert enc.content_key(p[0]) == first and key_reads[p[0]] == 1
        os.replace(p[1], p[0])  # another file under the same name
        assert enc.content_key(p[0]) != first and key_reads[p[0]] == 2
        with open(p[0], "r+b") as f:  # rewritten in place, its times moved on
            f.seek(40)
            f.write(b"\x00")
        st = os.stat(p[0])
        os.utime(p[0], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
        again = enc.content_key(p[0])
        assert key_reads[p[0]] == 3 and again == keys.content_key(p[0])
